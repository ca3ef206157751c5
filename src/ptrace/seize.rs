//! Getting hold of every thread of a process: seizing and interrupting them in batches, the
//! reaper that keeps an execve in the target from deadlocking us, and waiting out a thread in
//! an uninterruptible wait.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::ptrace::{self, Options};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;

use super::events::ChildEvents;
use super::stop::{HeldThread, Report, StoppedProcess, poll, signal_name, stuck};
use crate::error::{Error, Result};
use crate::target::procfs;

/// The options every thread is seized with: syscall stops told apart from SIGTRAP (remote
/// syscalls run with PTRACE_SYSCALL), and an exec reported as an event. Not
/// PTRACE_O_TRACEEXIT: a thread killed while we attach would then wait at its exit stop for
/// us, who may be blocked attaching to the thread whose execve killed it (see
/// [`reap_exited`]); without it, a killed thread becomes a zombie that polling reaps.
fn seize_options() -> Options {
    Options::PTRACE_O_TRACESYSGOOD | Options::PTRACE_O_TRACEEXEC
}

/// How long all threads together may take to reach their stop. A runnable thread stops within
/// microseconds to a few scheduler ticks; one that has not after this is blocked in the kernel.
const STOP_DEADLINE: Duration = Duration::from_millis(600);
/// While collecting stops, threads that have not stopped are checked this often for an
/// uninterruptible wait; finding one lets every thread go at once.
const STUCK_CHECK: Duration = Duration::from_millis(20);
/// How long we wait, holding nothing, for a thread in an uninterruptible wait to leave it.
const UNINTERRUPTIBLE_WAIT: Duration = Duration::from_millis(800);
/// Whole attempts at stopping the process when a thread turns out to be stuck.
const STOP_ATTEMPTS: usize = 4;

/// Pauses between looks at threads we do not hold (nothing to be woken by): yield at first,
/// then sleep a little longer each round.
fn backoff(round: &mut u32) {
    *round += 1;
    if *round < 3 {
        std::thread::yield_now();
    } else {
        std::thread::sleep(Duration::from_micros(u64::from(*round * 10).min(500)));
    }
}

/// What ended one attempt at stopping every thread.
enum Attempt {
    Held(Box<StoppedProcess>),
    /// A thread would not stop (uninterruptible wait): everything was let go; try again.
    Stuck(Error),
}

impl StoppedProcess {
    /// Seizes and interrupts every thread of `pid`, re-reading `/proc/PID/task` until a pass finds
    /// no thread we do not hold. Threads that exit meanwhile are skipped; zombie threads (which
    /// run no code) are left alone. A frozen process is refused before anything is touched; a
    /// thread in an uninterruptible wait is waited for without holding anything, and if one
    /// enters such a wait while the others are stopping, all are let go and we start again
    /// (bounded). On error, everything seized so far is released.
    pub fn stop(pid: i32) -> Result<StoppedProcess> {
        if let Some(why) = procfs::frozen_by(pid) {
            return Err(Error::Unsupported {
                pid,
                reason: format!("it is frozen ({why})"),
            });
        }
        let mut attempt = 0;
        loop {
            wait_while_uninterruptible(pid)?;
            match Self::try_stop(pid)? {
                Attempt::Held(held) => return Ok(*held),
                Attempt::Stuck(e) => {
                    log::debug!("pid {pid}: attempt {attempt} to stop every thread: {e}");
                    if attempt + 1 >= STOP_ATTEMPTS {
                        return Err(e);
                    }
                    attempt += 1;
                }
            }
        }
    }

    fn try_stop(pid: i32) -> Result<Attempt> {
        let watch = SeizeWatch::default();
        // Before the reaper starts: it inherits the signal mask.
        let events = ChildEvents::new(pid);
        std::thread::scope(|scope| {
            let reaper = scope.spawn(|| reap_exited(pid, &watch));
            let outcome = Self::seize_all(pid, &watch, events);
            watch.done.store(true, Ordering::Release);
            reaper.thread().unpark();
            outcome
        })
    }

    /// The seize-and-collect passes of [`try_stop`], watched by [`reap_exited`].
    fn seize_all(pid: i32, watch: &SeizeWatch, events: ChildEvents) -> Result<Attempt> {
        let mut held = StoppedProcess {
            pid,
            threads: Vec::new(),
            owned: true,
            events,
            since: Instant::now(),
            seccomp_free: Vec::new(),
        };
        let deadline = Instant::now() + STOP_DEADLINE;
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
                watch.set_seizing(Some(Instant::now()));
                let seized = held.seize(tid);
                watch.set_seizing(None);
                if let Some(t) = seized? {
                    if let Ok(mut list) = watch.seized.lock() {
                        list.push(t);
                    }
                    batch.push(t);
                }
            }
            if let Some(e) = held.collect_stops(batch, deadline)? {
                return Ok(Attempt::Stuck(e));
            }
        }
        // One more look at every thread: a thread that exec'd after another was collected has
        // taken over the leader's id, and its exec event is only seen here.
        if !held.threads.is_empty() {
            held.check_alive("stop every thread")?;
        }
        if held.threads.is_empty() {
            // Every thread we seized went away, yet the process is listed: a thread exec'd.
            if procfs::threads(pid).is_ok_and(|t| !t.is_empty()) {
                return Err(Error::Execed { pid });
            }
            return Err(Error::Unsupported {
                pid,
                reason: "it has no live thread (zombie)".into(),
            });
        }
        log::debug!("pid {pid}: holding {} threads", held.threads.len());
        Ok(Attempt::Held(Box::new(held)))
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
        // Not PTRACE_O_TRACEEXIT (see `seize_options`): a thread killed while we attach would
        // wait at its exit stop for us, and an execve in the target would deadlock on it. What
        // bounds every wait instead: each `waitpid` is a WNOHANG poll against a deadline, woken by
        // SIGCHLD; a thread that became a zombie reports as exited (or ECHILD) to that poll.
        match ptrace::seize(t, seize_options()) {
            Ok(()) => {}
            Err(Errno::ESRCH) => return Ok(None),
            // The kernel answers EPERM for a thread that exited since we listed it (it has an
            // exit state): gone, not a permission problem.
            Err(Errno::EPERM) if !procfs::thread_alive(pid, tid) => {
                return Ok(None);
            }
            // Refused: another tracer, or missing privileges — told apart by what /proc says now.
            Err(e @ (Errno::EPERM | Errno::EACCES)) => {
                let why = procfs::refusal(pid, tid);
                return Err(Error::refused(pid, "attach with PTRACE_SEIZE", e, why));
            }
            Err(e) => return Err(Error::ptrace(pid, tid, "attach with PTRACE_SEIZE", e)),
        }
        // Held from here on: Drop detaches it whatever happens next.
        if self.threads.is_empty() {
            self.since = Instant::now();
        }
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
            Err(e) => Err(procfs::errno_error(
                pid,
                tid,
                "stop with PTRACE_INTERRUPT",
                e,
            )),
        }
    }

    /// Polls every thread of `batch` until each has stopped (or gone). Returns `Some(error)`
    /// when a thread sits in an uninterruptible wait, so the caller lets everything go.
    fn collect_stops(&mut self, batch: Vec<Pid>, deadline: Instant) -> Result<Option<Error>> {
        let pid = self.pid;
        let step = "wait for the thread to stop";
        let mut waiting = batch;
        let mut round = 0;
        let mut next_check = Instant::now() + STUCK_CHECK;
        while !waiting.is_empty() {
            let mut still = Vec::with_capacity(waiting.len());
            for tid in waiting {
                match poll(pid, tid, step)? {
                    None => still.push(tid),
                    Some(report) => self.record_stop(tid, report)?,
                }
            }
            waiting = still;
            if waiting.is_empty() {
                break;
            }
            let now = Instant::now();
            if now >= next_check {
                next_check = now + STUCK_CHECK;
                // A thread in an uninterruptible wait cannot stop yet; a leader that exited
                // after it was seized (a zombie while other threads live) never reports a stop
                // at all. Either way: let everything go and start again — the next attempt
                // waits out the first and leaves the zombie alone.
                if let Some(&tid) = waiting.iter().find(|t| {
                    procfs::task_info(pid, Some(t.as_raw()))
                        .is_ok_and(|i| matches!(i.state, 'D' | 'Z' | 'X'))
                }) {
                    return Ok(Some(stuck(pid, tid.as_raw(), step)));
                }
                if let Some(why) = procfs::frozen_by(pid) {
                    return Err(Error::Unsupported {
                        pid,
                        reason: format!("it is frozen ({why})"),
                    });
                }
            }
            if now >= deadline {
                return Err(stuck(pid, waiting[0].as_raw(), step));
            }
            self.events.pause(&mut round);
        }
        Ok(None)
    }

    /// Records how a thread we interrupted reported.
    fn record_stop(&mut self, tid: Pid, report: Report) -> Result<()> {
        match report {
            Report::GroupStop(sig) => Err(Error::StoppedByJobControl {
                pid: self.pid,
                signal: Some(signal_name(sig)),
                meanwhile: false,
            }),
            // A thread that exits while we attach is simply not held: nothing of it is left
            // to change (`note` lets it go and forgets it).
            Report::Exiting | Report::Exited => {
                let _ = self.note(tid, &report, "wait for the thread to stop");
                Ok(())
            }
            other => self.note(tid, &other, "wait for the thread to stop"),
        }
    }
}

/// What the reaper sees of the thread that seizes.
#[derive(Default)]
pub(super) struct SeizeWatch {
    /// Every thread seized so far.
    pub(super) seized: Mutex<Vec<Pid>>,
    /// When the PTRACE_SEIZE under way started, if one is.
    seizing_since: Mutex<Option<Instant>>,
    pub(super) done: AtomicBool,
}

impl SeizeWatch {
    pub(super) fn set_seizing(&self, since: Option<Instant>) {
        if let Ok(mut s) = self.seizing_since.lock() {
            *s = since;
        }
    }

    /// A PTRACE_SEIZE has been under way for longer than a seize takes unless it is blocked.
    fn seize_blocked(&self) -> bool {
        self.seizing_since
            .lock()
            .is_ok_and(|s| s.is_some_and(|t| t.elapsed() >= SEIZE_BLOCKED))
    }
}

/// A PTRACE_SEIZE that takes this long is blocked on the target's `cred_guard_mutex`.
const SEIZE_BLOCKED: Duration = Duration::from_millis(5);

/// Reaps threads we seized that have exited, while the other thread of ours is blocked
/// seizing.
///
/// A thread that calls execve while we attach kills every other thread and waits — holding the
/// process's `cred_guard_mutex` — until they are released; a traced thread is released only when
/// its tracer reaps it, and PTRACE_SEIZE of any further thread blocks on that very mutex. Any
/// thread of the tracer's process may reap its tracees; only zombies are reaped here (a ptrace
/// stop would be reported to `waitid` too, and those belong to the seizing thread).
pub(super) fn reap_exited(pid: i32, watch: &SeizeWatch) {
    while !watch.done.load(Ordering::Acquire) {
        if watch.seize_blocked() {
            let tids: Vec<Pid> = watch.seized.lock().map(|l| l.clone()).unwrap_or_default();
            for tid in tids {
                let zombie = procfs::task_info(pid, Some(tid.as_raw()))
                    .is_ok_and(|i| matches!(i.state, 'Z' | 'X'));
                if !zombie {
                    continue;
                }
                let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::__WALL;
                if let Ok(status) = waitid(Id::Pid(tid), flags) {
                    log::debug!("pid {pid}: reaped thread {tid} ({status:?})");
                }
            }
        }
        std::thread::park_timeout(Duration::from_millis(1));
    }
}

/// Waits (holding nothing) while a thread of `pid` is in an uninterruptible wait, such as a
/// vfork parent waiting for its child: it could not stop, and every other thread would stay
/// stopped meanwhile. Refuses if it lasts.
fn wait_while_uninterruptible(pid: i32) -> Result<()> {
    let deadline = Instant::now() + UNINTERRUPTIBLE_WAIT;
    let mut round = 0;
    loop {
        let busy = procfs::thread_in_state(pid, &['D'])?;
        let Some(tid) = busy else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            return Err(stuck(pid, tid, "stop every thread"));
        }
        backoff(&mut round);
    }
}
