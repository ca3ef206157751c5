//! Relocating a hook window: the window's instructions re-encoded at their stub in the code page
//! with iced-x86's `BlockEncoder`, followed by a `jmp rel32` back to the rest of the function.
//!
//! The "displaced prologue" technique of inline hooking: `BlockEncoder` rewrites RIP-relative
//! operands so they keep addressing the same absolute bytes (the vvar pages below the vDSO).
//! Relocation is refused, never attempted, for anything whose meaning depends on where it runs
//! (see [`super::hooks`] for what planning already refused).

use iced_x86::{
    BlockEncoder, BlockEncoderOptions, Code, Decoder, DecoderOptions, Instruction, InstructionBlock,
};

use super::decode::{
    control_transfer_kind, format_instr, hex, relocation_mismatch, same_relocated,
};
use super::jump::{JUMP_LEN, REACH};
use crate::arch::HookPlan;

/// Headroom kept below the ±2 GiB limit when checking reach before encoding, so that the exact
/// position of each instruction inside the stub cannot matter.
pub(super) const REACH_MARGIN: u64 = 1 << 16;

/// Machine code for the stub at `stub_addr`; see [`crate::arch::Arch::build_stub`].
pub(super) fn build_stub(
    plan: &HookPlan,
    stub_addr: u64,
    capacity: usize,
) -> Result<Vec<u8>, String> {
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
        // `REACH - 1`: forward, a rel32 reaches at most i32::MAX.
        if target.abs_diff(stub_addr) > REACH - 1 - REACH_MARGIN {
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
        let same = same_relocated(want, have)
            && (want.code() != Code::Jmp_rel32_64
                || have.near_branch_target() == want.near_branch_target());
        if !same {
            return Err(relocation_mismatch(want, have));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Arch;
    use crate::arch::x86_64::X86_64;
    use crate::arch::x86_64::hooks::plan_hooks;
    use crate::arch::x86_64::jump::{JMP_REL32, decode_jump};
    use crate::arch::x86_64::test_support::{BASE, ENTRIES, PROLOGUE, decode_all, live, synth};

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
    const USER_TOP: u64 = X86_64::USER_SPACE_TOP;

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
            function: original.clone(),
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
            function: PROLOGUE.to_vec(),
        };
        let stub = build_stub(&plan, BASE + 0x20, 64).unwrap();
        assert_eq!(stub.len(), 6 + JUMP_LEN);
        assert_eq!(stub[6], JMP_REL32);
        assert_eq!(decode_jump(&stub[6..], BASE + 0x26), Some(BASE + 6));
    }
}
