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

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::ptrace::{self, Options};
use nix::unistd::Pid;

use super::events::ChildEvents;
use super::raw::PeekSiginfoArgs;
use super::remote_mm::{
    MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE, MEMBARRIER_CMD_QUERY,
    MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE, RemoteCall,
};
use super::remote_syscall::RegsGuard;
use super::seccomp::{self, PlannedSyscall};
use super::seize::{SeizeWatch, reap_exited};
use super::stop::{signal_name, stuck};
use crate::arch::{Arch, Native, Registers};
use crate::error::{Error, Result};
use crate::report::{LiveStats, ThreadStop};
use crate::target::mem::RemoteMemory;
use crate::target::procfs::{self, Mapping};

/// Every tracee's options: exec reported as an event, and every thread or process created
/// meanwhile traced from its first instruction (it could meet a breakpoint).
fn seize_options() -> Options {
    Options::PTRACE_O_TRACESYSGOOD
        | Options::PTRACE_O_TRACEEXEC
        | Options::PTRACE_O_TRACECLONE
        | Options::PTRACE_O_TRACEFORK
        | Options::PTRACE_O_TRACEVFORK
}

/// How long one thread may take to report a stop we asked for (a scheduler delay on a loaded
/// machine; a thread in an uninterruptible wait is never asked).
const STOP_DEADLINE: Duration = Duration::from_millis(500);
/// Rounds of looking again at threads whose signal handler runs on top of a window.
const CHECK_ATTEMPTS: u32 = 40;
/// How far above the stack pointer saved contexts are looked for (as `windows.rs`).
const STACK_SCAN: u64 = 256 * 1024;
/// The longest nap between looks for reports: SIGCHLD may be taken by another thread of the
/// caller's process, so this bounds how long a thread at a breakpoint waits for us.
const MAX_NAP: Duration = Duration::from_micros(40);
/// Attempts at entering the worker's system call when signals keep arriving first.
const SYSCALL_ATTEMPTS: usize = 64;

/// Why the live path cannot run here: the caller stops every thread instead and says why.
#[derive(Debug)]
pub(crate) struct Fallback(pub String);

/// One piece of code changing from `before` to `after` (the same length, at most the jump).
#[derive(Debug, Clone)]
pub(crate) struct Swap {
    pub addr: u64,
    pub before: Vec<u8>,
    pub after: Vec<u8>,
    /// Where a thread that meets the breakpoint goes: where the jump (old or new) leads.
    pub detour: u64,
    /// Threads may be inside these instructions (`window`, at `addr`) before the change; a
    /// thread found there is moved to the same instruction of `stub` (bytes, address).
    pub window: Option<(Vec<u8>, Vec<u8>, u64)>,
    pub state: SwapState,
}

/// How far a [`Swap`] has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SwapState {
    Before,
    /// Breakpoint on the first byte, the rest as before.
    Armed,
    /// Breakpoint on the first byte, the rest as after.
    Tail,
    After,
}

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

/// How a tracee reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    Exited,
    Syscall,
    Signal(i32),
    /// PTRACE_EVENT_STOP: our interrupt, or a new tracee's first stop.
    Interrupt,
    GroupStop(i32),
    Exec,
    /// A fork, vfork or clone event of the parent: the child reports on its own.
    Child,
}

fn classify(status: libc::c_int) -> Option<Ev> {
    if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
        return Some(Ev::Exited);
    }
    if !libc::WIFSTOPPED(status) {
        return None;
    }
    let sig = libc::WSTOPSIG(status);
    Some(match (status >> 16) & 0xff {
        0 if sig == libc::SIGTRAP | 0x80 => Ev::Syscall,
        0 => Ev::Signal(sig),
        libc::PTRACE_EVENT_STOP if sig == libc::SIGTRAP => Ev::Interrupt,
        libc::PTRACE_EVENT_STOP => Ev::GroupStop(sig),
        libc::PTRACE_EVENT_EXEC => Ev::Exec,
        _ => Ev::Child,
    })
}

/// What `/proc/PID/task/TID/syscall` says: running, or blocked with its user-space stack and
/// instruction pointers (in a system call or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Running,
    Blocked {
        in_syscall: bool,
        nr: i64,
        sp: u64,
        pc: u64,
    },
    Gone,
}

fn seen(tgid: i32, tid: i32) -> Seen {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{tgid}/task/{tid}/syscall")) else {
        return Seen::Gone;
    };
    parse_seen(&text)
}

fn parse_seen(text: &str) -> Seen {
    let fields: Vec<&str> = text.split_whitespace().collect();
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    match fields.as_slice() {
        [nr, .., sp, pc] if fields.len() >= 3 => match (nr.parse::<i64>(), hex(sp), hex(pc)) {
            (Ok(nr), Some(sp), Some(pc)) => Seen::Blocked {
                in_syscall: nr >= 0,
                nr,
                sp,
                pc,
            },
            _ => Seen::Running,
        },
        _ => Seen::Running,
    }
}

/// State, blocked and ignored signals of a thread from its `stat` line (fields 3, 33, 34).
fn stat_signals(pid: i32, tid: i32) -> Option<(char, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    let rest: Vec<&str> = text
        .get(text.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let state = rest.first()?.chars().next()?;
    let blocked = rest.get(29)?.parse().ok()?;
    let ignored = rest.get(30)?.parse().ok()?;
    Some((state, blocked, ignored))
}

fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// The target's memory through one `/proc/PID/mem` opened at the start: the file stays bound
/// to that address space, so once a thread execs (threads run meanwhile) a write goes nowhere
/// instead of into the new program. Code is written through it too (forced, as the vDSO is).
#[derive(Debug)]
pub(crate) struct BoundMem {
    pid: i32,
    file: std::fs::File,
}

impl BoundMem {
    fn open(pid: i32, tid: i32) -> Result<BoundMem> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(procfs::mem_path(pid, tid))
            .map_err(|e| procfs::io_error(pid, "open the target's memory", e))?;
        Ok(BoundMem { pid, file })
    }

    fn fail(&self, step: &'static str, e: std::io::Error) -> Error {
        if !procfs::exists(self.pid) || procfs::is_zombie(self.pid) {
            Error::ProcessGone {
                pid: self.pid,
                step,
            }
        } else {
            procfs::io_error(self.pid, step, e)
        }
    }

    pub(crate) fn read(&self, addr: u64, len: usize, step: &'static str) -> Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, addr)
            .map_err(|e| self.fail(step, e))?;
        Ok(buf)
    }

    pub(crate) fn write(&self, addr: u64, bytes: &[u8], step: &'static str) -> Result<()> {
        use std::os::unix::fs::FileExt;
        self.file
            .write_all_at(bytes, addr)
            .map_err(|e| self.fail(step, e))
    }
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
    /// Set by a report that ends the change: exec, exit, job-control stop.
    abandoned: Option<Error>,
    started: Instant,
    first_breakpoint: Option<Instant>,
    last_breakpoint_gone: Option<Instant>,
    stats: LiveStats,
    ever_stopped: std::collections::HashSet<i32>,
    /// The target's mappings, read for the current look at its threads' stacks.
    maps: Vec<Mapping>,
    /// A complete new jump was written at some point (threads may have taken it).
    reached_after: bool,
}

impl LiveSession {
    /// Traces every thread of `pid` without stopping any, picks the worker, and checks the
    /// live path can run: no thread blocks or ignores SIGTRAP (a breakpoint trap is a forced
    /// SIGTRAP, which would reset that) and the worker may call membarrier. `Ok(Err(_))`: the
    /// caller should stop every thread instead.
    pub(crate) fn start(
        pid: i32,
        via: i32,
        syscall_insn: u64,
        vdso: (u64, usize),
    ) -> Result<std::result::Result<LiveSession, Fallback>> {
        if let Some(why) = procfs::frozen_by(pid) {
            return Err(Error::Unsupported {
                pid,
                reason: format!("it is frozen ({why})"),
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
            abandoned: None,
            started: Instant::now(),
            first_breakpoint: None,
            last_breakpoint_gone: None,
            stats: LiveStats::default(),
            ever_stopped: Default::default(),
            maps: Vec::new(),
            reached_after: false,
        };
        if let Some(why) = s.seize_all()? {
            return Ok(Err(why));
        }
        // Every thread is traced with exec reported from here on; a program exec'd before that
        // (the plan was made from the vDSO read earlier) is caught now, before any call runs at
        // an address of the old program.
        if let Some(why) = s.creations_settled()? {
            return Ok(Err(why));
        }
        s.mem = BoundMem::open(pid, via).or_else(|_| BoundMem::open(pid, pid))?;
        s.same_program(vdso)?;
        s.pick_worker()?;
        if let Some(why) = s.barrier_setup()? {
            return Ok(Err(why));
        }
        Ok(Ok(s))
    }

    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// Makes sure no thread is half-way through creating one we would not trace: the kernel
    /// decides whether a new thread is traced when its creator *enters* clone, so a thread
    /// seized in the middle of a clone makes an untraced child — which would die of the first
    /// breakpoint it meets. Every thread we seized that may be in a clone (running, or blocked
    /// in clone itself) is stopped once (its stop comes after the clone returns), then the
    /// thread list is read again; new threads so found get the same, until none. Threads
    /// blocked in any other system call are not stopped.
    fn creations_settled(&mut self) -> Result<Option<Fallback>> {
        let creating = [
            libc::SYS_clone,
            libc::SYS_fork,
            libc::SYS_vfork,
            libc::SYS_clone3,
        ];
        for _ in 0..8 {
            let pid = self.pid;
            let mut asked = 0;
            let tids: Vec<i32> = self
                .tracees
                .iter()
                .filter(|(_, t)| !t.settled)
                .map(|(tid, _)| *tid)
                .collect();
            for tid in tids {
                match seen(pid, tid) {
                    Seen::Gone => {
                        self.tracees.remove(&tid);
                    }
                    Seen::Blocked {
                        in_syscall: true,
                        nr,
                        ..
                    } if !creating.contains(&nr) => {
                        if let Some(t) = self.tracees.get_mut(&tid) {
                            t.settled = true;
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

    /// The program is still the one planned for: its vDSO where it was, and a system call
    /// instruction at `syscall_insn`. Else it exec'd in between.
    fn same_program(&mut self, (base, len): (u64, usize)) -> Result<()> {
        let pid = self.pid;
        let maps = procfs::maps_of(pid, pid)?;
        let vdso = maps.iter().find(|m| m.path == "[vdso]");
        let moved = vdso.is_none_or(|m| (m.start, (m.end - m.start) as usize) != (base, len));
        let insn = Native::syscall_instruction();
        let found = self.mem.read(
            self.syscall_insn,
            insn.len(),
            "read the syscall instruction",
        );
        if moved || found.as_ref().is_ok_and(|b| b != insn) {
            return Err(Error::Execed { pid });
        }
        found.map(|_| ())
    }

    /// The target's memory, bound to the address space found at the start.
    pub(crate) fn mem(&self) -> &BoundMem {
        &self.mem
    }

    /// PTRACE_SEIZE of every thread, re-reading `/proc/PID/task` until no new one appears
    /// (threads created after their creator was seized are traced by the kernel).
    fn seize_all(&mut self) -> Result<Option<Fallback>> {
        // An execve in the target while we attach waits, holding the lock PTRACE_SEIZE needs,
        // for threads it killed — ours to reap (see `seize.rs`): a second thread reaps them.
        let watch = SeizeWatch::default();
        let pid = self.pid;
        std::thread::scope(|scope| {
            let reaper = scope.spawn(|| reap_exited(pid, &watch));
            let out = self.seize_each(&watch);
            watch.done.store(true, std::sync::atomic::Ordering::Release);
            reaper.thread().unpark();
            out
        })
    }

    fn seize_each(&mut self, watch: &SeizeWatch) -> Result<Option<Fallback>> {
        let pid = self.pid;
        // Threads passed over (exited, or a zombie leader that stays listed until the process
        // is reaped) are not looked at again: the listing would never come out empty.
        let mut passed = std::collections::HashSet::new();
        let deadline = Instant::now() + STOP_DEADLINE * 4;
        loop {
            let fresh: Vec<i32> = procfs::threads(pid)?
                .into_iter()
                .filter(|t| !self.tracees.contains_key(t) && !passed.contains(t))
                .collect();
            if fresh.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(stuck(pid, fresh[0], "attach to every thread"));
            }
            for tid in fresh {
                let Some((state, blocked, ignored)) = stat_signals(pid, tid) else {
                    passed.insert(tid);
                    continue;
                };
                if matches!(state, 'Z' | 'X') {
                    passed.insert(tid);
                    continue;
                }
                if state == 'T' {
                    return Err(Error::Unsupported {
                        pid,
                        reason: format!(
                            "it is stopped by job control; resume it first (kill -CONT {pid})"
                        ),
                    });
                }
                let trap = 1u64 << (libc::SIGTRAP - 1);
                // glibc blocks every signal in a thread while it starts: look again briefly.
                let (mut blocked, mut ignored) = (blocked, ignored);
                for _ in 0..10 {
                    if (blocked | ignored) & trap == 0 {
                        break;
                    }
                    std::thread::sleep(Duration::from_micros(200));
                    if let Some((_, b, i)) = stat_signals(pid, tid) {
                        (blocked, ignored) = (b, i);
                    }
                }
                if (blocked | ignored) & trap != 0 {
                    return Ok(Some(Fallback(format!(
                        "thread {tid} {} SIGTRAP, which a breakpoint trap would reset",
                        if ignored & trap != 0 {
                            "ignores"
                        } else {
                            "blocks"
                        }
                    ))));
                }
                watch.set_seizing(Some(Instant::now()));
                let seized = ptrace::seize(Pid::from_raw(tid), seize_options());
                watch.set_seizing(None);
                match seized {
                    Ok(()) => {
                        if let Ok(mut list) = watch.seized.lock() {
                            list.push(Pid::from_raw(tid));
                        }
                        self.tracees.insert(
                            tid,
                            Tracee {
                                tgid: pid,
                                want: Want::Nothing,
                                settled: false,
                                busy: false,
                            },
                        );
                    }
                    Err(Errno::ESRCH) => {
                        passed.insert(tid);
                    }
                    // Created by a thread seized before it: the kernel traces it for us already
                    // (its first stop is on its way).
                    Err(Errno::EPERM)
                        if procfs::tracer_of(tid)
                            .is_some_and(|(t, _)| t == nix::unistd::gettid().as_raw()) =>
                    {
                        self.tracees.insert(
                            tid,
                            Tracee {
                                tgid: pid,
                                want: Want::Nothing,
                                settled: true,
                                busy: false,
                            },
                        );
                    }
                    Err(Errno::EPERM)
                        if !procfs::task_info(pid, Some(tid))
                            .is_ok_and(|i| !matches!(i.state, 'Z' | 'X')) =>
                    {
                        passed.insert(tid);
                    }
                    Err(e @ (Errno::EPERM | Errno::EACCES)) => {
                        let why = procfs::refusal(pid, tid);
                        return Err(Error::refused(pid, "attach with PTRACE_SEIZE", e, why));
                    }
                    Err(e) => return Err(Error::ptrace(pid, tid, "attach with PTRACE_SEIZE", e)),
                }
            }
        }
        if self.tracees.is_empty() {
            return Err(Error::Unsupported {
                pid,
                reason: "it has no live thread (zombie)".into(),
            });
        }
        self.stats.threads = self.tracees.len();
        Ok(None)
    }

    /// The worker: a thread blocked in a system call if there is one (it was waiting anyway,
    /// and restarts its call afterwards), else any thread not in an uninterruptible wait.
    fn pick_worker(&mut self) -> Result<()> {
        let pid = self.pid;
        // Reports waiting (signals under a storm) are answered first: a thread in such a stop
        // would look busy.
        self.drain(None)?;
        let mut fallback = None;
        let mut tids: Vec<i32> = self.tracees.keys().copied().collect();
        tids.sort_unstable();
        for tid in tids {
            let state = procfs::task_info(pid, Some(tid)).map(|i| i.state).ok();
            match (state, seen(pid, tid)) {
                (
                    Some('S'),
                    Seen::Blocked {
                        in_syscall: true, ..
                    },
                ) => {
                    self.worker = Pid::from_raw(tid);
                    self.stats.worker = tid;
                    return self.note_worker_filters();
                }
                // 't': in a stop of ours (a signal reporting to us): as usable as a running one.
                (Some('S' | 'R' | 't'), _) if fallback.is_none() => fallback = Some(tid),
                _ => {}
            }
        }
        let tid = fallback.ok_or_else(|| stuck(pid, pid, "pick a thread to work through"))?;
        self.worker = Pid::from_raw(tid);
        self.stats.worker = tid;
        self.note_worker_filters()
    }

    fn note_worker_filters(&mut self) -> Result<()> {
        self.worker_filtered = procfs::seccomp_status(self.pid, self.worker.as_raw())?.mode != 0;
        Ok(())
    }

    /// membarrier: asks whether the kernel has the core-serializing barrier, then registers
    /// the target for it. `Some` when the live path cannot use it.
    fn barrier_setup(&mut self) -> Result<Option<Fallback>> {
        let query = RemoteCall::Membarrier {
            cmd: MEMBARRIER_CMD_QUERY,
        };
        let register = RemoteCall::Membarrier {
            cmd: MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE,
        };
        let sync = RemoteCall::Membarrier {
            cmd: MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE,
        };
        if self.worker_filtered {
            // Needs the worker stopped: one short hold for the filters alone.
            if let Err(e) = self.hold_worker(|s| s.filters_allow(&[query, register, sync])) {
                return match e {
                    Error::Seccomp { reason, .. } => Ok(Some(Fallback(format!(
                        "membarrier is not allowed in the target ({reason})"
                    )))),
                    other => Err(other),
                };
            }
        }
        let supported = self.call(&query)?;
        if supported < 0 || supported & i64::from(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE) == 0 {
            return Ok(Some(Fallback(format!(
                "the kernel offers no core-serializing membarrier \
                 (MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE; membarrier query returned {supported})"
            ))));
        }
        let registered = self.call(&register)?;
        if registered < 0 {
            return Ok(Some(Fallback(format!(
                "membarrier registration failed in the target ({})",
                Errno::from_raw(-registered as i32)
            ))));
        }
        Ok(None)
    }

    /// Fails unless the worker's seccomp filters allow `calls` (the worker must be held).
    fn filters_allow(&mut self, calls: &[RemoteCall]) -> Result<()> {
        let ip = Native::after_syscall(self.syscall_insn);
        let planned: Vec<PlannedSyscall> = calls
            .iter()
            .map(|c| {
                let (nr, args) = c.nr_and_args();
                PlannedSyscall {
                    name: c.name(),
                    nr,
                    args,
                    ip,
                }
            })
            .collect();
        seccomp::check(self.pid, self.worker, &planned)
    }

    /// Fails unless the worker may run `calls` (and their undo), checked in one short hold.
    pub(crate) fn check_allowed(&mut self, calls: &[RemoteCall]) -> Result<()> {
        if !self.worker_filtered {
            return Ok(());
        }
        let calls = calls.to_vec();
        self.hold_worker(move |s| s.filters_allow(&calls))
    }

    // -----------------------------------------------------------------------------------------
    // Reports

    /// One look for a report of any tracee: `(tid, event)`.
    fn wait_any(&self) -> Result<Option<(i32, Ev)>> {
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: waitpid writes the status into the integer we pass. __WNOTHREAD: only this
            // thread's tracees, never the caller's own children.
            let rc = unsafe {
                libc::waitpid(
                    -1,
                    &mut status,
                    libc::__WALL | libc::__WNOTHREAD | libc::WNOHANG,
                )
            };
            match Errno::result(rc) {
                Ok(0) | Err(Errno::ECHILD) => return Ok(None),
                Ok(tid) => match classify(status) {
                    Some(ev) => {
                        log::trace!("pid {}: thread {tid} reports {ev:?}", self.pid);
                        return Ok(Some((tid, ev)));
                    }
                    None => continue,
                },
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    return Err(Error::Wait {
                        pid: self.pid,
                        tid: -1,
                        step: "wait for a thread's report",
                        source: e,
                    });
                }
            }
        }
    }

    fn nap(&mut self, round: &mut u32) {
        *round += 1;
        if *round < 4 {
            std::thread::yield_now();
        } else {
            self.events.pause_at_most(MAX_NAP);
        }
    }

    /// Handles every report waiting; returns `awaited`'s report if it came.
    fn drain(&mut self, awaited: Option<i32>) -> Result<Option<Ev>> {
        while let Some((tid, ev)) = self.wait_any()? {
            if Some(tid) == awaited {
                return Ok(Some(ev));
            }
            self.handle(tid, ev)?;
        }
        Ok(None)
    }

    /// Waits for `tid`'s next report, handling everyone else's meanwhile.
    fn next_of(&mut self, tid: Pid, step: &'static str) -> Result<Ev> {
        let deadline = Instant::now() + STOP_DEADLINE;
        let mut round = 0;
        loop {
            if let Some(ev) = self.drain(Some(tid.as_raw()))? {
                return Ok(ev);
            }
            if let Some(e) = self.abandoned.take() {
                return Err(e);
            }
            if Instant::now() >= deadline {
                return Err(stuck(self.pid, tid.as_raw(), step));
            }
            self.nap(&mut round);
        }
    }

    /// Handles everything that reports until no tracee has `want` set; a thread that stops
    /// neither in time nor at all (it exited) is dropped or named.
    fn settle(&mut self, step: &'static str) -> Result<()> {
        let deadline = Instant::now() + STOP_DEADLINE;
        let mut round = 0;
        let mut nudge = Instant::now() + Duration::from_millis(20);
        loop {
            self.drain(None)?;
            if let Some(e) = self.abandoned.take() {
                return Err(e);
            }
            let waiting: Vec<i32> = self
                .tracees
                .iter()
                .filter(|(_, t)| t.want != Want::Nothing)
                .map(|(tid, _)| *tid)
                .collect();
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() >= nudge {
                nudge = Instant::now() + Duration::from_millis(20);
                for &tid in &waiting {
                    log::debug!("pid {}: thread {tid} asked again to stop", self.pid);
                    let _ = ptrace::interrupt(Pid::from_raw(tid));
                }
            }
            if Instant::now() >= deadline {
                // Exited (a zombie never stops) or stuck.
                for tid in waiting {
                    let tgid = self.tracees.get(&tid).map_or(self.pid, |t| t.tgid);
                    if procfs::task_info(tgid, Some(tid))
                        .map_or(true, |i| matches!(i.state, 'Z' | 'X'))
                    {
                        self.tracees.remove(&tid);
                    } else {
                        log::debug!(
                            "pid {}: thread {tid} ({:?}) never reported: {}",
                            self.pid,
                            self.tracees.get(&tid),
                            std::fs::read_to_string(format!("/proc/{tgid}/task/{tid}/status"))
                                .unwrap_or_default()
                                .lines()
                                .filter(|l| l.starts_with("State")
                                    || l.starts_with("TracerPid")
                                    || l.starts_with("SigPnd"))
                                .collect::<Vec<_>>()
                                .join(" ")
                        );
                        return Err(stuck(self.pid, tid, step));
                    }
                }
                continue;
            }
            self.nap(&mut round);
        }
    }

    fn log_stop(&mut self, tid: i32, seen: Instant, seen_ns: u64, why: &'static str) {
        let held = seen.elapsed();
        self.stats.stops += 1;
        self.stats.longest_stop_us = self.stats.longest_stop_us.max(held.as_micros() as u64);
        self.ever_stopped.insert(tid);
        self.stats.stop_log.push(ThreadStop {
            tid,
            seen_ns,
            held_ns: held.as_nanos() as u64,
            why,
        });
    }

    /// A report of a tracee we are not waiting for in particular.
    fn handle(&mut self, tid: i32, ev: Ev) -> Result<()> {
        let pid = self.pid;
        let t = Pid::from_raw(tid);
        let (at, at_ns) = (Instant::now(), monotonic_ns());
        match ev {
            Ev::Exited => {
                let tgid = self.tracees.remove(&tid).map_or(pid, |t| t.tgid);
                // A thread of the target exits alone (pthread_exit) — or the whole process is
                // going: then stop at once, nothing is left to change or undo.
                if tgid == pid
                    && (tid == pid
                        || !procfs::exists(pid)
                        || procfs::is_zombie(pid)
                        || { procfs::task_info(pid, None).is_ok_and(|i| i.state == 'Z') }
                        || self.dying())
                    && self.abandoned.is_none()
                {
                    self.abandoned = Some(Error::ProcessGone {
                        pid,
                        step: "change it one thread at a time",
                    });
                }
            }
            Ev::Exec => {
                // A new program, a fresh vDSO: nothing of ours is in it. Let it go at once.
                let tgid = self.tracees.remove(&tid).map_or(pid, |t| t.tgid);
                let _ = super::raw::ptrace_detach(t, 0);
                if tgid == pid {
                    self.abandoned = Some(Error::Execed { pid });
                }
            }
            Ev::GroupStop(sig) => {
                // Job control: leave it stopped (the kernel keeps it so when we let go).
                let _ = super::raw::ptrace_listen(t);
                if self.abandoned.is_none() {
                    self.abandoned = Some(Error::Unsupported {
                        pid,
                        reason: format!(
                            "it was stopped by job control ({}) meanwhile; resume it and retry",
                            signal_name(sig)
                        ),
                    });
                }
            }
            Ev::Child => {
                // Known from now on, before its own first stop reports: letting everyone go
                // then waits for it (a forked copy may hold a breakpoint to repair).
                if let Ok(new) = ptrace::getevent(t).map(|n| n as i32)
                    && !self.tracees.contains_key(&new)
                {
                    let tgid = procfs::tgid_of(new).unwrap_or(new);
                    self.tracees.insert(
                        new,
                        Tracee {
                            tgid,
                            want: Want::Nothing,
                            settled: true,
                            busy: false,
                        },
                    );
                    self.stats.threads += 1;
                }
                let _ = super::raw::ptrace_cont(t, 0);
            }
            Ev::Syscall => {
                let _ = super::raw::ptrace_cont(t, 0);
            }
            Ev::Signal(sig) => self.on_signal(t, sig, at, at_ns)?,
            Ev::Interrupt => self.on_interrupt(t, at, at_ns)?,
        }
        Ok(())
    }

    /// The process is being killed: a fatal signal is shared-pending (SIGKILL shows in ShdPnd
    /// until every thread has seen it), or its threads are leaving.
    fn dying(&self) -> bool {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", self.pid)) else {
            return true;
        };
        status
            .lines()
            .find_map(|l| l.strip_prefix("ShdPnd:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .is_some_and(|m| m & (1 << (libc::SIGKILL - 1)) != 0)
    }

    /// A signal-delivery stop: our breakpoint (redirected, the SIGTRAP dropped), or a signal
    /// passed on unchanged. Entering any ptrace stop cancels a pending PTRACE_INTERRUPT, so for
    /// a thread we asked to stop this *is* that stop: it is looked at or let go here.
    fn on_signal(&mut self, t: Pid, sig: i32, at: Instant, at_ns: u64) -> Result<()> {
        let tid = t.as_raw();
        let ours = if sig == libc::SIGTRAP {
            self.breakpoint_hit(t)
        } else {
            None
        };
        if let Some(dest) = ours {
            let Ok(mut regs) = Native::get_regs(t) else {
                return Ok(()); // gone
            };
            regs.set_instruction_pointer(dest);
            if Native::set_regs(t, &regs).is_err() {
                return Ok(());
            }
            self.stats.traps += 1;
        }
        let deliver = if ours.is_some() { 0 } else { sig };
        let want = self.tracees.get(&tid).map_or(Want::Nothing, |x| x.want);
        match want {
            Want::Check => {
                let done = self.check_stopped(t)?;
                if let Some(x) = self.tracees.get_mut(&tid) {
                    x.want = Want::Nothing;
                    x.busy = !done;
                }
                let _ = super::raw::ptrace_cont(t, deliver);
            }
            Want::Release | Want::ReleaseAfterTrap => {
                if ours.is_none() && self.trap_queued(t) {
                    if let Some(x) = self.tracees.get_mut(&tid) {
                        x.want = Want::ReleaseAfterTrap;
                    }
                    let _ = super::raw::ptrace_cont(t, deliver);
                } else {
                    // Detaching from a signal stop delivers `deliver` (none: the trap dropped).
                    self.repair_copy(t);
                    let _ = super::raw::ptrace_detach(t, deliver);
                    self.tracees.remove(&tid);
                }
            }
            Want::Nothing | Want::Look => {
                if want == Want::Look
                    && let Some(x) = self.tracees.get_mut(&tid)
                {
                    x.want = Want::Nothing;
                    x.settled = true;
                }
                let _ = super::raw::ptrace_cont(t, deliver);
            }
        }
        self.log_stop(
            tid,
            at,
            at_ns,
            if ours.is_some() { "trap" } else { "signal" },
        );
        Ok(())
    }

    /// If `t` stopped for a breakpoint of ours, where it must go: the detour while the
    /// breakpoint is in place (in the memory `t` runs in), else back to the entry.
    fn breakpoint_hit(&self, t: Pid) -> Option<u64> {
        let info = ptrace::getsiginfo(t).ok()?;
        if info.si_code != libc::SI_KERNEL {
            return None;
        }
        let ip = Native::get_regs(t).ok()?.instruction_pointer();
        let at = Native::breakpoint_at(ip);
        let Some(swap) = self.swaps.iter().find(|s| s.addr == at) else {
            log::debug!(
                "pid {}: thread {t}: a SIGTRAP at {ip:#x} that is not ours",
                self.pid
            );
            return None;
        };
        // Read in the memory `t` runs in: a forked copy keeps the breakpoint it was made with.
        let tgid = self.tracees.get(&t.as_raw()).map_or(self.pid, |x| x.tgid);
        let first = if tgid == self.pid {
            self.mem.read(at, 1, "read a breakpoint").ok()?
        } else {
            RemoteMemory::through(tgid, t.as_raw())
                .read(at, 1, "read a breakpoint")
                .ok()?
        };
        // Still there: the detour runs what the code does (old or new, the same result); gone:
        // the entry holds whole instructions again.
        Some(if first[0] == Native::BREAKPOINT {
            swap.detour
        } else {
            at
        })
    }

    fn on_interrupt(&mut self, t: Pid, at: Instant, at_ns: u64) -> Result<()> {
        let tid = t.as_raw();
        let Some(tracee) = self.tracees.get(&tid) else {
            // A new thread or process, at its first instruction: traced from here on.
            let tgid = procfs::tgid_of(tid).unwrap_or(self.pid);
            self.tracees.insert(
                tid,
                Tracee {
                    tgid,
                    want: Want::Nothing,
                    settled: true,
                    busy: false,
                },
            );
            self.stats.threads += 1;
            let _ = super::raw::ptrace_cont(t, 0);
            self.log_stop(tid, at, at_ns, "new");
            return Ok(());
        };
        match tracee.want {
            // Met a breakpoint and the trap is still queued (the interrupt stop comes first):
            // its signal stop comes next and is the one to look at; moving it now would make
            // the trap unrecognisable.
            Want::Check if self.trap_pending(t) => {
                let _ = super::raw::ptrace_cont(t, 0);
                self.log_stop(tid, at, at_ns, "check");
            }
            Want::Check => {
                let done = self.check_stopped(t)?;
                if let Some(x) = self.tracees.get_mut(&tid) {
                    x.want = Want::Nothing;
                    x.busy = !done;
                }
                let _ = super::raw::ptrace_cont(t, 0);
                self.log_stop(tid, at, at_ns, "check");
            }
            Want::Release => self.release_stopped(t, at, at_ns),
            Want::Look => {
                if let Some(x) = self.tracees.get_mut(&tid) {
                    x.want = Want::Nothing;
                    x.settled = true;
                }
                let _ = super::raw::ptrace_cont(t, 0);
                self.log_stop(tid, at, at_ns, "look");
            }
            Want::Nothing | Want::ReleaseAfterTrap => {
                let _ = super::raw::ptrace_cont(t, 0);
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // The worker

    /// Brings the worker to an interrupt stop with nothing of ours pending: a signal that
    /// comes first is handled as any other (a breakpoint trap redirected, anything else passed
    /// on with its own siginfo), and a breakpoint trap still queued at the interrupt stop is
    /// let through first — running a call in a thread that owes us a trap would lose the trap
    /// and leave the thread inside the instruction the breakpoint covers.
    fn stop_worker(&mut self, step: &'static str) -> Result<()> {
        // The worker may exit on its own (a short-lived thread): another one takes over.
        for _ in 0..8 {
            match self.stop_this_worker(step) {
                Err(Error::ProcessGone { .. }) if !self.process_gone() => {
                    log::debug!(
                        "pid {}: worker {} exited; picking another",
                        self.pid,
                        self.worker
                    );
                    self.tracees.remove(&self.worker.as_raw());
                    self.pick_worker()?;
                }
                other => return other,
            }
        }
        Err(stuck(self.pid, self.worker.as_raw(), step))
    }

    /// Whether the whole process is gone or going (not just one of its threads).
    pub(crate) fn process_gone(&self) -> bool {
        !procfs::exists(self.pid) || procfs::is_zombie(self.pid) || self.dying()
    }

    fn stop_this_worker(&mut self, step: &'static str) -> Result<()> {
        let w = self.worker;
        let interrupt = |s: &Self| match ptrace::interrupt(w) {
            Ok(()) => Ok(()),
            Err(Errno::ESRCH) => Err(Error::ProcessGone { pid: s.pid, step }),
            Err(e) => Err(procfs::errno_error(s.pid, w.as_raw(), step, e)),
        };
        interrupt(self)?;
        let deadline = Instant::now() + STOP_DEADLINE;
        loop {
            match self.next_of(w, step)? {
                Ev::Interrupt if self.trap_pending(w) => {
                    if Instant::now() >= deadline {
                        return Err(stuck(self.pid, w.as_raw(), step));
                    }
                    // The trap's signal stop comes next; on_signal answers it.
                    let _ = super::raw::ptrace_cont(w, 0);
                }
                Ev::Interrupt => return Ok(()),
                Ev::Signal(sig) => {
                    // That stop cancelled our interrupt: answer it, ask again.
                    let (at, ns) = (Instant::now(), monotonic_ns());
                    self.on_signal(w, sig, at, ns)?;
                    interrupt(self)?;
                }
                Ev::Exited => {
                    return Err(Error::ProcessGone {
                        pid: self.pid,
                        step,
                    });
                }
                // It forked or made a thread on its way to our stop, which still comes.
                ev @ (Ev::Child | Ev::Syscall) => self.handle(w.as_raw(), ev)?,
                other => {
                    self.handle(w.as_raw(), other)?;
                    return Err(self.abandoned.take().unwrap_or(Error::ProcessGone {
                        pid: self.pid,
                        step,
                    }));
                }
            }
        }
    }

    /// Holds the worker (interrupt stop), runs `f`, lets it run again; signals that came
    /// meanwhile are passed on after.
    fn hold_worker<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let w = self.worker;
        self.stop_worker("hold the worker thread")?;
        let (at, ns) = (Instant::now(), monotonic_ns());
        let out = f(self);
        let _ = super::raw::ptrace_cont(w, 0);
        let held = at.elapsed();
        self.stats.worker_longest_hold_us = self
            .stats
            .worker_longest_hold_us
            .max(held.as_micros() as u64);
        self.log_stop(w.as_raw(), at, ns, "worker");
        out
    }

    /// Runs `call` in the worker (one hold) and returns its raw result.
    pub(crate) fn call(&mut self, call: &RemoteCall) -> Result<i64> {
        let insn = self.syscall_insn;
        let call = *call;
        let mut pending = Vec::new();
        let out = self.hold_worker(|s| {
            if s.worker_filtered {
                s.filters_allow(&[call])?;
            }
            s.run_in_worker(insn, &call, &mut pending)
        });
        for sig in pending {
            let _ = super::raw::tgkill_raw(self.pid, self.worker.as_raw(), sig);
        }
        let ret = out?;
        log::debug!(
            "pid {}: {} in worker {} returned {ret:#x}",
            self.pid,
            call.name(),
            self.worker
        );
        Ok(ret)
    }

    /// `call` and its result check.
    pub(crate) fn run(&mut self, call: &RemoteCall) -> Result<u64> {
        let ret = self.call(call)?;
        call.check(self.pid, self.worker.as_raw(), ret)
    }

    /// The worker's system call, as `remote_syscall.rs` runs it in a held thread (registers
    /// saved, PTRACE_SYSCALL to the entry and exit stops, registers back at the exit stop,
    /// then one more interrupt stop on the way out), with everyone else's reports handled
    /// while we wait.
    fn run_in_worker(
        &mut self,
        insn: u64,
        call: &RemoteCall,
        pending: &mut Vec<i32>,
    ) -> Result<i64> {
        let (pid, w) = (self.pid, self.worker);
        let step = "run a system call in the worker thread";
        let (nr, args) = call.nr_and_args();
        let done = Native::after_syscall(insn);
        let lost = |detail: String| Error::RemoteSyscallLost {
            pid,
            tid: w.as_raw(),
            syscall: call.name(),
            detail,
        };
        let resume = |how: fn(Pid, Option<nix::sys::signal::Signal>) -> nix::Result<()>| {
            how(w, None).map_err(|e| match e {
                Errno::ESRCH => Error::ProcessGone { pid, step },
                e => procfs::errno_error(pid, w.as_raw(), step, e),
            })
        };
        // Another thread's execve kills the worker and, if the worker led the process, gives
        // its id to the exec'ing thread: after an exit or exec report, `w` may name the new
        // program's thread, stopped at its exec event. Its registers are never touched then.
        let mut entered = None;
        for _ in 0..SYSCALL_ATTEMPTS {
            let mut guard = RegsGuard::save(pid, w)?;
            let Some(mut regs) = guard.regs() else {
                return Err(Error::ProcessGone { pid, step });
            };
            Native::prepare_syscall(&mut regs, insn, nr, &args);
            guard.sent_to(insn);
            Native::set_regs(w, &regs).map_err(|e| {
                procfs::errno_error(pid, w.as_raw(), "set up the injected syscall", e)
            })?;
            resume(ptrace::syscall)?;
            match self.next_of(w, step)? {
                Ev::Syscall => {
                    entered = Some(guard);
                    break;
                }
                Ev::Signal(sig) => {
                    if let Some(why) = super::remote_syscall::our_fault(w, sig, insn) {
                        return Err(lost(why));
                    }
                    // Taken before the instruction ran: the thread gets its own registers
                    // back and the signal as it came (its siginfo kept), then is stopped again.
                    guard.restore()?;
                    let (at, ns) = (Instant::now(), monotonic_ns());
                    self.on_signal(w, sig, at, ns)?;
                    self.stop_worker(step)?;
                }
                // A stop we asked for earlier (a look at every thread): nothing ran yet.
                Ev::Interrupt => guard.restore()?,
                ev @ (Ev::Exited | Ev::Exec) => return Err(self.worker_gone(guard, ev, step)),
                other => return Err(lost(format!("it stopped with {other:?} before the call"))),
            }
        }
        let Some(guard) = entered else {
            return Err(lost("signals kept arriving before it could run".into()));
        };
        let ip = Native::get_regs(w)
            .map_err(|e| procfs::errno_error(pid, w.as_raw(), step, e))?
            .instruction_pointer();
        if ip != done {
            return Err(lost(format!(
                "the thread entered it at {ip:#x}, not {done:#x}"
            )));
        }
        resume(ptrace::syscall)?;
        match self.next_of(w, step)? {
            Ev::Syscall => {}
            ev @ (Ev::Exited | Ev::Exec) => return Err(self.worker_gone(guard, ev, step)),
            other => return Err(lost(format!("it stopped with {other:?} in the call"))),
        }
        let after = Native::get_regs(w)
            .map_err(|e| procfs::errno_error(pid, w.as_raw(), "read the syscall result", e))?;
        if after.instruction_pointer() != done {
            return Err(lost(format!(
                "the thread left it at {:#x}, not {done:#x}",
                after.instruction_pointer()
            )));
        }
        let ret = Native::syscall_return(&after);
        guard.restore()?;
        match ptrace::interrupt(w) {
            Ok(()) => {}
            Err(Errno::ESRCH) => return Err(Error::ProcessGone { pid, step }),
            Err(e) => return Err(procfs::errno_error(pid, w.as_raw(), step, e)),
        }
        resume(ptrace::cont)?;
        match self.next_of(w, step)? {
            Ev::Interrupt => Ok(ret),
            // A signal stop instead (it cancels the interrupt): the thread is just as much back
            // in the signal path with its own registers; the signal is sent again afterwards.
            Ev::Signal(sig) => {
                pending.push(sig);
                Ok(ret)
            }
            Ev::Exited => Err(Error::ProcessGone { pid, step }),
            Ev::Exec => {
                // Killed by another thread's execve after its registers were back: the report
                // is the new program's; let it go.
                let _ = self.handle(w.as_raw(), Ev::Exec);
                Err(self.abandoned.take().unwrap_or(Error::Execed { pid }))
            }
            other => Err(lost(format!("it stopped with {other:?} after the call"))),
        }
    }

    /// The worker reported its exit or an exec in the middle of a call (another thread's
    /// execve kills it and, if it led the process, gives its id to the exec'ing thread): the
    /// saved registers are dropped unwritten, the report handled like any other.
    fn worker_gone(&mut self, guard: RegsGuard, ev: Ev, step: &'static str) -> Error {
        guard.forget();
        if let Err(e) = self.handle(self.worker.as_raw(), ev) {
            log::debug!("pid {}: after the worker's {ev:?}: {e}", self.pid);
        }
        self.abandoned.take().unwrap_or(Error::ProcessGone {
            pid: self.pid,
            step,
        })
    }

    /// A core-serializing barrier across every thread of the target: none executes another
    /// instruction of its own before a serializing one (the SDM's condition for running code
    /// another processor modified).
    pub(crate) fn barrier(&mut self) -> Result<()> {
        let sync = RemoteCall::Membarrier {
            cmd: MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE,
        };
        let ret = self.call(&sync)?;
        sync.check(self.pid, self.worker.as_raw(), ret)?;
        self.stats.barriers += 1;
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // The code changes

    /// Writes bytes of code through `/proc/PID/mem` (forced: the pages are not writable).
    fn write(&mut self, addr: u64, bytes: &[u8], step: &'static str) -> Result<()> {
        let out = self.mem.write(addr, bytes, step);
        if out.is_err() {
            // An exec or an exit explains it better: say that.
            let _ = self.drain(None);
            if let Some(e) = self.abandoned.take() {
                return Err(e);
            }
        }
        out
    }

    /// Step 1: the breakpoint over the first byte of every swap still `Before`, then a barrier.
    pub(crate) fn arm(&mut self) -> Result<()> {
        for i in 0..self.swaps.len() {
            if self.swaps[i].state != SwapState::Before {
                continue;
            }
            let addr = self.swaps[i].addr;
            // Marked first: a trap may report before the write returns.
            self.swaps[i].state = SwapState::Armed;
            if self.first_breakpoint.is_none() {
                self.first_breakpoint = Some(Instant::now());
            }
            // On failure nothing (or the breakpoint) was written: the undo puts the byte back.
            self.write(addr, &[Native::BREAKPOINT], "write a breakpoint")?;
        }
        self.barrier()
    }

    /// Step 3: the rest of each new instruction behind its breakpoint, then a barrier.
    pub(crate) fn write_tails(&mut self) -> Result<()> {
        for i in 0..self.swaps.len() {
            if self.swaps[i].state != SwapState::Armed {
                continue;
            }
            let (addr, tail) = (self.swaps[i].addr, self.swaps[i].after[1..].to_vec());
            self.swaps[i].state = SwapState::Tail;
            self.write(addr + 1, &tail, "write the rest of an instruction")?;
        }
        self.barrier()
    }

    /// Step 4: the first byte of each new instruction over its breakpoint, then a barrier;
    /// every swap read back.
    pub(crate) fn write_heads(&mut self) -> Result<()> {
        for i in 0..self.swaps.len() {
            if self.swaps[i].state != SwapState::Tail {
                continue;
            }
            let (addr, head) = (self.swaps[i].addr, self.swaps[i].after[0]);
            self.reached_after = true;
            self.write(addr, &[head], "write the first byte of an instruction")?;
            self.swaps[i].state = SwapState::After;
        }
        self.breakpoints_gone();
        self.barrier()?;
        for s in &self.swaps {
            let back = self
                .mem
                .read(s.addr, s.after.len(), "verify the written code")?;
            if back != s.after {
                return Err(Error::UnsafeToPatch {
                    pid: self.pid,
                    symbol: "vDSO entry",
                    reason: format!(
                        "the code at {:#x} did not stick (read back {back:02x?})",
                        s.addr
                    ),
                });
            }
        }
        Ok(())
    }

    fn breakpoints_gone(&mut self) {
        if self.first_breakpoint.is_some()
            && self
                .swaps
                .iter()
                .all(|s| matches!(s.state, SwapState::Before | SwapState::After))
        {
            self.last_breakpoint_gone = Some(Instant::now());
        }
    }

    /// Takes every swap back to `Before` (undo), with the same steps in reverse; a swap whose
    /// tail was never written needs only its first byte back. Barriers that fail do not stop
    /// the writes: a breakpoint must never be left behind. Returns what failed.
    pub(crate) fn unwind(&mut self) -> Vec<String> {
        let mut failures = Vec::new();
        let mut note = |r: Result<()>, what: &str| {
            if let Err(e) = r {
                failures.push(format!("{what}: {e}"));
            }
        };
        let any = |s: &Self, st: SwapState| s.swaps.iter().any(|x| x.state == st);
        if any(self, SwapState::After) {
            for i in 0..self.swaps.len() {
                if self.swaps[i].state == SwapState::After {
                    let addr = self.swaps[i].addr;
                    self.swaps[i].state = SwapState::Tail;
                    note(
                        self.write(addr, &[Native::BREAKPOINT], "write a breakpoint"),
                        "re-arm",
                    );
                }
            }
            note(self.barrier(), "barrier");
        }
        if any(self, SwapState::Tail) {
            for i in 0..self.swaps.len() {
                if self.swaps[i].state == SwapState::Tail {
                    let (addr, tail) = (self.swaps[i].addr, self.swaps[i].before[1..].to_vec());
                    note(
                        self.write(addr + 1, &tail, "restore the rest of an instruction"),
                        "restore tail",
                    );
                    self.swaps[i].state = SwapState::Armed;
                }
            }
            note(self.barrier(), "barrier");
        }
        if any(self, SwapState::Armed) {
            for i in 0..self.swaps.len() {
                if self.swaps[i].state == SwapState::Armed {
                    let (addr, head) = (self.swaps[i].addr, self.swaps[i].before[0]);
                    note(
                        self.write(addr, &[head], "restore the first byte"),
                        "restore head",
                    );
                    self.swaps[i].state = SwapState::Before;
                }
            }
            self.breakpoints_gone();
            note(self.barrier(), "barrier");
        }
        failures
    }

    /// Takes every armed swap to whichever side its tail is on (a recover that fails half-way:
    /// entries already restored stay restored, the others keep the jump).
    pub(crate) fn settle_swaps(&mut self) -> Vec<String> {
        let mut failures = Vec::new();
        let mut wrote = false;
        for i in 0..self.swaps.len() {
            let s = &self.swaps[i];
            let head = match s.state {
                SwapState::Armed => s.before[0],
                SwapState::Tail => s.after[0],
                _ => continue,
            };
            let addr = s.addr;
            if let Err(e) = self.write(addr, &[head], "write the first byte") {
                failures.push(format!("{addr:#x}: {e}"));
            }
            self.swaps[i].state = if head == self.swaps[i].after[0] {
                SwapState::After
            } else {
                SwapState::Before
            };
            wrote = true;
        }
        self.breakpoints_gone();
        if wrote && let Err(e) = self.barrier() {
            failures.push(format!("barrier: {e}"));
        }
        failures
    }

    // -----------------------------------------------------------------------------------------
    // Looking at threads

    /// Step 2: makes sure no thread is inside code about to change (`inside`) — executing it
    /// or interrupted there by a signal handler still running — once the breakpoints guard
    /// the way in. A thread blocked in the kernel is read from `/proc` without a stop; a
    /// running one is stopped once, looked at, and moved to the same instruction of the
    /// relocated copy if it is inside. A handler on top of a window is waited out (bounded).
    pub(crate) fn check_threads(&mut self) -> Result<()> {
        let mut round = 0;
        loop {
            self.maps = procfs::maps_of(self.pid, self.worker.as_raw())?;
            let mut busy = Vec::new();
            let tids: Vec<(i32, i32)> = self.tracees.iter().map(|(t, x)| (*t, x.tgid)).collect();
            for (n, (tid, tgid)) in tids.iter().enumerate() {
                if n % 8 == 7 {
                    // A thread at a breakpoint waits for us: answer between looks.
                    self.drain(None)?;
                }
                if *tgid != self.pid {
                    continue; // another memory (a forked child) is repaired when let go
                }
                match seen(self.pid, *tid) {
                    Seen::Gone => {
                        self.tracees.remove(tid);
                    }
                    Seen::Blocked { sp, pc, .. } if !self.inside(pc) => {
                        if let Some(why) = self.saved_context_inside(*tid, sp)? {
                            busy.push(why);
                        }
                    }
                    _ => self.ask_stop(*tid, Want::Check)?,
                }
            }
            self.settle("look at a thread")?;
            busy.extend(
                self.tracees
                    .iter()
                    .filter(|(_, t)| t.busy)
                    .map(|(tid, _)| format!("thread {tid} was interrupted inside")),
            );
            for t in self.tracees.values_mut() {
                t.busy = false;
            }
            if busy.is_empty() {
                return Ok(());
            }
            round += 1;
            if round >= CHECK_ATTEMPTS {
                return Err(Error::UnsafeToPatch {
                    pid: self.pid,
                    symbol: "vDSO entry",
                    reason: format!("{} — still so after {CHECK_ATTEMPTS} looks; retry", busy[0]),
                });
            }
            log::debug!("pid {}: look {round}: {}", self.pid, busy[0]);
            std::thread::sleep(Duration::from_micros(200 * u64::from(round.min(8))));
        }
    }

    fn ask_stop(&mut self, tid: i32, want: Want) -> Result<()> {
        log::trace!("pid {}: thread {tid}: stop for {want:?}", self.pid);
        match ptrace::interrupt(Pid::from_raw(tid)) {
            Ok(()) => {
                if let Some(t) = self.tracees.get_mut(&tid) {
                    t.want = want;
                }
                Ok(())
            }
            Err(Errno::ESRCH) => {
                self.tracees.remove(&tid);
                Ok(())
            }
            Err(e) => Err(procfs::errno_error(self.pid, tid, "stop one thread", e)),
        }
    }

    fn inside(&self, ip: u64) -> bool {
        self.swaps.iter().any(|s| {
            s.window
                .as_ref()
                .is_some_and(|(w, _, _)| ip > s.addr && ip < s.addr + w.len() as u64)
        })
    }

    /// A stopped thread: moved out of a window if inside one; `false` if it must be looked at
    /// again (a saved context inside a window, or no exact place to move it to).
    fn check_stopped(&mut self, t: Pid) -> Result<bool> {
        let Ok(mut regs) = Native::get_regs(t) else {
            return Ok(true); // gone
        };
        let ip = regs.instruction_pointer();
        if self.inside(ip) {
            let dest = self.swaps.iter().find_map(|s| {
                let (window, stub, stub_addr) = s.window.as_ref()?;
                Native::equivalent_in_stub(window, s.addr, stub, *stub_addr, ip)
            });
            let Some(dest) = dest else {
                return Ok(false);
            };
            regs.set_instruction_pointer(dest);
            if Native::set_regs(t, &regs).is_err() {
                return Ok(true);
            }
            self.stats.moved += 1;
            log::debug!(
                "pid {}: thread {t} moved from {ip:#x} to {dest:#x}",
                self.pid
            );
        }
        Ok(self
            .saved_context_inside(t.as_raw(), regs.stack_pointer())?
            .is_none())
    }

    /// Why a saved context (a signal frame of a handler still running) on `tid`'s stack above
    /// `sp` points inside a window, if one does (as `windows.rs` looks).
    fn saved_context_inside(&self, tid: i32, sp: u64) -> Result<Option<String>> {
        let sp = sp & !7;
        let i = self.maps.partition_point(|m| m.end <= sp);
        let Some(stack) = self.maps.get(i).filter(|m| m.start <= sp) else {
            return Ok(None);
        };
        let end = stack.end.min(sp.saturating_add(STACK_SCAN));
        let Ok(words) = self
            .mem
            .read(sp, (end - sp) as usize, "read a thread's stack")
        else {
            return Ok(None); // exited meanwhile
        };
        Ok(words
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().expect("chunks of 8")))
            .find(|w| self.inside(*w))
            .map(|w| {
                format!(
                    "thread {tid} was interrupted at {w:#x}, inside the instructions to be \
                     replaced, by a signal handler that is still running"
                )
            }))
    }

    /// After an undo: is any thread inside `[start, end)` (executing it, or with a return
    /// address or saved context pointing into it)? Running threads are stopped once to see.
    pub(crate) fn anyone_in(&mut self, start: u64, end: u64) -> Result<bool> {
        let saved = std::mem::take(&mut self.swaps);
        self.swaps = vec![Swap {
            addr: start,
            before: vec![0],
            after: vec![0],
            detour: start,
            window: Some((vec![0; (end - start) as usize], Vec::new(), 0)),
            state: SwapState::Before,
        }];
        self.maps = procfs::maps_of(self.pid, self.worker.as_raw())?;
        let inside_entry = |ip: u64| ip == start;
        let mut found = false;
        let tids: Vec<i32> = self
            .tracees
            .iter()
            .filter(|(_, t)| t.tgid == self.pid)
            .map(|(t, _)| *t)
            .collect();
        for tid in tids {
            match seen(self.pid, tid) {
                Seen::Blocked { sp, pc, .. } => {
                    if self.inside(pc)
                        || inside_entry(pc)
                        || self.saved_context_inside(tid, sp)?.is_some()
                    {
                        found = true;
                    }
                }
                Seen::Gone => {}
                Seen::Running => self.ask_stop(tid, Want::Check)?,
            }
        }
        // A stopped thread inside is not moved (no window to move from): it counts as found.
        let out = self.settle("look at a thread");
        found |= self.tracees.values().any(|t| t.busy);
        for t in self.tracees.values_mut() {
            t.busy = false;
        }
        self.swaps = saved;
        out.map(|()| found)
    }

    // -----------------------------------------------------------------------------------------
    // Letting go

    /// Lets every thread go once no breakpoint is left: threads that might still have a trap
    /// on its way (running, or blocked just past a breakpoint) and every other process traced
    /// meanwhile (a forked child, whose copy of the memory may hold a breakpoint) are stopped
    /// and detached here, their trap consumed; the others, blocked in the kernel, are detached
    /// by the kernel when the tracer thread ends — without a stop.
    pub(crate) fn release(&mut self) -> Result<()> {
        let tids: Vec<(i32, i32)> = self.tracees.iter().map(|(t, x)| (*t, x.tgid)).collect();
        for (n, (tid, tgid)) in tids.into_iter().enumerate() {
            if n % 8 == 7 {
                self.drain(None)?;
            }
            let must_stop = tgid != self.pid
                || match seen(tgid, tid) {
                    Seen::Gone => {
                        self.tracees.remove(&tid);
                        continue;
                    }
                    Seen::Running => true,
                    Seen::Blocked { pc, .. } => {
                        let at = Native::breakpoint_at(pc);
                        self.swaps.iter().any(|s| s.addr == at)
                    }
                };
            if must_stop {
                self.ask_stop(tid, Want::Release)?;
            }
        }
        let out = self.settle("let a thread go");
        self.stats.wall_us = self.started.elapsed().as_micros() as u64;
        out
    }

    fn release_stopped(&mut self, t: Pid, at: Instant, at_ns: u64) {
        let tid = t.as_raw();
        if self.trap_queued(t) {
            // Its breakpoint trap comes next: answered there, and the thread let go then.
            if let Some(x) = self.tracees.get_mut(&tid) {
                x.want = Want::ReleaseAfterTrap;
            }
            let _ = super::raw::ptrace_cont(t, 0);
        } else {
            self.repair_copy(t);
            let _ = super::raw::ptrace_detach(t, 0);
            self.tracees.remove(&tid);
        }
        self.log_stop(tid, at, at_ns, "release");
    }

    /// Whether `t` stands just past one of our breakpoints with its trap still queued.
    fn trap_pending(&self, t: Pid) -> bool {
        let Ok(regs) = Native::get_regs(t) else {
            return false;
        };
        let at = Native::breakpoint_at(regs.instruction_pointer());
        self.swaps.iter().any(|s| s.addr == at) && self.trap_queued(t)
    }

    /// Whether a kernel SIGTRAP waits in `t`'s own queue (a breakpoint it met).
    fn trap_queued(&self, t: Pid) -> bool {
        let mut info = [0u8; 128];
        let args = PeekSiginfoArgs {
            off: 0,
            flags: 0,
            nr: 1,
        };
        for off in 0..32u64 {
            let args = PeekSiginfoArgs { off, ..args };
            match super::raw::peek_siginfo(t, &args, &mut info) {
                Ok(1) => {
                    let signo = i32::from_ne_bytes(info[0..4].try_into().expect("4 bytes"));
                    let code = i32::from_ne_bytes(info[8..12].try_into().expect("4 bytes"));
                    if signo == libc::SIGTRAP && code == libc::SI_KERNEL {
                        return true;
                    }
                }
                _ => return false,
            }
        }
        false
    }

    /// A process that is not the target (forked meanwhile) has its own copy of the memory:
    /// each breakpoint in it is resolved to whichever side its tail is on. It is stopped and
    /// single-threaded (only the forking thread is copied), so the writes are safe.
    fn repair_copy(&self, t: Pid) {
        let tid = t.as_raw();
        let Some(tgid) = self.tracees.get(&tid).map(|x| x.tgid) else {
            return;
        };
        if tgid == self.pid {
            return;
        }
        let mem = RemoteMemory::through(tgid, tid);
        for s in &self.swaps {
            let Ok(now) = mem.read(s.addr, s.after.len(), "read a forked copy") else {
                continue;
            };
            if now[0] != Native::BREAKPOINT {
                continue;
            }
            let head = if now[1..] == s.after[1..] {
                s.after[0]
            } else {
                s.before[0]
            };
            if let Err(e) = mem.write_code(s.addr, &[head], t, "repair a forked copy") {
                log::warn!("pid {tgid}: a breakpoint in this forked copy stays: {e}");
            }
        }
    }

    /// Whether any thread may have entered the code the swaps lead to: one met a breakpoint
    /// (and was sent there), was moved into a relocated copy, or a complete jump was in place.
    pub(crate) fn code_entered(&self) -> bool {
        self.stats.traps > 0 || self.stats.moved > 0 || self.reached_after
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
    /// detach at the tracer's end finds every thread as it should.
    pub(crate) fn finish(&mut self) {
        let _ = self.drain(None);
    }
}

/// Runs `f` in a thread of its own that is the tracer of everything `f` seizes, and waits until
/// the kernel has detached every tracee left (which it does when that thread ends).
pub(crate) fn in_tracer_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
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
        // pthread_join returns before the kernel's exit_ptrace has run for that thread; the
        // thread's /proc entry goes only after it.
        let me = std::process::id();
        let deadline = Instant::now() + Duration::from_secs(2);
        while std::path::Path::new(&format!("/proc/{me}/task/{tid}")).exists()
            && Instant::now() < deadline
        {
            std::thread::yield_now();
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_syscall_lines() {
        assert_eq!(parse_seen("running\n"), Seen::Running);
        assert_eq!(
            parse_seen("-1 0x7ffd1000 0x401000\n"),
            Seen::Blocked {
                in_syscall: false,
                nr: -1,
                sp: 0x7ffd_1000,
                pc: 0x40_1000
            }
        );
        assert_eq!(
            parse_seen("202 0x1 0x2 0x3 0x4 0x5 0x6 0x7ffd2000 0x7f0012345678\n"),
            Seen::Blocked {
                in_syscall: true,
                nr: 202,
                sp: 0x7ffd_2000,
                pc: 0x7f00_1234_5678
            }
        );
    }

    #[test]
    fn own_stat_signals_parse() {
        let me = std::process::id() as i32;
        let (state, _, _) = stat_signals(me, me).expect("own stat");
        assert!(matches!(state, 'R' | 'S'));
    }
}
