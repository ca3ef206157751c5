//! Changing a running process one thread at a time: every thread traced (PTRACE_SEIZE, never
//! all stopped), one *worker* thread held only for the length of each system call timeskew
//! runs in it, any other thread stopped only when it must be looked at or let go — a few
//! microseconds each — and breakpoints written over the first byte of code that changes while
//! threads run, their traps answered at once.
//!
//! Runs in a thread of its own (the tracer): when that thread ends the kernel detaches every
//! tracee at once without stopping any (`exit_ptrace`), so the threads that never needed a stop
//! are let go without one. Before it ends, every thread that might still have a breakpoint trap
//! on its way to us (running, or last seen just past a breakpoint) is stopped and detached by
//! hand, its trap consumed; see [`LiveSession::release`].
//!
//! What reports to us while threads run, and what we do:
//! - a breakpoint of ours (SIGTRAP from the kernel, instruction pointer just past one of our
//!   breakpoints): the thread is sent where the code leads — to where the new jump goes while
//!   the breakpoint is in place, back to the entry once it is gone — and the SIGTRAP dropped;
//! - any other signal: passed on unchanged (PTRACE_CONT with it);
//! - a new thread or process (PTRACE_O_TRACECLONE/FORK/VFORK): traced from its first
//!   instruction; a forked copy of the memory that still holds a breakpoint is repaired before
//!   it is let go (see [`LiveSession::release`]);
//! - an exec, the process exiting, a job-control stop: the change is abandoned.

mod code;
mod look;
mod reports;
mod threads;
mod worker;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::ptrace::{self, Options};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use nix::unistd::Pid;

use super::events::ChildEvents;
use super::raw::PeekSiginfoArgs;
use super::remote_mm::RemoteCall;
use super::remote_syscall::RegsGuard;
use super::seccomp::{self, PlannedSyscall};
use super::seize::{SeizeWatch, reap_exited};
use super::stop::{signal_name, stuck};
use crate::arch::{Arch, Native, Registers};
use crate::error::{Error, Result};
use crate::report::{LiveStats, ThreadStop};
use crate::target::mem::RemoteMemory;
use crate::target::procfs::{self, Mapping};
use libc::{
    MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE, MEMBARRIER_CMD_QUERY,
    MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE,
};

pub(crate) use code::{BoundMem, Swap, SwapState};
use look::{CREATING, Seen, seen};
use reports::Ev;

/// How long one thread may take to report a stop we asked for (a scheduler delay on a loaded
/// machine; a thread in an uninterruptible wait is never asked).
const STOP_DEADLINE: Duration = Duration::from_millis(500);
/// How long the worker may take to report from inside a call of ours (its registers are ours
/// until the call's exit stop, so it is not left before that unless this passes: a thread
/// frozen or stuck in the kernel).
const IN_FLIGHT_DEADLINE: Duration = Duration::from_secs(10);
/// Why the live path cannot run here: the caller stops every thread instead and says why.
#[derive(Debug)]
pub(crate) struct Fallback(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Nothing,
    /// Stopped once and let go: any thread it was creating is in the thread list by then.
    Look,
    /// Stopped to be looked at (window check).
    Check,
    /// Stopped to be let go.
    Release,
    /// Let go after the breakpoint trap it still has to report.
    ReleaseAfterTrap,
}

#[derive(Debug)]
struct Tracee {
    tgid: i32,
    want: Want,
    /// Any thread it creates is traced by the kernel for us: attached by the kernel itself,
    /// or seized by us and seen outside a clone since (see `LiveSession::creations_settled`).
    settled: bool,
    /// Looked at and found busy (inside a window, or a handler on top of one).
    busy: bool,
}

fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Every thread of one process traced, none held but the worker during its calls.
pub(crate) struct LiveSession {
    pid: i32,
    mem: BoundMem,
    syscall_insn: u64,
    tracees: HashMap<i32, Tracee>,
    worker: Pid,
    /// The worker's seccomp filters must be asked about each call (mode != 0).
    worker_filtered: bool,
    events: ChildEvents,
    pub(crate) swaps: Vec<Swap>,
    /// While `anyone_in` looks: the range a thread must not be in (instead of the windows).
    /// The swaps stay as they are: a trap still on its way from one of their breakpoints
    /// must be recognised as ours, not delivered to the thread as a SIGTRAP.
    region: Option<std::ops::Range<u64>>,
    /// The worker while `holding` keeps it stopped across several calls, and the signals it
    /// received meanwhile (passed on when it is let go).
    held: Option<Pid>,
    held_signals: Vec<i32>,
    /// Set by a report that ends the change: exec, exit, job-control stop.
    abandoned: Option<Error>,
    started: Instant,
    /// When a thread was last let run again (`resume`, `let_go`): where its stop ended.
    resumed: Instant,
    first_breakpoint: Option<Instant>,
    last_breakpoint_gone: Option<Instant>,
    stats: LiveStats,
    ever_stopped: std::collections::HashSet<i32>,
    /// The target's mappings, read for the current look at its threads' stacks.
    maps: Vec<Mapping>,
    /// The mappings `same_program` read (`take_start_maps`).
    start_maps: Option<Vec<Mapping>>,
    /// The windows an injection will write (start, length), known from the plan: threads
    /// are first looked at against them, before anything is written (`creations_settled`).
    planned: Vec<(u64, usize)>,
    /// Threads seen blocked in the kernel outside every planned window, no saved context
    /// inside one, with their scheduler counters then (the file kept open to read them again).
    quiet: HashMap<i32, ([u64; 3], procfs::SchedCounters)>,
    /// A complete new jump was written at some point (threads may have taken it).
    reached_after: bool,
    /// The vDSO planned for (base, length): another one means another program.
    vdso: (u64, usize),
    /// The target exec'd meanwhile (its old memory, and what we wrote there, is gone).
    execed: bool,
    /// `release` has begun: a process that reports from here on with a breakpoint in its copy
    /// of the memory is stopped, repaired and let go like the ones known before.
    releasing: bool,
    /// A failed change is being undone: a job-control stop no longer ends what is waited for
    /// (the undo needs its barriers, and every owed breakpoint trap answered).
    undoing: bool,
    /// Tracees let go or exited: a fork event reported after its child's own first stop (or
    /// exit) must not take the child in again — it would be waited for, never to report.
    let_go: std::collections::HashSet<i32>,
    /// The target is registered for core-serializing barriers (`register_barriers`).
    registered: bool,
    /// A registration helper thread not seen to exit: it may still run in the code page.
    helper: Option<i32>,
    /// Its exit status once it reported its exit: membarrier's errno (0: registered).
    helper_exit: Option<i32>,
    /// The main thread had exited when the change began (a zombie leader while other threads
    /// run on: `via` is another thread).
    leaderless: bool,
    /// The membarrier check (`barrier_setup`) is made: at the start, or — for a first
    /// injection, whose helper's exit status says the same — only if the helper fails.
    barriers_checked: bool,
    /// The first look at every thread (`creations_settled`) is made: at the start, or for an
    /// injection once the registration helper is cloned (`look_early`).
    looked: bool,
    /// Only the main thread is seized so far (`seize_main_first`).
    partial: bool,
    /// The registration helper, until its first stop is answered (`answer_helper`).
    helper_unanswered: Option<i32>,
    /// What that look found, until asked for (`look_first`).
    look_outcome: Option<Result<Option<Fallback>>>,
    /// The live path gave up after changing something (`fall_back`): once that is undone, the
    /// caller stops every thread instead.
    fell_back: Option<Fallback>,
}

/// Whether `maps` have the vDSO at `(base, len)`: the program it was planned for.
fn vdso_is(maps: &[Mapping], (base, len): (u64, usize)) -> bool {
    maps.iter()
        .find(|m| m.path == "[vdso]")
        .is_some_and(|m| (m.start, (m.end - m.start) as usize) == (base, len))
}

/// Runs `f` in a thread of its own that is the tracer of everything `f` seizes, and waits until
/// the kernel has detached every tracee left (which it does when that thread ends). `kept`:
/// how many files `f` will keep open at once (`procfs::SchedCounters`, one per thread).
pub(crate) fn in_tracer_thread<T: Send>(kept: usize, f: impl FnOnce() -> T + Send) -> T {
    // Before that thread exists: growing a table no other thread shares costs no grace period
    // (the command line's helper is single-threaded until here).
    procfs::reserve_descriptors(kept);
    // SIGCHLD blocked here too while this thread only waits: the kernel hands a SIGCHLD meant
    // for the tracer to any thread of the process that does not block it, and one that takes
    // it with the default action drops it — the tracer's gate on looking for reports
    // (`ChildEvents::may_have_reports`) would then go off. Put back (and any pending SIGCHLD
    // delivered) when the tracer is done, panic included.
    let _blocked = SigchldBlocked::new();
    std::thread::scope(|scope| {
        let handle = scope.spawn(move || {
            // SAFETY: gettid takes no arguments and cannot fail.
            let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
            (f(), tid)
        });
        let (out, tid) = match handle.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        procfs::wait_own_thread_gone(tid, Duration::from_secs(2));
        out
    })
}

/// SIGCHLD blocked in the calling thread until dropped (if it was not already).
struct SigchldBlocked(bool);

impl SigchldBlocked {
    fn new() -> SigchldBlocked {
        let mut before = SigSet::empty();
        let ok = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&sigchld()), Some(&mut before));
        SigchldBlocked(ok.is_ok() && !before.contains(Signal::SIGCHLD))
    }
}

impl Drop for SigchldBlocked {
    fn drop(&mut self) {
        if self.0 {
            let _ = pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&sigchld()), None);
        }
    }
}

fn sigchld() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    set
}

impl LiveSession {
    /// Traces every thread of `pid` without stopping any, picks the worker, and checks the
    /// live path can run: no thread blocks or ignores SIGTRAP (a breakpoint trap is a forced
    /// SIGTRAP, which would reset that) and the worker may call membarrier. `Ok(Err(_))`: the
    /// caller should stop every thread instead. `planned`: the windows an injection will
    /// write (none for a recover), which every blocked thread is first looked at against.
    /// `check_barriers`: whether membarrier must be checked before anything is changed — not
    /// for a first injection, whose registration helper's exit status tells (`register_barriers`).
    pub(crate) fn start(
        pid: i32,
        via: i32,
        syscall_insn: u64,
        vdso: (u64, usize),
        planned: Vec<(u64, usize)>,
        defer_look: bool,
        check_barriers: bool,
    ) -> Result<std::result::Result<LiveSession, Fallback>> {
        if let Some(why) = procfs::frozen_by(pid) {
            return Err(Error::Unsupported {
                pid,
                reason: format!("it is frozen ({why})"),
            });
        }
        // A process that job control holds stopped is not attached to at all (its threads'
        // states are read again in the first look).
        if procfs::job_control_stopped(pid) {
            return Err(Error::StoppedByJobControl {
                pid,
                signal: None,
                meanwhile: false,
            });
        }
        let _ = nix::sys::prctl::set_timerslack(1);
        let mut s = LiveSession {
            pid,
            mem: BoundMem::open(pid, via).or_else(|_| BoundMem::open(pid, pid))?,
            syscall_insn,
            tracees: HashMap::new(),
            worker: Pid::from_raw(pid),
            worker_filtered: false,
            events: ChildEvents::new(pid),
            swaps: Vec::new(),
            region: None,
            held: None,
            held_signals: Vec::new(),
            abandoned: None,
            started: Instant::now(),
            resumed: Instant::now(),
            first_breakpoint: None,
            last_breakpoint_gone: None,
            stats: LiveStats::default(),
            ever_stopped: Default::default(),
            maps: Vec::new(),
            start_maps: None,
            planned,
            quiet: HashMap::new(),
            releasing: false,
            undoing: false,
            let_go: Default::default(),
            registered: false,
            helper: None,
            helper_exit: None,
            barriers_checked: false,
            leaderless: via != pid,
            looked: false,
            partial: false,
            helper_unanswered: None,
            look_outcome: None,
            fell_back: None,
            reached_after: false,
            vdso,
            execed: false,
        };
        let main_first = match defer_look {
            true => s.seize_main_first()?,
            false => Ok(false),
        };
        let all = match main_first {
            Ok(true) => None,
            Ok(false) => s.seize_all()?,
            Err(why) => Some(why),
        };
        if let Some(why) = all {
            return Ok(Err(why));
        }
        log::debug!(
            "pid {pid}: {} threads seized in {} µs",
            s.tracees.len(),
            s.started.elapsed().as_micros()
        );
        if !defer_look && let Some(why) = s.look_first()? {
            return Ok(Err(why));
        }
        // Every thread is traced with exec reported from here on; a program exec'd before that
        // (the plan was made from the vDSO read earlier) is caught now, before any call runs at
        // an address of the old program.
        s.mem = BoundMem::open(pid, via).or_else(|_| BoundMem::open(pid, pid))?;
        s.same_program(vdso)?;
        // The main thread seized alone has left its system call meanwhile: every thread now,
        // before anything is changed (a fallback is still only said).
        if s.partial
            && !s.blocked_in_syscall(pid)
            && let Some(why) = s.seize_rest()?
        {
            return Ok(Err(why));
        }
        s.pick_worker()?;
        // A worker under seccomp filters is always asked first: the helper would inherit them.
        if (check_barriers || s.worker_filtered)
            && let Some(why) = s.barrier_setup()?
        {
            return Ok(Err(why));
        }
        Ok(Ok(s))
    }

    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// From here on the change is being undone (see `undoing`).
    pub(crate) fn begin_undo(&mut self) {
        self.undoing = true;
        // The error being undone is said already; job control's stop not yet taken
        // (`job_control_stopped`) would only end the undo's first wait.
        if matches!(self.abandoned, Some(Error::StoppedByJobControl { .. })) {
            self.abandoned = None;
        }
    }

    /// Makes the first look at every thread unless it is made; its outcome is kept for
    /// `look_first`.
    pub(super) fn look_early(&mut self) {
        if self.looked {
            return;
        }
        self.looked = true;
        let outcome = match self.seize_rest() {
            Ok(None) => self.creations_settled(),
            other => other,
        };
        log::debug!(
            "pid {}: creations settled after {} µs",
            self.pid,
            self.started.elapsed().as_micros()
        );
        self.look_outcome = Some(outcome);
    }

    /// The first look's outcome (made now if it was not), before anything is written to the
    /// vDSO: `Err` to undo what was done, `Ok(Some)` when the live path cannot run here after
    /// all — the caller undoes what was done, then stops every thread instead.
    pub(crate) fn look_first(&mut self) -> Result<Option<Fallback>> {
        self.look_early();
        self.look_outcome.take().unwrap_or(Ok(None))
    }

    /// The error that undoes what was changed when the live path cannot go on (`why`); the
    /// reason is kept for `fell_back`.
    pub(crate) fn fall_back(&mut self, why: Fallback) -> Error {
        let err = Error::Unsupported {
            pid: self.pid,
            reason: why.0.clone(),
        };
        self.fell_back = Some(why);
        err
    }

    /// After the undo of a change that fell back (`fall_back`) came out clean: the reason, for
    /// the caller to stop every thread instead.
    pub(crate) fn fell_back(&mut self, undone: &Error) -> Option<Fallback> {
        self.fell_back
            .take()
            .filter(|_| matches!(undone, Error::Unsupported { .. }))
    }

    /// Makes sure no thread is half-way through creating one we would not trace: the kernel
    /// decides whether a new thread is traced when its creator *enters* clone, so a thread
    /// seized in the middle of a clone makes an untraced child — which would die of the first
    /// breakpoint it meets. Every thread we seized that may be in a clone (running, or blocked
    /// in clone itself) is stopped once (its stop comes after the clone returns), then the
    /// thread list is read again; new threads so found get the same, until none. Threads
    /// blocked in any other system call are not stopped.
    ///
    /// The same look notes the threads that can be passed over in the window check: blocked
    /// outside the planned windows with no saved context inside one, and their scheduler
    /// counters, read *before* the rest (a thread that runs after that read changes them). In
    /// the window such a thread whose counters have not moved was not switched in since: its
    /// registers and stack are as seen here, and only the counters are read again (one system
    /// call on the kept file, instead of its system call file and its stack). That keeps the
    /// window short — and with it the breakpoint traps that threads calling the clock take
    /// meanwhile, each a round trip through timeskew (1,000 threads: a 95 ms window and 1,561
    /// traps before) — and each thread is read from `/proc` once before it, not twice.
    fn creations_settled(&mut self) -> Result<Option<Fallback>> {
        // Test builds: the look falls back as a thread appearing with SIGTRAP blocked would
        // (after an injection's pages are mapped, that is undone first).
        if crate::fault::point(self.pid, "first-look-fallback").is_err() {
            return Ok(Some(Fallback(
                "a failure point asked for the fallback".into(),
            )));
        }
        let noting = self.maps_for_look();
        for _ in 0..8 {
            let mut asked = 0;
            let tids: Vec<i32> = self
                .tracees
                .iter()
                .filter(|(_, t)| !t.settled)
                .map(|(tid, _)| *tid)
                .collect();
            let looks = self.first_looks(&tids, noting);
            if let Some(why) = self.signals_allow(&looks)? {
                return Ok(Some(why));
            }
            for look in looks {
                let tid = look.tid;
                match look.seen {
                    Seen::Gone => {
                        self.tracees.remove(&tid);
                    }
                    Seen::Blocked {
                        in_syscall: true,
                        nr,
                        ..
                    } if !CREATING.contains(&nr) => {
                        if let Some(t) = self.tracees.get_mut(&tid) {
                            t.settled = true;
                        }
                        if let (true, Some(counters)) = (look.outside, look.counters) {
                            self.quiet.insert(tid, counters);
                        }
                    }
                    _ => {
                        self.ask_stop(tid, Want::Look)?;
                        asked += 1;
                    }
                }
            }
            if asked == 0 {
                return Ok(None);
            }
            self.settle("look at a thread")?;
            if let Some(why) = self.seize_all()? {
                return Ok(Some(why));
            }
        }
        Ok(Some(Fallback(
            "threads kept appearing faster than they could be traced".into(),
        )))
    }

    /// Whether the target now runs another program (it exec'd during the change): nothing of
    /// the old memory is left to undo.
    pub(crate) fn program_replaced(&self) -> bool {
        self.execed || self.live_maps().is_some_and(|m| !vdso_is(&m, self.vdso))
    }

    /// The target's mappings as a thread that can show them does: the leader's are empty once
    /// it has exited (a zombie leader, while other threads run on).
    fn live_maps(&self) -> Option<Vec<Mapping>> {
        std::iter::once(self.pid)
            .chain(self.tracees.keys().copied())
            .find_map(|tid| {
                procfs::maps_of(self.pid, tid)
                    .ok()
                    .filter(|m| !m.is_empty())
            })
    }

    /// The program is still the one planned for: its vDSO where it was, and a system call
    /// instruction at `syscall_insn`. Else it exec'd in between.
    fn same_program(&mut self, (base, len): (u64, usize)) -> Result<()> {
        let pid = self.pid;
        let maps = match self.live_maps() {
            Some(maps) => maps,
            None => procfs::maps_of(pid, pid)?,
        };
        let moved = !vdso_is(&maps, (base, len));
        // Kept for the injection's placement (`take_start_maps`): at 1,000 threads a read of
        // the mappings costs 1.5–2 ms.
        self.start_maps = Some(maps);
        let insn = Native::syscall_instruction();
        let found = self.mem.read(
            self.syscall_insn,
            insn.len(),
            "read the syscall instruction",
        );
        // The memory bound at the start cannot be read once an execve replaced it (between
        // the mappings read above and this read): said as the exec it is.
        if moved
            || found.as_ref().is_ok_and(|b| b != insn)
            || (found.is_err() && self.program_replaced())
        {
            return Err(Error::Execed { pid });
        }
        found.map(|_| ())
    }

    /// The mappings `start` read once the threads it seized were traced (`same_program`), if
    /// not taken yet.
    pub(crate) fn take_start_maps(&mut self) -> Option<Vec<Mapping>> {
        self.start_maps.take().filter(|m| !m.is_empty())
    }

    /// The target's memory, bound to the address space found at the start.
    pub(crate) fn mem(&self) -> &BoundMem {
        &self.mem
    }

    /// Whether any thread may have entered the code the swaps lead to: one met a breakpoint
    /// (and was sent there), was moved into a relocated copy, or a complete jump was in place;
    /// or a registration helper runs in the code page still.
    pub(crate) fn code_entered(&self) -> bool {
        self.stats.traps > 0 || self.stats.moved > 0 || self.reached_after || self.helper.is_some()
    }

    /// The figures, once everything is done.
    pub(crate) fn stats(&mut self) -> LiveStats {
        self.stats.threads_stopped = self.ever_stopped.len();
        if let (Some(a), Some(b)) = (self.first_breakpoint, self.last_breakpoint_gone) {
            self.stats.breakpoint_window_us = b.duration_since(a).as_micros() as u64;
        }
        if self.stats.wall_us == 0 {
            self.stats.wall_us = self.started.elapsed().as_micros() as u64;
        }
        self.stats.clone()
    }

    /// Takes out any report that arrived for an awaited stop before an error, so the kernel's
    /// detach at the tracer's end finds every thread as it should. The first look's counter
    /// files — one per thread — are closed by a thread of their own at the lowest weight: each
    /// close releases a `/proc` inode, 2–3 ms at 1,000 threads that neither the change nor the
    /// command's helper (whose exit closes what is left, after its answer) need wait for.
    pub(crate) fn finish(&mut self) {
        let _ = self.drain(None);
        let counters = std::mem::take(&mut self.quiet);
        if !counters.is_empty() {
            // A thread that cannot be started drops the closure: the files are closed here.
            let _ = std::thread::Builder::new()
                .name("timeskew-close".into())
                .spawn(move || {
                    procfs::lower_own_thread_weight();
                    drop(counters)
                });
        }
    }
}
