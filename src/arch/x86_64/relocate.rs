//! x86_64 hook planning and relocation: which whole instructions a `jmp rel32` at a vDSO entry
//! overwrites, whether moving them is safe, and the stub that runs them elsewhere and jumps back.
//!
//! The "displaced prologue" technique of inline hooking: the window's instructions are re-encoded
//! at the stub address with iced-x86's `BlockEncoder`, which rewrites RIP-relative operands so
//! they keep addressing the same absolute bytes (the vvar pages below the vDSO). Relocation is
//! refused, never attempted, for anything whose meaning depends on where it runs or on what jumps
//! into it: branches, calls, returns, syscalls, traps, and windows that other code jumps into.

use iced_x86::{
    BlockEncoder, BlockEncoderOptions, Code, Decoder, DecoderOptions, FlowControl, Formatter,
    Instruction, InstructionBlock, IntelFormatter, OpKind,
};

use crate::arch::HookPlan;
use crate::vdso::VdsoImage;

/// Length of `jmp rel32` (`E9` + 4-byte displacement), the patch written over each entry.
pub const JUMP_LEN: usize = 5;

/// Opcode of `jmp rel32`.
const JMP_REL32: u8 = 0xE9;

/// Headroom kept below the ±2 GiB limit when checking reach before encoding, so that the exact
/// position of each instruction inside the stub cannot matter.
const REACH_MARGIN: u64 = 1 << 16;

/// Plans hooks for `symbols`; see [`crate::arch::Arch::plan_hooks`].
pub fn plan_hooks(
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
    Ok(HookPlan {
        symbol,
        addr,
        original: code[..window].to_vec(),
    })
}

/// The image's bytes from `addr` to the end of the executable range holding it.
fn exec_bytes_from(image: &VdsoImage, addr: u64) -> Option<&[u8]> {
    image.exec_ranges().iter().find_map(|&(start, len)| {
        let end = start.checked_add(len)?;
        if addr < start || addr >= end {
            return None;
        }
        image.slice(addr, usize::try_from(end - addr).ok()?)
    })
}

/// What kind of control transfer `instr` is, or `None` for an instruction that falls through.
fn control_transfer_kind(instr: &Instruction) -> Option<&'static str> {
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

/// Machine code for the stub at `stub_addr`; see [`crate::arch::Arch::build_stub`].
pub fn build_stub(plan: &HookPlan, stub_addr: u64, capacity: usize) -> Result<Vec<u8>, String> {
    let what = || format!("stub for {} at {stub_addr:#x}", plan.symbol);
    let window = plan.original.len() as u64;
    let back = plan
        .addr
        .checked_add(window)
        .ok_or_else(|| format!("{}: window at {:#x} wraps around", what(), plan.addr))?;

    // Re-decode the window: it must still be whole, relocatable instructions.
    let mut instrs = Vec::new();
    let mut decoder = Decoder::with_ip(64, &plan.original, plan.addr, DecoderOptions::NONE);
    while decoder.can_decode() {
        let instr = decoder.decode();
        if instr.is_invalid() {
            return Err(format!(
                "{}: the saved window {} does not decode into whole instructions",
                what(),
                hex(&plan.original)
            ));
        }
        if let Some(kind) = control_transfer_kind(&instr) {
            return Err(format!(
                "{}: the saved window holds {kind} (`{}`), which cannot be relocated",
                what(),
                format_instr(&instr)
            ));
        }
        instrs.push(instr);
    }
    if plan.original.len() < JUMP_LEN {
        return Err(format!(
            "{}: the saved window is {window} bytes, shorter than the {JUMP_LEN}-byte jump",
            what()
        ));
    }

    // Everything the stub addresses must be within reach of rel32 / disp32 from the stub.
    let mut targets = vec![(back, "the jump back".to_string())];
    for instr in instrs.iter().filter(|i| i.is_ip_rel_memory_operand()) {
        targets.push((
            instr.ip_rel_memory_address(),
            format!("the operand of `{}`", format_instr(instr)),
        ));
    }
    for (target, desc) in &targets {
        if target.abs_diff(stub_addr) > i32::MAX as u64 - REACH_MARGIN {
            return Err(format!(
                "{}: {desc} addresses {target:#x}, {} bytes away, beyond the ±2 GiB reach of a \
                 32-bit displacement; the code page must lie within ±2 GiB of the vDSO",
                what(),
                target.abs_diff(stub_addr)
            ));
        }
    }

    let jump_back = Instruction::with_branch(Code::Jmp_rel32_64, back)
        .map_err(|e| format!("{}: cannot build the jump back: {e}", what()))?;
    instrs.push(jump_back);
    // DONT_FIX_BRANCHES keeps the jump back exactly `Jmp_rel32_64`; the window has no branches.
    let encoded = BlockEncoder::encode(
        64,
        InstructionBlock::new(&instrs, stub_addr),
        BlockEncoderOptions::DONT_FIX_BRANCHES,
    )
    .map_err(|e| {
        format!(
            "{}: cannot relocate the window {}: {e} (the code page must lie within ±2 GiB of \
             the vDSO)",
            what(),
            hex(&plan.original)
        )
    })?;
    let code = encoded.code_buffer;
    if code.len() > capacity {
        return Err(format!(
            "{}: the relocated window and jump back need {} bytes, more than the {capacity} \
             bytes available",
            what(),
            code.len()
        ));
    }
    verify_stub(&instrs, &code, stub_addr).map_err(|e| format!("{}: {e}", what()))?;
    Ok(code)
}

/// Decodes the stub and checks it says what we asked for: the same instructions, RIP-relative
/// operands at the same absolute addresses, and a `jmp rel32` back as the last instruction.
fn verify_stub(expected: &[Instruction], code: &[u8], stub_addr: u64) -> Result<(), String> {
    let got: Vec<Instruction> = Decoder::with_ip(64, code, stub_addr, DecoderOptions::NONE)
        .into_iter()
        .collect();
    if got.len() != expected.len() {
        return Err(format!(
            "the encoded stub {} decodes into {} instructions, not {}",
            hex(code),
            got.len(),
            expected.len()
        ));
    }
    for (want, have) in expected.iter().zip(&got) {
        let same = have.code() == want.code()
            && format_instr(have) == format_instr(want)
            && have.is_ip_rel_memory_operand() == want.is_ip_rel_memory_operand()
            && (!want.is_ip_rel_memory_operand()
                || have.ip_rel_memory_address() == want.ip_rel_memory_address())
            && (want.code() != Code::Jmp_rel32_64
                || have.near_branch_target() == want.near_branch_target());
        if !same {
            return Err(format!(
                "relocating `{}` produced `{}`",
                format_instr(want),
                format_instr(have)
            ));
        }
    }
    Ok(())
}

/// `jmp rel32` at `from` reaching `to`, or `None` when `to` is beyond ±2 GiB.
pub fn encode_jump(from: u64, to: u64) -> Option<Vec<u8>> {
    let next = from.checked_add(JUMP_LEN as u64)?;
    let rel = i32::try_from(i128::from(to) - i128::from(next)).ok()?;
    let mut jump = Vec::with_capacity(JUMP_LEN);
    jump.push(JMP_REL32);
    jump.extend_from_slice(&rel.to_le_bytes());
    Some(jump)
}

/// Target of the `jmp rel32` at the start of `bytes` (read at `from`), if there is one.
pub fn decode_jump(bytes: &[u8], from: u64) -> Option<u64> {
    match bytes {
        [JMP_REL32, a, b, c, d, ..] => {
            let rel = i32::from_le_bytes([*a, *b, *c, *d]);
            Some(
                from.wrapping_add(JUMP_LEN as u64)
                    .wrapping_add_signed(i64::from(rel)),
            )
        }
        _ => None,
    }
}

/// Address of a plain two-byte `syscall` (`0f 05`) in the image's executable ranges.
pub fn find_syscall_instruction(image: &VdsoImage) -> Option<u64> {
    image.exec_ranges().iter().find_map(|&(start, len)| {
        let code = image.slice(start, usize::try_from(len).ok()?)?;
        Decoder::with_ip(64, code, start, DecoderOptions::NONE)
            .into_iter()
            .find(|i| i.code() == Code::Syscall && i.len() == 2)
            .map(|i| i.ip())
    })
}

fn overlaps(a: &HookPlan, b: &HookPlan) -> bool {
    let a_end = a.addr + a.original.len() as u64;
    let b_end = b.addr + b.original.len() as u64;
    a.addr < b_end && b.addr < a_end
}

fn window_text(plan: &HookPlan) -> String {
    format!(
        "[{:#x}, {:#x})",
        plan.addr,
        plan.addr + plan.original.len() as u64
    )
}

fn format_instr(instr: &Instruction) -> String {
    let mut text = String::new();
    IntelFormatter::new().format(instr, &mut text);
    text
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vdso::Symbol;

    const ENTRIES: [&str; 3] = ["__vdso_clock_gettime", "__vdso_gettimeofday", "__vdso_time"];

    fn live() -> VdsoImage {
        VdsoImage::of_current_process().expect("the test process has a parsable vDSO")
    }

    fn decode_all(code: &[u8], ip: u64) -> Vec<Instruction> {
        Decoder::with_ip(64, code, ip, DecoderOptions::NONE)
            .into_iter()
            .collect()
    }

    /// Checks a stub built from `plan` at `stub_addr` against the original instructions.
    fn assert_faithful_stub(plan: &HookPlan, stub: &[u8], stub_addr: u64) {
        let original = decode_all(&plan.original, plan.addr);
        let relocated = decode_all(stub, stub_addr);
        assert_eq!(relocated.len(), original.len() + 1, "{}", hex(stub));
        assert!(relocated.iter().all(|i| !i.is_invalid()));
        for (o, r) in original.iter().zip(&relocated) {
            assert_eq!(o.code(), r.code());
            assert_eq!(format_instr(o), format_instr(r));
            assert_eq!(o.is_ip_rel_memory_operand(), r.is_ip_rel_memory_operand());
            if o.is_ip_rel_memory_operand() {
                assert_eq!(
                    o.ip_rel_memory_address(),
                    r.ip_rel_memory_address(),
                    "`{}` moved from {:#x} to {:#x}",
                    format_instr(o),
                    o.ip(),
                    r.ip()
                );
            }
        }
        let last = relocated.last().unwrap();
        assert_eq!(last.code(), Code::Jmp_rel32_64);
        assert_eq!(
            last.near_branch_target(),
            plan.addr + plan.original.len() as u64
        );
        assert_eq!(last.next_ip(), stub_addr + stub.len() as u64);
    }

    // ---- the live vDSO of this test process -------------------------------------------------

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

    #[test]
    fn live_stubs_relocate_rip_relative_operands() {
        let image = live();
        let plans = plan_hooks(&image, &ENTRIES).unwrap();
        let stub_base = image.base() - (1 << 20);
        for (i, plan) in plans.iter().enumerate() {
            let stub_addr = stub_base + 64 * i as u64;
            let stub = build_stub(plan, stub_addr, 64).unwrap();
            assert_faithful_stub(plan, &stub, stub_addr);
        }
        // The stub page may also lie above the vDSO.
        let above = image.base() + (1 << 30);
        for plan in &plans {
            assert_faithful_stub(plan, &build_stub(plan, above, 64).unwrap(), above);
        }
    }

    #[test]
    fn live_stub_too_far_or_too_big_is_refused() {
        let image = live();
        let plans = plan_hooks(&image, &ENTRIES).unwrap();
        for plan in &plans {
            let far = image.base().wrapping_sub(3 << 30);
            let err = build_stub(plan, far, 64).unwrap_err();
            assert!(err.contains("±2 GiB"), "{err}");
            assert!(err.contains(plan.symbol), "{err}");
            let err = build_stub(plan, image.base() - 4096, plan.original.len()).unwrap_err();
            assert!(err.contains("more than the"), "{err}");
        }
    }

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

    /// One anonymous page mapped within ±2 GiB of this process's vDSO, unmapped on drop.
    struct NearPage {
        addr: u64,
        len: usize,
    }

    impl NearPage {
        fn new(near: u64) -> NearPage {
            let len = 4096usize;
            for _ in 0..16 {
                let addr = free_gap_near(near, len as u64).expect("a free gap near the vDSO");
                // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping; the fresh
                // anonymous page is owned by this NearPage and unmapped in Drop.
                let ptr = unsafe {
                    libc::mmap(
                        addr as *mut libc::c_void,
                        len,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                        -1,
                        0,
                    )
                };
                if ptr == libc::MAP_FAILED {
                    continue; // another test thread took the gap meanwhile: look again
                }
                assert_eq!(ptr as u64, addr);
                return NearPage { addr, len };
            }
            panic!("could not map a page within ±2 GiB of the vDSO");
        }

        /// Writes `code` at the start of the page and makes it r-x (never writable and
        /// executable at once).
        fn install(&self, code: &[u8]) {
            assert!(code.len() <= self.len);
            // SAFETY: the page is mapped read-write by us and `code` fits inside it.
            unsafe {
                std::ptr::copy_nonoverlapping(code.as_ptr(), self.addr as *mut u8, code.len());
            }
            // SAFETY: changes the protection of our own page only.
            let rc = unsafe {
                libc::mprotect(
                    self.addr as *mut libc::c_void,
                    self.len,
                    libc::PROT_READ | libc::PROT_EXEC,
                )
            };
            assert_eq!(rc, 0, "mprotect r-x: {}", std::io::Error::last_os_error());
        }
    }

    impl Drop for NearPage {
        fn drop(&mut self) {
            // SAFETY: unmaps the page this NearPage mapped; nothing refers to it any more.
            unsafe {
                libc::munmap(self.addr as *mut libc::c_void, self.len);
            }
        }
    }

    /// End of the x86_64 user address space (4-level paging, minus the guard page).
    const USER_TOP: u64 = 0x7fff_ffff_f000;

    /// A page-aligned free address range of `len` bytes as close as possible to `near`.
    fn free_gap_near(near: u64, len: u64) -> Option<u64> {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let mut ranges: Vec<(u64, u64)> = maps
            .lines()
            .filter_map(|l| {
                let (s, e) = l.split_whitespace().next()?.split_once('-')?;
                Some((
                    u64::from_str_radix(s, 16).ok()?,
                    u64::from_str_radix(e, 16).ok()?,
                ))
            })
            .filter(|&(start, _)| start < USER_TOP) // not [vsyscall]
            .collect();
        ranges.sort_unstable();
        let mut best: Option<u64> = None;
        let mut prev_end = 0x10_0000u64; // stay clear of the low, mmap_min_addr area
        for &(start, end) in ranges.iter().chain([(USER_TOP, u64::MAX)].iter()) {
            if start >= prev_end + 2 * len {
                // Candidates just above the previous mapping and just below the next one.
                for cand in [prev_end + len, start - 2 * len] {
                    if best.is_none_or(|b| cand.abs_diff(near) < b.abs_diff(near)) {
                        best = Some(cand);
                    }
                }
            }
            prev_end = prev_end.max(end);
        }
        best.filter(|b| b.abs_diff(near) < (1 << 31) - (1 << 20))
    }

    #[test]
    fn live_stubs_execute_and_return_the_real_time() {
        let image = live();
        let plans = plan_hooks(&image, &ENTRIES).unwrap();
        let page = NearPage::new(image.base());
        let mut code = Vec::new();
        let mut offsets = Vec::new();
        for plan in &plans {
            offsets.push(code.len());
            let stub = build_stub(plan, page.addr + code.len() as u64, 256).unwrap();
            assert_faithful_stub(plan, &stub, page.addr + code.len() as u64);
            code.extend_from_slice(&stub);
            code.resize(code.len().next_multiple_of(16), 0xcc);
        }
        page.install(&code);

        type ClockGettime = extern "C" fn(libc::clockid_t, *mut libc::timespec) -> i32;
        type Gettimeofday = extern "C" fn(*mut libc::timeval, *mut libc::c_void) -> i32;
        type Time = extern "C" fn(*mut libc::time_t) -> libc::time_t;
        let at = |i: usize| (page.addr + offsets[i] as u64) as usize;
        // SAFETY: each stub is the relocated prologue of the genuine (unpatched) vDSO function
        // of this process followed by a jump back into it, so it has that function's signature.
        let (clock_gettime, gettimeofday, time) = unsafe {
            (
                std::mem::transmute::<usize, ClockGettime>(at(0)),
                std::mem::transmute::<usize, Gettimeofday>(at(1)),
                std::mem::transmute::<usize, Time>(at(2)),
            )
        };

        let ns = |t: &libc::timespec| t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128;
        for clock in [
            libc::CLOCK_REALTIME,
            libc::CLOCK_MONOTONIC,
            libc::CLOCK_BOOTTIME,
            libc::CLOCK_REALTIME_COARSE,
        ] {
            let mut real = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            let mut ours = real;
            // SAFETY: valid out-pointer for clock_gettime.
            assert_eq!(unsafe { libc::clock_gettime(clock, &mut real) }, 0);
            assert_eq!(clock_gettime(clock, &mut ours), 0, "clock {clock}");
            let diff = ns(&ours) - ns(&real);
            assert!((0..50_000_000).contains(&diff), "clock {clock}: {diff} ns");
        }
        // An unknown clock goes through the vDSO's own syscall fallback: a raw -EINVAL.
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        assert_eq!(clock_gettime(1000, &mut ts), -libc::EINVAL);

        let mut real = libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        let mut ours = real;
        // SAFETY: valid out-pointer, null timezone.
        let rc = unsafe { libc::gettimeofday(&mut real, std::ptr::null_mut()) };
        assert_eq!(rc, 0);
        assert_eq!(gettimeofday(&mut ours, std::ptr::null_mut()), 0);
        let us = |t: &libc::timeval| t.tv_sec as i128 * 1_000_000 + t.tv_usec as i128;
        assert!((0..50_000).contains(&(us(&ours) - us(&real))));
        assert_eq!(gettimeofday(std::ptr::null_mut(), std::ptr::null_mut()), 0);

        let mut stored: libc::time_t = 0;
        let now = time(&mut stored);
        // SAFETY: null is allowed for time().
        let real = unsafe { libc::time(std::ptr::null_mut()) };
        assert_eq!(now, stored);
        assert!((real - now).abs() <= 1, "{now} vs {real}");
        drop(page);
    }

    // ---- synthetic images --------------------------------------------------------------------

    const BASE: u64 = 0x7f00_1234_0000;

    /// An image whose code is `code` (padded with nops), with `symbols` as (name, offset, size).
    fn synth(code: &[u8], symbols: &[(&str, u64, u64)]) -> VdsoImage {
        let mut bytes = code.to_vec();
        bytes.resize(bytes.len().max(256), 0x90);
        let len = bytes.len() as u64;
        let symbols = symbols
            .iter()
            .map(|&(name, off, size)| Symbol {
                name: name.into(),
                addr: BASE + off,
                size,
            })
            .collect();
        VdsoImage::from_parts(BASE, bytes, symbols, vec![(BASE, len)])
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

    /// push rbp; mov rbp,rsp; push r14; push rbx — a 6-byte window at 0x40.
    const PROLOGUE: [u8; 7] = [0x55, 0x48, 0x89, 0xe5, 0x41, 0x56, 0x53];

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

    #[test]
    fn synthetic_prologues_relocate() {
        // clock_gettime-like: push rbp; mov rbp,rsp; push r14 | push rbx
        // gettimeofday-like: push rbp; lea r10,[rip-0x6818] | mov rbp,rsp
        // time-like: cmp dword [rip-0x6ac6],0x7fffffff | lea rax,[rip-0x5ad1]
        let mut code = vec![0x90; 0x100];
        code[0x00..0x07].copy_from_slice(&PROLOGUE);
        code[0x40..0x4b].copy_from_slice(&[
            0x55, 0x4c, 0x8d, 0x15, 0xe8, 0x97, 0xff, 0xff, 0x48, 0x89, 0xe5,
        ]);
        code[0x80..0x91].copy_from_slice(&[
            0x81, 0x3d, 0x3a, 0x95, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x48, 0x8d, 0x05, 0x2f,
            0xa5, 0xff, 0xff,
        ]);
        let image = synth(
            &code,
            &[("cg", 0, 0x40), ("gtod", 0x40, 0x40), ("time", 0x80, 0x40)],
        );
        let plans = plan_hooks(&image, &["cg", "gtod", "time"]).unwrap();
        let lens: Vec<usize> = plans.iter().map(|p| p.original.len()).collect();
        assert_eq!(lens, [6, 8, 10]);
        assert_eq!(
            decode_all(&plans[1].original, plans[1].addr)[1].ip_rel_memory_address(),
            BASE + 0x48 - 0x6818
        );
        assert_eq!(
            decode_all(&plans[2].original, plans[2].addr)[0].ip_rel_memory_address(),
            BASE + 0x8a - 0x6ac6
        );

        for stub_addr in [BASE - (1 << 20), BASE + (1 << 24) + 3, BASE - 0x7000_0000] {
            for plan in &plans {
                let stub = build_stub(plan, stub_addr, 64).unwrap();
                assert_faithful_stub(plan, &stub, stub_addr);
            }
        }
        for far in [BASE + (3 << 30), BASE - (1 << 31), 0x1000] {
            for plan in &plans {
                let err = build_stub(plan, far, 64).unwrap_err();
                assert!(err.contains("beyond the ±2 GiB reach"), "{err}");
                assert!(err.contains(plan.symbol), "{err}");
            }
        }
    }

    #[test]
    fn build_stub_rejects_a_bad_saved_window() {
        let plan = |original: Vec<u8>| HookPlan {
            symbol: "f",
            addr: BASE,
            original,
        };
        let err = build_stub(&plan(vec![0x55, 0x48, 0x89]), BASE - 4096, 64).unwrap_err();
        assert!(err.contains("whole instructions"), "{err}");
        let err = build_stub(&plan(vec![0x55, 0xe8, 0, 0, 0, 0]), BASE - 4096, 64).unwrap_err();
        assert!(err.contains("a call"), "{err}");
        let err = build_stub(&plan(vec![0x55, 0x53]), BASE - 4096, 64).unwrap_err();
        assert!(err.contains("shorter than"), "{err}");
        let err = build_stub(&plan(PROLOGUE[..6].to_vec()), BASE - 4096, 10).unwrap_err();
        assert!(err.contains("11 bytes, more than the 10"), "{err}");
        assert_eq!(
            build_stub(&plan(PROLOGUE[..6].to_vec()), BASE - 4096, 11)
                .unwrap()
                .len(),
            11
        );
    }

    #[test]
    fn the_jump_back_is_always_rel32() {
        // Even when the entry is a few bytes away, where a rel8 would do.
        let plan = HookPlan {
            symbol: "f",
            addr: BASE,
            original: PROLOGUE[..6].to_vec(),
        };
        let stub = build_stub(&plan, BASE + 0x20, 64).unwrap();
        assert_eq!(stub.len(), 6 + JUMP_LEN);
        assert_eq!(stub[6], JMP_REL32);
        assert_eq!(decode_jump(&stub[6..], BASE + 0x26), Some(BASE + 6));
    }

    // ---- jumps and syscall ---------------------------------------------------------------------

    #[test]
    fn jumps_encode_and_decode() {
        let from = 0x7f00_0000_1000u64;
        for to in [
            from,
            from + 5,
            from - 0x10_0000,
            from + 0x10_0000,
            from + 5 + i32::MAX as u64,
            from + 5 - (1u64 << 31),
        ] {
            let jump = encode_jump(from, to).unwrap_or_else(|| panic!("{to:#x}"));
            assert_eq!(jump.len(), JUMP_LEN);
            assert_eq!(jump[0], 0xe9);
            assert_eq!(decode_jump(&jump, from), Some(to));
            let instr = decode_all(&jump, from)[0];
            assert_eq!(instr.code(), Code::Jmp_rel32_64);
            assert_eq!(instr.near_branch_target(), to);
        }
        assert_eq!(encode_jump(from, from + 5 + i32::MAX as u64 + 1), None);
        assert_eq!(encode_jump(from, from + 4 - (1u64 << 31)), None);
        assert_eq!(encode_jump(0x1000, u64::MAX), None);
        assert_eq!(encode_jump(u64::MAX - 2, 0), None);
        assert_eq!(decode_jump(&[0xe9, 0, 0, 0], from), None);
        assert_eq!(decode_jump(&[0xe8, 0, 0, 0, 0], from), None);
        assert_eq!(decode_jump(&[0x55, 0x48, 0x89, 0xe5, 0x41], from), None);
        assert_eq!(decode_jump(&[], from), None);
        assert_eq!(
            decode_jump(&[0xe9, 0xfb, 0xff, 0xff, 0xff, 0x90], from),
            Some(from)
        );
    }

    #[test]
    fn syscall_search_skips_prefixed_and_misaligned_bytes() {
        // mov eax,0x50f (b8 0f 05 00 00) hides 0f 05 inside; the real syscall is at +5.
        let image = synth(&[0xb8, 0x0f, 0x05, 0, 0, 0x0f, 0x05, 0xc3], &[]);
        assert_eq!(find_syscall_instruction(&image), Some(BASE + 5));
        let image = synth(&[0x90, 0xc3], &[]);
        assert_eq!(find_syscall_instruction(&image), None);
    }

    /// Random corruption of the live vDSO's code never makes planning or relocation panic.
    #[test]
    fn corrupted_code_never_panics() {
        let image = live();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let symbols: Vec<Symbol> = ENTRIES
            .iter()
            .map(|n| image.symbol(n).unwrap().clone())
            .collect();
        let (text, text_len) = image.exec_ranges()[0];
        for _ in 0..2_000 {
            let mut bytes = image.bytes().to_vec();
            for _ in 0..1 + next() % 16 {
                let off = (text - image.base() + next() % text_len) as usize;
                bytes[off] = next() as u8;
            }
            let mutated = VdsoImage::from_parts(
                image.base(),
                bytes,
                symbols.clone(),
                image.exec_ranges().to_vec(),
            );
            if let Ok(plans) = plan_hooks(&mutated, &ENTRIES) {
                for plan in &plans {
                    let _ = build_stub(plan, image.base() - 4096, 64);
                }
            }
            let _ = find_syscall_instruction(&mutated);
        }
    }
}
