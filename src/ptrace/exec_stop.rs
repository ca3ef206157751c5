//! From an exec event stop to the point where a new program can be injected.

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Where [`leave_execve`] left the process.
pub(crate) enum LeftExecve {
    /// At the syscall-exit stop of execve: no instruction of the new program has run.
    AtExit,
    /// Something else was reported first (an exit, an unexpected stop): the caller handles it.
    Other(WaitStatus),
    /// The process vanished, or ptrace failed (logged).
    Lost,
}

/// Brings `pid`, stopped at PTRACE_EVENT_EXEC, to the exit of its execve. The event stop is
/// still inside the system call: the kernel writes execve's result into the return register
/// after it, which would overwrite the syscall number an injection sets up. One PTRACE_SYSCALL
/// moves it to the syscall-exit stop that follows, before any instruction of the new program
/// (and before any signal is handled). The tracee must have PTRACE_O_TRACESYSGOOD.
pub(crate) fn leave_execve(pid: Pid) -> LeftExecve {
    if let Err(e) = ptrace::syscall(pid, None) {
        log::debug!("pid {pid}: PTRACE_SYSCALL at exec failed: {e}");
        return LeftExecve::Lost;
    }
    loop {
        match waitpid(pid, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::PtraceSyscall(_)) => return LeftExecve::AtExit,
            Ok(status) => {
                if !matches!(status, WaitStatus::Exited(..) | WaitStatus::Signaled(..)) {
                    log::warn!("pid {pid}: unexpected stop leaving execve: {status:?}");
                }
                return LeftExecve::Other(status);
            }
            Err(Errno::EINTR) => {}
            Err(e) => {
                log::debug!("pid {pid}: waiting for the end of execve failed: {e}");
                return LeftExecve::Lost;
            }
        }
    }
}
