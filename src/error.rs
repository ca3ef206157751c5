//! One error type for the library; every message says which pid, which step, what went wrong
//! and, where there is one, what to do about it.

use nix::errno::Errno;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while inspecting or changing a target process. New variants may be added.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("pid {pid}: no such process")]
    NoSuchProcess { pid: i32 },

    #[error(
        "pid {pid}: permission denied while trying to {step}: {source}. \
         Run timeskew as root or give it CAP_SYS_PTRACE (e.g. `sudo timeskew …`, \
         `setcap cap_sys_ptrace+ep $(which timeskew)`; in a container: `docker run --cap-add SYS_PTRACE`); \
         with Yama enabled, /proc/sys/kernel/yama/ptrace_scope must be 0 or 1 for non-root tracers \
         (currently: {yama})"
    )]
    PermissionDenied {
        pid: i32,
        step: &'static str,
        source: Errno,
        yama: String,
    },

    #[error(
        "pid {pid}: already traced by pid {tracer_pid} ({tracer_name}); a process can have only one \
         tracer — detach the debugger/strace first"
    )]
    AlreadyTraced {
        pid: i32,
        tracer_pid: i32,
        tracer_name: String,
    },

    #[error("pid {pid}: the process exited while timeskew was trying to {step}")]
    ProcessGone { pid: i32, step: &'static str },

    #[error(
        "pid {pid}: thread {tid} did not respond while timeskew was trying to {step} ({detail}); \
         every thread was let go and nothing was changed — retry when it is not blocked in the kernel"
    )]
    Stuck {
        pid: i32,
        tid: i32,
        step: &'static str,
        detail: String,
    },

    #[error(
        "pid {pid}: the process started a new program (execve) while timeskew was changing it; the \
         new program is not skewed — run timeskew again"
    )]
    Execed { pid: i32 },

    #[error(
        "pid {tid} is a thread of process {tgid}, not a process: timeskew changes every thread of \
         a process at once — use --pid {tgid}"
    )]
    IsAThread { tid: i32, tgid: i32 },

    #[error("pid {pid}: cannot skew this process: {reason}")]
    Unsupported { pid: i32, reason: String },

    /// Job control (SIGSTOP, SIGTSTP, …) stopped the process before timeskew began
    /// (`meanwhile: false`) or while it worked (`true`: what it had done is undone).
    #[error(
        "pid {pid}: cannot skew this process: {}",
        job_control_text(*.pid, .signal.as_deref(), *.meanwhile)
    )]
    StoppedByJobControl {
        pid: i32,
        /// The stop's signal, when it was seen (`SIGSTOP`, …).
        signal: Option<String>,
        meanwhile: bool,
    },

    #[error("pid {pid}: refusing to patch {symbol}: {reason}; nothing was changed")]
    UnsafeToPatch {
        pid: i32,
        symbol: &'static str,
        reason: String,
    },

    #[error("pid {pid}: the vDSO image could not be parsed: {reason}")]
    VdsoParse { pid: i32, reason: String },

    #[error(
        "pid {pid}: the injected {syscall}() failed in thread {tid}: {errno} ({desc}){hint}; \
         nothing was changed",
        desc = errno.desc()
    )]
    RemoteSyscall {
        pid: i32,
        tid: i32,
        syscall: &'static str,
        errno: Errno,
        hint: &'static str,
    },

    #[error(
        "pid {pid}: the injected {syscall}() in thread {tid} did not run as expected: {detail}"
    )]
    RemoteSyscallLost {
        pid: i32,
        tid: i32,
        syscall: &'static str,
        detail: String,
    },

    #[error(
        "pid {pid}: refusing to run {syscall}() in thread {tid}: {reason}; nothing was changed"
    )]
    Seccomp {
        pid: i32,
        tid: i32,
        syscall: &'static str,
        reason: String,
    },

    #[error("pid {pid}, thread {tid}: ptrace failed while trying to {step}: {source}")]
    Ptrace {
        pid: i32,
        tid: i32,
        step: &'static str,
        source: Errno,
    },

    /// `waitpid` on a traced thread failed (not ptrace itself, which did its part).
    #[error(
        "pid {pid}, thread {tid}: waiting for the thread failed while trying to {step}: {source}"
    )]
    Wait {
        pid: i32,
        tid: i32,
        step: &'static str,
        source: Errno,
    },

    #[error("pid {pid}: I/O error while trying to {step}: {source}")]
    Io {
        pid: i32,
        step: &'static str,
        source: std::io::Error,
    },

    #[error(
        "pid {pid}: timeskew state at {addr:#x} is not usable: {reason}; the process was left as it is"
    )]
    CorruptState { pid: i32, addr: u64, reason: String },

    #[error("pid {pid}: no free address range within ±2 GiB of the vDSO for the trampoline pages")]
    NoPlacement { pid: i32 },

    #[error("{source}; additionally, undoing the earlier steps failed ({}) — pid {pid} may be left modified, check `timeskew status --pid {pid}`", failures.join("; "))]
    RollbackFailed {
        pid: i32,
        source: Box<Error>,
        failures: Vec<String>,
    },

    #[error("pid {pid}: {refusal}; nothing was changed")]
    NegativeClock {
        pid: i32,
        refusal: crate::skew::negative::NegativeClock,
    },

    /// An error of a change made in a helper process (the command line makes each change in a
    /// process of its own session, so that killing the command cannot interrupt it): the
    /// helper's own message, or what became of the helper.
    #[error("{message}")]
    Helper { pid: i32, message: String },

    #[error("{0}")]
    BadSelection(String),

    /// A skew whose parts do not go together (e.g. `--rate` with `--suspend`): refused before
    /// anything is read or changed.
    #[error("{0}")]
    BadSkew(#[from] crate::skew::ShapeError),

    /// A failure point of the tests (`TIMESKEW_FAULT`); only with the `fault-injection` feature.
    #[cfg(feature = "fault-injection")]
    #[error("test fault injected at step `{step}`")]
    InjectedFault { step: &'static str },
}

/// What `/proc` showed about a process when an access to it was refused (EPERM, EACCES):
/// gathered by the caller where the call failed (`procfs::refusal`), so that building the error
/// does no I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// Another process traces it (tracer thread id and command name); a thread of this process
    /// (`timeskew run`) is not "another".
    pub other_tracer: Option<(i32, String)>,
    /// `/proc/sys/kernel/yama/ptrace_scope`, or a note that Yama is absent.
    pub yama: String,
}

impl Error {
    /// The error for a failed ptrace call or /proc access that was not refused: ESRCH means the
    /// process went away; anything else is reported as it is. (A refusal is [`Error::refused`].)
    pub(crate) fn ptrace(pid: i32, tid: i32, step: &'static str, errno: Errno) -> Error {
        match errno {
            Errno::ESRCH => Error::ProcessGone { pid, step },
            _ => Error::Ptrace {
                pid,
                tid,
                step,
                source: errno,
            },
        }
    }

    /// The error for a refused access (EPERM, EACCES): another tracer if there is one (a
    /// process can have only one), else missing privileges.
    pub(crate) fn refused(pid: i32, step: &'static str, errno: Errno, why: Refusal) -> Error {
        match why.other_tracer {
            Some((tracer_pid, tracer_name)) => Error::AlreadyTraced {
                pid,
                tracer_pid,
                tracer_name,
            },
            None => Error::PermissionDenied {
                pid,
                step,
                source: errno,
                yama: why.yama,
            },
        }
    }

    /// The error for a failed /proc read that was not refused, recognising vanished processes.
    pub(crate) fn io(pid: i32, step: &'static str, source: std::io::Error) -> Error {
        match source.raw_os_error().map(Errno::from_raw) {
            Some(Errno::ENOENT) | Some(Errno::ESRCH) => Error::ProcessGone { pid, step },
            _ => Error::Io { pid, step, source },
        }
    }
}

fn job_control_text(pid: i32, signal: Option<&str>, meanwhile: bool) -> String {
    let by = signal.map_or_else(String::new, |s| format!(" ({s})"));
    if meanwhile {
        format!("it was stopped by job control{by} meanwhile; resume it and retry")
    } else {
        format!("it is stopped by job control{by}; resume it first (kill -CONT {pid})")
    }
}
