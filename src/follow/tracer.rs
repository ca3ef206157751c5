//! The follower's tracer thread: injects the selection, traces every followed process and
//! handles its stops (exec, fork/vfork/clone, signals, job control) and the process events of
//! the machine until the experiment ends. When the thread exits, the kernel detaches every
//! tracee without stopping it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::ptrace::{self, Options};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, gettid};

use super::control::{Asked, Control};
use super::netlink::{ProcEvent, ProcEvents, Received};
use super::{
    EndReason, FollowEnd, FollowReport, FollowerUpdate, Latencies, Missed, NAP, RESCAN, Started,
};
use crate::error::{Error, Result};
use crate::ops::inject::{inject, inject_traced};
use crate::ops::status::FOLLOWER_THREAD;
use crate::ptrace::exec_stop::{LeftExecve, leave_execve};
use crate::ptrace::raw;
use crate::report::Follower as FollowerId;
use crate::select::{Selection, has_exited};
use crate::skew::{Skew, SlewRate};
use crate::target::{Target, procfs};

/// Attempts at adopting one process (an exec between its injection and its seize starts over).
const ADOPT_ATTEMPTS: u32 = 3;
/// Failed adoptions of one process before the rescans stop trying it.
const MAX_FAILURES: u32 = 3;
/// How long a process that entered a container by a fork may stay without exec'ing before it
/// is skewed as it is.
const PENDING_GRACE: Duration = Duration::from_millis(500);
/// How long the follower waits for the kernel to finish detaching its tracees.
const DETACH_WAIT: Duration = Duration::from_secs(2);

/// `TIMESKEW_FORCE_FOLLOW_WITHOUT_PTRACE=1`, in test builds only: follow by the process events
/// alone, nothing traced, every program injected after its exec — what the tests measure to
/// show what tracing buys. The release binary ignores it.
fn without_ptrace() -> bool {
    cfg!(feature = "fault-injection")
        && std::env::var_os("TIMESKEW_FORCE_FOLLOW_WITHOUT_PTRACE").is_some_and(|v| v == "1")
}

/// `TIMESKEW_FORCE_FOLLOW_NO_EVENTS=1`, in test builds only: as without CAP_NET_ADMIN, no
/// process events — the rescans alone find newcomers.
fn without_events() -> bool {
    cfg!(feature = "fault-injection")
        && std::env::var_os("TIMESKEW_FORCE_FOLLOW_NO_EVENTS").is_some_and(|v| v == "1")
}

fn options() -> Options {
    Options::PTRACE_O_TRACEEXEC
        | Options::PTRACE_O_TRACEFORK
        | Options::PTRACE_O_TRACEVFORK
        | Options::PTRACE_O_TRACECLONE
        // Only to recognise the syscall-exit stop after each exec (see `leave_execve`).
        | Options::PTRACE_O_TRACESYSGOOD
}

pub(super) struct Setup<'a, F> {
    pub selection: &'a Selection,
    pub skew: &'a Skew,
    pub cgroups: &'a [PathBuf],
    pub initial: Vec<i32>,
    pub end: FollowEnd<'a>,
    pub on_started: F,
}

/// What the tracer leaves for recovery.
pub(super) struct Traced {
    pub report: FollowReport,
    /// Every process that holds the fault because of us (injected, or forked from one).
    pub touched: BTreeSet<i32>,
    /// Requests to end from other timeskews, answered once recovery is done.
    pub control: Option<Control>,
    /// Asked to end by slewing back (`recover --slew`) rather than recovering at once.
    pub slew_back: Option<SlewRate>,
}

/// Runs the tracer thread to the end of the experiment; returns once the kernel has detached
/// every tracee.
pub(super) fn trace<F: FnOnce(Started) + Send>(setup: Setup<'_, F>) -> Result<Traced> {
    // SIGCHLD reports our tracees' stops: blocked here (the tracer thread inherits the mask)
    // and read from a signalfd.
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    let mut old = SigSet::empty();
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&chld), Some(&mut old)).map_err(|e| {
        Error::Helper {
            pid: 0,
            message: format!("cannot block SIGCHLD for the follower: {e}"),
        }
    })?;
    let result = std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            // Its name tells `status` that a followed process's tracer is a follower.
            .name(FOLLOWER_THREAD.into())
            .spawn_scoped(scope, || {
                let tid = gettid().as_raw();
                run_first(tid);
                (
                    tid,
                    Follower::new(&setup).map(|mut f| {
                        // A bug must not cost the targets their recovery: what was touched
                        // is recovered all the same.
                        let run = std::panic::AssertUnwindSafe(|| {
                            f.run(setup.initial.clone(), setup.end, setup.on_started)
                        });
                        f.report.ended_by = std::panic::catch_unwind(run).unwrap_or_else(|_| {
                            log::error!("the follower failed: ending the experiment");
                            EndReason::Failed
                        });
                        f.finish()
                    }),
                )
            });
        match thread {
            Ok(handle) => match handle.join() {
                Ok(r) => Ok(r),
                Err(panic) => std::panic::resume_unwind(panic),
            },
            Err(e) => Err(Error::Helper {
                pid: 0,
                message: format!("cannot start the follower thread: {e}"),
            }),
        }
    });
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    let (tid, traced) = result?;
    let traced = traced?;
    wait_detached(tid, &traced.touched);
    Ok(traced)
}

/// The kernel detaches a dead tracer's tracees as the thread exits, which may be just after a
/// join returns: wait until none shows the tracer any more (bounded).
fn wait_detached(tracer: i32, pids: &BTreeSet<i32>) {
    let deadline = Instant::now() + DETACH_WAIT;
    for &pid in pids {
        for tid in procfs::threads(pid).unwrap_or_default() {
            while procfs::tracer_of(tid).is_some_and(|(t, _)| t == tracer)
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
}

struct Follower<'a> {
    /// The experiment's fault: the one it started with, or the last an `inject` gave it.
    skew: Skew,
    selection: &'a Selection,
    cgroups: &'a [PathBuf],
    deadline: Option<Instant>,
    me: Pid,
    chld: SignalFd,
    events: Option<ProcEvents>,
    control: Option<Control>,
    slew_back: Option<SlewRate>,
    /// Threads and processes we trace now.
    threads: HashSet<i32>,
    procs: BTreeSet<i32>,
    touched: BTreeSet<i32>,
    /// Every process followed at some point, and failed adoptions per process.
    seen: HashSet<i32>,
    failures: HashMap<i32, u32>,
    /// The kernel's exec time of processes not (yet) ours, from the process events.
    exec_times: HashMap<i32, u64>,
    /// The PID namespaces of the selected containers (not ours): a process forked into one is
    /// entering a container (`podman exec`, `kubectl exec`, `nsenter`), before its runtime
    /// moves it into the container's cgroup and lets it exec.
    namespaces: HashSet<PathBuf>,
    /// Processes traced but not skewed yet: they entered a container by a fork and are about
    /// to exec (their exec stop skews the program); since when.
    pending: HashMap<i32, Instant>,
    /// Whether followed processes are traced (their execs stopped and skewed before they run);
    /// off only in the measurement mode of [`without_ptrace`].
    trace_execs: bool,
    exec_samples: Vec<Duration>,
    join_samples: Vec<Duration>,
    report: FollowReport,
}

impl<'a> Follower<'a> {
    fn new<F>(setup: &Setup<'a, F>) -> Result<Follower<'a>> {
        let mut chld = SigSet::empty();
        chld.add(Signal::SIGCHLD);
        let chld = SignalFd::with_flags(&chld, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| Error::Helper {
                pid: 0,
                message: format!("cannot watch SIGCHLD for the follower: {e}"),
            })?;
        // Newcomers from outside exist only for cgroup selections.
        let (events, watched_with) = if setup.cgroups.is_empty() {
            (None, "ptrace events (no cgroup selected)".to_string())
        } else {
            let subscribed = if without_events() {
                Err(Errno::EPERM)
            } else {
                ProcEvents::subscribe()
            };
            match subscribed {
                Ok(events) => (Some(events), "proc connector".to_string()),
                Err(e) => (
                    None,
                    format!(
                        "rescans every {} ms only: the proc connector refused ({e}; it needs \
                         CAP_NET_ADMIN)",
                        RESCAN.as_millis()
                    ),
                ),
            }
        };
        let control = Control::listen()
            .map_err(|e| log::warn!("a recover from another timeskew cannot end this follow: {e}"))
            .ok();
        Ok(Follower {
            skew: *setup.skew,
            selection: setup.selection,
            cgroups: setup.cgroups,
            deadline: setup.end.deadline,
            me: gettid(),
            chld,
            events,
            control,
            slew_back: None,
            threads: HashSet::new(),
            procs: BTreeSet::new(),
            touched: BTreeSet::new(),
            seen: HashSet::new(),
            failures: HashMap::new(),
            exec_times: HashMap::new(),
            namespaces: HashSet::new(),
            pending: HashMap::new(),
            trace_execs: !without_ptrace(),
            exec_samples: Vec::new(),
            join_samples: Vec::new(),
            report: FollowReport {
                ended_by: EndReason::Stopped,
                watched_with,
                followed: 0,
                forked: 0,
                joined: 0,
                execs: 0,
                execs_skewed: 0,
                exec_to_skew: Latencies::default(),
                join_to_skew: Latencies::default(),
                missed: Vec::new(),
                exited_first: 0,
                fault_changes: 0,
                recovered: 0,
                recover_failed: Vec::new(),
                hooks_left: Vec::new(),
            },
        })
    }

    /// Adopts the selection, then watches until the experiment ends.
    fn run(
        &mut self,
        initial: Vec<i32>,
        end: FollowEnd<'_>,
        on_started: impl FnOnce(Started),
    ) -> EndReason {
        self.note_namespaces(&initial);
        log::debug!("following PID namespaces {:?}", self.namespaces);
        let mut started = Vec::new();
        for pid in initial {
            let outcome = self.adopt(pid, None);
            started.push((pid, outcome));
            self.drain();
        }
        on_started(started);
        // Test builds: `TIMESKEW_FAULT=follow-watch` makes the follower fail here, as a bug
        // would (the recovery must still happen).
        if crate::fault::point(0, "follow-watch").is_err() {
            panic!("TIMESKEW_FAULT: the follower fails");
        }
        self.watch(end.stop)
    }

    /// What recovery needs, and the report so far.
    fn finish(mut self) -> Traced {
        self.report.exec_to_skew = Latencies::of(std::mem::take(&mut self.exec_samples));
        self.report.join_to_skew = Latencies::of(std::mem::take(&mut self.join_samples));
        self.report.followed = self.seen.len();
        Traced {
            report: self.report,
            touched: self.touched,
            control: self.control,
            slew_back: self.slew_back,
        }
    }

    /// The event loop, until the experiment ends.
    fn watch(&mut self, stop: Option<BorrowedFd<'_>>) -> EndReason {
        let mut next_rescan = Instant::now() + RESCAN;
        loop {
            self.drain();
            if let Some(events) = &self.events {
                match events.read() {
                    Received::Events(list) => {
                        for event in list {
                            self.on_event(event);
                        }
                    }
                    Received::Lost => {
                        log::debug!("process events lost: rescanning");
                        next_rescan = Instant::now();
                    }
                    Received::Empty => {}
                }
            }
            let now = Instant::now();
            if now >= next_rescan {
                self.rescan();
                next_rescan = Instant::now() + RESCAN;
            }
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                return EndReason::Deadline;
            }
            while let Some(asked) = self.control.as_mut().and_then(Control::next) {
                match asked {
                    Asked::End => return EndReason::RecoverRequested,
                    Asked::SlewBack(slew) => {
                        self.slew_back = Some(slew);
                        return EndReason::SlewBackRequested;
                    }
                    Asked::Update {
                        skew,
                        except,
                        reply,
                    } => match skew.validate() {
                        Ok(()) => reply.send(&self.update(skew, &except)),
                        // Checked by the asker already; it sees no answer.
                        Err(e) => log::warn!("a new fault was refused: {e}"),
                    },
                }
            }
            if self.nothing_left() {
                return EndReason::SelectionGone;
            }
            let mut wake = next_rescan.min(Instant::now() + NAP);
            if let Some(d) = self.deadline {
                wake = wake.min(d);
            }
            let timeout = wake.saturating_duration_since(Instant::now());
            let mut fds = vec![PollFd::new(self.chld.as_fd(), PollFlags::POLLIN)];
            if let Some(events) = &self.events {
                fds.push(PollFd::new(events.as_fd(), PollFlags::POLLIN));
            }
            if let Some(control) = &self.control {
                fds.push(PollFd::new(control.as_fd(), PollFlags::POLLIN));
            }
            let stop_at = stop.map(|fd| {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
                fds.len() - 1
            });
            let ms = timeout.as_millis().clamp(0, u128::from(u16::MAX)) as u16;
            let woke = poll(&mut fds, PollTimeout::from(ms));
            if let (Ok(_), Some(i)) = (woke, stop_at)
                && fds[i].revents().is_some_and(|r| !r.is_empty())
            {
                return EndReason::Stopped;
            }
            // Empty the signalfd: the waits below find every stop anyway.
            while let Ok(Some(_)) = self.chld.read_signal() {}
        }
    }

    /// No process left and nothing that could bring one.
    fn nothing_left(&self) -> bool {
        if self.cgroups.is_empty() {
            self.procs.is_empty()
        } else {
            self.cgroups
                .iter()
                .all(|dir| !dir.join("cgroup.procs").is_file())
        }
    }

    /// The skew for a process skewed now: the experiment's deadline is its own.
    fn skew_now(&self) -> Option<Skew> {
        match self.deadline {
            None => Some(self.skew),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                (!left.is_zero()).then(|| self.skew.for_duration(left))
            }
        }
    }

    /// Another `inject` gives the experiment `skew`: every process skewed from now on gets it,
    /// and every process holding the fault now (but `except`, which the asker changes itself)
    /// is updated in place — one experiment, one fault. `skew` is valid.
    fn update(&mut self, skew: Skew, except: &[i32]) -> FollowerUpdate {
        let mut update = FollowerUpdate {
            follower: FollowerId {
                tracer: self.me.as_raw(),
                pid: std::process::id() as i32,
            },
            updated: 0,
            failed: Vec::new(),
        };
        log::info!("the experiment's fault is now {skew}");
        self.skew = skew;
        self.report.fault_changes += 1;
        let Some(now) = self.skew_now() else {
            return update; // past the deadline: the experiment is ending
        };
        let holding: Vec<i32> = self
            .touched
            .iter()
            .copied()
            .filter(|p| !except.contains(p) && !has_exited(*p) && still_injected(*p))
            .collect();
        for pid in holding {
            match inject(pid, &now) {
                Ok(_) => update.updated += 1,
                Err(e) if is_gone(&e) || has_exited(pid) => {}
                Err(e) => {
                    log::warn!("pid {pid}: not given the new fault: {e}");
                    update.failed.push(Missed {
                        pid,
                        program: program_of(pid),
                        reason: e.to_string(),
                    });
                }
            }
        }
        update
    }

    fn miss(&mut self, pid: i32, reason: String) {
        let program = program_of(pid);
        log::warn!("pid {pid} ({program}): {reason}");
        self.report.missed.push(Missed {
            pid,
            program,
            reason,
        });
    }

    /// Brings a process that is not ours under the fault and follows it. The result is the
    /// injection's; a process that could be skewed but not followed is reported as missed.
    fn adopt(&mut self, pid: i32, exec_at_ns: Option<u64>) -> Result<crate::report::InjectReport> {
        let mut last = Err(Error::NoSuchProcess { pid });
        for _ in 0..ADOPT_ATTEMPTS {
            let Some(skew) = self.skew_now() else {
                return last;
            };
            let report = match inject(pid, &skew) {
                Ok(report) => report,
                Err(e) => {
                    log::debug!("pid {pid}: not adopted: {e}");
                    if matches!(e, Error::Execed { .. }) {
                        // A new program while we changed the old one: adopt that one.
                        last = Err(e);
                        continue;
                    }
                    if is_gone(&e) || has_exited(pid) {
                        log::info!("pid {pid}: exited before it could be adopted: {e}");
                        self.report.exited_first += 1;
                    } else {
                        *self.failures.entry(pid).or_default() += 1;
                        self.miss(pid, format!("not skewed: {e}"));
                    }
                    return Err(e);
                }
            };
            self.touched.insert(pid);
            if let Err(e) = self.seize_all(pid) {
                *self.failures.entry(pid).or_default() += MAX_FAILURES;
                self.miss(
                    pid,
                    format!("skewed, but the programs it execs are not: {e}"),
                );
                return Ok(report);
            }
            if !self.trace_execs || still_injected(pid) {
                if let Some(at) = exec_at_ns.or_else(|| self.exec_times.remove(&pid)) {
                    self.join_samples.push(since_monotonic(at));
                }
                return Ok(report);
            }
            // It exec'd between its injection and our seize: the new program is not skewed
            // and its exec was not reported to us. Let it go and start again.
            log::debug!("pid {pid} exec'd while being adopted: again");
            self.release(pid);
            last = Ok(report);
        }
        if last.is_ok() {
            self.miss(pid, "kept exec'ing while being followed; left as is".into());
        }
        last
    }

    /// Seizes every thread of `pid` (without stopping it) with the follow options.
    fn seize_all(&mut self, pid: i32) -> Result<()> {
        if !self.trace_execs {
            self.procs.insert(pid);
            self.seen.insert(pid);
            return Ok(());
        }
        loop {
            let mut fresh = 0;
            for tid in procfs::threads(pid)? {
                if self.threads.contains(&tid) {
                    continue;
                }
                match ptrace::seize(Pid::from_raw(tid), options()) {
                    Ok(()) => {}
                    Err(Errno::ESRCH) => continue,
                    // Auto-attached by a clone we have not handled yet.
                    Err(Errno::EPERM)
                        if procfs::tracer_of(tid).is_some_and(|(t, _)| t == self.me.as_raw()) => {}
                    // Exited (a zombie leader stays listed while the other threads run; a
                    // thread may exit during the seize): nothing of it is left to follow.
                    Err(Errno::EPERM) if !procfs::thread_alive(pid, tid) => {
                        continue;
                    }
                    Err(e) => {
                        let error = match procfs::tracer_of(tid) {
                            Some((tracer, name)) => Error::Helper {
                                pid,
                                message: format!(
                                    "thread {tid} is traced by pid {tracer} ({name}); a process \
                                     has one tracer"
                                ),
                            },
                            None => {
                                procfs::errno_error(pid, tid, "seize the thread to follow it", e)
                            }
                        };
                        // Let go of the threads seized so far.
                        self.release(pid);
                        return Err(error);
                    }
                }
                self.threads.insert(tid);
                fresh += 1;
            }
            if fresh == 0 {
                break;
            }
        }
        self.procs.insert(pid);
        self.seen.insert(pid);
        Ok(())
    }

    /// Stops following `pid`: every thread of it we trace is interrupted and detached.
    fn release(&mut self, pid: i32) {
        let tids: Vec<i32> = procfs::threads(pid)
            .unwrap_or_default()
            .into_iter()
            .filter(|t| self.threads.contains(t))
            .collect();
        for &tid in &tids {
            let _ = ptrace::interrupt(Pid::from_raw(tid));
        }
        for &tid in &tids {
            let tid = Pid::from_raw(tid);
            // The first stop reported after the interrupt, whatever its kind, is one from which
            // the thread can be let go (a signal being delivered is passed on).
            match waitpid(tid, Some(WaitPidFlag::__WALL)) {
                Ok(WaitStatus::Stopped(_, sig)) => {
                    let _ = raw::ptrace_detach(tid, sig as i32);
                }
                Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(_) => {}
                Ok(_) => {
                    let _ = ptrace::detach(tid, None);
                }
            }
            self.threads.remove(&tid.as_raw());
        }
        self.procs.remove(&pid);
    }

    /// Handles every stop and exit already reported, without blocking.
    fn drain(&mut self) {
        let flags = libc::__WALL | libc::__WNOTHREAD | libc::WNOHANG;
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: waitpid writes the status into the integer we pass. Raw, because nix's
            // WaitStatus cannot hold a real-time signal and the stop would be lost with it.
            let rc = unsafe { libc::waitpid(-1, &mut status, flags) };
            match Errno::result(rc) {
                Ok(0) | Err(Errno::ECHILD) => return,
                Ok(pid) => {
                    let pid = Pid::from_raw(pid);
                    match WaitStatus::from_raw(pid, status) {
                        Ok(status) => self.handle(status),
                        Err(_) => {
                            if libc::WIFSTOPPED(status) {
                                let _ = raw::ptrace_cont(pid, libc::WSTOPSIG(status));
                            } else {
                                self.gone(pid.as_raw());
                            }
                        }
                    }
                }
                Err(Errno::EINTR) => {}
                Err(e) => {
                    log::warn!("follower: waitpid failed: {e}");
                    return;
                }
            }
        }
    }

    fn gone(&mut self, tid: i32) {
        self.threads.remove(&tid);
        self.procs.remove(&tid);
        self.pending.remove(&tid);
    }

    /// A thread we did not know yet (auto-attached by a fork or clone): note it.
    fn note(&mut self, tid: i32) {
        if self.threads.insert(tid) && procfs::tgid_of(tid) == Some(tid) && self.procs.insert(tid) {
            self.touched.insert(tid);
            if self.seen.insert(tid) {
                self.report.forked += 1;
            }
        }
    }

    fn handle(&mut self, status: WaitStatus) {
        log::trace!("{status:?}");
        match status {
            WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, ..) => self.gone(pid.as_raw()),
            WaitStatus::Stopped(pid, signal) => {
                self.note(pid.as_raw());
                resume(pid, Some(signal));
            }
            WaitStatus::PtraceEvent(pid, _, libc::PTRACE_EVENT_EXEC) => {
                let stopped = Instant::now();
                // The thread that exec'd now has the process's id; its old id is gone.
                if let Ok(former) = ptrace::getevent(pid)
                    && former as i32 != pid.as_raw()
                {
                    self.threads.remove(&(former as i32));
                }
                self.note(pid.as_raw());
                // Past the deadline the experiment is over (the loop has yet to notice): the
                // program is not one of its execs, and runs unskewed.
                let Some(skew) = self.skew_now() else {
                    log::debug!("pid {pid}: exec'd after the deadline, not skewed");
                    resume(pid, None);
                    return;
                };
                self.report.execs += 1;
                match leave_execve(pid) {
                    LeftExecve::AtExit => {
                        self.skew_exec(pid, stopped, &skew);
                        resume(pid, None);
                    }
                    LeftExecve::Other(status) => {
                        // Killed on its way out of execve (nothing else stops it there).
                        log::info!("pid {pid}: {status:?} before its exec could be skewed");
                        if matches!(status, WaitStatus::Exited(..) | WaitStatus::Signaled(..)) {
                            self.report.exited_first += 1;
                        }
                        self.handle(status)
                    }
                    LeftExecve::Lost => {
                        log::info!("pid {pid}: gone before its exec could be skewed");
                        self.report.exited_first += 1;
                        self.gone(pid.as_raw())
                    }
                }
            }
            WaitStatus::PtraceEvent(pid, _, event)
                if event == libc::PTRACE_EVENT_FORK
                    || event == libc::PTRACE_EVENT_VFORK
                    || event == libc::PTRACE_EVENT_CLONE =>
            {
                self.note(pid.as_raw());
                if let Ok(child) = ptrace::getevent(pid) {
                    let child = child as i32;
                    self.note(child);
                    // A child of a process not skewed yet has nothing to inherit.
                    if event != libc::PTRACE_EVENT_CLONE && self.pending.contains_key(&pid.as_raw())
                    {
                        self.touched.remove(&child);
                        self.pending.insert(child, Instant::now());
                    }
                }
                resume(pid, None);
            }
            WaitStatus::PtraceEvent(
                pid,
                Signal::SIGSTOP | Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU,
                libc::PTRACE_EVENT_STOP,
            ) => {
                // Job control: leave it stopped; PTRACE_LISTEN keeps its events coming.
                self.note(pid.as_raw());
                if let Err(e) = raw::ptrace_listen(pid)
                    && e != Errno::ESRCH
                {
                    log::warn!("pid {pid}: PTRACE_LISTEN failed ({e}); continuing it instead");
                    resume(pid, None);
                }
            }
            WaitStatus::PtraceEvent(pid, ..) | WaitStatus::PtraceSyscall(pid) => {
                self.note(pid.as_raw());
                resume(pid, None);
            }
            WaitStatus::Continued(_) | WaitStatus::StillAlive => {}
        }
    }

    /// A new program in `pid`, stopped before its first instruction: skew it with `skew` (the
    /// experiment's, taken at the exec stop).
    fn skew_exec(&mut self, pid: Pid, stopped: Instant, skew: &Skew) {
        match inject_traced(pid.as_raw(), skew) {
            Ok(_) => {
                self.report.execs_skewed += 1;
                self.exec_samples.push(stopped.elapsed());
                self.touched.insert(pid.as_raw());
                self.pending.remove(&pid.as_raw());
            }
            Err(e) if is_gone(&e) => {
                // A process at its exec stop cannot exit by itself: only SIGKILL ends it.
                log::info!(
                    "pid {pid}: gone before its exec was skewed ({}): {e}",
                    liveness(pid.as_raw())
                );
                self.report.exited_first += 1;
            }
            Err(e) => {
                if nix::sys::signal::kill(pid, None) == Err(Errno::ESRCH) {
                    log::info!("pid {pid}: killed while its exec was skewed: {e}");
                    self.report.exited_first += 1;
                    self.gone(pid.as_raw());
                    return;
                }
                self.miss(pid.as_raw(), format!("exec'd program not skewed: {e}"));
            }
        }
    }

    /// A process event of the machine: a newcomer to the selected cgroups is adopted.
    fn on_event(&mut self, event: ProcEvent) {
        let (pid, exec_at) = match event {
            ProcEvent::Fork { parent, child, .. } => {
                // A followed parent's child is attached by the kernel already (or, untraced,
                // inherits the fault all the same).
                if self.procs.contains(&parent) {
                    if !self.trace_execs && self.procs.insert(child) {
                        self.touched.insert(child);
                        self.seen.insert(child);
                        self.report.forked += 1;
                    }
                    return;
                }
                (child, None)
            }
            ProcEvent::Exec { pid, at_ns } => (pid, Some(at_ns)),
        };
        log::trace!("{event:?}");
        if !self.trace_execs && exec_at.is_some() && self.procs.contains(&pid) {
            // Untraced, a member's exec is only seen here: skew the new program now.
            self.report.execs += 1;
            if self.adopt(pid, exec_at).is_ok() {
                self.report.execs_skewed += 1;
            }
            return;
        }
        if self.procs.contains(&pid) || self.threads.contains(&pid) {
            return;
        }
        if !self.entering(pid, exec_at.is_none()) {
            log::trace!(
                "pid {pid} not entering: ns {:?}, exe {:?}",
                procfs::namespace(pid, "pid"),
                procfs::exe(pid)
            );
            return;
        }
        match exec_at {
            // Entering by a fork (a runtime's `exec` into the container): it is about to exec
            // the program asked for; traced now, that program is skewed before it runs.
            None => self.watch_for_exec(pid),
            Some(at) => {
                self.exec_times.insert(pid, at);
                self.join(pid, exec_at);
            }
        }
    }

    /// Traces `pid` without skewing it: its exec stop skews the program it execs.
    fn watch_for_exec(&mut self, pid: i32) {
        if !self.trace_execs {
            return; // its exec event will come
        }
        if self.failures.get(&pid).is_some_and(|&n| n >= MAX_FAILURES) || has_exited(pid) {
            return;
        }
        match self.seize_all(pid) {
            Ok(()) => {
                log::debug!("pid {pid} entered a container: traced until it execs");
                self.pending.insert(pid, Instant::now());
                self.report.joined += 1;
            }
            Err(e) => {
                *self.failures.entry(pid).or_default() += 1;
                log::debug!("pid {pid} entered the selection but cannot be traced: {e}");
            }
        }
    }

    fn join(&mut self, pid: i32, exec_at: Option<u64>) {
        if self.failures.get(&pid).is_some_and(|&n| n >= MAX_FAILURES) || has_exited(pid) {
            return;
        }
        let before = self.seen.len();
        let _ = self.adopt(pid, exec_at);
        if self.seen.len() > before {
            self.report.joined += 1;
        }
    }

    /// The PID namespaces of the cgroup members `pids` that are not this process's own.
    fn note_namespaces(&mut self, pids: &[i32]) {
        if self.cgroups.is_empty() {
            return;
        }
        let own = procfs::namespace(std::process::id() as i32, "pid");
        for &pid in pids {
            if let Some(ns) = procfs::namespace(pid, "pid")
                && Some(&ns) != own.as_ref()
                && procfs::pid_in_cgroups(pid, self.cgroups)
            {
                self.namespaces.insert(ns);
            }
        }
    }

    /// Whether `pid` is entering the selection: in the cgroups already, or forked into a
    /// selected container's PID namespace (the runtime moves it into the cgroup later).
    fn entering(&self, pid: i32, forked: bool) -> bool {
        if forked
            && !self.namespaces.is_empty()
            && procfs::namespace(pid, "pid").is_some_and(|ns| self.namespaces.contains(&ns))
        {
            return true;
        }
        self.in_cgroups(pid)
    }

    fn in_cgroups(&self, pid: i32) -> bool {
        procfs::pid_in_cgroups(pid, self.cgroups)
    }

    /// Members of the selection that are not ours (missed events, or none to miss).
    fn rescan(&mut self) {
        if self.cgroups.is_empty() {
            return;
        }
        let Ok(now) = self.selection.resolve() else {
            return;
        };
        self.note_namespaces(&now);
        // Entered by a fork but never exec'd: skew it as it is.
        let stale: Vec<i32> = self
            .pending
            .iter()
            .filter(|&(_, since)| since.elapsed() >= PENDING_GRACE)
            .map(|(&pid, _)| pid)
            .collect();
        for pid in stale {
            self.pending.remove(&pid);
            if now.contains(&pid) {
                self.release(pid);
                self.join(pid, None);
            }
        }
        for pid in now {
            if !self.procs.contains(&pid) && !self.threads.contains(&pid) {
                self.join(pid, None);
            }
        }
        // Keep the tables from growing with processes that are gone (untraced, their exits are
        // not reported to us).
        self.exec_times.retain(|&pid, _| !has_exited(pid));
        if !self.trace_execs {
            self.procs.retain(|&pid| !has_exited(pid));
        }
    }
}

fn resume(pid: Pid, signal: Option<Signal>) {
    match ptrace::cont(pid, signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => log::warn!("pid {pid}: PTRACE_CONT failed: {e}"),
    }
}

/// The follower races each runtime's `exec` into a container: runc forks its init into the
/// container's PID namespace and execs the command a few ms later, and the fork must be traced
/// before that exec. The follower thread sleeps but for the moments it handles an event; it
/// takes the highest nice value so that a wakeup is not queued behind busy threads of this
/// process's scheduler group (see [`prioritize_own_session`](crate::prioritize_own_session)
/// for the group itself). Only this thread; without CAP_SYS_NICE it stays as it is.
fn run_first(tid: i32) {
    // SAFETY: setpriority reads and writes no memory of ours; PRIO_PROCESS with a thread id
    // changes that one thread (Linux).
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, -20) };
    if rc != 0 {
        log::debug!(
            "follower thread keeps its priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// How `pid` looks now, for the log: its state letter, or that it is gone.
fn liveness(pid: i32) -> String {
    procfs::task_info(pid, None)
        .map_or_else(|e| format!("now: {e}"), |t| format!("state {}", t.state))
}

fn is_gone(e: &Error) -> bool {
    matches!(e, Error::NoSuchProcess { .. } | Error::ProcessGone { .. })
}

fn program_of(pid: i32) -> String {
    procfs::exe(pid)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Whether our hooks are live in `pid` (false when it exec'd a fresh program).
fn still_injected(pid: i32) -> bool {
    Target::open(pid)
        .and_then(|t| crate::state::find(&t))
        .is_ok_and(|e| e.is_some_and(|e| e.hooks_live))
}

/// The time since a CLOCK_MONOTONIC reading in ns (the process events' clock).
fn since_monotonic(at_ns: u64) -> Duration {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(at_ns);
    Duration::from_nanos(now.saturating_sub(at_ns))
}
