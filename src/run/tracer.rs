//! The tracer thread's event loop: starts the command held before its exec, then handles each
//! ptrace stop (exec, fork/vfork/clone, signal delivery, job control) until the command exits.

use std::ffi::CString;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::ptrace::{self, Options};
use nix::sys::signal::{self, SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getpid, gettid};

use super::privileges::{has_cap_sys_ptrace, privileges_lost};
use super::{
    ExitOutcome, NotSkewed, Notice, PrivilegesDropped, RELAYED, RunError, RunReport, held_child,
};
use crate::error::Error;
use crate::ops::inject::inject_traced;
use crate::ptrace::exec_stop::{LeftExecve, leave_execve};
use crate::ptrace::raw;
use crate::signals;
use crate::skew::Skew;
use crate::target::procfs;

/// How long the tracer sleeps at most without a SIGCHLD; only matters when another thread of
/// the caller swallowed one (see the module's caveats).
const FALLBACK_WAKEUP: Duration = Duration::from_millis(100);

/// The tracer thread: starts the command and follows it until it exits. Tracees still alive
/// when this thread ends are detached by the kernel.
pub(super) fn trace(
    name: &str,
    argv: &[CString],
    skew: &Skew,
    mask: &SigSet,
    sigchld: &libc::sigaction,
    waited: &SigSet,
    on_notice: impl FnMut(&Notice<'_>),
) -> Result<RunReport, RunError> {
    let child = held_child::fork_held(argv, mask, sigchld).map_err(|source| RunError::Start {
        program: name.to_string(),
        step: "fork",
        source,
    })?;
    let main = child.pid;
    let options = Options::PTRACE_O_TRACEEXEC
        | Options::PTRACE_O_TRACEFORK
        | Options::PTRACE_O_TRACEVFORK
        | Options::PTRACE_O_TRACECLONE
        // Only to recognise the one syscall-exit-stop after each exec (see `leave_execve`).
        | Options::PTRACE_O_TRACESYSGOOD;
    let attached = ptrace::seize(main, options)
        .map_err(|e| {
            crate::target::procfs::errno_error(
                main.as_raw(),
                main.as_raw(),
                "attach to the command with PTRACE_SEIZE",
                e,
            )
        })
        .and_then(|()| {
            child.release().map_err(|e| {
                crate::target::procfs::errno_error(
                    main.as_raw(),
                    main.as_raw(),
                    "release the command",
                    e,
                )
            })
        });
    if let Err(source) = attached {
        // It has not exec'd yet: nothing of the user's has run.
        let _ = signal::kill(main, Signal::SIGKILL);
        let _ = waitpid(main, Some(WaitPidFlag::__WALL));
        return Err(RunError::Trace {
            program: name.to_string(),
            source,
        });
    }
    log::debug!("{name}: started as pid {main}, traced");

    let mut tracer = Tracer {
        skew,
        main,
        me: gettid(),
        outcome: None,
        main_execed: false,
        skewed: 0,
        not_skewed: 0,
        recent: Vec::new(),
        older: Vec::new(),
        privileges_drop: !has_cap_sys_ptrace(),
        stop_sender: None,
        on_notice,
    };
    let lost = |source| RunError::Wait {
        program: name.to_string(),
        pid: main.as_raw(),
        source,
    };
    while tracer.outcome.is_none() {
        tracer.drain().map_err(lost)?;
        if tracer.outcome.is_some() {
            break;
        }
        let woke = signals::sigtimedwait(waited, FALLBACK_WAKEUP);
        std::mem::swap(&mut tracer.older, &mut tracer.recent);
        tracer.recent.clear();
        match woke {
            Ok(Some(info)) if info.signal != Signal::SIGCHLD => tracer.relay(info).map_err(lost)?,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(lost(e)),
        }
    }
    // Handle what is already queued (an exec to skew, a fork to let go); whatever comes later
    // is the kernel's: it detaches the remaining tracees when this thread ends.
    let _ = tracer.drain();

    let outcome = tracer.outcome.expect("the loop ends with an outcome");
    if !tracer.main_execed
        && outcome == ExitOutcome::Exited(127)
        && let Some(source) = child.exec_error()
    {
        return Err(RunError::Exec {
            program: name.to_string(),
            source,
        });
    }
    Ok(RunReport {
        outcome,
        skewed: tracer.skewed,
        not_skewed: tracer.not_skewed,
    })
}

/// The state of the wait loop.
pub(super) struct Tracer<'a, F> {
    skew: &'a Skew,
    /// The command: its end is ours.
    pub(super) main: Pid,
    /// This thread: the tracer of every tracee.
    pub(super) me: Pid,
    pub(super) outcome: Option<ExitOutcome>,
    main_execed: bool,
    skewed: u64,
    not_skewed: u64,
    /// Relayable signals the command received (signal, sender) since the last wake-up, and in
    /// the round before: a signal sent to the whole process group reaches it without us.
    pub(super) recent: Vec<(Signal, i32)>,
    pub(super) older: Vec<(Signal, i32)>,
    /// We lack CAP_SYS_PTRACE: setuid/setgid/file capabilities do not apply to traced execs.
    privileges_drop: bool,
    /// Who sent the command the stop signal it last took (0: the kernel, a terminal).
    stop_sender: Option<i32>,
    on_notice: F,
}

impl<F: FnMut(&Notice<'_>)> Tracer<'_, F> {
    /// Handles every stop and exit already reported, without blocking.
    pub(super) fn drain(&mut self) -> Result<(), Errno> {
        let flags = libc::__WALL | libc::__WNOTHREAD | libc::WNOHANG;
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: waitpid writes the status into the integer we pass. Raw, because nix's
            // WaitStatus cannot hold a real-time signal and the stop would be lost with it.
            let rc = unsafe { libc::waitpid(-1, &mut status, flags) };
            match Errno::result(rc) {
                Ok(0) => return Ok(()),
                Ok(pid) => {
                    let pid = Pid::from_raw(pid);
                    match WaitStatus::from_raw(pid, status) {
                        Ok(status) => self.handle(status),
                        Err(_) => self.handle_realtime(pid, status),
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::ECHILD) if self.outcome.is_some() => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// A stop or an end involving a real-time signal (SIGRTMIN+n), which nix cannot name: the
    /// signal is passed on to the tracee, or a command it ended ends with 128 + its number.
    fn handle_realtime(&mut self, pid: Pid, status: libc::c_int) {
        if libc::WIFSTOPPED(status) {
            let sig = libc::WSTOPSIG(status);
            log::trace!("pid {pid}: stopped by signal {sig}");
            if let Err(e) = raw::ptrace_cont(pid, sig) {
                log::debug!("pid {pid}: PTRACE_CONT with signal {sig} failed: {e}");
            }
        } else if libc::WIFSIGNALED(status) && pid == self.main {
            self.outcome = Some(ExitOutcome::Exited(128 + libc::WTERMSIG(status)));
        }
    }

    fn handle(&mut self, status: WaitStatus) {
        log::trace!("{status:?}");
        match status {
            WaitStatus::Exited(pid, code) => {
                if pid == self.main {
                    self.outcome = Some(ExitOutcome::Exited(code));
                }
            }
            WaitStatus::Signaled(pid, signal, core_dumped) => {
                if pid == self.main {
                    self.outcome = Some(ExitOutcome::Signaled {
                        signal,
                        core_dumped,
                    });
                }
            }
            // A signal on its way to the tracee: pass it on.
            WaitStatus::Stopped(pid, signal) => {
                if RELAYED.contains(&signal) && self.in_command(pid) {
                    let sender = ptrace::getsiginfo(pid).map_or(0, |si| signals::sender(&si));
                    self.recent.push((signal, sender));
                }
                if is_stop_signal(signal) && self.in_command(pid) {
                    self.stop_sender =
                        Some(ptrace::getsiginfo(pid).map_or(0, |si| signals::sender(&si)));
                }
                self.resume(pid, Some(signal));
            }
            WaitStatus::PtraceEvent(pid, _, libc::PTRACE_EVENT_EXEC) => {
                if self.leave_execve(pid) {
                    self.exec(pid);
                    self.resume(pid, None);
                }
            }
            WaitStatus::PtraceEvent(pid, signal, libc::PTRACE_EVENT_STOP)
                if is_stop_signal(signal) =>
            {
                self.group_stop(pid, signal);
            }
            // Fork, vfork and clone events, the first stop of a new tracee, the end of a
            // group-stop: nothing to do but continue.
            WaitStatus::PtraceEvent(pid, ..) | WaitStatus::PtraceSyscall(pid) => {
                self.resume(pid, None);
            }
            WaitStatus::Continued(_) | WaitStatus::StillAlive => {}
        }
    }

    fn resume(&self, pid: Pid, signal: Option<Signal>) {
        match ptrace::cont(pid, signal) {
            Ok(()) => {}
            // Killed meanwhile (SIGKILL needs no tracer): its exit comes next.
            Err(Errno::ESRCH) => log::debug!("pid {pid} vanished before it could be continued"),
            Err(e) => log::warn!("pid {pid}: PTRACE_CONT failed: {e}"),
        }
    }

    /// Moves `pid` from its exec event to the exit of execve (see [`leave_execve`]); false if
    /// something else came first (handled here) or the process is gone.
    fn leave_execve(&mut self, pid: Pid) -> bool {
        match leave_execve(pid) {
            LeftExecve::AtExit => true,
            LeftExecve::Other(status) => {
                self.handle(status);
                false
            }
            LeftExecve::Lost => false,
        }
    }

    /// A new program in `pid`, stopped before its first instruction: skew it.
    fn exec(&mut self, pid: Pid) {
        if pid == self.main {
            self.main_execed = true;
        }
        let program = procfs::exe(pid.as_raw())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "?".into());
        if self.privileges_drop
            && let Some(lost) = privileges_lost(pid.as_raw())
        {
            (self.on_notice)(&Notice::PrivilegesDropped(PrivilegesDropped {
                pid: pid.as_raw(),
                program: &program,
                lost: &lost,
            }));
        }
        match inject_traced(pid.as_raw(), self.skew) {
            Ok(report) => {
                self.skewed += 1;
                log::info!(
                    "pid {pid}: {program} skewed, {} (stopped {} µs)",
                    self.skew,
                    report.stopped_for.as_micros()
                );
            }
            Err(error) => {
                // Only SIGKILL ends a process in a ptrace-stop; the injection's own waitpid may
                // have reaped it, taking its status with it.
                if signal::kill(pid, None) == Err(Errno::ESRCH) {
                    if pid == self.main {
                        self.outcome = Some(ExitOutcome::Signaled {
                            signal: Signal::SIGKILL,
                            core_dumped: false,
                        });
                    }
                    return;
                }
                if matches!(error, Error::ProcessGone { .. }) {
                    log::debug!("pid {pid} ({program}) died while being skewed: {error}");
                    return;
                }
                self.not_skewed += 1;
                (self.on_notice)(&Notice::NotSkewed(NotSkewed {
                    pid: pid.as_raw(),
                    program: &program,
                    error: &error,
                }));
            }
        }
    }

    /// `pid` entered a job-control stop: leave it stopped (PTRACE_LISTEN keeps its events coming
    /// to us). When the command itself stops, stop ourselves the same way so the shell sees the
    /// job stopped, and continue the command when we are continued.
    fn group_stop(&mut self, pid: Pid, signal: Signal) {
        if pid == self.main {
            let _ = crate::fault::point(pid.as_raw(), "run-group-stop");
        }
        match raw::ptrace_listen(pid) {
            Ok(()) => {}
            Err(Errno::ESRCH) => return,
            Err(e) => {
                log::warn!("pid {pid}: PTRACE_LISTEN failed ({e}); continuing it instead");
                self.resume(pid, None);
                return;
            }
        }
        if pid != self.main {
            return;
        }
        // Stopped by a process outside the job (a pause nemesis, `kill -STOP` of the command's
        // pid): its SIGCONT will come to the command alone, never to us. Stopped ourselves, we
        // would stay stopped, and the command would hang at its next ptrace stop (a fork, an
        // exec, a signal) waiting for us — found with SIGSTOP/SIGCONT every few ms. The stop
        // is the command's only: we keep serving. A stop from inside the job (the command
        // stopping itself) or from the terminal is mirrored, so the shell sees the job stopped.
        if let Some(sender) = self.stop_sender.take()
            && sender > 0
            && !self.in_job(sender)
        {
            log::debug!(
                "the command was stopped ({signal}) by pid {sender}, outside the job: timeskew \
                 runs on"
            );
            return;
        }
        // A SIGCONT since the stop signal (`fg` right behind Ctrl-Z, or while timeskew was
        // stopped itself before it got to this report) has ended the command's stop already:
        // it waits pending in the command, which reports again to be continued. Stopping
        // ourselves then would wait for a SIGCONT that has come and gone. (A stop signal flushes
        // any SIGCONT pending before it, so a pending one always came after.) One coming after
        // that look must not be missed either: our own stop signal is first queued blocked, so
        // that such a SIGCONT flushes it (the kernel drops every pending stop signal on
        // SIGCONT, blocked or not); it takes effect only when unblocked after the look. SIGSTOP
        // cannot be blocked: for it the look and the stop stay two steps.
        let mut own = SigSet::empty();
        own.add(signal);
        let mut before = SigSet::empty();
        let queued = signal != Signal::SIGSTOP
            && signal::pthread_sigmask(
                signal::SigmaskHow::SIG_BLOCK,
                Some(&own),
                Some(&mut before),
            )
            .is_ok()
            && !before.contains(signal);
        if queued {
            // Directed at this thread, so it stops when unblocked, before the call returns (a
            // stop signal in an orphaned process group is discarded: then we do not stop, and
            // neither should it).
            if let Err(e) = raw::tgkill(getpid().as_raw(), self.me.as_raw(), signal) {
                log::warn!("could not stop timeskew with {signal}: {e}");
            }
        }
        if procfs::signal_pending(self.main.as_raw(), Signal::SIGCONT) {
            log::debug!("the command stopped ({signal}) and was continued since: timeskew runs on");
            if queued {
                // Ours is taken back unseen (if no SIGCONT flushed it already).
                let _ = signals::sigtimedwait(&own, Duration::ZERO);
                let _ = signal::pthread_sigmask(signal::SigmaskHow::SIG_UNBLOCK, Some(&own), None);
            }
            return;
        }
        log::debug!("the command stopped ({signal}): stopping timeskew too");
        // Tests: the job continued right after the look.
        let _ = crate::fault::point(-nix::unistd::getpgrp().as_raw(), "run-self-stop");
        if queued {
            let _ = signal::pthread_sigmask(signal::SigmaskHow::SIG_UNBLOCK, Some(&own), None);
        } else if let Err(e) = raw::tgkill(getpid().as_raw(), self.me.as_raw(), signal) {
            log::warn!("could not stop timeskew with {signal}: {e}");
        }
        log::debug!("timeskew continued: continuing the command");
        let _ = signal::kill(self.main, Signal::SIGCONT);
    }
}

impl<F> Tracer<'_, F> {
    /// Whether `pid` belongs to the job: this process, the command or a process it started
    /// (traced by us).
    fn in_job(&self, pid: i32) -> bool {
        pid == getpid().as_raw()
            || pid == self.main.as_raw()
            || procfs::tracer_of(pid).is_some_and(|(tracer, _)| tracer == self.me.as_raw())
    }
}

fn is_stop_signal(signal: Signal) -> bool {
    matches!(
        signal,
        Signal::SIGSTOP | Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU
    )
}
