//! `StoppedProcess`: every thread of a process seized and stopped, released in `Drop`.
//!
//! No wait here can be stranded: every `waitpid` is non-blocking and polled against a deadline;
//! a thread that dies while held is reaped (a group leader's exit, and an execve by another
//! thread, wait for that), also while we are blocked attaching; an exec is reported as an event;
//! and a thread that does not stop because it sits in an uninterruptible wait or a frozen cgroup
//! makes us let go of everything instead of keeping the other threads stopped.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::ptrace::{self, Options};
use nix::sys::signal::Signal;
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;

use super::events::ChildEvents;
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
/// How long `Drop` keeps trying to detach or reap threads that are on their way out.
const RELEASE_DEADLINE: Duration = Duration::from_millis(300);

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
    pid: i32,
    threads: Vec<HeldThread>,
    /// False for a thread the caller already traces ([`StoppedProcess::adopt`]): we leave it
    /// stopped and traced when done.
    owned: bool,
    /// What wakes our polls when a thread stops.
    events: ChildEvents,
    /// When the first thread was seized: the process has been (partly) held since.
    since: Instant,
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
fn poll(pid: i32, tid: Pid, step: &'static str) -> Result<Option<Report>> {
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

/// The error for a thread that did not report in time, with what the kernel says it is doing.
fn stuck(pid: i32, tid: i32, step: &'static str) -> Error {
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

/// What ended one attempt at stopping every thread.
enum Attempt {
    Held(StoppedProcess),
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
        let mut last = None;
        for attempt in 0..STOP_ATTEMPTS {
            wait_while_uninterruptible(pid)?;
            match Self::try_stop(pid)? {
                Attempt::Held(held) => return Ok(held),
                Attempt::Stuck(e) => {
                    log::debug!("pid {pid}: attempt {attempt} to stop every thread: {e}");
                    last = Some(e);
                }
            }
        }
        Err(last.expect("at least one attempt ran"))
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
        Ok(Attempt::Held(held))
    }

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

    /// PTRACE_SEIZE + PTRACE_INTERRUPT one thread; `None` if it is gone or a zombie.
    fn seize(&mut self, tid: i32) -> Result<Option<Pid>> {
        let pid = self.pid;
        if let Ok(info) = procfs::task_info(pid, Some(tid))
            && matches!(info.state, 'Z' | 'X')
        {
            return Ok(None);
        }
        let t = Pid::from_raw(tid);
        match ptrace::seize(t, seize_options()) {
            Ok(()) => {}
            Err(Errno::ESRCH) => return Ok(None),
            // The kernel answers EPERM for a thread that exited since we listed it (it has an
            // exit state): gone, not a permission problem.
            Err(Errno::EPERM)
                if !procfs::task_info(pid, Some(tid))
                    .is_ok_and(|i| !matches!(i.state, 'Z' | 'X')) =>
            {
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
                if let Some(&tid) = waiting.iter().find(|t| {
                    procfs::task_info(pid, Some(t.as_raw())).is_ok_and(|i| i.state == 'D')
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
            Report::GroupStop(sig) => Err(Error::Unsupported {
                pid: self.pid,
                reason: format!(
                    "it is stopped by job control ({}); resume it first (kill -CONT {})",
                    signal_name(sig),
                    self.pid
                ),
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

    /// Records a report that came while we were running code in a held thread; `Err` if the
    /// thread cannot be used any more.
    pub(crate) fn note(&mut self, tid: Pid, report: &Report, step: &'static str) -> Result<()> {
        match report {
            Report::Interrupted | Report::Syscall => {
                self.thread_mut(tid).in_signal_stop = false;
                Ok(())
            }
            Report::Signal(sig) | Report::GroupStop(sig) => {
                let t = self.thread_mut(tid);
                t.pending.push(*sig);
                t.in_signal_stop = matches!(report, Report::Signal(_));
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
    /// bug) gets a dummy entry rather than a panic, since this runs during cleanup too.
    pub(crate) fn thread_mut(&mut self, tid: Pid) -> &mut HeldThread {
        if let Some(idx) = self.threads.iter().position(|t| t.tid == tid) {
            return &mut self.threads[idx];
        }
        log::warn!("pid {}: thread {tid} is not held", self.pid);
        self.threads.push(HeldThread {
            tid,
            pending: Vec::new(),
            in_signal_stop: false,
        });
        self.threads.last_mut().expect("just pushed")
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

    /// Lets one thread go: PTRACE_DETACH (with its first pending signal when it sits in a
    /// signal-delivery-stop), the other pending signals sent after it. `false` when the thread
    /// is not in a stop any more: it is on its way out (killed while held).
    fn release(&self, t: &mut HeldThread) -> bool {
        // PTRACE_DETACH delivers its signal only from a signal-delivery-stop.
        let first = if t.in_signal_stop && !t.pending.is_empty() {
            Some(t.pending.remove(0))
        } else {
            None
        };
        match crate::ptrace::raw::ptrace_detach(t.tid, first.unwrap_or(0)) {
            Ok(()) => {}
            Err(Errno::ESRCH) => {
                if let Some(sig) = first {
                    t.pending.insert(0, sig);
                }
                return false;
            }
            Err(e) => log::warn!("pid {}: detaching thread {} failed: {e}", self.pid, t.tid),
        }
        for sig in t.pending.drain(..) {
            // Further signals cannot ride on the detach: send them to the same thread.
            let name = signal_name(sig);
            match crate::ptrace::raw::tgkill_raw(self.pid, t.tid.as_raw(), sig) {
                Ok(()) => {}
                // The thread is gone, and the signal with it.
                Err(Errno::ESRCH) => log::debug!("pid {}: {name} not re-delivered: gone", self.pid),
                Err(e) => log::warn!("pid {}: re-delivering {name} failed: {e}", self.pid),
            }
        }
        true
    }

    /// Threads that were not in a stop when we let go are dying: each is reaped as a zombie (or
    /// detached if it stops again), round-robin, so that no traced zombie of ours is left for
    /// a group leader's exit to wait on — the leader can only be reaped after the others.
    fn reap_dying(&mut self, mut dying: Vec<HeldThread>) {
        let deadline = Instant::now() + RELEASE_DEADLINE;
        let mut round = 0;
        while !dying.is_empty() {
            let mut still = Vec::new();
            for mut t in dying {
                match poll(self.pid, t.tid, "release a thread") {
                    Ok(Some(Report::Exited)) | Err(_) => {}
                    Ok(Some(_)) => {
                        if !self.release(&mut t) {
                            still.push(t);
                        }
                    }
                    Ok(None) => still.push(t),
                }
            }
            dying = still;
            if dying.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                // Gone or going: nothing of ours is left in it. Otherwise say so.
                let level = if procfs::task_info(self.pid, None).is_ok_and(|i| i.state != 'Z') {
                    log::Level::Warn
                } else {
                    log::Level::Debug
                };
                log::log!(
                    level,
                    "pid {}: {} thread(s) neither stopped nor exited; the kernel lets them go \
                     when this process exits",
                    self.pid,
                    dying.len()
                );
                return;
            }
            self.events.pause(&mut round);
        }
    }
}

/// What the reaper sees of the thread that seizes.
#[derive(Default)]
struct SeizeWatch {
    /// Every thread seized so far.
    seized: Mutex<Vec<Pid>>,
    /// When the PTRACE_SEIZE under way started, if one is.
    seizing_since: Mutex<Option<Instant>>,
    done: AtomicBool,
}

impl SeizeWatch {
    fn set_seizing(&self, since: Option<Instant>) {
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
fn reap_exited(pid: i32, watch: &SeizeWatch) {
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
        let busy = procfs::threads(pid)?
            .into_iter()
            .find(|&tid| procfs::task_info(pid, Some(tid)).is_ok_and(|i| i.state == 'D'));
        let Some(tid) = busy else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            return Err(stuck(pid, tid, "stop every thread"));
        }
        backoff(&mut round);
    }
}

impl Drop for StoppedProcess {
    fn drop(&mut self) {
        if !self.owned {
            for t in self.threads.drain(..) {
                for sig in t.pending {
                    if let Err(e) = crate::ptrace::raw::tgkill_raw(self.pid, t.tid.as_raw(), sig) {
                        log::warn!(
                            "pid {}: re-queueing {} failed: {e}",
                            self.pid,
                            signal_name(sig)
                        );
                    }
                }
            }
            return;
        }
        let threads: Vec<HeldThread> = self.threads.drain(..).collect();
        let mut dying = Vec::new();
        for mut t in threads {
            if !self.release(&mut t) {
                dying.push(t);
            }
        }
        if !dying.is_empty() {
            self.reap_dying(dying);
        }
    }
}
