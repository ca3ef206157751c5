//! The worker: the one thread that runs timeskew's system calls (mmap, membarrier), held
//! only for each call, replaced if it exits.

use super::*;

/// Attempts at entering the worker's system call when signals keep arriving first.
pub(super) const SYSCALL_ATTEMPTS: usize = 64;
/// How long the registration helper may take (an RCU grace period: milliseconds, longer on a
/// loaded machine) before the worker registers instead.
const HELPER_DEADLINE: Duration = Duration::from_secs(2);

/// A held thread's blocked-signal mask, set to block everything between two ptrace stops of
/// ours and put back at the second ([`MaskGuard::put_back`]); dropped on an error in between,
/// it puts the mask back too (a failure then is logged: the thread is gone).
struct MaskGuard {
    pid: i32,
    tid: Pid,
    saved: u64,
}

impl MaskGuard {
    fn block_all(pid: i32, tid: Pid) -> Result<Self> {
        let err = |e| procfs::errno_error(pid, tid.as_raw(), "block the worker's signals", e);
        let saved = crate::ptrace::raw::get_sigmask(tid).map_err(err)?;
        crate::ptrace::raw::set_sigmask(tid, u64::MAX).map_err(err)?;
        Ok(MaskGuard { pid, tid, saved })
    }

    /// Puts the mask back now, while the thread is in a ptrace stop (the only time it can be
    /// written): at the call's exit stop, before anything can let the thread run on.
    fn put_back(self) -> Result<()> {
        let out = crate::ptrace::raw::set_sigmask(self.tid, self.saved).map_err(|e| {
            procfs::errno_error(
                self.pid,
                self.tid.as_raw(),
                "put the worker's signals back",
                e,
            )
        });
        std::mem::forget(self);
        out
    }
}

impl Drop for MaskGuard {
    fn drop(&mut self) {
        if let Err(e) = crate::ptrace::raw::set_sigmask(self.tid, self.saved) {
            log::debug!(
                "pid {}: thread {}: its signal mask could not be put back: {e}",
                self.pid,
                self.tid
            );
        }
    }
}

/// Whether thread `tid` of `pid`, in `state` (its `stat`), sleeps in a system call: the best
/// worker, waiting anyway, its call restarted afterwards. Its system call file is read only if
/// it sleeps.
fn sleeps_in_syscall(pid: i32, tid: i32, state: Option<char>) -> bool {
    state == Some('S')
        && matches!(
            seen(pid, tid),
            Seen::Blocked {
                in_syscall: true,
                ..
            }
        )
}

/// How long `pick_worker` waits for a thread it can work through.
const PICK_DEADLINE: Duration = Duration::from_millis(500);

impl LiveSession {
    /// The worker: a thread blocked in a system call if there is one (it was waiting anyway,
    /// and restarts its call afterwards), else any thread not in an uninterruptible wait.
    pub(super) fn pick_worker(&mut self) -> Result<()> {
        let pid = self.pid;
        // None may qualify for a moment (a thread faulting a page in from a busy disk shows
        // `D`): looked at again for a while before the process is called stuck.
        let deadline = Instant::now() + PICK_DEADLINE;
        loop {
            // Reports waiting (signals under a storm) are answered first: a thread in such a
            // stop would look busy.
            self.drain(None)?;
            // Only the main thread seized, and it cannot serve after all: every thread then.
            if self.partial
                && self.worker_candidate().is_none()
                && let Some(why) = self.seize_rest()?
            {
                return Err(self.fall_back(why));
            }
            if let Some(tid) = self.worker_candidate() {
                self.worker = Pid::from_raw(tid);
                self.stats.worker = tid;
                return self.note_worker_filters();
            }
            if Instant::now() >= deadline || self.process_gone() {
                // Said of a thread that is there (an exited leader's `Z` tells nothing).
                let described = self
                    .tracees
                    .keys()
                    .copied()
                    .filter(|&t| t != pid)
                    .min()
                    .filter(|_| procfs::task_info(pid, None).is_ok_and(|i| i.state == 'Z'))
                    .unwrap_or(pid);
                return Err(stuck(pid, described, "pick a thread to work through"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Whether thread `tid` sleeps in a system call (the best worker).
    pub(super) fn blocked_in_syscall(&self, tid: i32) -> bool {
        let state = procfs::task_info(self.pid, Some(tid)).map(|i| i.state).ok();
        sleeps_in_syscall(self.pid, tid, state)
    }

    /// A thread blocked in a system call if there is one, else one running or in a stop of
    /// ours; `None` when every thread is in an uninterruptible wait (or gone).
    fn worker_candidate(&self) -> Option<i32> {
        let pid = self.pid;
        let mut fallback = None;
        // The main thread first: most programs keep it to the end, while another thread may be
        // one that lives a few µs (each exit of the worker costs a new pick and stop).
        let mut tids: Vec<i32> = self.tracees.keys().copied().collect();
        tids.sort_unstable_by_key(|&t| (t != pid, t));
        for tid in tids {
            let state = procfs::task_info(pid, Some(tid)).map(|i| i.state).ok();
            if sleeps_in_syscall(pid, tid, state) {
                return Some(tid);
            }
            // 't': in a stop of ours (a signal reporting to us): as usable as a running one.
            if matches!(state, Some('S' | 'R' | 't')) && fallback.is_none() {
                fallback = Some(tid);
            }
        }
        fallback
    }

    pub(super) fn note_worker_filters(&mut self) -> Result<()> {
        self.worker_filtered = procfs::seccomp_status(self.pid, self.worker.as_raw())?.mode != 0;
        Ok(())
    }

    /// membarrier: asks whether the kernel has the core-serializing barrier, then registers
    /// the target for it. `Some` when the live path cannot use it.
    pub(super) fn barrier_setup(&mut self) -> Result<Option<Fallback>> {
        self.barriers_checked = true;
        self.holding(|s| s.barrier_setup_held())
    }

    fn barrier_setup_held(&mut self) -> Result<Option<Fallback>> {
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
            // Asked while the worker is held (as it is here).
            if let Err(e) = self.hold_worker(|s| s.filters_allow(&[query, register, sync])) {
                return match e {
                    Error::Seccomp { reason, .. } => Ok(Some(Fallback(format!(
                        "membarrier is not allowed in the target ({reason})"
                    )))),
                    other => Err(other),
                };
            }
        } else {
            // One call says all three: 0, registered by an earlier change; EPERM, offered but
            // not registered yet — the registration waits for the code page, whose helper
            // thread does it (`register_barriers`), so no thread of the program sits out its
            // grace period; EINVAL, not offered by this kernel (membarrier(2)).
            let mut synced = self.call(&sync)?;
            // Test builds: a kernel without the core-serializing barrier.
            if crate::fault::point(self.pid, "membarrier-unoffered").is_err() {
                synced = -i64::from(libc::EINVAL);
            }
            if synced == 0 {
                self.note_registered("earlier", None);
                return Ok(None);
            }
            return Ok(match Errno::from_raw(-synced as i32) {
                Errno::EPERM => None,
                Errno::EINVAL => Some(Fallback(
                    "the kernel offers no core-serializing membarrier \
                     (MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE: EINVAL)"
                        .into(),
                )),
                e => Some(Fallback(format!(
                    "a core-serializing membarrier failed in the target ({e})"
                ))),
            });
        }
        let supported = self.call(&query)?;
        if supported < 0 || supported & i64::from(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE) == 0 {
            return Ok(Some(Fallback(format!(
                "the kernel offers no core-serializing membarrier \
                 (MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE; membarrier query returned {supported})"
            ))));
        }
        let started = Instant::now();
        let registered = self.call(&register)?;
        if registered < 0 {
            return Ok(Some(Fallback(format!(
                "membarrier registration failed in the target ({})",
                Errno::from_raw(-registered as i32)
            ))));
        }
        self.note_registered("worker", Some(started));
        Ok(None)
    }

    /// The target is registered for the barriers, `how` (`LiveStats::registration`), the
    /// registration begun at `started` (none: by an earlier change).
    fn note_registered(&mut self, how: &str, started: Option<Instant>) {
        self.registered = true;
        self.stats.registration = how.into();
        self.stats.registration_us = started.map_or(0, |t| t.elapsed().as_micros() as u64);
    }

    /// Registers the target for core-serializing barriers unless it is already. With `helper`
    /// (the address of the code page's registration helper, `fake_clock/x86_64.S`) the worker
    /// only makes a thread there — signals blocked, a clone's round trips — and that thread
    /// registers (one RCU grace period: 7–23 ms measured here, which the worker used to sit
    /// out) and exits. Without one, with seccomp filters on the worker, or if the helper does
    /// not get there, the worker registers as before — after the membarrier check, if it was
    /// not made at the start (a first injection): one that finds no barrier to use makes the
    /// change fall back (`fall_back`: what was done is undone, then every thread is stopped).
    pub(crate) fn register_barriers(&mut self, helper: Option<u64>) -> Result<()> {
        if self.registered {
            return Ok(());
        }
        let started = Instant::now();
        if let Some(insn) = helper
            && !self.worker_filtered
        {
            match self.register_in_helper(insn) {
                Ok(true) => {
                    self.note_registered("helper", Some(started));
                    return Ok(());
                }
                Ok(false) => {}
                Err(e @ Error::Execed { .. }) => return Err(e),
                Err(e) if self.process_gone() => return Err(e),
                Err(e) => log::debug!(
                    "pid {}: the registration helper failed ({e}); registering in the worker",
                    self.pid
                ),
            }
        }
        if !self.barriers_checked {
            if let Some(why) = self.barrier_setup()? {
                return Err(self.fall_back(why));
            }
            if self.registered {
                return Ok(());
            }
        }
        self.run(&RemoteCall::Membarrier {
            cmd: MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE,
        })?;
        self.note_registered("worker", Some(started));
        Ok(())
    }

    /// The helper thread made at `insn`, waited for until it exits; `true` once it exits with
    /// 0 (its `membarrier` registered the process), or else a barrier answers 0 after it.
    fn register_in_helper(&mut self, insn: u64) -> Result<bool> {
        let started = Instant::now();
        let tid = self.run_at(insn, &RemoteCall::CloneThread)? as i32;
        // Until it is seen to exit it may be running in the code page: an undo keeps the pages.
        self.helper = Some(tid);
        // Its first stop (a new thread's) is answered at once, and while the other threads
        // are seized: the grace period overlaps that and the look (ARCHITECTURE.md, step 2).
        self.helper_unanswered = Some(tid);
        self.answer_helper()?;
        // The first look at every thread, if still to be made (and for an injection the other
        // threads seized first): the helper's grace period runs meanwhile.
        self.look_early();
        if !self.wait_helper(tid)? {
            log::debug!("pid {}: helper thread {tid} still registering", self.pid);
            return Ok(false);
        }
        self.helper = None;
        // Its stops are ours, not the program's.
        self.ever_stopped.remove(&tid);
        self.stats.stop_log.retain(|s| s.tid != tid);
        self.stats.threads = self.stats.threads.saturating_sub(1);
        // Its exit status is the registration's errno: 0 needs no barrier to tell (one hold of
        // the worker fewer); anything else is asked of the kernel — by the membarrier check
        // if it is still to be made (`register_barriers`).
        let mut code = self.helper_exit.take();
        // Test builds: a kernel without the core-serializing barrier.
        if crate::fault::point(self.pid, "membarrier-unoffered").is_err() {
            code = Some(libc::EINVAL);
        }
        let synced = match code {
            Some(0) => 0,
            _ if !self.barriers_checked => -1,
            _ => self.call(&RemoteCall::Membarrier {
                cmd: MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE,
            })?,
        };
        log::debug!(
            "pid {}: helper thread {tid} exited after {} µs (membarrier errno {code:?}; barrier: \
             {synced})",
            self.pid,
            started.elapsed().as_micros()
        );
        Ok(synced == 0)
    }

    /// Answers everyone's reports until helper thread `tid` exits: `false` if it has not
    /// within [`HELPER_DEADLINE`].
    fn wait_helper(&mut self, tid: i32) -> Result<bool> {
        let deadline = Instant::now() + HELPER_DEADLINE;
        let mut round = 0;
        // An exit report takes it from the tracees into `let_go`.
        while !self.let_go.contains(&tid) {
            if let Some(ev) = self.wait_one(tid)? {
                self.handle(tid, ev)?;
                continue;
            }
            self.drain_some(8)?;
            if let Some(e) = self.abandoned.take() {
                return Err(e);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            self.nap(&mut round);
        }
        Ok(true)
    }

    /// Fails unless the worker's seccomp filters allow `calls` (the worker must be held).
    pub(super) fn filters_allow(&mut self, calls: &[RemoteCall]) -> Result<()> {
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

    /// Brings the worker to an interrupt stop with nothing of ours pending: a signal that
    /// comes first is handled as any other (a breakpoint trap redirected, anything else passed
    /// on with its own siginfo), and a breakpoint trap still queued at the interrupt stop is
    /// let through first — running a call in a thread that owes us a trap would lose the trap
    /// and leave the thread inside the instruction the breakpoint covers.
    pub(super) fn stop_worker(&mut self, step: &'static str) -> Result<()> {
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

    pub(super) fn stop_this_worker(&mut self, step: &'static str) -> Result<()> {
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
                    let _ = crate::ptrace::raw::ptrace_cont(w, 0);
                }
                Ev::Interrupt => return Ok(()),
                Ev::Signal(sig) => {
                    // That stop cancelled our interrupt: answer it, ask again.
                    let (at, ns) = (Instant::now(), monotonic_ns());
                    self.on_signal(w, sig, at, ns)?;
                    interrupt(self)?;
                }
                Ev::Exited(_) => {
                    return Err(Error::ProcessGone {
                        pid: self.pid,
                        step,
                    });
                }
                // It forked or made a thread on its way to our stop, which still comes.
                ev @ (Ev::Child | Ev::Syscall) => self.handle(w.as_raw(), ev)?,
                // Job control stopped it (a ptrace stop like ours): an undo or a release still
                // needs it for its barriers.
                Ev::GroupStop(_) if self.undoing || self.releasing => return Ok(()),
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
    pub(super) fn hold_worker<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if self.held == Some(self.worker) {
            return f(self);
        }
        self.stop_worker("hold the worker thread")?;
        // Read after the stop: a worker that exited meanwhile was replaced, and the one to let
        // go is the one held (letting the old one go left the new one stopped for good).
        let w = self.worker;
        let (at, ns) = (Instant::now(), monotonic_ns());
        let out = f(self);
        self.resume(w, 0);
        let held = self.resumed.saturating_duration_since(at);
        self.stats.worker_longest_hold_us = self
            .stats
            .worker_longest_hold_us
            .max(held.as_micros() as u64);
        self.log_stop(w.as_raw(), at, ns, "worker");
        out
    }

    /// Keeps the worker held across every call `f` makes. Each hold waits for the worker to be
    /// scheduled — milliseconds when its CPU is busy — so steps with nothing to wait for in
    /// between (a few writes of our own) share one hold instead of paying that wait each.
    /// Only for such steps: across longer stretches the worker's stop becomes the sum of them
    /// (measured with every step of a change in one hold: recover's longest stop 81 → 196 µs,
    /// for a few ms saved per run, and only where the CPUs are oversubscribed).
    pub(crate) fn holding<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if self.held == Some(self.worker) {
            return f(self);
        }
        let out = self.hold_worker(|s| {
            s.held = Some(s.worker);
            let out = f(s);
            s.held = None;
            out
        });
        for sig in std::mem::take(&mut self.held_signals) {
            let _ = crate::ptrace::raw::tgkill_raw(self.pid, self.worker.as_raw(), sig);
        }
        out
    }

    /// Runs `call` in the worker (one hold) and returns its raw result.
    pub(crate) fn call(&mut self, call: &RemoteCall) -> Result<i64> {
        self.call_at(self.syscall_insn, call)
    }

    /// `call`, from the system call instruction at `insn`.
    fn call_at(&mut self, insn: u64, call: &RemoteCall) -> Result<i64> {
        let call = *call;
        let mut pending = Vec::new();
        let out = self.hold_worker(|s| {
            if s.worker_filtered {
                s.filters_allow(&[call])?;
            }
            s.run_in_worker(insn, &call, &mut pending)
        });
        if self.held.is_some() {
            // Sent when the hold ends: sent now, it would only stop the next call.
            self.held_signals.extend(pending);
        } else {
            for sig in pending {
                let _ = crate::ptrace::raw::tgkill_raw(self.pid, self.worker.as_raw(), sig);
            }
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
        self.run_at(self.syscall_insn, call)
    }

    /// `run`, from the system call instruction at `insn`.
    fn run_at(&mut self, insn: u64, call: &RemoteCall) -> Result<u64> {
        let ret = self.call_at(insn, call)?;
        call.check(self.pid, self.worker.as_raw(), ret)
    }

    /// The worker's system call, as `remote_syscall.rs` runs it in a held thread (registers
    /// saved, PTRACE_SYSCALL to the entry and exit stops, registers back at the exit stop,
    /// then one more interrupt stop on the way out), with everyone else's reports handled
    /// while we wait.
    pub(super) fn run_in_worker(
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
            match self.next_of_in_flight(w, step)? {
                Ev::Syscall => {
                    entered = Some(guard);
                    break;
                }
                Ev::Signal(sig) => {
                    if let Some(why) = crate::ptrace::remote_syscall::our_fault(w, sig, insn) {
                        return Err(lost(why));
                    }
                    // Taken before the instruction ran: the thread gets its own registers
                    // back and the signal as it came (its siginfo kept), then is stopped again.
                    guard.restore()?;
                    let (at, ns) = (Instant::now(), monotonic_ns());
                    self.on_signal(w, sig, at, ns)?;
                    self.stop_worker(step)?;
                    if self.worker != w {
                        // It exited on its way to the stop: the call goes to the new worker.
                        return self.run_in_worker(insn, call, pending);
                    }
                }
                // A stop we asked for earlier (a look at every thread): nothing ran yet.
                Ev::Interrupt => guard.restore()?,
                // Job control stopped it before the call (a ptrace stop too): nothing ran yet;
                // its registers back, the call made from this stop.
                Ev::GroupStop(sig) => {
                    guard.restore()?;
                    self.job_control_stopped(sig);
                }
                ev @ (Ev::Exited(_) | Ev::Exec) => return Err(self.worker_gone(guard, ev, step)),
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
        // A thread the call makes inherits the worker's signal mask: all blocked, so that no
        // signal of the program's is routed to it. Blocked here, at the entry stop, and put
        // back at the exit stop: only between those two stops of ours, where nothing else can
        // let the worker run (blocked before the entry, a job-control stop on the way there let
        // it run on with everything blocked — found under a pause nemesis).
        let mask = match call {
            RemoteCall::CloneThread => Some(MaskGuard::block_all(pid, w)?),
            _ => None,
        };
        resume(ptrace::syscall)?;
        loop {
            match self.next_of_in_flight(w, step)? {
                Ev::Syscall => break,
                Ev::Child if matches!(call, RemoteCall::CloneThread) => {
                    // The thread it made, traced by the kernel for us. From here it may run in
                    // the code page whatever becomes of the call: an undo must keep the pages
                    // (unmapped under it, it died of SIGSEGV with every signal blocked, killing
                    // the process — found under a pause nemesis).
                    if let Some(tid) = self.take_in_child_of(w) {
                        self.helper = Some(tid);
                        // It needs a CPU twice, to enter its system call and to finish it
                        // after the grace period; the program's busy threads and timeskew's
                        // own (at the helper's session weight) would keep it waiting for
                        // milliseconds each time. It runs a dozen instructions. Set here,
                        // before its first stop can be answered (while the worker's call is
                        // waited for, every other report is).
                        if let Err(e) = procfs::set_realtime(tid) {
                            log::debug!(
                                "pid {pid}: the registration helper {tid} keeps its priority: {e}"
                            );
                        }
                    }
                    // Test builds: job control or a signal arriving here (in the call, with a
                    // thread already made). Failing here is not offered: the call runs on.
                    let _ = crate::fault::point(pid, "helper-cloned");
                    resume(ptrace::syscall)?;
                }
                ev @ (Ev::Exited(_) | Ev::Exec) => return Err(self.worker_gone(guard, ev, step)),
                other => return Err(lost(format!("it stopped with {other:?} in the call"))),
            }
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
        // Here, in the exit stop: once it is let go towards the stop below, a wait for it can
        // end early (job control stopping another thread) with the thread running its own code.
        if let Some(mask) = mask {
            mask.put_back()?;
        }
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
            // Job control's stop instead: back in the signal path with its own registers too.
            Ev::GroupStop(sig) => {
                self.job_control_stopped(sig);
                Ok(ret)
            }
            Ev::Exited(_) => Err(Error::ProcessGone { pid, step }),
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
    pub(super) fn worker_gone(&mut self, guard: RegsGuard, ev: Ev, step: &'static str) -> Error {
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
        // Normally registered before the first breakpoint (`register_barriers`); an undo
        // needs its barriers anyway.
        self.register_barriers(None)?;
        let sync = RemoteCall::Membarrier {
            cmd: MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE,
        };
        let ret = self.call(&sync)?;
        sync.check(self.pid, self.worker.as_raw(), ret)?;
        self.stats.barriers += 1;
        Ok(())
    }
}
