//! Would a target thread's seccomp policy let timeskew's injected system calls through?
//!
//! A hardened target (systemd's `SystemCallFilter=`, a sandbox, a browser renderer) may be
//! killed, sent SIGSYS or left waiting for a supervisor by a call it never makes itself — the
//! `mmap` timeskew runs inside it. So before the first injected call, [`check`] reads the
//! thread's seccomp mode from `/proc`, reads every filter program back from the kernel
//! (`PTRACE_SECCOMP_GET_FILTER`) and runs each on the exact `seccomp_data` the kernel will build
//! for each planned call: number, arch, instruction pointer, all six arguments. Anything but
//! `SECCOMP_RET_ALLOW`/`SECCOMP_RET_LOG` is refused before anything is changed, and so is a
//! filter timeskew cannot read or cannot evaluate.
//!
//! The interpreter below is ours: the one cBPF crate on crates.io meant for seccomp testing
//! (`bpfvm` 0.1.2, 2022) panics on division by zero, out-of-range memory slots and arithmetic
//! overflow, has no `BPF_NEG` and no `BPF_X` jumps, and builds its input with an unsound
//! `from_raw_parts` — the wrong tool for deciding whether a process survives. The instruction
//! set a seccomp filter may use is small and fixed (`seccomp_check_filter` in
//! kernel/seccomp.c), so every instruction the kernel accepts is interpreted, exactly, and
//! everything else is "cannot tell".

use libc::sock_filter;
use nix::errno::Errno;
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// One system call timeskew is about to run in a target thread, as the filter will see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PlannedSyscall {
    pub name: &'static str,
    pub nr: i64,
    pub args: [u64; 6],
    /// `instruction_pointer` as `seccomp_data` shows it: the address right AFTER the syscall
    /// instruction.
    pub ip: u64,
}

/// `AUDIT_ARCH_*` of the native syscall ABI (include/uapi/linux/audit.h), the `arch` field of
/// `seccomp_data` for the calls we inject.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_NATIVE: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH_NATIVE: u32 = 0xC000_00B7;

/// `sizeof(struct seccomp_data)`.
const SECCOMP_DATA_LEN: usize = 64;
/// The longest filter program the kernel accepts (BPF_MAXINSNS).
pub(crate) const MAX_FILTER_LEN: usize = libc::BPF_MAXINSNS as usize;
/// Scratch memory words of a cBPF program (BPF_MEMWORDS).
const MEM_WORDS: usize = libc::BPF_MEMWORDS as usize;
/// The kernel caps the instructions of all filters of a thread at 256 Ki, each filter costing
/// 4 more: no thread has more filters than this.
const MAX_FILTERS: u32 = 1 << 16;
/// `MAX_ERRNO`: a larger SECCOMP_RET_ERRNO value is capped to it by the kernel.
const MAX_ERRNO: u16 = 4095;

/// The only calls strict mode (SECCOMP_MODE_STRICT) lets through: `mode1_syscalls` in
/// kernel/seccomp.c. Any other kills the thread with SIGKILL.
const STRICT_ALLOWED: [i64; 4] = [
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_exit,
    libc::SYS_rt_sigreturn,
];

/// `tid` is a thread of `pid` that the caller holds in a ptrace-stop (PTRACE_SEIZE +
/// PTRACE_INTERRUPT). Ok(()) when every call would be allowed (SECCOMP_RET_ALLOW or _LOG by
/// every filter), else an error naming the call and what the filter would do.
///
/// The answer holds as long as the thread's filters do not change: a thread can only gain a
/// filter by installing one itself or through a sibling's SECCOMP_FILTER_FLAG_TSYNC, so the
/// caller should hold every thread of the process, as timeskew does while it injects.
pub(crate) fn check(pid: i32, tid: Pid, calls: &[PlannedSyscall]) -> Result<()> {
    let Some(first) = calls.first() else {
        return Ok(());
    };
    let status = crate::target::procfs::seccomp_status(pid, tid.as_raw())?;
    match status.mode {
        0 => Ok(()),
        1 => match calls.iter().find(|c| !STRICT_ALLOWED.contains(&c.nr)) {
            None => Ok(()),
            Some(call) => Err(refuse(
                pid,
                tid,
                call,
                format!(
                    "the thread is in seccomp strict mode (SECCOMP_MODE_STRICT), which allows only \
                     read, write, exit and rt_sigreturn and kills the thread (SIGKILL) on {}()",
                    call.name
                ),
            )),
        },
        2 => {
            let filters = read_filters(pid, tid, first)?;
            if let Some(count) = status.filters
                && count as usize != filters.len()
            {
                return Err(refuse(
                    pid,
                    tid,
                    first,
                    format!(
                        "its seccomp filters changed while timeskew read them (/proc says {count}, \
                         PTRACE_SECCOMP_GET_FILTER gave {}), so timeskew cannot tell what they \
                         would do",
                        filters.len()
                    ),
                ));
            }
            for call in calls {
                let reason = match run_filters(&filters, &seccomp_data(call)) {
                    Ok(ret) => match Action::from_ret(ret) {
                        action if action.allows() => continue,
                        action => action.describe(call.name),
                    },
                    Err(why) => format!(
                        "timeskew cannot tell what its seccomp filters would do with {}() ({why}), \
                         so it will not risk it",
                        call.name
                    ),
                };
                return Err(refuse(pid, tid, call, reason));
            }
            Ok(())
        }
        mode => Err(refuse(
            pid,
            tid,
            first,
            format!(
                "its seccomp mode is {mode}, which timeskew does not know (0 = off, 1 = strict, \
                 2 = filter; 3 = the kernel already decided to kill it)"
            ),
        )),
    }
}

fn refuse(pid: i32, tid: Pid, call: &PlannedSyscall, reason: String) -> Error {
    Error::Seccomp {
        pid,
        tid: tid.as_raw(),
        syscall: call.name,
        reason,
    }
}

/// Every filter of the thread, newest first: the order the kernel runs them in.
fn read_filters(pid: i32, tid: Pid, first: &PlannedSyscall) -> Result<Vec<Vec<sock_filter>>> {
    let mut filters = Vec::new();
    for index in 0..MAX_FILTERS {
        match crate::ptrace::raw::ptrace_seccomp_get_filter(tid, index) {
            Ok(program) => filters.push(program),
            // Past the oldest filter.
            Err(Errno::ENOENT) => break,
            Err(Errno::ESRCH) => {
                return Err(Error::from_errno(
                    pid,
                    tid.as_raw(),
                    "read its seccomp filters",
                    Errno::ESRCH,
                ));
            }
            Err(e) => return Err(refuse(pid, tid, first, unreadable(index, e))),
        }
    }
    // PTRACE_SECCOMP_GET_FILTER numbers them oldest first (get_nth_filter counts back from
    // the newest), checked by the test `real_stacked_filters_newest_first`.
    filters.reverse();
    if filters.is_empty() {
        return Err(refuse(
            pid,
            tid,
            first,
            "it is in seccomp filter mode but the kernel returned no filter, so timeskew cannot \
             tell what would be allowed"
                .into(),
        ));
    }
    Ok(filters)
}

/// Why a filter could not be read, in words (the errors of `seccomp_get_filter`).
fn unreadable(index: u32, e: Errno) -> String {
    let why = match e {
        Errno::EACCES => {
            "reading them needs CAP_SYS_ADMIN, and a timeskew that is not itself under seccomp"
        }
        Errno::EMEDIUMTYPE => {
            "this kernel keeps no copy of the filter program (CONFIG_CHECKPOINT_RESTORE is off)"
        }
        Errno::EINVAL => "this kernel does not support PTRACE_SECCOMP_GET_FILTER for the thread",
        _ => e.desc(),
    };
    format!(
        "its seccomp filter #{index} (oldest first) cannot be read (PTRACE_SECCOMP_GET_FILTER: {e}: {why}), so \
         timeskew cannot tell whether the call would be allowed"
    )
}

/// `struct seccomp_data` for `call`, as `populate_seccomp_data` fills it: little endian.
fn seccomp_data(call: &PlannedSyscall) -> [u8; SECCOMP_DATA_LEN] {
    let mut d = [0u8; SECCOMP_DATA_LEN];
    // The kernel takes the number from orig_ax as an int.
    d[0..4].copy_from_slice(&(call.nr as i32).to_le_bytes());
    d[4..8].copy_from_slice(&AUDIT_ARCH_NATIVE.to_le_bytes());
    d[8..16].copy_from_slice(&call.ip.to_le_bytes());
    for (i, arg) in call.args.iter().enumerate() {
        d[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_le_bytes());
    }
    d
}

/// The filters' combined return value, as `seccomp_run_filters` computes it: the action with
/// the highest precedence (lowest as a signed number, the data bits ignored) wins; among equal
/// actions the newest filter's value (its errno, say) is kept. `filters` is newest first.
fn run_filters(
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
const LD_W_ABS: u32 = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
const LD_W_LEN: u32 = libc::BPF_LD | libc::BPF_W | libc::BPF_LEN;
const LDX_W_LEN: u32 = libc::BPF_LDX | libc::BPF_W | libc::BPF_LEN;
const LD_IMM: u32 = libc::BPF_LD | libc::BPF_IMM;
const LDX_IMM: u32 = libc::BPF_LDX | libc::BPF_IMM;
const LD_MEM: u32 = libc::BPF_LD | libc::BPF_MEM;
const LDX_MEM: u32 = libc::BPF_LDX | libc::BPF_MEM;
const ST: u32 = libc::BPF_ST;
const STX: u32 = libc::BPF_STX;
const TAX: u32 = libc::BPF_MISC | libc::BPF_TAX;
const TXA: u32 = libc::BPF_MISC | libc::BPF_TXA;
const RET_K: u32 = libc::BPF_RET | libc::BPF_K;
const RET_A: u32 = libc::BPF_RET | libc::BPF_A;
const ALU_NEG: u32 = libc::BPF_ALU | libc::BPF_NEG;
const JA: u32 = libc::BPF_JMP | libc::BPF_JA;

/// Runs one classic-BPF seccomp filter on `data`: its 32-bit return value, or — for anything
/// the kernel would not have accepted or whose result is not certain — why it cannot be known.
/// A and X start at 0; jumps only go forward, so the loop ends within `program.len()` steps.
fn run_filter(
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

/// What the kernel does with a call, decoded from a filter's return value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    KillProcess,
    KillThread,
    Trap,
    /// The errno the call returns, capped as the kernel caps it; 0 skips the call, returning 0.
    Errno(u16),
    UserNotif,
    Trace,
    Log,
    Allow,
    /// An action value the kernel does not define; it treats it as SECCOMP_RET_KILL_PROCESS.
    Unknown(u32),
}

impl Action {
    fn from_ret(ret: u32) -> Action {
        let data = (ret & libc::SECCOMP_RET_DATA) as u16;
        match ret & libc::SECCOMP_RET_ACTION_FULL {
            libc::SECCOMP_RET_KILL_PROCESS => Action::KillProcess,
            libc::SECCOMP_RET_KILL_THREAD => Action::KillThread,
            libc::SECCOMP_RET_TRAP => Action::Trap,
            libc::SECCOMP_RET_ERRNO => Action::Errno(data.min(MAX_ERRNO)),
            libc::SECCOMP_RET_USER_NOTIF => Action::UserNotif,
            libc::SECCOMP_RET_TRACE => Action::Trace,
            libc::SECCOMP_RET_LOG => Action::Log,
            libc::SECCOMP_RET_ALLOW => Action::Allow,
            other => Action::Unknown(other),
        }
    }

    fn allows(self) -> bool {
        matches!(self, Action::Allow | Action::Log)
    }

    /// What happens, in words, for a refusal message.
    fn describe(self, call: &str) -> String {
        match self {
            Action::KillProcess => format!(
                "its seccomp filter would kill the process (SECCOMP_RET_KILL_PROCESS) on {call}()"
            ),
            Action::KillThread => format!(
                "its seccomp filter would kill the thread (SECCOMP_RET_KILL_THREAD) on {call}()"
            ),
            Action::Trap => format!(
                "its seccomp filter would send it SIGSYS (SECCOMP_RET_TRAP) on {call}(), which \
                 kills it unless it handles SIGSYS"
            ),
            Action::Errno(0) => format!(
                "its seccomp filter would skip {call}() and make it return 0 (SECCOMP_RET_ERRNO \
                 with errno 0)"
            ),
            Action::Errno(n) => {
                let errno = Errno::from_raw(i32::from(n));
                let name = if errno == Errno::UnknownErrno {
                    n.to_string()
                } else {
                    format!("{errno:?}")
                };
                format!(
                    "its seccomp filter would fail {call}() with errno {name} (SECCOMP_RET_ERRNO)"
                )
            }
            Action::UserNotif => format!(
                "its seccomp filter hands {call}() to a user-space supervisor \
                 (SECCOMP_RET_USER_NOTIF), which may be a thread timeskew has stopped"
            ),
            Action::Trace => format!(
                "its seccomp filter would report {call}() to a tracer (SECCOMP_RET_TRACE); with \
                 timeskew as the tracer the call would fail with ENOSYS"
            ),
            Action::Unknown(v) => format!(
                "its seccomp filter returns action {v:#010x} on {call}(), which the kernel does \
                 not define and treats as SECCOMP_RET_KILL_PROCESS"
            ),
            Action::Log | Action::Allow => format!("its seccomp filter allows {call}()"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, OwnedFd};

    use nix::sys::ptrace;
    use nix::sys::signal::Signal;
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

    // --- building programs ---------------------------------------------------------------

    fn stmt(code: u32, k: u32) -> sock_filter {
        sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        }
    }

    fn jump(code: u32, k: u32, jt: u8, jf: u8) -> sock_filter {
        sock_filter {
            code: code as u16,
            jt,
            jf,
            k,
        }
    }

    const ARCH: u32 = 4;
    const IP_LO: u32 = 8;
    const IP_HI: u32 = 12;
    const fn arg_lo(i: u32) -> u32 {
        16 + 8 * i
    }
    const fn arg_hi(i: u32) -> u32 {
        20 + 8 * i
    }
    const LD_ABS: u32 = LD_W_ABS;
    const JEQ_K: u32 = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    const JEQ_X: u32 = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_X;
    const JGT_K: u32 = libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K;
    const JGT_X: u32 = libc::BPF_JMP | libc::BPF_JGT | libc::BPF_X;
    const JGE_K: u32 = libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K;
    const JGE_X: u32 = libc::BPF_JMP | libc::BPF_JGE | libc::BPF_X;
    const JSET_K: u32 = libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K;
    const JSET_X: u32 = libc::BPF_JMP | libc::BPF_JSET | libc::BPF_X;
    const fn alu(op: u32, src: u32) -> u32 {
        libc::BPF_ALU | op | src
    }
    const K: u32 = libc::BPF_K;
    const X: u32 = libc::BPF_X;
    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;

    /// The usual filter: other arches and other calls allowed, `nr` gets `action`.
    fn on_call(nr: i64, action: u32) -> Vec<sock_filter> {
        vec![
            stmt(LD_ABS, ARCH),
            jump(JEQ_K, AUDIT_ARCH_NATIVE, 1, 0),
            stmt(RET_K, ALLOW),
            stmt(LD_ABS, 0),
            jump(JEQ_K, nr as u32, 0, 1),
            stmt(RET_K, action),
            stmt(RET_K, ALLOW),
        ]
    }

    /// Like systemd's MemoryDenyWriteExecute=: mmap with PROT_WRITE|PROT_EXEC together, and
    /// mprotect/pkey_mprotect with PROT_EXEC, fail with EPERM (both halves of the 64-bit prot
    /// argument checked, as libseccomp does).
    fn mdwe_filter() -> Vec<sock_filter> {
        let wx = (libc::PROT_WRITE | libc::PROT_EXEC) as u32;
        vec![
            stmt(LD_ABS, ARCH),
            jump(JEQ_K, AUDIT_ARCH_NATIVE, 1, 0),
            stmt(RET_K, ALLOW),
            stmt(LD_ABS, 0),
            jump(JEQ_K, libc::SYS_mmap as u32, 0, 6),
            // mmap: prot is args[2]; hi word must be 0 and lo & (W|X) == W|X to deny.
            stmt(LD_ABS, arg_hi(2)),
            jump(JEQ_K, 0, 0, 3),
            stmt(LD_ABS, arg_lo(2)),
            stmt(alu(libc::BPF_AND, K), wx),
            jump(JEQ_K, wx, 6, 0),
            stmt(RET_K, ALLOW),
            // mprotect and pkey_mprotect: deny PROT_EXEC in args[2].
            jump(JEQ_K, libc::SYS_mprotect as u32, 1, 0),
            jump(JEQ_K, libc::SYS_pkey_mprotect as u32, 0, 2),
            stmt(LD_ABS, arg_lo(2)),
            jump(JSET_K, libc::PROT_EXEC as u32, 1, 0),
            stmt(RET_K, ALLOW),
            stmt(RET_K, EPERM),
        ]
    }

    /// Kills mmap made from an instruction pointer in [lo, hi) (a filter that only trusts
    /// calls made from one library, say): 64-bit compares done on the two halves.
    fn ip_filter(lo: u64, hi: u64) -> Vec<sock_filter> {
        assert_eq!(
            lo >> 32,
            hi >> 32,
            "the test keeps both bounds in one 4 GiB half"
        );
        vec![
            stmt(LD_ABS, 0),
            jump(JEQ_K, libc::SYS_mmap as u32, 0, 5),
            stmt(LD_ABS, IP_HI),
            jump(JEQ_K, (lo >> 32) as u32, 0, 3),
            stmt(LD_ABS, IP_LO),
            jump(JGE_K, lo as u32, 0, 1),
            jump(JGE_K, hi as u32, 0, 1),
            stmt(RET_K, ALLOW),
            stmt(RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        ]
    }

    const IP: u64 = 0x7ffd_e5f0_1002;

    fn call(name: &'static str, nr: i64, args: [u64; 6]) -> PlannedSyscall {
        PlannedSyscall {
            name,
            nr,
            args,
            ip: IP,
        }
    }

    fn mmap(prot: i32) -> PlannedSyscall {
        call(
            "mmap",
            libc::SYS_mmap,
            [
                0x7ffd_e5e0_0000,
                8192,
                prot as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64,
                -1i64 as u64,
                0,
            ],
        )
    }

    fn mmap_rw() -> PlannedSyscall {
        mmap(libc::PROT_READ | libc::PROT_WRITE)
    }

    fn munmap() -> PlannedSyscall {
        call(
            "munmap",
            libc::SYS_munmap,
            [0x7ffd_e5e0_0000, 8192, 0, 0, 0, 0],
        )
    }

    fn mprotect(prot: i32) -> PlannedSyscall {
        call(
            "mprotect",
            libc::SYS_mprotect,
            [0x7ffd_e5e0_0000, 4096, prot as u64, 0, 0, 0],
        )
    }

    fn run(program: &[sock_filter], c: &PlannedSyscall) -> std::result::Result<u32, String> {
        run_filter(program, &seccomp_data(c))
    }

    fn action(filters: &[Vec<sock_filter>], c: &PlannedSyscall) -> Action {
        Action::from_ret(run_filters(filters, &seccomp_data(c)).unwrap())
    }

    /// A program that leaves its result in A and returns it.
    fn ret_a(mut body: Vec<sock_filter>) -> Vec<sock_filter> {
        body.push(stmt(RET_A, 0));
        body
    }

    fn eval(body: Vec<sock_filter>) -> u32 {
        run(&ret_a(body), &munmap()).unwrap()
    }

    // --- the interpreter on hand-written filters -------------------------------------------

    #[test]
    fn seccomp_data_layout() {
        let c = PlannedSyscall {
            name: "x",
            nr: 9,
            args: [1, 2, 3, 4, 5, 0x0102_0304_0506_0708],
            ip: 0x1122_3344_5566_7788,
        };
        // Checked against libc's struct layout: same size, fields where the kernel puts them.
        assert_eq!(std::mem::size_of::<libc::seccomp_data>(), SECCOMP_DATA_LEN);
        let d = seccomp_data(&c);
        assert_eq!(&d[0..4], &9i32.to_le_bytes());
        assert_eq!(&d[4..8], &AUDIT_ARCH_NATIVE.to_le_bytes());
        assert_eq!(&d[8..16], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&d[56..64], &0x0102_0304_0506_0708u64.to_le_bytes());
        let load = |off| eval(vec![stmt(LD_ABS, off)]);
        let c_run = |off| run(&ret_a(vec![stmt(LD_ABS, off)]), &c).unwrap();
        assert_eq!(c_run(0), 9);
        assert_eq!(c_run(IP_LO), 0x5566_7788);
        assert_eq!(c_run(IP_HI), 0x1122_3344);
        assert_eq!(c_run(arg_lo(5)), 0x0506_0708);
        assert_eq!(c_run(arg_hi(5)), 0x0102_0304);
        assert_eq!(c_run(arg_lo(0)), 1);
        assert_eq!(load(ARCH), AUDIT_ARCH_NATIVE);
    }

    #[test]
    fn deny_one_call() {
        let f = on_call(libc::SYS_mmap, libc::SECCOMP_RET_KILL_PROCESS);
        assert_eq!(run(&f, &mmap_rw()), Ok(libc::SECCOMP_RET_KILL_PROCESS));
        assert_eq!(run(&f, &munmap()), Ok(ALLOW));
        // Another arch's mmap is a different call: the filter lets it through.
        let mut d = seccomp_data(&mmap_rw());
        d[4..8].copy_from_slice(&0x4000_0003u32.to_le_bytes()); // AUDIT_ARCH_I386
        assert_eq!(run_filter(&f, &d), Ok(ALLOW));
    }

    #[test]
    fn loads_and_moves() {
        assert_eq!(eval(vec![stmt(LD_IMM, 7)]), 7);
        assert_eq!(eval(vec![stmt(LDX_IMM, 9), stmt(TXA, 0)]), 9);
        assert_eq!(
            eval(vec![
                stmt(LD_IMM, 5),
                stmt(TAX, 0),
                stmt(LD_IMM, 0),
                stmt(TXA, 0)
            ]),
            5
        );
        assert_eq!(eval(vec![stmt(LD_W_LEN, 0)]), 64);
        assert_eq!(eval(vec![stmt(LDX_W_LEN, 0), stmt(TXA, 0)]), 64);
        // Scratch memory: ST/STX, LD/LDX MEM, all 16 slots.
        assert_eq!(
            eval(vec![
                stmt(LD_IMM, 11),
                stmt(ST, 0),
                stmt(LDX_IMM, 22),
                stmt(STX, 15),
                stmt(LD_IMM, 0),
                stmt(LDX_IMM, 0),
                stmt(LD_MEM, 15),
                stmt(LDX_MEM, 0),
                stmt(alu(libc::BPF_ADD, X), 0),
            ]),
            33
        );
        // A and X start at 0.
        assert_eq!(eval(vec![]), 0);
        assert_eq!(eval(vec![stmt(TXA, 0)]), 0);
    }

    #[test]
    fn alu_with_k_and_x() {
        let cases: [(u32, u32, u32, u32); 10] = [
            (libc::BPF_ADD, 0xffff_fff0, 0x20, 0x10),
            (libc::BPF_SUB, 3, 5, 0xffff_fffe),
            (libc::BPF_MUL, 0x1000_0001, 0x10, 0x10),
            (libc::BPF_DIV, 100, 7, 14),
            (libc::BPF_OR, 0xf0, 0x0f, 0xff),
            (libc::BPF_AND, 0xf0f0, 0xff00, 0xf000),
            (libc::BPF_XOR, 0xff, 0x0f, 0xf0),
            (libc::BPF_LSH, 0x8000_0001, 1, 2),
            (libc::BPF_RSH, 0x8000_0000, 31, 1),
            (libc::BPF_LSH, 1, 31, 0x8000_0000),
        ];
        for (op, a, v, want) in cases {
            assert_eq!(
                eval(vec![stmt(LD_IMM, a), stmt(alu(op, K), v)]),
                want,
                "{op:#x} K"
            );
            assert_eq!(
                eval(vec![stmt(LDX_IMM, v), stmt(LD_IMM, a), stmt(alu(op, X), 0)]),
                want,
                "{op:#x} X"
            );
        }
        assert_eq!(eval(vec![stmt(LD_IMM, 1), stmt(ALU_NEG, 0)]), 0xffff_ffff);
        assert_eq!(eval(vec![stmt(ALU_NEG, 0)]), 0);
    }

    #[test]
    fn jumps_with_k_and_x() {
        // Returns 1 when the jump is taken, 2 when not.
        let branch = |op: u32, a: u32, v: u32| {
            let by_x = op & X != 0;
            run(
                &[
                    stmt(LDX_IMM, v),
                    stmt(LD_IMM, a),
                    jump(op, if by_x { 0xdead } else { v }, 1, 0),
                    stmt(RET_K, 2),
                    stmt(RET_K, 1),
                ],
                &munmap(),
            )
            .unwrap()
        };
        for (k_op, x_op) in [
            (JEQ_K, JEQ_X),
            (JGT_K, JGT_X),
            (JGE_K, JGE_X),
            (JSET_K, JSET_X),
        ] {
            for (a, v) in [(5, 5), (6, 5), (4, 5), (0x10, 0x11), (0x10, 0x01), (0, 0)] {
                let want = match k_op {
                    JEQ_K => a == v,
                    JGT_K => a > v,
                    JGE_K => a >= v,
                    _ => a & v != 0,
                };
                let want = if want { 1 } else { 2 };
                assert_eq!(branch(k_op, a, v), want, "{k_op:#x} a={a} v={v}");
                assert_eq!(branch(x_op, a, v), want, "{x_op:#x} a={a} v={v}");
            }
        }
        // Unsigned compares.
        assert_eq!(branch(JGT_K, 0x8000_0000, 1), 1);
        // JA skips k instructions; jt/jf of 0 fall through.
        assert_eq!(
            run(&[stmt(JA, 1), stmt(RET_K, 1), stmt(RET_K, 2)], &munmap()),
            Ok(2)
        );
        assert_eq!(
            run(&[jump(JEQ_K, 0, 0, 0), stmt(RET_K, 3)], &munmap()),
            Ok(3)
        );
    }

    #[test]
    fn argument_and_instruction_pointer_checks() {
        let mdwe = mdwe_filter();
        assert_eq!(run(&mdwe, &mmap_rw()), Ok(ALLOW));
        assert_eq!(
            run(&mdwe, &mmap(libc::PROT_READ | libc::PROT_EXEC)),
            Ok(ALLOW)
        );
        let rwx = mmap(libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC);
        assert_eq!(run(&mdwe, &rwx), Ok(EPERM));
        // The high half of the argument counts: not W|X as a 64-bit value.
        let mut high = rwx;
        high.args[2] |= 1 << 32;
        assert_eq!(run(&mdwe, &high), Ok(ALLOW));
        assert_eq!(run(&mdwe, &mprotect(libc::PROT_READ)), Ok(ALLOW));
        assert_eq!(
            run(&mdwe, &mprotect(libc::PROT_READ | libc::PROT_EXEC)),
            Ok(EPERM)
        );
        assert_eq!(run(&mdwe, &munmap()), Ok(ALLOW));

        let ipf = ip_filter(IP - 2, IP + 0x1000);
        let kill = Ok(libc::SECCOMP_RET_KILL_PROCESS);
        assert_eq!(run(&ipf, &mmap_rw()), kill);
        let mut elsewhere = mmap_rw();
        elsewhere.ip = IP + 0x1000;
        assert_eq!(run(&ipf, &elsewhere), Ok(ALLOW));
        elsewhere.ip = IP - 3;
        assert_eq!(run(&ipf, &elsewhere), Ok(ALLOW));
        // Same low half, other high half: a different address.
        elsewhere.ip = IP + (1 << 32);
        assert_eq!(run(&ipf, &elsewhere), Ok(ALLOW));
    }

    #[test]
    fn precedence_across_filters() {
        let m = libc::SYS_mmap;
        let f = |ret: u32| vec![stmt(RET_K, ret)];
        use libc::{
            SECCOMP_RET_KILL_PROCESS as KP, SECCOMP_RET_KILL_THREAD as KT, SECCOMP_RET_LOG as LOG,
            SECCOMP_RET_TRACE as TRACE, SECCOMP_RET_TRAP as TRAP, SECCOMP_RET_USER_NOTIF as NOTIF,
        };
        let errno = |e: u32| libc::SECCOMP_RET_ERRNO | e;
        // Highest precedence first; each beats everything after it, whichever filter has it.
        let order = [KP, KT, TRAP, errno(1), NOTIF, TRACE, LOG, ALLOW];
        for (i, hi) in order.iter().enumerate() {
            for lo in &order[i..] {
                assert_eq!(
                    run_filters(&[f(*hi), f(*lo)], &seccomp_data(&mmap_rw())),
                    Ok(*hi)
                );
                assert_eq!(
                    run_filters(&[f(*lo), f(*hi)], &seccomp_data(&mmap_rw())),
                    Ok(*hi)
                );
            }
        }
        // Same action: the newest filter (index 0) keeps its data.
        assert_eq!(
            action(&[f(errno(13)), f(errno(1))], &mmap_rw()),
            Action::Errno(13)
        );
        // A filter that allows never hides another's refusal.
        let stack = [
            on_call(libc::SYS_munmap, errno(1)),
            f(LOG),
            on_call(m, TRAP),
        ];
        assert_eq!(action(&stack, &mmap_rw()), Action::Trap);
        assert_eq!(action(&stack, &munmap()), Action::Errno(1));
        assert_eq!(action(&stack[1..2], &munmap()), Action::Log);
        assert!(action(&stack[1..2], &munmap()).allows());
        // An undefined action sorts by its value (here between KILL_THREAD and TRAP) and is a
        // kill, as in the kernel.
        let odd = 0x0001_0000;
        assert_eq!(action(&[f(TRAP), f(odd)], &mmap_rw()), Action::Unknown(odd));
        assert_eq!(action(&[f(KT), f(odd)], &mmap_rw()), Action::KillThread);
        // Errno is capped at MAX_ERRNO.
        assert_eq!(action(&[f(errno(0xffff))], &mmap_rw()), Action::Errno(4095));
        // No filters: allowed.
        assert_eq!(action(&[], &mmap_rw()), Action::Allow);
    }

    #[test]
    fn malformed_programs_cannot_be_told() {
        let bad = |p: &[sock_filter]| {
            let r = run(p, &mmap_rw());
            assert!(r.is_err(), "{p:?} gave {r:?}");
            r.unwrap_err()
        };
        assert!(bad(&[]).contains("0 instructions"));
        assert!(bad(&vec![stmt(RET_K, 0); MAX_FILTER_LEN + 1]).contains("4097"));
        // Loads outside seccomp_data, unaligned, or of a size/mode seccomp refuses.
        assert!(bad(&[stmt(LD_ABS, 64), stmt(RET_A, 0)]).contains("outside"));
        assert!(bad(&[stmt(LD_ABS, 62), stmt(RET_A, 0)]).contains("outside"));
        assert!(bad(&[stmt(LD_ABS, 2), stmt(RET_A, 0)]).contains("unaligned"));
        assert!(bad(&[stmt(LD_ABS, u32::MAX), stmt(RET_A, 0)]).contains("outside"));
        let refused = "does not accept";
        for code in [
            libc::BPF_LD | libc::BPF_H | libc::BPF_ABS,
            libc::BPF_LD | libc::BPF_B | libc::BPF_ABS,
            libc::BPF_LD | libc::BPF_W | libc::BPF_IND,
            libc::BPF_LDX | libc::BPF_B | libc::BPF_MSH,
            alu(libc::BPF_MOD, K),
            alu(libc::BPF_MOD, X),
            ALU_NEG | X,
            JA | X,
            libc::BPF_RET | X,
            0xff,
            0x0106, // RET|K with a stray high bit
        ] {
            assert!(
                bad(&[stmt(code, 1), stmt(RET_K, ALLOW)]).contains(refused),
                "{code:#x}"
            );
        }
        // Jumps out of the program (either branch), JA too.
        assert!(bad(&[stmt(JA, 1), stmt(RET_K, ALLOW)]).contains("past the end"));
        assert!(bad(&[stmt(JA, u32::MAX), stmt(RET_K, ALLOW)]).contains("past the end"));
        assert!(bad(&[jump(JEQ_K, 0, 0, 1), stmt(RET_K, ALLOW)]).contains("past the end"));
        assert!(bad(&[jump(JEQ_K, 1, 1, 0), stmt(RET_K, ALLOW)]).contains("past the end"));
        // No return reached.
        assert!(bad(&[stmt(LD_IMM, 1)]).contains("without a return"));
        assert!(
            bad(&[jump(JEQ_K, 0, 1, 0), stmt(RET_K, ALLOW), stmt(LD_IMM, 0)])
                .contains("without a return")
        );
        // Scratch memory out of range or never written.
        assert!(bad(&[stmt(ST, 16), stmt(RET_K, ALLOW)]).contains("out of range"));
        assert!(bad(&[stmt(LD_MEM, 3), stmt(RET_A, 0)]).contains("unset"));
        assert!(bad(&[stmt(LDX_MEM, 16), stmt(RET_A, 0)]).contains("out of range"));
        // Shifts by 32 or more; constant division by zero.
        assert!(bad(&[stmt(alu(libc::BPF_LSH, K), 32), stmt(RET_A, 0)]).contains("shifts"));
        assert!(
            bad(&[
                stmt(LDX_IMM, 40),
                stmt(alu(libc::BPF_RSH, X), 0),
                stmt(RET_A, 0)
            ])
            .contains("shifts")
        );
        assert!(bad(&[stmt(alu(libc::BPF_DIV, K), 0), stmt(RET_A, 0)]).contains("divides"));
        // Division by X = 0 returns 0 (= kill the thread), as the kernel's translation does.
        assert_eq!(
            run(
                &[
                    stmt(LD_IMM, 5),
                    stmt(alu(libc::BPF_DIV, X), 0),
                    stmt(RET_K, ALLOW)
                ],
                &mmap_rw()
            ),
            Ok(libc::SECCOMP_RET_KILL_THREAD)
        );
        // One unreadable filter among several makes the whole answer unknown.
        let why = run_filters(
            &[vec![stmt(RET_K, ALLOW)], vec![stmt(LD_IMM, 0)]],
            &seccomp_data(&mmap_rw()),
        )
        .unwrap_err();
        assert!(why.contains("filter #1 of 2"), "{why}");
    }

    #[test]
    fn refusals_in_words() {
        let say = |ret: u32| Action::from_ret(ret).describe("mmap");
        assert_eq!(
            say(libc::SECCOMP_RET_KILL_PROCESS),
            "its seccomp filter would kill the process (SECCOMP_RET_KILL_PROCESS) on mmap()"
        );
        assert!(say(libc::SECCOMP_RET_KILL_THREAD).contains("kill the thread"));
        assert!(say(libc::SECCOMP_RET_TRAP).contains("send it SIGSYS (SECCOMP_RET_TRAP)"));
        assert_eq!(
            say(EPERM),
            "its seccomp filter would fail mmap() with errno EPERM (SECCOMP_RET_ERRNO)"
        );
        assert!(say(libc::SECCOMP_RET_ERRNO).contains("return 0"));
        assert!(say(libc::SECCOMP_RET_ERRNO | 4000).contains("errno 4000"));
        assert!(say(libc::SECCOMP_RET_USER_NOTIF).contains(
            "hands mmap() to a user-space supervisor (SECCOMP_RET_USER_NOTIF), which may be a \
             thread timeskew has stopped"
        ));
        assert!(say(libc::SECCOMP_RET_TRACE).contains("report mmap() to a tracer"));
        assert!(say(0x0001_0000).contains("SECCOMP_RET_KILL_PROCESS"));
        let e = Error::Seccomp {
            pid: 1,
            tid: 2,
            syscall: "mmap",
            reason: say(libc::SECCOMP_RET_KILL_PROCESS),
        };
        assert_eq!(
            e.to_string(),
            "pid 1: refusing to run mmap() in thread 2: its seccomp filter would kill the process \
             (SECCOMP_RET_KILL_PROCESS) on mmap(); nothing was changed"
        );
    }

    // --- against the kernel: real filters in real processes -------------------------------

    /// Serialises the tests that fork: a child forked by one test would otherwise inherit the
    /// pipes of another and keep them open.
    static FORK: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// How a test child locks itself down before it says it is ready.
    enum Lockdown {
        Nothing,
        /// Installed oldest first, each with its SECCOMP_FILTER_FLAG_* flags.
        Filters(Vec<(Vec<sock_filter>, libc::c_ulong)>),
        Strict,
    }

    /// A forked child that installed its policy and now blocks in read(); killed and reaped on
    /// drop. `results`: what the calls it made itself under the policy returned (see `spawn`).
    struct Child {
        pid: Pid,
        results: Vec<u32>,
        _block: OwnedFd,
        _serial: std::sync::MutexGuard<'static, ()>,
    }

    impl Drop for Child {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
            loop {
                match waitpid(self.pid, Some(WaitPidFlag::__WALL)) {
                    Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
    }

    /// Test-only ptrace hold of one thread: seize, interrupt, wait for the stop; detach on drop.
    struct Held(Pid);

    impl Held {
        fn new(pid: Pid) -> Held {
            ptrace::seize(pid, ptrace::Options::empty()).expect("PTRACE_SEIZE");
            let held = Held(pid);
            ptrace::interrupt(pid).expect("PTRACE_INTERRUPT");
            match waitpid(pid, Some(WaitPidFlag::__WALL)) {
                Ok(WaitStatus::PtraceEvent(_, _, libc::PTRACE_EVENT_STOP)) => held,
                other => panic!("child {pid} did not stop for PTRACE_INTERRUPT: {other:?}"),
            }
        }
    }

    impl Drop for Held {
        fn drop(&mut self) {
            let _ = ptrace::detach(self.0, None);
        }
    }

    /// Forks a child that locks itself down as `lockdown` says, then makes
    /// `syscall(libc::SYS_getppid, args…)` once per entry of `probes` (reporting the errno it
    /// got, 0 for a return of 0, u32::MAX otherwise), says it is ready, and blocks in read().
    fn spawn(lockdown: Lockdown, probes: &[[u64; 6]]) -> Child {
        let serial = FORK.lock().unwrap_or_else(|e| e.into_inner());
        let (ready_rd, ready_wr) = nix::unistd::pipe().unwrap();
        let (block_rd, block_wr) = nix::unistd::pipe().unwrap();
        // Everything the child uses is built before the fork: it only makes system calls.
        let programs: Vec<(libc::sock_fprog, libc::c_ulong)> = match &lockdown {
            Lockdown::Filters(f) => f
                .iter()
                .map(|(p, flags)| {
                    let prog = libc::sock_fprog {
                        len: p.len() as u16,
                        filter: p.as_ptr().cast_mut(),
                    };
                    (prog, *flags)
                })
                .collect(),
            _ => Vec::new(),
        };
        let strict = matches!(lockdown, Lockdown::Strict);
        let fds = [
            ready_wr.as_raw_fd(),
            block_rd.as_raw_fd(),
            block_wr.as_raw_fd(),
        ];
        // SAFETY: the child runs only `child_main`, which makes plain system calls on memory
        // prepared above and never returns.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            // SAFETY: we are the freshly forked child; see above.
            nix::unistd::ForkResult::Child => unsafe { child_main(&programs, strict, probes, fds) },
            nix::unistd::ForkResult::Parent { child } => {
                drop(ready_wr);
                drop(block_rd);
                let mut c = Child {
                    pid: child,
                    results: Vec::new(),
                    _block: block_wr,
                    _serial: serial,
                };
                let mut buf = vec![0u8; 4 * probes.len() + 1];
                let mut got = 0;
                while got < buf.len() {
                    match nix::unistd::read(&ready_rd, &mut buf[got..]) {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(Errno::EINTR) => {}
                        Err(e) => panic!("reading from child {child}: {e}"),
                    }
                }
                assert_eq!(
                    (got, buf.last()),
                    (buf.len(), Some(&b'+')),
                    "child {child} failed to lock itself down"
                );
                c.results = buf[..4 * probes.len()]
                    .chunks(4)
                    .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                c
            }
        }
    }

    /// The child side of [`spawn`].
    ///
    /// # Safety
    /// Only in a freshly forked child: it makes system calls only, never allocates or returns.
    unsafe fn child_main(
        programs: &[(libc::sock_fprog, libc::c_ulong)],
        strict: bool,
        probes: &[[u64; 6]],
        [ready, block, block_wr]: [libc::c_int; 3],
    ) -> ! {
        // SAFETY: plain system calls on valid pointers; see the function's contract.
        unsafe {
            // Our copy would keep the child waiting if the test process died.
            libc::close(block_wr);
            let mut ok = true;
            if !programs.is_empty() {
                ok = libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0;
            }
            for (prog, flags) in programs {
                ok = ok
                    && libc::syscall(
                        libc::SYS_seccomp,
                        libc::SECCOMP_SET_MODE_FILTER,
                        *flags,
                        prog as *const libc::sock_fprog,
                    ) >= 0;
            }
            if strict {
                ok = ok
                    && libc::prctl(
                        libc::PR_SET_SECCOMP,
                        libc::SECCOMP_MODE_STRICT as libc::c_ulong,
                    ) == 0;
            }
            // From here on only read, write and exit: allowed even in strict mode.
            for a in probes {
                let r = libc::syscall(libc::SYS_getppid, a[0], a[1], a[2], a[3], a[4], a[5]);
                let v: u32 = match r {
                    -1 => *libc::__errno_location() as u32,
                    0 => 0,
                    _ => u32::MAX,
                };
                libc::write(ready, (&raw const v).cast(), 4);
            }
            let byte = if ok { b'+' } else { b'-' };
            libc::write(ready, (&raw const byte).cast(), 1);
            let mut buf = 0u8;
            while libc::read(block, (&raw mut buf).cast(), 1) != 0 {}
            libc::syscall(libc::SYS_exit, 0);
            libc::_exit(0)
        }
    }

    /// `check` on a child held with ptrace, as timeskew holds a target.
    fn check_child(child: &Child, calls: &[PlannedSyscall]) -> Result<()> {
        let _held = Held::new(child.pid);
        check(child.pid.as_raw(), child.pid, calls)
    }

    fn filters(list: Vec<Vec<sock_filter>>) -> Lockdown {
        Lockdown::Filters(list.into_iter().map(|p| (p, 0)).collect())
    }

    /// The reason of a refusal of `call`, after checking the rest of the error.
    fn refusal(child: &Child, calls: &[PlannedSyscall], call: &str) -> String {
        match check_child(child, calls) {
            Err(Error::Seccomp {
                pid,
                tid,
                syscall,
                reason,
            }) => {
                assert_eq!(
                    (pid, tid, syscall),
                    (child.pid.as_raw(), child.pid.as_raw(), call)
                );
                reason
            }
            other => panic!("expected a seccomp refusal of {call}(), got {other:?}"),
        }
    }

    #[test]
    fn real_no_seccomp() {
        let child = spawn(Lockdown::Nothing, &[]);
        check_child(&child, &[mmap_rw(), munmap()]).unwrap();
    }

    #[test]
    fn real_each_action_on_mmap() {
        use libc::{SECCOMP_FILTER_FLAG_NEW_LISTENER as LISTENER, SECCOMP_RET_ERRNO};
        for (ret, flags) in [
            (libc::SECCOMP_RET_KILL_PROCESS, 0),
            (libc::SECCOMP_RET_KILL_THREAD, 0),
            (libc::SECCOMP_RET_TRAP, 0),
            (SECCOMP_RET_ERRNO | libc::EPERM as u32, 0),
            (SECCOMP_RET_ERRNO | libc::EACCES as u32, 0),
            (libc::SECCOMP_RET_USER_NOTIF, LISTENER),
            (libc::SECCOMP_RET_TRACE, 0),
        ] {
            let child = spawn(
                Lockdown::Filters(vec![(on_call(libc::SYS_mmap, ret), flags)]),
                &[],
            );
            let want = Action::from_ret(ret).describe("mmap");
            assert_eq!(refusal(&child, &[mmap_rw()], "mmap"), want, "{ret:#x}");
            // The refusal names the call that would be refused, not the first one.
            assert_eq!(refusal(&child, &[munmap(), mmap_rw()], "mmap"), want);
            check_child(&child, &[munmap()]).unwrap();
        }
        let logged = spawn(
            filters(vec![on_call(libc::SYS_mmap, libc::SECCOMP_RET_LOG)]),
            &[],
        );
        check_child(&logged, &[mmap_rw(), munmap()]).unwrap();
    }

    #[test]
    fn real_memory_deny_write_execute() {
        let child = spawn(filters(vec![mdwe_filter()]), &[]);
        check_child(
            &child,
            &[mmap_rw(), mmap(libc::PROT_READ | libc::PROT_EXEC), munmap()],
        )
        .unwrap();
        let rwx = mmap(libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC);
        assert!(refusal(&child, &[rwx], "mmap").contains("errno EPERM"));
        let rx = mprotect(libc::PROT_READ | libc::PROT_EXEC);
        assert!(refusal(&child, &[rx], "mprotect").contains("errno EPERM"));
        check_child(&child, &[mprotect(libc::PROT_READ)]).unwrap();
    }

    #[test]
    fn real_instruction_pointer() {
        let child = spawn(filters(vec![ip_filter(IP - 2, IP + 0x1000)]), &[]);
        assert!(refusal(&child, &[mmap_rw()], "mmap").contains("SECCOMP_RET_KILL_PROCESS"));
        let mut elsewhere = mmap_rw();
        elsewhere.ip = IP + 0x1000;
        check_child(&child, &[elsewhere]).unwrap();
    }

    #[test]
    fn real_stacked_filters_newest_first() {
        use libc::SECCOMP_RET_ERRNO as ERRNO;
        let child = spawn(
            filters(vec![
                vec![stmt(RET_K, libc::SECCOMP_RET_LOG)],
                on_call(libc::SYS_mmap, ERRNO | libc::EACCES as u32),
                on_call(libc::SYS_munmap, libc::SECCOMP_RET_TRAP),
                on_call(libc::SYS_mmap, ERRNO | libc::EPERM as u32),
            ]),
            &[],
        );
        // Two ERRNO filters on mmap: the newest one's errno is what the call would get.
        // (PTRACE_SECCOMP_GET_FILTER numbers them oldest first: getting the order wrong
        // reports EACCES here.)
        let r = refusal(&child, &[mmap_rw()], "mmap");
        assert!(r.contains("errno EPERM"), "{r}");
        assert!(refusal(&child, &[munmap()], "munmap").contains("SECCOMP_RET_TRAP"));
        check_child(&child, &[mprotect(libc::PROT_READ)]).unwrap();
    }

    #[test]
    fn real_strict_mode() {
        let child = spawn(Lockdown::Strict, &[]);
        let reason = refusal(&child, &[mmap_rw()], "mmap");
        assert!(reason.contains("seccomp strict mode"), "{reason}");
        // The calls strict mode allows are allowed.
        let write = call("write", libc::SYS_write, [1, 0, 0, 0, 0, 0]);
        check_child(&child, &[write]).unwrap();
    }

    /// The interpreter against the kernel itself: the same programs run by both on the same
    /// inputs. The programs compute a value from the arguments with every ALU operation, the
    /// scratch memory and both registers, or branch with every jump, and return it as an errno
    /// (SECCOMP_RET_ERRNO | value & 0xfff), which the child's own call reports.
    #[test]
    fn real_kernel_agrees() {
        let nr = libc::SYS_getppid;
        let wrap = |body: Vec<sock_filter>| {
            let mut p = vec![
                stmt(LD_ABS, ARCH),
                jump(JEQ_K, AUDIT_ARCH_NATIVE, 1, 0),
                stmt(RET_K, ALLOW),
                stmt(LD_ABS, 0),
                jump(JEQ_K, nr as u32, 1, 0),
                stmt(RET_K, ALLOW),
            ];
            p.extend(body);
            p
        };
        let arithmetic = |window: u32| {
            wrap(vec![
                stmt(LD_ABS, arg_lo(0)),
                stmt(alu(libc::BPF_ADD, K), 0x9e37_79b9),
                stmt(ST, 0),
                stmt(LD_ABS, arg_lo(1)),
                stmt(TAX, 0),
                stmt(LD_MEM, 0),
                stmt(alu(libc::BPF_MUL, X), 0),
                stmt(alu(libc::BPF_XOR, K), 0x5bd1_e995),
                stmt(alu(libc::BPF_SUB, X), 0),
                stmt(ST, 1),
                stmt(LD_ABS, arg_hi(0)),
                stmt(alu(libc::BPF_OR, K), 1),
                stmt(TAX, 0),
                stmt(LD_MEM, 1),
                stmt(alu(libc::BPF_DIV, X), 0),
                stmt(alu(libc::BPF_XOR, X), 0),
                stmt(ST, 2),
                stmt(LD_ABS, arg_lo(2)),
                stmt(alu(libc::BPF_AND, K), 31),
                stmt(TAX, 0),
                stmt(LD_MEM, 2),
                stmt(alu(libc::BPF_LSH, X), 0),
                stmt(STX, 5),
                stmt(LDX_MEM, 1),
                stmt(alu(libc::BPF_ADD, X), 0),
                stmt(ST, 3),
                stmt(LD_ABS, arg_lo(3)),
                stmt(alu(libc::BPF_AND, K), 31),
                stmt(TAX, 0),
                stmt(LD_MEM, 3),
                stmt(alu(libc::BPF_RSH, X), 0),
                stmt(ALU_NEG, 0),
                stmt(LDX_W_LEN, 0),
                stmt(alu(libc::BPF_ADD, X), 0),
                stmt(alu(libc::BPF_MUL, K), 2_654_435_761),
                stmt(alu(libc::BPF_DIV, K), 7),
                stmt(alu(libc::BPF_SUB, K), 12345),
                stmt(alu(libc::BPF_OR, K), 0x0100_0010),
                stmt(alu(libc::BPF_AND, K), 0xfff0_fff7),
                stmt(alu(libc::BPF_LSH, K), 3),
                stmt(TAX, 0),
                stmt(LD_ABS, arg_hi(5)),
                stmt(alu(libc::BPF_XOR, X), 0),
                stmt(alu(libc::BPF_OR, X), 0),
                stmt(alu(libc::BPF_AND, X), 0),
                stmt(alu(libc::BPF_SUB, X), 0),
                stmt(LD_W_LEN, 0),
                stmt(TXA, 0),
                stmt(alu(libc::BPF_RSH, K), window),
                stmt(alu(libc::BPF_AND, K), 0xfff),
                stmt(alu(libc::BPF_OR, K), libc::SECCOMP_RET_ERRNO),
                stmt(RET_A, 0),
            ])
        };
        let errno = |e: u32| stmt(RET_K, libc::SECCOMP_RET_ERRNO | e);
        let branches = wrap(vec![
            stmt(LD_ABS, arg_lo(1)),
            stmt(TAX, 0),
            stmt(LD_ABS, arg_lo(0)),
            jump(JGT_X, 0, 0, 3),
            // a0 > a1
            jump(JSET_K, 0x10, 0, 1),
            errno(1),
            errno(2),
            jump(JGE_K, 0x8000_0000, 0, 3),
            jump(JEQ_X, 0, 0, 1),
            errno(3),
            errno(4),
            jump(JSET_X, 0, 0, 1),
            errno(5),
            jump(JEQ_K, 7, 3, 0),
            stmt(LD_ABS, arg_hi(5)),
            jump(JGE_X, 0, 0, 1),
            errno(6),
            stmt(JA, 1),
            errno(8),
            errno(7),
        ]);
        // Random arguments, plus equal and zero ones for the X compares.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut inputs: Vec<[u64; 6]> = (0..300).map(|_| std::array::from_fn(|_| next())).collect();
        for v in [0u64, 7, 0x10, 0x8000_0000, 0xffff_ffff] {
            inputs.push([v, v, v, v, v, v]);
            inputs.push([v, 0, 0, 0, 0, v << 32]);
            inputs.push([0, v, 0, 0, 0, 0]);
        }
        for (what, program) in [
            ("arithmetic, bits 0..12", arithmetic(0)),
            ("arithmetic, bits 12..24", arithmetic(12)),
            ("arithmetic, bits 20..32", arithmetic(20)),
            ("branches", branches),
        ] {
            let child = spawn(filters(vec![program.clone()]), &inputs);
            for (args, kernel) in inputs.iter().zip(&child.results) {
                let c = call("getppid", nr, *args);
                let ours = run(&program, &c).unwrap() & 0xffff;
                assert_eq!(ours, *kernel, "{what}: args {args:x?}");
            }
        }
    }
}
