//! Copying a whole vDSO function into the code page, so that a fake can run the genuine code
//! inline instead of calling it: used for `time()`, whose genuine body (a few loads) costs less
//! than the call and return a fake would add around it.
//!
//! The copy is re-encoded at its slot with iced-x86's `BlockEncoder` (RIP-relative operands keep
//! addressing the vvar pages, branches inside the function keep their targets) and every `ret`
//! becomes a jump to where the fake continues. It is refused — the fake then calls the genuine
//! function as before — unless it is provably a leaf the fake can wrap without a frame: no
//! stack, no call, no system call, branches only to its own instructions, registers written only
//! among those the fake gives it, memory written only through `rdi` (which the fake sets to
//! NULL, as for the genuine `time(NULL)`).

use iced_x86::{
    BlockEncoder, BlockEncoderOptions, Code, Decoder, DecoderOptions, FlowControl, Instruction,
    InstructionBlock, InstructionInfoFactory, MemorySize, OpAccess, OpKind, Register,
};

use super::decode::{format_instr, hex, relocation_mismatch, same_relocated};
use super::jump::REACH;
use super::relocate::REACH_MARGIN;
use crate::arch::HookPlan;

/// Registers the copy may write: caller-saved ones the fake does not keep anything in (`rsi`
/// holds `tloc` across the copy; `rsp` and every callee-saved register are off limits).
const WRITABLE: [Register; 8] = [
    Register::RAX,
    Register::RCX,
    Register::RDX,
    Register::RDI,
    Register::R8,
    Register::R9,
    Register::R10,
    Register::R11,
];

/// The copy of `plan`'s whole function for the body slot at `at` (at most `capacity` bytes),
/// each `ret` a jump to `continue_at`; see [`crate::arch::Arch::build_body`].
pub(super) fn build_body(
    plan: &HookPlan,
    at: u64,
    capacity: usize,
    continue_at: u64,
) -> Result<Vec<u8>, String> {
    let what = || format!("copy of {} at {at:#x}", plan.symbol);
    let instrs = reachable_instructions(plan).map_err(|e| format!("{}: {e}", what()))?;
    let starts: Vec<u64> = instrs.iter().map(Instruction::ip).collect();
    let mut info = InstructionInfoFactory::new();
    let mut out = Vec::with_capacity(instrs.len());
    let mut targets = vec![(continue_at, "where the fake continues".to_string())];
    // The fake continues right after the slot: the copy can run into it.
    let falls_through = continue_at == at + capacity as u64;
    for instr in &instrs {
        check_leaf(instr, &starts, &mut info).map_err(|e| {
            format!(
                "{}: `{}` at {:#x} {e}",
                what(),
                format_instr(instr),
                instr.ip()
            )
        })?;
        if instr.is_ip_rel_memory_operand() {
            targets.push((
                instr.ip_rel_memory_address(),
                format!("the operand of `{}`", format_instr(instr)),
            ));
        }
        let last = instr.ip() == *starts.last().unwrap_or(&0);
        if instr.flow_control() == FlowControl::Return && last && falls_through {
            // The final `ret` becomes a `nop` (branches to it still land on it) and the rest
            // of the slot NOPs, running straight into where the fake continues: one taken
            // jump fewer on the common path.
            let mut nop = Instruction::with(Code::Nopd);
            nop.set_ip(instr.ip());
            out.push(nop);
        } else if instr.flow_control() == FlowControl::Return {
            let mut jump = Instruction::with_branch(Code::Jmp_rel32_64, continue_at)
                .map_err(|e| format!("{}: cannot build a jump: {e}", what()))?;
            jump.set_ip(instr.ip());
            out.push(jump);
        } else {
            out.push(*instr);
        }
    }
    for (target, desc) in &targets {
        if target.abs_diff(at) > REACH - 1 - REACH_MARGIN {
            return Err(format!(
                "{}: {desc} addresses {target:#x}, beyond the ±2 GiB reach of a 32-bit \
                 displacement",
                what()
            ));
        }
    }
    let encoded = BlockEncoder::encode(
        64,
        InstructionBlock::new(&out, at),
        BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
    )
    .map_err(|e| format!("{}: cannot relocate {}: {e}", what(), hex(&plan.function)))?;
    let mut code = encoded.code_buffer;
    if code.len() > capacity {
        return Err(format!(
            "{}: needs {} bytes, more than the {capacity} of the slot",
            what(),
            code.len()
        ));
    }
    if falls_through {
        code.extend(nops(capacity - code.len()));
    }
    let new_at: Vec<u64> = encoded
        .new_instruction_offsets
        .iter()
        .map(|&off| at + u64::from(off))
        .collect();
    verify(&out, &starts, &new_at, &code, at, continue_at)
        .map_err(|e| format!("{}: {e}", what()))?;
    Ok(code)
}

/// The function's instructions up to the last one control can reach: decoding stops after a
/// `ret` or `jmp` that no earlier branch jumps past (what follows is padding or another
/// function). Refused if the bytes end first or do not decode.
fn reachable_instructions(plan: &HookPlan) -> Result<Vec<Instruction>, String> {
    let mut decoder = Decoder::with_ip(64, &plan.function, plan.addr, DecoderOptions::NONE);
    let mut instrs = Vec::new();
    let mut furthest = plan.addr;
    while decoder.can_decode() {
        let instr = decoder.decode();
        if instr.is_invalid() {
            return Err(format!(
                "invalid instruction at {:#x} in {}",
                instr.ip(),
                hex(&plan.function)
            ));
        }
        if matches!(
            instr.flow_control(),
            FlowControl::ConditionalBranch | FlowControl::UnconditionalBranch
        ) && instr.op0_kind() == OpKind::NearBranch64
        {
            furthest = furthest.max(instr.near_branch_target());
        }
        let ends = matches!(
            instr.flow_control(),
            FlowControl::Return | FlowControl::UnconditionalBranch | FlowControl::IndirectBranch
        );
        let next = instr.next_ip();
        instrs.push(instr);
        if ends && next > furthest {
            return Ok(instrs);
        }
    }
    Err(format!(
        "its {} bytes end before a return that nothing branches past",
        plan.function.len()
    ))
}

/// Why `instr` cannot run inline in the fake, if it cannot.
fn check_leaf(
    instr: &Instruction,
    starts: &[u64],
    info: &mut InstructionInfoFactory,
) -> Result<(), String> {
    if matches!(
        instr.code(),
        Code::Syscall | Code::Sysenter | Code::Int3 | Code::Int_imm8
    ) {
        return Err("enters the kernel".into());
    }
    match instr.flow_control() {
        FlowControl::Next => {}
        // Replaced by a jump: its use of the stack goes with it.
        FlowControl::Return if instr.code() == Code::Retnq => return Ok(()),
        FlowControl::ConditionalBranch | FlowControl::UnconditionalBranch
            if instr.op0_kind() == OpKind::NearBranch64 =>
        {
            if !starts.contains(&instr.near_branch_target()) {
                return Err(format!(
                    "branches to {:#x}, not an instruction of the function",
                    instr.near_branch_target()
                ));
            }
        }
        other => return Err(format!("is a control transfer ({other:?})")),
    }
    let used = info.info(instr);
    for reg in used.used_registers() {
        let full = reg.register().full_register();
        if full == Register::RSP {
            return Err("uses the stack pointer".into());
        }
        let writes = matches!(
            reg.access(),
            OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
        );
        if writes && !WRITABLE.contains(&full) {
            return Err(format!("writes {:?}", reg.register()));
        }
    }
    for mem in used.used_memory() {
        if !matches!(mem.segment(), Register::DS | Register::SS | Register::None) {
            return Err(format!("addresses memory through {:?}", mem.segment()));
        }
        let writes = matches!(
            mem.access(),
            OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
        );
        let through_rdi = mem.base() == Register::RDI
            && mem.index() == Register::None
            && mem.displacement() == 0
            && mem.memory_size() == MemorySize::UInt64;
        if writes && !through_rdi {
            return Err("writes memory other than *rdi".into());
        }
    }
    Ok(())
}

/// `len` bytes of the recommended multi-byte NOPs (Intel SDM Vol. 2B, NOP), at most 9 each.
fn nops(mut len: usize) -> Vec<u8> {
    const FORMS: [&[u8]; 9] = [
        &[0x90],
        &[0x66, 0x90],
        &[0x0f, 0x1f, 0x00],
        &[0x0f, 0x1f, 0x40, 0x00],
        &[0x0f, 0x1f, 0x44, 0x00, 0x00],
        &[0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00],
        &[0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00],
        &[0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
        &[0x66, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
    ];
    let mut out = Vec::with_capacity(len);
    while len > 0 {
        let n = len.min(FORMS.len());
        out.extend_from_slice(FORMS[n - 1]);
        len -= n;
    }
    out
}

/// Decodes the copy and checks it says what was asked: the same instructions, RIP-relative
/// operands at the same absolute addresses, internal branches at the copies of their targets,
/// the rets turned into jumps to `continue_at` (the last one into a `nop`, when NOPs then
/// fill the slot up to `continue_at`).
fn verify(
    expected: &[Instruction],
    starts: &[u64],
    new_at: &[u64],
    code: &[u8],
    at: u64,
    continue_at: u64,
) -> Result<(), String> {
    let all: Vec<Instruction> = Decoder::with_ip(64, code, at, DecoderOptions::NONE)
        .into_iter()
        .collect();
    let got = &all[..expected.len().min(all.len())];
    let padding = &all[got.len()..];
    let padded_to_continue = padding
        .iter()
        .all(|i| i.mnemonic() == iced_x86::Mnemonic::Nop)
        && (padding.is_empty() || padding.last().is_some_and(|i| i.next_ip() == continue_at));
    if got.len() != expected.len() || new_at.len() != expected.len() || !padded_to_continue {
        return Err(format!(
            "the copy {} decodes into {} instructions, not {}",
            hex(code),
            got.len(),
            expected.len()
        ));
    }
    for (i, (want, have)) in expected.iter().zip(got).enumerate() {
        let branch = matches!(
            want.flow_control(),
            FlowControl::ConditionalBranch | FlowControl::UnconditionalBranch
        );
        let same = if branch {
            let target = if want.near_branch_target() == continue_at {
                continue_at
            } else {
                let index = starts
                    .iter()
                    .position(|&s| s == want.near_branch_target())
                    .ok_or("a branch target vanished")?;
                new_at[index]
            };
            have.mnemonic() == want.mnemonic() && have.near_branch_target() == target
        } else {
            same_relocated(want, have)
        };
        if !same || have.ip() != new_at[i] {
            return Err(relocation_mismatch(want, have));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x7fff_f7fc_0ac0;

    /// `__vdso_time` of Linux 6.18 on x86_64, as this machine's vDSO holds it (time namespace
    /// test, the vvar load, the `tloc` store, `xor edi, edi`, `ret`, then padding).
    const TIME_6_18: [u8; 48] = [
        0x81, 0x3d, 0x3a, 0x95, 0xff, 0xff, 0xff, 0xff, 0xff,
        0x7f, // cmp [rip-0x6ac6], 0x7fffffff
        0x48, 0x8d, 0x05, 0x2f, 0xa5, 0xff, 0xff, // lea rax, [rip-0x5ad1]
        0x74, 0x06, // je +6
        0x48, 0x2d, 0x00, 0x10, 0x00, 0x00, // sub rax, 0x1000
        0x48, 0x8b, 0x40, 0x28, // mov rax, [rax+0x28]
        0x48, 0x85, 0xff, // test rdi, rdi
        0x74, 0x03, // je +3
        0x48, 0x89, 0x07, // mov [rdi], rax
        0x31, 0xff, // xor edi, edi
        0xc3, // ret
        0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00, // nop
    ];

    fn plan(function: &[u8]) -> HookPlan {
        HookPlan {
            symbol: "__vdso_time",
            addr: BASE,
            original: function[..function.len().min(10)].to_vec(),
            function: function.to_vec(),
        }
    }

    fn decode(code: &[u8], at: u64) -> Vec<Instruction> {
        Decoder::with_ip(64, code, at, DecoderOptions::NONE)
            .into_iter()
            .collect()
    }

    #[test]
    fn the_genuine_time_of_6_18_is_copied_with_its_ret_a_jump_back() {
        let at = BASE + 0x10_0000;
        let done = at + 0x100; // elsewhere: the ret must jump there
        let body = build_body(&plan(&TIME_6_18), at, 64, done).unwrap();
        let got = decode(&body, at);
        let orig = decode(&TIME_6_18[..40], BASE);
        assert_eq!(got.len(), orig.len(), "the padding is left out");
        // The vvar operands address the same bytes from the new place.
        for (o, g) in orig.iter().zip(&got) {
            if o.is_ip_rel_memory_operand() {
                assert_eq!(g.ip_rel_memory_address(), o.ip_rel_memory_address());
            }
        }
        // Both `je`s land on the copies of their targets.
        assert_eq!(got[2].near_branch_target(), got[4].ip());
        assert_eq!(got[6].near_branch_target(), got[8].ip());
        // The `ret` is gone: a jump to where the fake continues.
        assert!(got.iter().all(|i| i.flow_control() != FlowControl::Return));
        assert_eq!(got.last().unwrap().mnemonic(), iced_x86::Mnemonic::Jmp);
        assert_eq!(got.last().unwrap().near_branch_target(), done);
    }

    #[test]
    fn a_copy_that_ends_where_the_fake_continues_runs_into_it() {
        // The slot's end is where the fake continues (the blob's layout): the final `ret`
        // becomes a `nop` and NOPs fill the slot, so the common path takes no jump there.
        let at = BASE + 0x10_0000;
        let body = build_body(&plan(&TIME_6_18), at, 64, at + 64).unwrap();
        assert_eq!(body.len(), 64);
        let got = decode(&body, at);
        assert!(got.iter().all(|i| i.flow_control() == FlowControl::Next
            || i.flow_control() == FlowControl::ConditionalBranch));
        assert_eq!(got[9].mnemonic(), iced_x86::Mnemonic::Nop, "the ret");
        assert_eq!(
            got[6].near_branch_target(),
            got[8].ip(),
            "je over the store"
        );
        assert!(
            got[10..]
                .iter()
                .all(|i| i.mnemonic() == iced_x86::Mnemonic::Nop)
        );
        assert_eq!(got.last().unwrap().next_ip(), at + 64);
        assert_eq!(nops(24).len(), 24);
    }

    #[test]
    fn a_function_that_is_not_a_frameless_leaf_is_refused() {
        let at = BASE + 0x1000;
        let refuse = |bytes: &[u8], why: &str| {
            let err = build_body(&plan(bytes), at, 64, at + 64).unwrap_err();
            assert!(err.contains(why), "{why}: {err}");
            assert!(err.contains("__vdso_time"), "{err}");
        };
        refuse(&[0x55, 0x31, 0xc0, 0x5d, 0xc3], "stack pointer"); // push rbp .. pop rbp
        refuse(&[0xe8, 0, 0, 0, 0, 0xc3], "control transfer"); // call
        refuse(&[0x0f, 0x05, 0xc3], "enters the kernel"); // syscall
        refuse(&[0x48, 0x89, 0xc6, 0xc3], "writes RSI"); // mov rsi, rax
        refuse(&[0x48, 0x89, 0xc3, 0xc3], "writes RBX"); // mov rbx, rax
        refuse(&[0x48, 0x89, 0x06, 0xc3], "other than *rdi"); // mov [rsi], rax
        refuse(
            &[0x64, 0x48, 0x8b, 0x04, 0x25, 0, 0, 0, 0, 0xc3],
            "through FS",
        ); // mov rax, fs:[0]
        refuse(&[0xff, 0xe0], "control transfer"); // jmp rax
        refuse(&[0xeb, 0x01, 0xb0, 0xc3, 0xc3], "not an instruction"); // jmp into `mov al, 0xc3`
        refuse(&[0x31, 0xc0, 0x90], "end before a return"); // falls off the end
        refuse(&[0xc2, 0x08, 0x00], "control transfer"); // ret 8
    }

    #[test]
    fn branches_inside_and_a_ret_before_the_end_are_followed() {
        // xor eax, eax; test rdi, rdi; je +1; ret; inc eax; ret
        let f = [
            0x31, 0xc0, 0x48, 0x85, 0xff, 0x74, 0x01, 0xc3, 0xff, 0xc0, 0xc3, 0xcc,
        ];
        let at = BASE - 0x2000;
        let body = build_body(&plan(&f), at, 64, at + 0x100).unwrap();
        let got = decode(&body, at);
        assert_eq!(got.len(), 6, "the int3 after the second ret is not copied");
        assert_eq!(got[2].near_branch_target(), got[4].ip());
        assert_eq!(got[3].near_branch_target(), at + 0x100);
        assert_eq!(got[5].near_branch_target(), at + 0x100);
        // Running into the fake: the first ret still jumps, the last is a `nop`.
        let body = build_body(&plan(&f), at, 64, at + 64).unwrap();
        let got = decode(&body, at);
        assert_eq!(got[3].near_branch_target(), at + 64);
        assert_eq!(got[5].mnemonic(), iced_x86::Mnemonic::Nop);
    }

    #[test]
    fn a_copy_that_does_not_fit_or_reach_is_refused() {
        let err = build_body(&plan(&TIME_6_18), BASE + 0x1000, 20, BASE + 0x1100).unwrap_err();
        assert!(err.contains("more than the 20"), "{err}");
        let far = BASE + (3 << 30);
        let err = build_body(&plan(&TIME_6_18), far, 64, far + 64).unwrap_err();
        assert!(err.contains("reach"), "{err}");
    }
}
