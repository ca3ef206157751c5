//! `StoppedProcess`: every thread of a process seized and stopped, released in `Drop`.

use std::collections::HashSet;

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::procfs;

/// One thread we hold in a ptrace-stop.
#[derive(Debug)]
pub struct HeldThread {
    pub tid: Pid,
    /// Signals that arrived while we held the thread; re-delivered when we let go.
    pub(crate) pending: Vec<Signal>,
    /// The thread sits in a signal-delivery-stop (rather than an event stop), so a signal given
    /// to PTRACE_DETACH is delivered.
    pub(crate) in_signal_stop: bool,
}

/// All threads of `pid`, stopped. Dropping it detaches every thread and re-delivers signals.
#[derive(Debug)]
pub struct StoppedProcess {
    pid: i32,
    threads: Vec<HeldThread>,
    /// False for a thread the caller already traces ([`StoppedProcess::adopt`]): we leave it
    /// stopped and traced when done.
    owned: bool,
}

/// How a thread reported after we asked it to stop or step.
pub(crate) enum Report {
    /// Stopped by PTRACE_INTERRUPT (an event stop) or by a single-step trap (a SIGTRAP
    /// signal-delivery-stop): ours, nothing to re-deliver.
    Trap { signal_stop: bool },
    /// A real signal arrived; the thread is in signal-delivery-stop.
    Signal(Signal),
    /// Job-control stop of the whole process.
    GroupStop(Signal),
    /// The thread is gone.
    Exited,
}

/// Waits for `tid` to report and classifies the stop.
pub(crate) fn wait_stop(pid: i32, tid: Pid, step: &'static str) -> Result<Report> {
    loop {
        match waitpid(tid, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::PtraceEvent(_, Signal::SIGTRAP, libc::PTRACE_EVENT_STOP)) => {
                return Ok(Report::Trap { signal_stop: false });
            }
            Ok(WaitStatus::PtraceEvent(_, sig, libc::PTRACE_EVENT_STOP)) => {
                return Ok(Report::GroupStop(sig));
            }
            Ok(WaitStatus::Stopped(_, Signal::SIGTRAP)) => {
                return Ok(Report::Trap { signal_stop: true });
            }
            Ok(WaitStatus::Stopped(_, sig)) => return Ok(Report::Signal(sig)),
            Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) => return Ok(Report::Exited),
            Ok(other) => {
                log::debug!("pid {pid} thread {tid}: ignoring wait status {other:?}");
            }
            Err(Errno::EINTR) => {}
            Err(Errno::ECHILD) => return Ok(Report::Exited),
            Err(e) => return Err(Error::from_errno(pid, tid.as_raw(), step, e)),
        }
    }
}

impl StoppedProcess {
    /// Seizes and interrupts every thread of `pid`, re-reading `/proc/PID/task` until a pass finds
    /// no thread we do not hold. Threads that exit meanwhile are skipped; zombie threads (which
    /// run no code) are left alone. On error, everything seized so far is released.
    pub fn stop(pid: i32) -> Result<StoppedProcess> {
        let mut held = StoppedProcess {
            pid,
            threads: Vec::new(),
            owned: true,
        };
        let mut seen: HashSet<i32> = HashSet::new();
        loop {
            let tids = procfs::threads(pid)?;
            let fresh: Vec<i32> = tids.into_iter().filter(|t| seen.insert(*t)).collect();
            if fresh.is_empty() {
                break;
            }
            // Seize and interrupt the whole batch first, then collect the stops: the threads
            // stop in parallel, which keeps the total stop time short.
            let mut batch = Vec::new();
            for tid in fresh {
                if let Some(t) = held.seize(tid)? {
                    batch.push(t);
                }
            }
            for tid in batch {
                held.collect_stop(tid)?;
            }
        }
        if held.threads.is_empty() {
            return Err(Error::Unsupported {
                pid,
                reason: "it has no live thread (zombie)".into(),
            });
        }
        log::debug!("pid {pid}: holding {} threads", held.threads.len());
        Ok(held)
    }

    /// Borrows a single-threaded process that the calling thread already traces and that sits in
    /// a ptrace-stop (for instance at PTRACE_EVENT_EXEC, where `timeskew run` injects). When
    /// dropped it stays traced and stopped; signals that arrived while we used it are sent again
    /// so the caller's own wait loop sees them.
    pub fn adopt(pid: i32) -> StoppedProcess {
        StoppedProcess {
            pid,
            threads: vec![HeldThread {
                tid: Pid::from_raw(pid),
                pending: Vec::new(),
                in_signal_stop: false,
            }],
            owned: false,
        }
    }

    /// PTRACE_SEIZE + PTRACE_INTERRUPT one thread; `None` if it is gone or a zombie.
    fn seize(&mut self, tid: i32) -> Result<Option<Pid>> {
        let pid = self.pid;
        if let Ok(info) = procfs::task_info(pid, Some(tid))
            && matches!(info.state, 'Z' | 'X')
        {
            return Ok(None);
        }
        let t = Pid::from_raw(tid);
        match ptrace::seize(t, ptrace::Options::empty()) {
            Ok(()) => {}
            Err(Errno::ESRCH) => return Ok(None),
            Err(e) => return Err(Error::from_errno(pid, tid, "attach with PTRACE_SEIZE", e)),
        }
        // Held from here on: Drop detaches it whatever happens next.
        self.threads.push(HeldThread {
            tid: t,
            pending: Vec::new(),
            in_signal_stop: false,
        });
        match ptrace::interrupt(t) {
            Ok(()) => Ok(Some(t)),
            Err(Errno::ESRCH) => {
                self.forget(t);
                Ok(None)
            }
            Err(e) => Err(Error::from_errno(pid, tid, "stop with PTRACE_INTERRUPT", e)),
        }
    }

    fn collect_stop(&mut self, tid: Pid) -> Result<()> {
        match wait_stop(self.pid, tid, "wait for the thread to stop")? {
            Report::Trap { signal_stop } => self.thread_mut(tid).in_signal_stop = signal_stop,
            Report::Signal(sig) => {
                let t = self.thread_mut(tid);
                t.pending.push(sig);
                t.in_signal_stop = true;
            }
            Report::GroupStop(sig) => {
                return Err(Error::Unsupported {
                    pid: self.pid,
                    reason: format!(
                        "it is stopped by job control ({sig}); resume it first (kill -CONT {})",
                        self.pid
                    ),
                });
            }
            Report::Exited => self.forget(tid),
        }
        Ok(())
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn threads(&self) -> &[HeldThread] {
        &self.threads
    }

    pub(crate) fn thread_mut(&mut self, tid: Pid) -> &mut HeldThread {
        let idx = self
            .threads
            .iter()
            .position(|t| t.tid == tid)
            .expect("only threads we hold are looked up");
        &mut self.threads[idx]
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

impl Drop for StoppedProcess {
    fn drop(&mut self) {
        if !self.owned {
            for t in self.threads.drain(..) {
                for sig in t.pending {
                    if let Err(e) = crate::sys::tgkill(self.pid, t.tid.as_raw(), sig) {
                        log::warn!("pid {}: re-queueing {sig} failed: {e}", self.pid);
                    }
                }
            }
            return;
        }
        for t in self.threads.drain(..) {
            let mut pending = t.pending.into_iter();
            // PTRACE_DETACH delivers its signal only from a signal-delivery-stop.
            let first = if t.in_signal_stop {
                pending.next()
            } else {
                None
            };
            match ptrace::detach(t.tid, first) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(e) => log::warn!("pid {}: detaching thread {} failed: {e}", self.pid, t.tid),
            }
            for sig in pending {
                // Further signals cannot ride on the detach: send them to the same thread.
                if let Err(e) = crate::sys::tgkill(self.pid, t.tid.as_raw(), sig) {
                    log::warn!("pid {}: re-delivering {sig} failed: {e}", self.pid);
                }
            }
        }
    }
}
