//! A classic-BPF interpreter for seccomp filters: what a filter program returns for one
//! `seccomp_data`, exactly as the kernel would compute it, or why that cannot be known.
//!
//! The interpreter is ours: the one cBPF crate on crates.io meant for seccomp testing
//! (`bpfvm` 0.1.2, 2022) panics on division by zero, out-of-range memory slots and arithmetic
//! overflow, has no `BPF_NEG` and no `BPF_X` jumps, and builds its input with an unsound
//! `from_raw_parts` — the wrong tool for deciding whether a process survives. The instruction
//! set a seccomp filter may use is small and fixed (`seccomp_check_filter` in
//! kernel/seccomp.c), so every instruction the kernel accepts is interpreted, exactly, and
//! everything else is "cannot tell".

use libc::sock_filter;

/// `sizeof(struct seccomp_data)`.
pub(super) const SECCOMP_DATA_LEN: usize = 64;
/// The longest filter program the kernel accepts (BPF_MAXINSNS).
pub(crate) use crate::ptrace::raw::MAX_FILTER_LEN;
/// Scratch memory words of a cBPF program (BPF_MEMWORDS).
const MEM_WORDS: usize = libc::BPF_MEMWORDS as usize;

/// The filters' combined return value, as `seccomp_run_filters` computes it: the action with
/// the highest precedence (lowest as a signed number, the data bits ignored) wins; among equal
/// actions the newest filter's value (its errno, say) is kept. `filters` is newest first.
pub(super) fn run_filters(
    filters: &[Vec<sock_filter>],
    data: &[u8; SECCOMP_DATA_LEN],
) -> std::result::Result<u32, String> {
    let mut ret = libc::SECCOMP_RET_ALLOW;
    for (i, program) in filters.iter().enumerate() {
        let cur = run_filter(program, data)
            .map_err(|why| format!("filter #{i} of {}, newest first: {why}", filters.len()))?;
        if action_only(cur) < action_only(ret) {
            ret = cur;
        }
    }
    Ok(ret)
}

/// `ACTION_ONLY` of kernel/seccomp.c: the action bits, compared as a signed number.
fn action_only(ret: u32) -> i32 {
    (ret & libc::SECCOMP_RET_ACTION_FULL) as i32
}

// The instructions `seccomp_check_filter` accepts, by full opcode.
pub(super) const LD_W_ABS: u32 = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
pub(super) const LD_W_LEN: u32 = libc::BPF_LD | libc::BPF_W | libc::BPF_LEN;
pub(super) const LDX_W_LEN: u32 = libc::BPF_LDX | libc::BPF_W | libc::BPF_LEN;
pub(super) const LD_IMM: u32 = libc::BPF_LD | libc::BPF_IMM;
pub(super) const LDX_IMM: u32 = libc::BPF_LDX | libc::BPF_IMM;
pub(super) const LD_MEM: u32 = libc::BPF_LD | libc::BPF_MEM;
pub(super) const LDX_MEM: u32 = libc::BPF_LDX | libc::BPF_MEM;
pub(super) const ST: u32 = libc::BPF_ST;
pub(super) const STX: u32 = libc::BPF_STX;
pub(super) const TAX: u32 = libc::BPF_MISC | libc::BPF_TAX;
pub(super) const TXA: u32 = libc::BPF_MISC | libc::BPF_TXA;
pub(super) const RET_K: u32 = libc::BPF_RET | libc::BPF_K;
pub(super) const RET_A: u32 = libc::BPF_RET | libc::BPF_A;
pub(super) const ALU_NEG: u32 = libc::BPF_ALU | libc::BPF_NEG;
pub(super) const JA: u32 = libc::BPF_JMP | libc::BPF_JA;

/// Runs one classic-BPF seccomp filter on `data`: its 32-bit return value, or — for anything
/// the kernel would not have accepted or whose result is not certain — why it cannot be known.
/// A and X start at 0; jumps only go forward, so the loop ends within `program.len()` steps.
pub(super) fn run_filter(
    program: &[sock_filter],
    data: &[u8; SECCOMP_DATA_LEN],
) -> std::result::Result<u32, String> {
    if program.is_empty() || program.len() > MAX_FILTER_LEN {
        return Err(format!("a program of {} instructions", program.len()));
    }
    let (mut a, mut x) = (0u32, 0u32);
    // None: never written; the kernel's checker rejects programs that could read such a slot.
    let mut mem = [None::<u32>; MEM_WORDS];
    let mut pc = 0usize;
    while let Some(ins) = program.get(pc) {
        let at = pc;
        let k = ins.k;
        let code = u32::from(ins.code);
        let bad = |what: &str| format!("instruction {at} (code {code:#06x}, k {k:#x}): {what}");
        pc += 1;
        let next = pc;
        // The target of a jump by `off` past the next instruction, which must be in the program.
        let target = |off: u32| {
            next.checked_add(off as usize)
                .filter(|t| *t < program.len())
                .ok_or_else(|| bad("jumps past the end of the program"))
        };
        match code {
            LD_W_ABS => {
                let off = k as usize;
                if !off.is_multiple_of(4) || off + 4 > SECCOMP_DATA_LEN {
                    return Err(bad("loads outside seccomp_data or unaligned"));
                }
                a = u32::from_le_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]]);
            }
            LD_W_LEN => a = SECCOMP_DATA_LEN as u32,
            LDX_W_LEN => x = SECCOMP_DATA_LEN as u32,
            LD_IMM => a = k,
            LDX_IMM => x = k,
            LD_MEM | LDX_MEM => {
                let v = mem.get(k as usize).copied().flatten().ok_or_else(|| {
                    bad("reads a scratch memory slot that is out of range or unset")
                })?;
                if code == LD_MEM {
                    a = v;
                } else {
                    x = v;
                }
            }
            ST | STX => {
                let slot = mem
                    .get_mut(k as usize)
                    .ok_or_else(|| bad("writes a scratch memory slot out of range"))?;
                *slot = Some(if code == ST { a } else { x });
            }
            TAX => x = a,
            TXA => a = x,
            ALU_NEG => a = a.wrapping_neg(),
            // Class, operation and source bits only: 0x04 | op | K/X.
            c if c & !0xf8 == libc::BPF_ALU => {
                let by_x = c & libc::BPF_X != 0;
                let src = if by_x { x } else { k };
                a = match c & 0xf0 {
                    libc::BPF_ADD => a.wrapping_add(src),
                    libc::BPF_SUB => a.wrapping_sub(src),
                    libc::BPF_MUL => a.wrapping_mul(src),
                    libc::BPF_DIV => match a.checked_div(src) {
                        Some(q) => q,
                        // X = 0 at run time: the kernel's translation of the program returns 0
                        // (bpf_convert_filter), which is SECCOMP_RET_KILL_THREAD.
                        None if by_x => return Ok(0),
                        // A constant divisor of 0 is refused when the filter is loaded.
                        None => return Err(bad("divides by zero")),
                    },
                    libc::BPF_OR => a | src,
                    libc::BPF_AND => a & src,
                    libc::BPF_XOR => a ^ src,
                    // The loader refuses constant shifts >= 32; by X the result is up to the
                    // JIT, so it is not certain.
                    libc::BPF_LSH => a
                        .checked_shl(src)
                        .ok_or_else(|| bad("shifts by 32 or more"))?,
                    libc::BPF_RSH => a
                        .checked_shr(src)
                        .ok_or_else(|| bad("shifts by 32 or more"))?,
                    // BPF_MOD, BPF_NEG with a source bit: not accepted by seccomp_check_filter.
                    _ => return Err(bad("an instruction seccomp does not accept")),
                };
            }
            JA => pc = target(k)?,
            c if c & !0xf8 == libc::BPF_JMP => {
                let src = if c & libc::BPF_X != 0 { x } else { k };
                let taken = match c & 0xf0 {
                    libc::BPF_JEQ => a == src,
                    libc::BPF_JGT => a > src,
                    libc::BPF_JGE => a >= src,
                    libc::BPF_JSET => a & src != 0,
                    _ => return Err(bad("an instruction seccomp does not accept")),
                };
                // Both branches must be in the program, as the loader requires.
                let (jt, jf) = (target(u32::from(ins.jt))?, target(u32::from(ins.jf))?);
                pc = if taken { jt } else { jf };
            }
            RET_K => return Ok(k),
            RET_A => return Ok(a),
            _ => return Err(bad("an instruction seccomp does not accept")),
        }
    }
    Err("the program ends without a return instruction".into())
}
