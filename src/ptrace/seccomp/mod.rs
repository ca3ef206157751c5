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
//! The filters are read in `filters` and run by our own classic-BPF interpreter in `bpf`.

mod bpf;
mod filters;
#[cfg(test)]
mod tests;

use nix::errno::Errno;
use nix::unistd::Pid;

use crate::error::{Error, Result};

use bpf::{SECCOMP_DATA_LEN, run_filters};
use filters::read_filters;

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
            let filters = read_filters(pid, tid, |reason| refuse(pid, tid, first, reason))?;
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
