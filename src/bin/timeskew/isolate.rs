//! Each change to a target is made by a helper process in a Unix session of its own.
//!
//! While a change is under way, a thread of the target may be stopped with a system call of ours
//! set up in its registers. If the process holding it (its ptrace tracer) were killed right then,
//! the kernel would let the thread run on with those registers. SIGKILL cannot be caught, so the
//! command the user started does not hold the target itself: it forks a helper, which calls
//! `setsid()` and ignores the terminal and termination signals, makes the change (finishing it or
//! rolling it back), reports the result on a pipe and exits. Killing `timeskew`, its process
//! group or its terminal session does not reach the helper; the command itself answers Ctrl-C and
//! SIGTERM within a second whatever the helper does. The helper lives for the few milliseconds of
//! the change. The command takes the target's lock before forking; the helper inherits it, so
//! the lock is held until both have let go of it and the next timeskew waits for them.
//!
//! Reading (`status`) needs no helper. `backend::Isolated` takes the locks and calls
//! [`in_helper`].

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigHandler, Signal, signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, pipe, setsid};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// After a termination signal, how long the command still waits for the helper's answer before
/// it ends anyway (the helper finishes on its own).
const GRACE: Duration = Duration::from_millis(500);

/// What a helper sends back: the report, or the error told apart as far as the command's
/// output needs (a process that is gone is reported differently in selections).
#[derive(Serialize, serde::Deserialize)]
pub enum Answer<T> {
    Done(T),
    NoSuchProcess,
    Gone { step: String },
    Failed { message: String },
}

impl<T> From<timeskew::Result<T>> for Answer<T> {
    fn from(result: timeskew::Result<T>) -> Answer<T> {
        match result {
            Ok(report) => Answer::Done(report),
            Err(timeskew::Error::NoSuchProcess { .. }) => Answer::NoSuchProcess,
            Err(timeskew::Error::ProcessGone { step, .. }) => Answer::Gone { step: step.into() },
            Err(e) => Answer::Failed {
                message: e.to_string(),
            },
        }
    }
}

impl<T> Answer<T> {
    /// The result again, on the command's side (`pid`: the process it is about).
    pub fn into_result(self, pid: i32) -> timeskew::Result<T> {
        match self {
            Answer::Done(report) => Ok(report),
            Answer::NoSuchProcess => Err(timeskew::Error::NoSuchProcess { pid }),
            Answer::Gone { step } => Err(timeskew::Error::ProcessGone {
                pid,
                // A handful of distinct texts per run, kept for the error's lifetime.
                step: Box::leak(step.into_boxed_str()),
            }),
            Answer::Failed { message } => Err(timeskew::Error::Helper { pid, message }),
        }
    }
}

/// Makes this (forked, single-threaded) process a helper: a session of its own and deaf to the
/// signals that end a command, so that killing the command, its process group or its terminal
/// does not reach it.
pub fn become_helper(tool: u32) {
    if let Err(e) = setsid() {
        log::warn!("helper: setsid failed: {e}");
    }
    // Alone in that session: the session's scheduler weight is the helper's own.
    timeskew::prioritize_own_session();
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGPIPE,
        Signal::SIGTSTP,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
    ] {
        // SAFETY: SIG_IGN installs no handler of ours.
        if let Err(e) = unsafe { signal(sig, SigHandler::SigIgn) } {
            log::warn!("helper: cannot ignore {sig}: {e}");
        }
    }
    // Its answer goes through a pipe: the command's output, if a pipe, ends with the command
    // rather than with the helper's exit (`reap`).
    if let Err(e) = std::fs::File::open("/dev/null")
        .and_then(|null| nix::unistd::dup2_stdout(null).map_err(std::io::Error::from))
    {
        log::debug!("helper: keeps the command's standard output: {e}");
    }
    // SAFETY: single-threaded (the only thread fork() copied).
    unsafe { std::env::set_var("TIMESKEW_TOOL_PID", tool.to_string()) };
}

/// Runs `op` (a change to `pid`) in a helper process and returns its result.
pub fn in_helper<T: Serialize + DeserializeOwned>(
    pid: i32,
    op: impl FnOnce() -> timeskew::Result<T>,
) -> timeskew::Result<T> {
    // fork() copies only the calling thread: another thread's lock (the allocator's, stderr's)
    // could stay locked forever in the helper. The command is single-threaded when it changes
    // targets; should that ever not hold, the change is made here instead.
    if !single_threaded() {
        log::debug!("pid {pid}: not single-threaded; changing the target in this process");
        return op();
    }
    let helper_error = |message: String| timeskew::Error::Helper { pid, message };
    let (read_end, write_end) =
        pipe().map_err(|e| helper_error(format!("pid {pid}: cannot create a pipe: {e}")))?;
    let tool = std::process::id();
    // SAFETY: the process is single-threaded (checked above), so the child may run any code.
    match unsafe { fork() } {
        Err(e) => Err(helper_error(format!(
            "pid {pid}: cannot start the helper process: {e}"
        ))),
        Ok(ForkResult::Child) => {
            drop(read_end);
            helper(tool, write_end, op)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(write_end);
            let answer = await_answer(pid, child, read_end);
            reap(child);
            answer
        }
    }
}

pub fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|d| d.count() == 1)
}

/// The helper: its own session, deaf to the signals that end a command, the change, the answer.
fn helper<T: Serialize>(tool: u32, out: OwnedFd, op: impl FnOnce() -> timeskew::Result<T>) -> ! {
    become_helper(tool);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(op));
    let answer = match result {
        Ok(result) => Answer::from(result),
        // The transaction was rolled back while unwinding.
        Err(_) => Answer::Failed {
            message: "the helper process panicked; the change was rolled back".into(),
        },
    };
    let mut file = std::fs::File::from(out);
    if let Err(e) = serde_json::to_writer(&mut file, &answer) {
        // The command was killed meanwhile: the change is made all the same.
        log::debug!("helper: cannot report to the command: {e}");
    }
    drop(file);
    // SAFETY: _exit ends the process at once; nothing of the parent's state is flushed twice.
    unsafe { libc::_exit(0) }
}

/// Reads the helper's answer. A termination signal (deferred meanwhile) ends the wait after a
/// short grace; then the signal takes effect as usual.
fn await_answer<T: DeserializeOwned>(pid: i32, child: Pid, from: OwnedFd) -> timeskew::Result<T> {
    // Signals that arrive meanwhile are delivered when this guard drops.
    let _deferred = timeskew::TerminationDeferred::new();
    let mut file = std::fs::File::from(from);
    let mut bytes = Vec::new();
    let mut grace: Option<Instant> = None;
    loop {
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(50u16)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => {}
            Ok(_) => {
                let mut chunk = [0u8; 4096];
                match file.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Err(timeskew::Error::Helper {
                            pid,
                            message: format!("pid {pid}: cannot read the helper's answer: {e}"),
                        });
                    }
                }
            }
            Err(e) => {
                return Err(timeskew::Error::Helper {
                    pid,
                    message: format!("pid {pid}: cannot wait for the helper: {e}"),
                });
            }
        }
        if grace.is_none() && termination_pending() {
            grace = Some(Instant::now() + GRACE);
        }
        if grace.is_some_and(|g| Instant::now() >= g) {
            return Err(timeskew::Error::Helper {
                pid,
                message: format!(
                    "pid {pid}: interrupted; helper process {child} finishes the change on its \
                     own — check with `timeskew status --pid {pid}`"
                ),
            });
        }
    }
    match serde_json::from_slice::<Answer<T>>(&bytes) {
        Ok(answer) => answer.into_result(pid),
        Err(_) => Err(timeskew::Error::Helper {
            pid,
            message: format!(
                "pid {pid}: helper process {child} ended without an answer ({}); check with \
                 `timeskew status --pid {pid}`",
                describe_end(child)
            ),
        }),
    }
}

fn termination_pending() -> bool {
    let mut pending = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigpending fills the sigset_t we pass; it is read only if that succeeded.
    if unsafe { libc::sigpending(pending.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: initialised by the successful sigpending above.
    let pending = unsafe { pending.assume_init() };
    timeskew::termination_signals()
        .iter()
        // SAFETY: sigismember reads the initialised set.
        .any(|s| unsafe { libc::sigismember(&pending, s as libc::c_int) } == 1)
}

/// How a helper that sent no answer ended (it is reaped here).
fn describe_end(child: Pid) -> String {
    match waitpid(child, None) {
        Ok(WaitStatus::Exited(_, code)) => format!("exit status {code}"),
        Ok(WaitStatus::Signaled(_, sig, _)) => format!("killed by {sig}"),
        Ok(other) => format!("{other:?}"),
        Err(e) => format!("not waitable: {e}"),
    }
}

/// Helpers that had answered but not exited yet when last looked at: reaped by a later
/// `reap`; those still exiting when the command ends are reaped by init.
static EXITING: Mutex<Vec<Pid>> = Mutex::new(Vec::new());

/// Reaps the helper once it has exited, without waiting for it: after its answer it only
/// exits, and its exit closes what it kept open — a file per thread of the target, milliseconds
/// at 1,000 threads — which the command need not wait for (nor, since the helper's standard
/// output is not the command's, anyone reading the command's output). Helpers from earlier
/// changes that have exited since are reaped too: a long-running command leaves no zombies.
fn reap(child: Pid) {
    let mut exiting = EXITING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    exiting.push(child);
    exiting.retain(|&c| {
        matches!(
            waitpid(c, Some(WaitPidFlag::WNOHANG)),
            Ok(WaitStatus::StillAlive)
        )
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command, Stdio};

    /// A child that exits once its stdin is closed: a helper still busy exiting.
    fn lingering() -> Child {
        Command::new("sh")
            .args(["-c", "read x"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("start sh")
    }

    /// Closes `child`'s stdin and waits (≤ 5 s) until it has exited, unreaped.
    fn let_exit(child: &mut Child) -> bool {
        drop(child.stdin.take());
        let stat = format!("/proc/{}/stat", child.id());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let state = std::fs::read_to_string(&stat).ok();
            if state.is_some_and(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            }) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }

    fn waiting(pid: Pid) -> bool {
        EXITING
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&pid)
    }

    #[test]
    fn a_helper_still_exiting_is_not_waited_for_and_is_reaped_by_a_later_reap() {
        let mut first = lingering();
        let mut second = lingering();
        let (a, b) = (
            Pid::from_raw(first.id() as i32),
            Pid::from_raw(second.id() as i32),
        );
        let started = Instant::now();
        reap(a);
        let took = started.elapsed();
        let first_kept = waiting(a);
        let exited = let_exit(&mut first);
        reap(b);
        let first_reaped = !waiting(a) && waitpid(a, Some(WaitPidFlag::WNOHANG)).is_err();
        let second_kept = waiting(b);
        // Every child ends reaped, whatever was asserted.
        let _ = let_exit(&mut second);
        let _ = waitpid(b, None);
        let _ = waitpid(a, None);
        EXITING
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|&p| p != a && p != b);
        assert!(took < Duration::from_millis(50), "reap waited {took:?}");
        assert!(
            first_kept && second_kept,
            "a running helper is kept for later"
        );
        assert!(exited, "the first child did not exit");
        assert!(
            first_reaped,
            "the exited helper was not reaped by the next reap"
        );
    }
}
