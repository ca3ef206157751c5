//! `StoppedProcess`: every thread of a process held in a ptrace-stop — what we hold, how a
//! thread reports, and waiting for it. Getting hold is in `seize.rs`, letting go in
//! `detach.rs`.
//!
//! No wait here can be stranded: every `waitpid` is non-blocking and polled against a deadline;
//! a thread that dies while held is reaped (a group leader's exit, and an execve by another
//! thread, wait for that), also while we are blocked attaching; an exec is reported as an event;
//! and a thread that does not stop because it sits in an uninterruptible wait or a frozen cgroup
//! makes us let go of everything instead of keeping the other threads stopped.

use std::time::Instant;

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::events::ChildEvents;
use crate::error::{Error, Result};
use crate::target::procfs;

/// One thread we hold in a ptrace-stop.
#[derive(Debug)]
pub struct HeldThread {
    pub tid: Pid,
    /// Signals that arrived while we held the thread; re-delivered when we let go.
    pub(crate) pending: Vec<i32>,
    /// The thread sits in a signal-delivery-stop (rather than an event stop), so a signal given
    /// to PTRACE_DETACH is delivered.
    pub(crate) in_signal_stop: bool,
}

/// All threads of `pid`, stopped. Dropping it detaches every thread and re-delivers signals.
#[derive(Debug)]
pub struct StoppedProcess {
    pub(super) pid: i32,
    pub(super) threads: Vec<HeldThread>,
    /// False for a thread the caller already traces ([`StoppedProcess::adopt`]): we leave it
    /// stopped and traced when done.
    pub(super) owned: bool,
    /// What wakes our polls when a thread stops.
    pub(super) events: ChildEvents,
    /// When the first thread was seized: the process has been (partly) held since.
    pub(super) since: Instant,
    /// Threads found without seccomp filters: nothing can add one while we hold them all.
    pub(crate) seccomp_free: Vec<Pid>,
}

/// How a thread reported.
#[derive(Debug)]
pub(crate) enum Report {
    /// Stopped by PTRACE_INTERRUPT (an event stop): ours, nothing to re-deliver.
    Interrupted,
    /// A syscall-entry or -exit stop (PTRACE_SYSCALL with TRACESYSGOOD).
    Syscall,
    /// A real signal arrived (a SIGTRAP too: we never single-step, so it is the target's own);
    /// the thread is in signal-delivery-stop.
    Signal(i32),
    /// Job-control stop of the whole process.
    GroupStop(i32),
    /// The thread is about to exit (PTRACE_EVENT_EXIT); it still needs detaching.
    Exiting,
    /// The process replaced its program (PTRACE_EVENT_EXEC).
    Exec,
    /// The thread is gone (reaped).
    Exited,
}

/// Classifies a raw wait status (read with libc's `waitpid`: nix's `WaitStatus` has no room for
/// real-time signals, and a target stopped by SIGRTMIN+n must not make us fail); `None` for
/// "nothing yet".
fn classify(status: libc::c_int) -> Option<Report> {
    if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
        return Some(Report::Exited);
    }
    if !libc::WIFSTOPPED(status) {
        return None; // continued
    }
    let sig = libc::WSTOPSIG(status);
    let event = (status >> 16) & 0xff;
    Some(match event {
        0 if sig == libc::SIGTRAP | 0x80 => Report::Syscall,
        0 => Report::Signal(sig),
        libc::PTRACE_EVENT_STOP if sig == libc::SIGTRAP => Report::Interrupted,
        libc::PTRACE_EVENT_STOP => Report::GroupStop(sig),
        libc::PTRACE_EVENT_EXIT => Report::Exiting,
        libc::PTRACE_EVENT_EXEC => Report::Exec,
        // Other events (fork/clone, only when a caller's own options ask for them): stopped.
        _ => Report::Interrupted,
    })
}

/// One non-blocking look at `tid`.
pub(super) fn poll(pid: i32, tid: Pid, step: &'static str) -> Result<Option<Report>> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes the status into the integer we pass.
        let rc = unsafe { libc::waitpid(tid.as_raw(), &mut status, libc::__WALL | libc::WNOHANG) };
        match Errno::result(rc) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(classify(status)),
            Err(Errno::EINTR) => {}
            Err(Errno::ECHILD) => return Ok(Some(Report::Exited)),
            // waitpid failed, not ptrace: say so (this used to read "ptrace failed").
            Err(e) => {
                return Err(Error::Wait {
                    pid,
                    tid: tid.as_raw(),
                    step,
                    source: e,
                });
            }
        }
    }
}

/// A signal number for messages: its name, or `SIGRTMIN+n`.
pub(crate) fn signal_name(sig: i32) -> String {
    match Signal::try_from(sig) {
        Ok(s) => s.to_string(),
        Err(_) if sig >= libc::SIGRTMIN() => format!("SIGRTMIN+{}", sig - libc::SIGRTMIN()),
        Err(_) => format!("signal {sig}"),
    }
}

/// The error for a thread that did not report in time, with what the kernel says it is doing.
pub(super) fn stuck(pid: i32, tid: i32, step: &'static str) -> Error {
    let state = procfs::task_info(pid, Some(tid))
        .map(|i| i.state)
        .unwrap_or('?');
    Error::Stuck {
        pid,
        tid,
        step,
        detail: format!(
            "state {state}, waiting in {}{}",
            procfs::wchan(pid, tid),
            if state == 'D' {
                ", an uninterruptible wait"
            } else {
                ""
            }
        ),
    }
}

impl StoppedProcess {
    /// Borrows a single-threaded process that the calling thread already traces (with
    /// PTRACE_O_TRACESYSGOOD) and that sits in a ptrace-stop (for instance at PTRACE_EVENT_EXEC,
    /// where `timeskew run` injects). When dropped it stays traced and stopped; signals that
    /// arrived while we used it are sent again so the caller's own wait loop sees them.
    pub fn adopt(pid: i32) -> StoppedProcess {
        StoppedProcess {
            pid,
            threads: vec![HeldThread {
                tid: Pid::from_raw(pid),
                pending: Vec::new(),
                in_signal_stop: false,
            }],
            owned: false,
            // The caller's own loop waits for SIGCHLD: we must not take it.
            events: ChildEvents::none(),
            since: Instant::now(),
            seccomp_free: Vec::new(),
        }
    }

    /// Records a report that came while we were running code in a held thread; `Err` if the
    /// thread cannot be used any more.
    pub(crate) fn note(&mut self, tid: Pid, report: &Report, step: &'static str) -> Result<()> {
        match report {
            Report::Interrupted | Report::Syscall => {
                if let Some(t) = self.thread_mut(tid) {
                    t.in_signal_stop = false;
                }
                Ok(())
            }
            Report::Signal(sig) | Report::GroupStop(sig) => {
                if let Some(t) = self.thread_mut(tid) {
                    t.pending.push(*sig);
                    t.in_signal_stop = matches!(report, Report::Signal(_));
                }
                Ok(())
            }
            Report::Exiting => {
                let _ = ptrace::detach(tid, None);
                self.forget(tid);
                Err(Error::ProcessGone {
                    pid: self.pid,
                    step,
                })
            }
            Report::Exec => Err(Error::Execed { pid: self.pid }),
            Report::Exited => {
                self.forget(tid);
                Err(Error::ProcessGone {
                    pid: self.pid,
                    step,
                })
            }
        }
    }

    /// Waits for `tid` to report, at most until `deadline`; then the thread is named as stuck.
    pub(crate) fn wait_stop(
        &mut self,
        tid: Pid,
        step: &'static str,
        deadline: Instant,
    ) -> Result<Report> {
        let mut round = 0;
        loop {
            if let Some(report) = poll(self.pid, tid, step)? {
                return Ok(report);
            }
            if Instant::now() >= deadline {
                return Err(stuck(self.pid, tid.as_raw(), step));
            }
            self.events.pause(&mut round);
        }
    }

    /// Fails if the process is being torn down (killed while held: its threads have left their
    /// stops for their exit stops). Checked before declaring a change done, since writes to a
    /// dying process's memory still succeed until its threads are let go.
    pub(crate) fn check_alive(&mut self, step: &'static str) -> Result<()> {
        let tids: Vec<Pid> = self.threads.iter().map(|t| t.tid).collect();
        for tid in tids {
            if let Some(report) = poll(self.pid, tid, step)? {
                self.note(tid, &report, step)?;
            }
        }
        if self.threads.is_empty() {
            return Err(Error::ProcessGone {
                pid: self.pid,
                step,
            });
        }
        Ok(())
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// When the first thread was seized (not counting the checks before).
    pub fn held_since(&self) -> Instant {
        self.since
    }

    pub fn threads(&self) -> &[HeldThread] {
        &self.threads
    }

    /// The held thread `tid`; only threads we hold are looked up, and a miss (which would be a
    /// bug) gets an entry of its own rather than a panic — this runs during cleanup (a
    /// `Transaction` dropped while unwinding) too — so the thread is still let go and its
    /// signals re-delivered.
    fn thread_mut(&mut self, tid: Pid) -> Option<&mut HeldThread> {
        if !self.threads.iter().any(|t| t.tid == tid) {
            log::warn!("pid {}: thread {tid} is not held", self.pid);
            self.threads.push(HeldThread {
                tid,
                pending: Vec::new(),
                in_signal_stop: false,
            });
        }
        self.threads.iter_mut().find(|t| t.tid == tid)
    }

    /// Drops a thread that exited: there is nothing left to detach.
    pub(crate) fn forget(&mut self, tid: Pid) {
        self.threads.retain(|t| t.tid != tid);
    }

    /// The thread to run injected syscalls in: one without signals of its own to re-deliver if
    /// possible (any live one works).
    pub(crate) fn worker(&self) -> Option<Pid> {
        self.threads
            .iter()
            .find(|t| t.pending.is_empty())
            .or_else(|| self.threads.first())
            .map(|t| t.tid)
    }
}
