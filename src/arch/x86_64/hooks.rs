//! Planning the hook windows: the whole instructions a `jmp rel32` at each vDSO entry
//! overwrites, refused when moving them would change what they do (a control transfer in the
//! window, or code elsewhere that branches into it).

use iced_x86::{Decoder, DecoderOptions, Instruction, OpKind};

use super::decode::{control_transfer_kind, exec_bytes_from, format_instr, hex};
use super::jump::JUMP_LEN;
use crate::arch::HookPlan;
use crate::vdso::VdsoImage;

/// Plans hooks for `symbols`; see [`crate::arch::Arch::plan_hooks`].
pub(super) fn plan_hooks(
    image: &VdsoImage,
    symbols: &[&'static str],
) -> Result<Vec<HookPlan>, (&'static str, String)> {
    let mut plans: Vec<HookPlan> = Vec::with_capacity(symbols.len());
    for &symbol in symbols {
        let plan = plan_one(image, symbol).map_err(|reason| (symbol, reason))?;
        if let Some(other) = plans.iter().find(|p| overlaps(p, &plan)) {
            return Err((
                symbol,
                format!(
                    "its patch window {} overlaps the window of {} {}",
                    window_text(&plan),
                    other.symbol,
                    window_text(other)
                ),
            ));
        }
        plans.push(plan);
    }
    check_nothing_enters_windows(image, &plans)?;
    Ok(plans)
}

/// Decodes the window of one entry and checks it on its own.
fn plan_one(image: &VdsoImage, symbol: &'static str) -> Result<HookPlan, String> {
    let sym = image
        .symbol(symbol)
        .ok_or_else(|| "not found in the vDSO".to_string())?;
    let addr = sym.addr;
    if sym.size == 0 {
        return Err(format!(
            "the symbol at {addr:#x} has size 0, so the length of the function is unknown"
        ));
    }
    let code = exec_bytes_from(image, addr).ok_or_else(|| {
        format!("its address {addr:#x} is not inside an executable section of the vDSO")
    })?;

    let mut decoder = Decoder::with_ip(64, code, addr, DecoderOptions::NONE);
    let mut window = 0usize;
    while window < JUMP_LEN {
        let instr = decoder.decode();
        let ip = instr.ip();
        if instr.is_invalid() {
            let rest = &code[window..code.len().min(window + 15)];
            return Err(format!(
                "invalid or truncated instruction at {ip:#x} (+{window}) in the patch window \
                 (bytes {})",
                hex(rest)
            ));
        }
        if let Some(kind) = control_transfer_kind(&instr) {
            return Err(format!(
                "the patch window holds {kind} at {ip:#x} (+{window}, `{}`), which cannot be \
                 moved to the trampoline",
                format_instr(&instr)
            ));
        }
        window += instr.len();
    }

    if sym.size < window as u64 {
        return Err(format!(
            "the function is {} bytes long, shorter than its {window}-byte patch window",
            sym.size
        ));
    }
    let size = usize::try_from(sym.size)
        .unwrap_or(usize::MAX)
        .min(code.len());
    Ok(HookPlan {
        symbol,
        addr,
        original: code[..window].to_vec(),
        function: code[..size].to_vec(),
    })
}
/// Refuses any window that a direct branch anywhere in the executable code lands strictly
/// inside (it would land in the middle of our jump), or whose inside a RIP-relative operand
/// takes the address of (a possible indirect-branch target).
fn check_nothing_enters_windows(
    image: &VdsoImage,
    plans: &[HookPlan],
) -> Result<(), (&'static str, String)> {
    if plans.is_empty() {
        return Ok(());
    }
    for &(start, len) in image.exec_ranges() {
        let code = usize::try_from(len)
            .ok()
            .and_then(|len| image.slice(start, len))
            .ok_or_else(|| {
                (
                    plans[0].symbol,
                    format!(
                        "the executable range {start:#x}+{len:#x} lies outside the vDSO image, \
                         so branches into the patch windows cannot be ruled out"
                    ),
                )
            })?;
        let decoder = Decoder::with_ip(64, code, start, DecoderOptions::NONE);
        for instr in decoder {
            for target in code_references(&instr) {
                if let Some(plan) = plans.iter().find(|p| p.contains_strictly(target.0)) {
                    return Err((
                        plan.symbol,
                        format!(
                            "`{}` at {:#x} {} {:#x}, inside the patch window {}",
                            format_instr(&instr),
                            instr.ip(),
                            target.1,
                            target.0,
                            window_text(plan)
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Addresses `instr` may transfer control to: direct branch targets (jcc, jmp, call, loop,
/// jrcxz, xbegin) and RIP-relative memory operands.
fn code_references(instr: &Instruction) -> Vec<(u64, &'static str)> {
    let mut refs = Vec::new();
    if instr.is_invalid() {
        return refs;
    }
    for i in 0..instr.op_count() {
        if matches!(
            instr.op_kind(i),
            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
        ) {
            refs.push((instr.near_branch_target(), "branches to"));
        }
    }
    if instr.is_ip_rel_memory_operand() {
        refs.push((instr.ip_rel_memory_address(), "takes the address"));
    }
    refs
}

/// Whether two windows share a byte (two symbols aliasing one function, or abutting too closely).
fn overlaps(a: &HookPlan, b: &HookPlan) -> bool {
    let a_end = a.addr + a.original.len() as u64;
    let b_end = b.addr + b.original.len() as u64;
    a.addr < b_end && b.addr < a_end
}

/// The window as a half-open address range, for messages.
fn window_text(plan: &HookPlan) -> String {
    format!(
        "[{:#x}, {:#x})",
        plan.addr,
        plan.addr + plan.original.len() as u64
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::test_support::{BASE, ENTRIES, PROLOGUE, decode_all, live, synth};
    use crate::vdso::Symbol;

    #[test]
    fn live_entries_plan_with_whole_instruction_windows() {
        let image = live();
        let plans = plan_hooks(&image, &ENTRIES).unwrap_or_else(|(s, r)| panic!("{s}: {r}"));
        assert_eq!(plans.len(), 3);
        for (plan, name) in plans.iter().zip(ENTRIES) {
            let sym = image.symbol(name).unwrap();
            assert_eq!(plan.symbol, name);
            assert_eq!(plan.addr, sym.addr);
            assert!(plan.original.len() >= JUMP_LEN);
            assert!(plan.original.len() < JUMP_LEN + 15);
            assert!(plan.original.len() as u64 <= sym.size);
            assert_eq!(
                image.slice(plan.addr, plan.original.len()),
                Some(&plan.original[..])
            );
            // Whole instructions: decoding the window consumes it exactly, and dropping the
            // last instruction leaves fewer than JUMP_LEN bytes.
            let instrs = decode_all(&plan.original, plan.addr);
            assert!(instrs.iter().all(|i| !i.is_invalid()));
            assert_eq!(
                instrs.iter().map(Instruction::len).sum::<usize>(),
                plan.original.len()
            );
            assert!(plan.original.len() - instrs.last().unwrap().len() < JUMP_LEN);
            let text: Vec<String> = instrs.iter().map(format_instr).collect();
            eprintln!(
                "{name}: {}-byte window at {:#x}: {} [{}]",
                plan.original.len(),
                plan.addr,
                text.join("; "),
                hex(&plan.original)
            );
        }
    }

    fn refusal(code: &[u8], size: u64) -> String {
        let image = synth(code, &[("f", 0, size)]);
        let (sym, reason) = plan_hooks(&image, &["f"]).unwrap_err();
        assert_eq!(sym, "f");
        reason
    }

    #[track_caller]
    fn assert_refused(code: &[u8], size: u64, expected: &str) {
        let reason = refusal(code, size);
        assert!(
            reason.contains(expected),
            "expected {expected:?} in {reason:?}"
        );
    }

    #[test]
    fn window_with_control_transfer_is_refused() {
        // push rbp; jmp +0
        assert_refused(&[0x55, 0xeb, 0x00, 0x90, 0x90, 0x90], 32, "a jump");
        // push rbp; call +0
        assert_refused(&[0x55, 0xe8, 0, 0, 0, 0], 32, "a call");
        // xor eax,eax; ret
        assert_refused(&[0x31, 0xc0, 0xc3], 32, "a return");
        // xor eax,eax; syscall
        assert_refused(&[0x31, 0xc0, 0x0f, 0x05], 32, "a syscall");
        // test edi,edi; je +2
        assert_refused(&[0x85, 0xff, 0x74, 0x02], 32, "a conditional branch");
        // jmp [rip+0]
        assert_refused(&[0xff, 0x25, 0, 0, 0, 0], 32, "an indirect jump");
        // push rbp; call rax
        assert_refused(&[0x55, 0xff, 0xd0], 32, "an indirect call");
        // int3
        assert_refused(&[0xcc], 32, "an interrupt");
        // push rbp; ud2
        assert_refused(&[0x55, 0x0f, 0x0b], 32, "trapping");
        // push rbp; sysenter
        assert_refused(&[0x55, 0x0f, 0x34], 32, "a sysenter");
        // loop and jrcxz are conditional branches too
        assert_refused(&[0xe2, 0xfe], 32, "a conditional branch");
        assert_refused(&[0x55, 0xe3, 0x00], 32, "a conditional branch");
        // A ret *after* the window is fine: mov eax,1; ret
        let image = synth(&[0xb8, 1, 0, 0, 0, 0xc3], &[("f", 0, 6)]);
        let plans = plan_hooks(&image, &["f"]).unwrap();
        assert_eq!(plans[0].original, [0xb8, 1, 0, 0, 0]);
    }

    #[test]
    fn refusal_reason_names_the_instruction() {
        let reason = refusal(&[0x55, 0xc3], 32);
        assert!(reason.contains("ret"), "{reason}");
        assert!(reason.contains(&format!("{:#x}", BASE + 1)), "{reason}");
    }

    #[test]
    fn invalid_or_truncated_window_is_refused() {
        // 0x06 (push es) does not exist in 64-bit mode.
        assert_refused(&[0x55, 0x06, 0x90, 0x90, 0x90], 32, "invalid");
        // The executable range ends in the middle of the window.
        let image = VdsoImage::from_parts(
            BASE,
            vec![0x55, 0x48, 0x89, 0xe5, 0x41, 0x56],
            vec![Symbol {
                name: "f".into(),
                addr: BASE,
                size: 6,
            }],
            vec![(BASE, 3)],
        );
        let (_, reason) = plan_hooks(&image, &["f"]).unwrap_err();
        assert!(reason.contains("invalid or truncated"), "{reason}");
    }

    #[test]
    fn short_or_sizeless_functions_are_refused() {
        // xor eax,eax (2 bytes) then padding: the window needs 5.
        assert_refused(&[0x31, 0xc0], 2, "shorter than its 5-byte patch window");
        assert_refused(
            &[0x55, 0x48, 0x89, 0xe5, 0x41, 0x56],
            5,
            "6-byte patch window",
        );
        assert_refused(&[0x55, 0x48, 0x89, 0xe5, 0x41, 0x56], 0, "size 0");
    }

    #[test]
    fn missing_symbol_or_entry_outside_code_is_refused() {
        let image = synth(&[0x55], &[("f", 0, 32), ("outside", 0x1000, 32)]);
        let (sym, reason) = plan_hooks(&image, &["f", "nope"]).unwrap_err();
        assert_eq!((sym, reason.as_str()), ("nope", "not found in the vDSO"));
        let (sym, reason) = plan_hooks(&image, &["outside"]).unwrap_err();
        assert_eq!(sym, "outside");
        assert!(
            reason.contains("not inside an executable section"),
            "{reason}"
        );
    }

    fn with_branch_at(branch: &[u8], branch_off: usize) -> VdsoImage {
        let mut code = vec![0x90; 0x80];
        code[0x40..0x47].copy_from_slice(&PROLOGUE);
        code[branch_off..branch_off + branch.len()].copy_from_slice(branch);
        synth(&code, &[("f", 0x40, 0x20)])
    }

    #[test]
    fn branch_into_the_window_is_refused() {
        // jmp short at 0x10 to 0x41 (rel8 = 0x41 - 0x12 = 0x2f): inside the window.
        let image = with_branch_at(&[0xeb, 0x2f], 0x10);
        let (sym, reason) = plan_hooks(&image, &["f"]).unwrap_err();
        assert_eq!(sym, "f");
        assert!(reason.contains("inside the patch window"), "{reason}");
        assert!(reason.contains(&format!("{:#x}", BASE + 0x41)), "{reason}");
        // jne near at 0x60 back to 0x45 (the last byte of the window).
        let rel = (0x45i32 - 0x66).to_le_bytes();
        let image = with_branch_at(&[0x0f, 0x85, rel[0], rel[1], rel[2], rel[3]], 0x60);
        let (_, reason) = plan_hooks(&image, &["f"]).unwrap_err();
        assert!(reason.contains("inside the patch window"), "{reason}");
        // call at 0x00 to 0x42.
        let rel = (0x42i32 - 0x05).to_le_bytes();
        let image = with_branch_at(&[0xe8, rel[0], rel[1], rel[2], rel[3]], 0x00);
        assert!(plan_hooks(&image, &["f"]).is_err());
        // lea rax,[rip+x] taking the address of 0x43 (possible indirect branch target).
        let rel = (0x43i32 - 0x17).to_le_bytes();
        let image = with_branch_at(&[0x48, 0x8d, 0x05, rel[0], rel[1], rel[2], rel[3]], 0x10);
        let (_, reason) = plan_hooks(&image, &["f"]).unwrap_err();
        assert!(reason.contains("takes the address"), "{reason}");
    }

    #[test]
    fn branch_to_the_window_edges_is_fine() {
        // To the entry itself (0x40): the jump we write is what it will execute.
        let image = with_branch_at(&[0xeb, 0x2e], 0x10);
        assert!(plan_hooks(&image, &["f"]).is_ok());
        // To the first byte after the window (0x46): the stub jumps back there too.
        let image = with_branch_at(&[0xeb, 0x34], 0x10);
        assert_eq!(plan_hooks(&image, &["f"]).unwrap()[0].original.len(), 6);
    }

    #[test]
    fn branch_into_any_planned_window_blames_its_owner() {
        let mut code = vec![0x90; 0x80];
        code[0x00..0x07].copy_from_slice(&PROLOGUE);
        code[0x40..0x47].copy_from_slice(&PROLOGUE);
        code[0x70..0x72].copy_from_slice(&[0xeb, (0x42i32 - 0x72) as u8]); // jmp 0x42
        let image = synth(&code, &[("a", 0, 0x20), ("b", 0x40, 0x20)]);
        let (sym, _) = plan_hooks(&image, &["a", "b"]).unwrap_err();
        assert_eq!(sym, "b");
        assert!(plan_hooks(&image, &["a"]).is_ok());
    }

    #[test]
    fn overlapping_windows_are_refused() {
        let image = synth(&PROLOGUE, &[("a", 0, 0x20), ("alias", 0, 0x20)]);
        let (sym, reason) = plan_hooks(&image, &["a", "alias"]).unwrap_err();
        assert_eq!(sym, "alias");
        assert!(reason.contains("overlaps the window of a"), "{reason}");
    }
}
