//! Shared iced-x86 decoding helpers: which bytes are code, what an instruction does to control
//! flow, how to print it, and where the vDSO's own `syscall` instruction is.

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Formatter, Instruction, IntelFormatter,
};

use crate::vdso::VdsoImage;

/// The image's bytes from `addr` to the end of the executable range holding it.
pub(super) fn exec_bytes_from(image: &VdsoImage, addr: u64) -> Option<&[u8]> {
    image.exec_ranges().iter().find_map(|&(start, len)| {
        let end = start.checked_add(len)?;
        if addr < start || addr >= end {
            return None;
        }
        image.slice(addr, usize::try_from(end - addr).ok()?)
    })
}

/// What kind of control transfer `instr` is, or `None` for an instruction that falls through.
pub(super) fn control_transfer_kind(instr: &Instruction) -> Option<&'static str> {
    match instr.code() {
        Code::Syscall => return Some("a syscall"),
        Code::Sysenter => return Some("a sysenter"),
        _ => {}
    }
    match instr.flow_control() {
        FlowControl::Next => None,
        FlowControl::UnconditionalBranch => Some("a jump"),
        FlowControl::IndirectBranch => Some("an indirect jump"),
        FlowControl::ConditionalBranch => Some("a conditional branch"),
        FlowControl::Return => Some("a return"),
        FlowControl::Call => Some("a call"),
        FlowControl::IndirectCall => Some("an indirect call"),
        FlowControl::Interrupt => Some("an interrupt"),
        FlowControl::XbeginXabortXend => Some("a transaction instruction"),
        FlowControl::Exception => Some("a trapping (undefined) instruction"),
    }
}

/// Whether `have` is `want` re-encoded at another address: the same instruction, a
/// RIP-relative operand still addressing the same absolute byte. (Branches are compared by
/// their callers, who know where each target should have gone.)
pub(super) fn same_relocated(want: &Instruction, have: &Instruction) -> bool {
    have.code() == want.code()
        && format_instr(have) == format_instr(want)
        && have.is_ip_rel_memory_operand() == want.is_ip_rel_memory_operand()
        && (!want.is_ip_rel_memory_operand()
            || have.ip_rel_memory_address() == want.ip_rel_memory_address())
}

/// The error for an instruction that did not survive relocation.
pub(super) fn relocation_mismatch(want: &Instruction, have: &Instruction) -> String {
    format!(
        "relocating `{}` produced `{}`",
        format_instr(want),
        format_instr(have)
    )
}

/// Address of a plain two-byte `syscall` (`0f 05`) in the image's executable ranges.
pub(super) fn find_syscall_instruction(image: &VdsoImage) -> Option<u64> {
    image.exec_ranges().iter().find_map(|&(start, len)| {
        let code = image.slice(start, usize::try_from(len).ok()?)?;
        Decoder::with_ip(64, code, start, DecoderOptions::NONE)
            .into_iter()
            .find(|i| i.code() == Code::Syscall && i.len() == 2)
            .map(|i| i.ip())
    })
}

/// Where a thread at `ip`, strictly inside the window `window` (at `window_addr`), continues
/// in the relocated copy `stub` (at `stub_addr`): the start of the same instruction there.
/// The relocation keeps one instruction per instruction (checked when the stub is built), so
/// a thread moved there runs exactly what it would have run in the window, then jumps back.
/// `None` when `ip` is not an instruction boundary of the window or the two do not correspond.
pub(super) fn equivalent_in_stub(
    window: &[u8],
    window_addr: u64,
    stub: &[u8],
    stub_addr: u64,
    ip: u64,
) -> Option<u64> {
    let win: Vec<Instruction> = Decoder::with_ip(64, window, window_addr, DecoderOptions::NONE)
        .into_iter()
        .collect();
    if win.iter().any(|i| i.is_invalid()) {
        return None;
    }
    let index = win.iter().position(|i| i.ip() == ip)?;
    if index == 0 {
        return None;
    }
    let relocated: Vec<Instruction> = Decoder::with_ip(64, stub, stub_addr, DecoderOptions::NONE)
        .into_iter()
        .take(win.len())
        .collect();
    let same = relocated.len() == win.len()
        && win
            .iter()
            .zip(&relocated)
            .all(|(w, r)| w.code() == r.code() && !r.is_invalid());
    same.then(|| relocated[index].ip())
}

/// `instr` in Intel syntax, for messages.
pub(super) fn format_instr(instr: &Instruction) -> String {
    let mut text = String::new();
    IntelFormatter::new().format(instr, &mut text);
    text
}

/// `bytes` as space-separated hex, for messages.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::test_support::{BASE, live, synth};

    #[test]
    fn live_syscall_instruction_is_found() {
        let image = live();
        let addr = find_syscall_instruction(&image).expect("the vDSO has a syscall fallback");
        assert_eq!(image.slice(addr, 2), Some(&[0x0f, 0x05][..]));
        assert!(
            image
                .exec_ranges()
                .iter()
                .any(|&(s, l)| addr >= s && addr + 2 <= s + l)
        );
    }

    #[test]
    fn a_thread_inside_a_window_maps_to_the_same_instruction_of_its_stub() {
        // push rbp; mov rbp,rsp; push r14 — relocated elsewhere (no RIP-relative operand).
        let window = [0x55, 0x48, 0x89, 0xe5, 0x41, 0x56];
        let stub = [0x55, 0x48, 0x89, 0xe5, 0x41, 0x56, 0xe9, 0, 0, 0, 0];
        let (w, s) = (0x7000_1000u64, 0x7100_0040u64);
        assert_eq!(equivalent_in_stub(&window, w, &stub, s, w + 1), Some(s + 1));
        assert_eq!(equivalent_in_stub(&window, w, &stub, s, w + 4), Some(s + 4));
        // Not an instruction boundary, or the entry itself: no answer.
        assert_eq!(equivalent_in_stub(&window, w, &stub, s, w + 2), None);
        assert_eq!(equivalent_in_stub(&window, w, &stub, s, w), None);
        // A stub that says something else.
        let other = [0x90, 0x90, 0x90, 0x90];
        assert_eq!(equivalent_in_stub(&window, w, &other, s, w + 1), None);
    }

    #[test]
    fn syscall_search_skips_prefixed_and_misaligned_bytes() {
        // mov eax,0x50f (b8 0f 05 00 00) hides 0f 05 inside; the real syscall is at +5.
        let image = synth(&[0xb8, 0x0f, 0x05, 0, 0, 0x0f, 0x05, 0xc3], &[]);
        assert_eq!(find_syscall_instruction(&image), Some(BASE + 5));
        let image = synth(&[0x90, 0xc3], &[]);
        assert_eq!(find_syscall_instruction(&image), None);
    }
}
