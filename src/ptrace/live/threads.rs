//! The threads: every one traced without a stop, looked at one at a time where code is
//! about to change, and let go at the end (forked copies repaired).

use super::look::{CREATING, Seen, context_on_stack, inside_planned, look_parts, seen, span};
use super::*;

/// Every tracee's options: exec reported as an event, and every thread or process created
/// meanwhile traced from its first instruction (it could meet a breakpoint).
pub(super) fn seize_options() -> Options {
    Options::PTRACE_O_TRACESYSGOOD
        | Options::PTRACE_O_TRACEEXEC
        | Options::PTRACE_O_TRACECLONE
        | Options::PTRACE_O_TRACEFORK
        | Options::PTRACE_O_TRACEVFORK
}

/// Rounds of looking again at threads whose signal handler runs on top of a window.
pub(super) const CHECK_ATTEMPTS: u32 = 40;
/// How often a look at many threads stops to answer breakpoint traps: a thread that met one
/// waits about this long (a look at one thread is a few µs). More often, and a thread that
/// keeps calling the clock — a trap at every call while the window lasts — has the look spend
/// its time on round trips instead of ending the window.
pub(super) const ANSWER_EVERY: Duration = Duration::from_micros(50);
/// Whether `tid` was seen outside by `creations_settled` (it is in `quiet`) and has not been
/// switched in since.
fn unmoved_since(quiet: &HashMap<i32, ([u64; 3], procfs::SchedCounters)>, tid: i32) -> bool {
    quiet
        .get(&tid)
        .is_some_and(|(before, kept)| kept.read().as_ref() == Some(before))
}

impl LiveSession {
    /// PTRACE_SEIZE of every thread, re-reading `/proc/PID/task` until no new one appears
    /// (threads created after their creator was seized are traced by the kernel).
    pub(super) fn seize_all(&mut self) -> Result<Option<Fallback>> {
        self.seize(None)
    }

    /// [`seize_all`](Self::seize_all), or only thread `only` (once, not listed again).
    fn seize(&mut self, only: Option<i32>) -> Result<Option<Fallback>> {
        // An execve in the target while we attach waits, holding the lock PTRACE_SEIZE needs,
        // for threads it killed — ours to reap (see `seize.rs`): a second thread reaps them.
        // Not while nothing is traced yet: no thread can be ours to reap.
        let watch = SeizeWatch::default();
        if self.tracees.is_empty() && only.is_some() {
            return self.seize_each(&watch, only);
        }
        // Not joined: told to end, it ends on its own. A join waits for it to get a CPU (3.5 ms
        // on busy CPUs; a first injection attaches two or three times). A reaper kept for the
        // whole session instead made a 6-thread recover's longest stop ten times longer (in
        // the in-process benchmark; cause not found).
        let pid = self.pid;
        let watch = std::sync::Arc::new(watch);
        let theirs = watch.clone();
        let reaper = std::thread::Builder::new()
            .name("timeskew-reaper".into())
            .spawn(move || reap_exited(pid, &theirs))
            .map_err(|e| procfs::io_error(pid, "start a thread of timeskew's", e))?;
        let out = self.seize_each(&watch, only);
        watch.done.store(true, std::sync::atomic::Ordering::Release);
        reaper.thread().unpark();
        out
    }

    /// For an injection: only the main thread is seized at first if it is blocked in a system
    /// call (the worker then: see `pick_worker`), so that the pages are mapped and the
    /// membarrier registration's grace period is under way while every other thread is seized
    /// and looked at (`seize_rest`). `Ok(false)`: not so; every thread is seized as usual.
    pub(super) fn seize_main_first(&mut self) -> Result<std::result::Result<bool, Fallback>> {
        let pid = self.pid;
        if !self.blocked_in_syscall(pid) {
            return Ok(Ok(false));
        }
        if let Some(why) = self.seize(Some(pid))? {
            return Ok(Err(why));
        }
        self.partial = self.tracees.contains_key(&pid);
        Ok(Ok(self.partial))
    }

    /// Seizes every thread not yet seized (`seize_main_first`), answering the registration
    /// helper's first stop on the way (it starts its grace period then).
    pub(super) fn seize_rest(&mut self) -> Result<Option<Fallback>> {
        if !std::mem::take(&mut self.partial) {
            return Ok(None);
        }
        let started = Instant::now();
        let out = self.seize_all()?;
        self.answer_helper()?;
        log::debug!(
            "pid {}: the other {} threads seized in {} µs",
            self.pid,
            self.tracees.len().saturating_sub(1),
            started.elapsed().as_micros()
        );
        Ok(out)
    }

    /// The registration helper's first stop (a new thread's), answered as soon as it is
    /// there, so that its grace period starts.
    pub(super) fn answer_helper(&mut self) -> Result<()> {
        let Some(h) = self.helper_unanswered else {
            return Ok(());
        };
        if let Some(ev) = self.wait_one(h)? {
            self.helper_unanswered = None;
            self.handle(h, ev)?;
        }
        Ok(())
    }

    fn seize_each(&mut self, watch: &SeizeWatch, only: Option<i32>) -> Result<Option<Fallback>> {
        let pid = self.pid;
        // Counted as taken in here: a report answered meanwhile (the registration helper's)
        // may take a thread in (counted when adopted) or out (the helper exiting).
        let mut taken = 0;
        // Threads passed over (exited, or a zombie leader that stays listed until the process
        // is reaped) are not looked at again: the listing would never come out empty.
        let mut passed = std::collections::HashSet::new();
        let deadline = Instant::now() + STOP_DEADLINE * 4;
        loop {
            let listed = match only {
                Some(tid) if passed.is_empty() && !self.tracees.contains_key(&tid) => vec![tid],
                Some(_) => Vec::new(),
                None => procfs::threads(pid)?,
            };
            // A thread of ours let go or exited (the registration helper) is not taken again.
            let fresh: Vec<i32> = listed
                .into_iter()
                .filter(|t| {
                    !self.tracees.contains_key(t) && !passed.contains(t) && !self.let_go.contains(t)
                })
                .collect();
            if fresh.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(stuck(pid, fresh[0], "attach to every thread"));
            }
            for (n, tid) in fresh.into_iter().enumerate() {
                if n % 32 == 0 {
                    self.answer_helper()?;
                }
                watch.set_seizing(Some(Instant::now()));
                let seized = ptrace::seize(Pid::from_raw(tid), seize_options());
                watch.set_seizing(None);
                match seized {
                    Ok(()) => {
                        if let Ok(mut list) = watch.seized.lock() {
                            list.push(Pid::from_raw(tid));
                        }
                        taken += 1;
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
                        taken += 1;
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
                    Err(Errno::EPERM) if !procfs::thread_alive(pid, tid) => {
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
        // Those seized now; the ones the kernel traced for us were counted when adopted (and a
        // registration helper is uncounted when it exits).
        self.stats.threads += taken;
        Ok(None)
    }

    /// Step 2: makes sure no thread is inside code about to change (`inside`) — executing it
    /// or interrupted there by a signal handler still running — once the breakpoints guard
    /// the way in. A thread blocked in the kernel is read from `/proc` without a stop; a
    /// running one is stopped once, looked at, and moved to the same instruction of the
    /// relocated copy if it is inside. A handler on top of a window is waited out (bounded).
    pub(crate) fn check_threads(&mut self) -> Result<()> {
        let mut round = 0;
        let started = Instant::now();
        loop {
            let busy = self.look_at_all()?;
            if busy.is_empty() {
                log::debug!(
                    "pid {}: every thread outside the windows ({} unmoved since the look \
                     before), in {} µs, {} traps so far",
                    self.pid,
                    self.stats.unmoved,
                    started.elapsed().as_micros(),
                    self.stats.traps
                );
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

    /// One look at every thread (`check_threads`): why each one still inside is, if any is.
    fn look_at_all(&mut self) -> Result<Vec<String>> {
        self.maps = procfs::maps_of(self.pid, self.worker.as_raw())?;
        let pid = self.pid;
        let tids: Vec<(i32, i32)> = self.tracees.iter().map(|(t, x)| (*t, x.tgid)).collect();
        // The threads seen outside by the first look have their counters read again — most of
        // a look at many threads — by threads of ours (as `first_looks`; a few by this one),
        // while this one answers the breakpoint traps and looks at the other threads: a thread
        // that keeps calling the clock meets a breakpoint at every call while the window
        // lasts, and each round trip through this thread held up the reads it made itself
        // (1,000 threads, 2 busy: window 6.9 → 6.0 ms median, 10 rounds).
        let quiet = std::mem::take(&mut self.quiet);
        let candidates: Vec<i32> = tids
            .iter()
            .filter(|(t, g)| *g == pid && quiet.contains_key(t))
            .map(|(t, _)| *t)
            .collect();
        let looked = std::thread::scope(|scope| -> Result<(Vec<String>, usize)> {
            let quiet = &quiet;
            let parts = look_parts(candidates.len());
            let mut chunks = candidates.chunks(candidates.len().div_ceil(parts).max(1));
            // A few: read here (a thread of ours costs more than reading them, and must get a
            // CPU to be joined).
            if parts == 1 {
                chunks.next();
            }
            let given: std::collections::HashSet<i32> = chunks.clone().flatten().copied().collect();
            let helpers: Vec<_> = chunks
                .map(|part| {
                    scope.spawn(move || {
                        let unmoved = part.iter().filter(|&&t| unmoved_since(quiet, t));
                        unmoved.copied().collect::<Vec<i32>>()
                    })
                })
                .collect();
            let mut busy = Vec::new();
            let mut unmoved = 0;
            let mut answered = Instant::now();
            // A thread at a breakpoint waits for us: answer between looks — a few, so that the
            // look goes on however often threads meet a breakpoint.
            let mut answer = |s: &mut Self| -> Result<()> {
                if answered.elapsed() >= ANSWER_EVERY {
                    s.drain_some(4)?;
                    answered = Instant::now();
                }
                Ok(())
            };
            for (tid, tgid) in &tids {
                answer(self)?;
                if *tgid != pid {
                    continue; // another memory (a forked child) is repaired when let go
                }
                if given.contains(tid) {
                    continue; // read by a thread of ours
                }
                if unmoved_since(quiet, *tid) {
                    unmoved += 1;
                    continue; // has not run since it was seen outside
                }
                self.look_at_one(*tid, &mut busy)?;
            }
            let mut still = given;
            for h in helpers {
                while !h.is_finished() {
                    answer(self)?;
                    std::thread::sleep(ANSWER_EVERY / 4);
                }
                let part = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
                unmoved += part.len();
                for tid in part {
                    still.remove(&tid);
                }
            }
            for tid in still {
                answer(self)?;
                self.look_at_one(tid, &mut busy)?;
            }
            Ok((busy, unmoved))
        });
        self.quiet = quiet;
        let (mut busy, unmoved) = looked?;
        self.stats.unmoved = unmoved;
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
        Ok(busy)
    }

    /// Whether `tid` was seen outside by `creations_settled` and has not been switched in
    /// since.
    fn unmoved_since_first_look(&self, tid: i32) -> bool {
        unmoved_since(&self.quiet, tid)
    }

    /// `look_at_all` of one thread not passed over on its counters.
    fn look_at_one(&mut self, tid: i32, busy: &mut Vec<String>) -> Result<()> {
        match seen(self.pid, tid) {
            Seen::Gone => {
                self.tracees.remove(&tid);
            }
            Seen::Blocked { sp, pc, .. } if !self.inside(pc) => {
                if let Some(why) = self.saved_context_inside(tid, sp)? {
                    busy.push(why);
                }
            }
            _ => self.ask_stop(tid, Want::Check)?,
        }
        Ok(())
    }

    pub(super) fn ask_stop(&mut self, tid: i32, want: Want) -> Result<()> {
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

    /// `[lo, hi)` holding every address `inside` is true for (empty if none).
    fn inside_bounds(&self) -> (u64, u64) {
        if let Some(r) = &self.region {
            return (r.start, r.end);
        }
        if self.swaps.is_empty() {
            return span(self.planned.iter().map(|&(a, l)| (a, l as u64)));
        }
        let windows = self
            .swaps
            .iter()
            .filter_map(|s| Some((s.addr, s.window.as_ref()?.0.len() as u64)));
        span(windows)
    }

    pub(super) fn inside(&self, ip: u64) -> bool {
        if let Some(r) = &self.region {
            return r.contains(&ip);
        }
        if self.swaps.is_empty() {
            // Before the swaps exist: the windows the plan will write.
            return inside_planned(&self.planned, ip);
        }
        self.swaps.iter().any(|s| {
            s.window
                .as_ref()
                .is_some_and(|(w, _, _)| ip > s.addr && ip < s.addr + w.len() as u64)
        })
    }

    /// A stopped thread: moved out of a window if inside one; `false` if it must be looked at
    /// again (a saved context inside a window, or no exact place to move it to).
    pub(super) fn check_stopped(&mut self, t: Pid) -> Result<bool> {
        let Ok(mut regs) = Native::get_regs(t) else {
            return Ok(true); // gone
        };
        let ip = regs.instruction_pointer();
        if self.region.as_ref().is_some_and(|r| r.contains(&ip)) {
            return Ok(false); // inside code about to go: nowhere to move it
        }
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
    pub(super) fn saved_context_inside(&self, tid: i32, sp: u64) -> Result<Option<String>> {
        // A stack that cannot be read: the thread exited meanwhile.
        Ok(self.stack_context_inside(tid, sp).flatten())
    }

    /// As [`saved_context_inside`](Self::saved_context_inside); `None` when the stack cannot be
    /// read (the first look then does not pass the thread over).
    fn stack_context_inside(&self, tid: i32, sp: u64) -> Option<Option<String>> {
        context_on_stack(
            &self.mem,
            &self.maps,
            self.inside_bounds(),
            |ip| self.inside(ip),
            tid,
            sp,
        )
    }

    /// Stops once, and lets go, every thread of the target blocked in a system call that was
    /// not stopped yet: a wait that ends early for a stop (`epoll_wait`, `poll`, …: EINTR)
    /// lets the program look at its clock again. Used when a recover moves a monotonic clock
    /// forward: a runtime sleeping until a deadline computed on the skewed clock (Go's
    /// netpoller, sysmon) would otherwise sleep for as long as the skew was.
    pub(crate) fn wake_blocked(&mut self) -> Result<()> {
        let tids: Vec<i32> = self
            .tracees
            .iter()
            .filter(|(tid, t)| t.tgid == self.pid && !self.ever_stopped.contains(tid))
            .map(|(tid, _)| *tid)
            .collect();
        for tid in tids {
            if matches!(
                seen(self.pid, tid),
                Seen::Blocked {
                    in_syscall: true,
                    ..
                }
            ) {
                self.ask_stop(tid, Want::Look)?;
                self.stats.woken += 1;
            }
        }
        self.settle("wake a thread blocked in the kernel")
    }

    /// After an undo: is any thread inside `[start, end)` (executing it, or with a return
    /// address or saved context pointing into it)? Running threads are stopped once to see.
    pub(crate) fn anyone_in(&mut self, start: u64, end: u64) -> Result<bool> {
        self.maps = procfs::maps_of(self.pid, self.worker.as_raw())?;
        self.region = Some(start..end);
        let mut found = false;
        let tids: Vec<i32> = self
            .tracees
            .iter()
            .filter(|(_, t)| t.tgid == self.pid)
            .map(|(t, _)| *t)
            .collect();
        let mut out = Ok(());
        for tid in tids {
            match seen(self.pid, tid) {
                Seen::Blocked { sp, pc, .. } => match self.saved_context_inside(tid, sp) {
                    Ok(inside) => found |= self.inside(pc) || inside.is_some(),
                    Err(e) => {
                        out = Err(e);
                        break;
                    }
                },
                Seen::Gone => {}
                Seen::Running => {
                    if let Err(e) = self.ask_stop(tid, Want::Check) {
                        out = Err(e);
                        break;
                    }
                }
            }
        }
        // A stopped thread inside is not moved (no window to move from): it counts as found.
        let settled = self.settle("look at a thread");
        found |= self.tracees.values().any(|t| t.busy);
        for t in self.tracees.values_mut() {
            t.busy = false;
        }
        self.region = None;
        out.and(settled).map(|()| found)
    }

    /// Lets every thread go once no breakpoint is left: threads that might still have a trap
    /// on its way (running, or blocked just past a breakpoint) and every other process traced
    /// meanwhile (a forked child, whose copy of the memory may hold a breakpoint) are stopped
    /// and detached here, their trap consumed; the others, blocked in the kernel, are detached
    /// by the kernel when the tracer thread ends — without a stop.
    pub(crate) fn release(&mut self) -> Result<()> {
        self.releasing = true;
        let tids: Vec<(i32, i32)> = self.tracees.iter().map(|(t, x)| (*t, x.tgid)).collect();
        for (n, (tid, tgid)) in tids.into_iter().enumerate() {
            if n % 8 == 7 {
                // Answers traps meanwhile (a poll: `settle` below waits for every stop asked).
                self.drain_some(usize::MAX)?;
            }
            // Not run since it was first seen: it cannot have met a breakpoint (the kernel
            // lets it go without a stop, like any thread blocked in the kernel).
            if tgid == self.pid && self.unmoved_since_first_look(tid) {
                continue;
            }
            let must_stop = match seen(tgid, tid) {
                Seen::Gone => {
                    self.tracees.remove(&tid);
                    continue;
                }
                Seen::Running => true,
                // Creating a process: its copy of the memory may have been made while a
                // breakpoint was in place; the stop comes after the fork event that names
                // the child, which is then let go here too (`adopt`).
                Seen::Blocked { nr, .. } if CREATING.contains(&nr) => true,
                Seen::Blocked { pc, .. } => {
                    let at = Native::breakpoint_at(pc);
                    self.swaps.iter().any(|s| s.addr == at)
                }
            } || self.copy_has_breakpoint(tgid, tid);
            if must_stop {
                self.ask_stop(tid, Want::Release)?;
            }
        }
        let mut out = self.settle("let a thread go");
        // A forked copy with a breakpoint must be repaired and let go by hand: the kernel would
        // let it go as it is when this thread ends. One forked during `release` is asked for
        // by `adopt`; this is a net under that.
        for _ in 0..4 {
            let left: Vec<i32> = self
                .tracees
                .iter()
                .filter(|(tid, x)| self.copy_has_breakpoint(x.tgid, **tid))
                .map(|(tid, _)| *tid)
                .collect();
            if left.is_empty() || out.is_err() {
                break;
            }
            log::debug!("pid {}: processes {left:?} still traced; let go", self.pid);
            for tid in left {
                if let Err(e) = self.ask_stop(tid, Want::Release) {
                    out = Err(e);
                }
            }
            out = out.and(self.settle("let a forked process go"));
        }
        self.stats.wall_us = self.started.elapsed().as_micros() as u64;
        out
    }

    pub(super) fn release_stopped(&mut self, t: Pid, at: Instant, at_ns: u64) {
        let tid = t.as_raw();
        if self.trap_queued(t) {
            // Its breakpoint trap comes next: answered there, and the thread let go then.
            if let Some(x) = self.tracees.get_mut(&tid) {
                x.want = Want::ReleaseAfterTrap;
            }
            self.resume(t, 0);
        } else {
            self.let_go(t, 0);
        }
        self.log_stop(tid, at, at_ns, "release");
    }

    /// Detaches stopped `t` for good, delivering `sig` (0: none), its memory repaired first if
    /// it is a forked copy.
    pub(super) fn let_go(&mut self, t: Pid, sig: i32) {
        self.repair_copy(t);
        self.resumed = Instant::now();
        let _ = crate::ptrace::raw::ptrace_detach(t, sig);
        self.tracees.remove(&t.as_raw());
        self.let_go.insert(t.as_raw());
    }

    /// Whether `t` stands just past one of our breakpoints with its trap still queued.
    pub(super) fn trap_pending(&self, t: Pid) -> bool {
        let Ok(regs) = Native::get_regs(t) else {
            return false;
        };
        let at = Native::breakpoint_at(regs.instruction_pointer());
        self.swaps.iter().any(|s| s.addr == at) && self.trap_queued(t)
    }

    /// Whether a kernel SIGTRAP waits in `t`'s own queue (a breakpoint it met).
    pub(super) fn trap_queued(&self, t: Pid) -> bool {
        let mut info = [0u8; 128];
        let args = PeekSiginfoArgs {
            off: 0,
            flags: 0,
            nr: 1,
        };
        for off in 0..32u64 {
            let args = PeekSiginfoArgs { off, ..args };
            match crate::ptrace::raw::peek_siginfo(t, &args, &mut info) {
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

    /// Whether `tid`, of process `tgid`, runs in a copy of the target's memory (forked while
    /// we trace it) with one of our breakpoints in it. A vfork child shares the target's
    /// memory: what it holds is the target's. A copy that cannot be read is gone.
    pub(super) fn copy_has_breakpoint(&self, tgid: i32, tid: i32) -> bool {
        if tgid == self.pid {
            return false;
        }
        let mem = RemoteMemory::through(tgid, tid);
        self.swaps.iter().any(|s| {
            mem.read(s.addr, 1, "read a forked copy")
                .is_ok_and(|b| b[0] == Native::BREAKPOINT)
        })
    }

    /// A process that is not the target (forked meanwhile) has its own copy of the memory:
    /// each breakpoint in it is resolved to whichever side its tail is on. It is stopped and
    /// single-threaded (only the forking thread is copied), so the writes are safe.
    pub(super) fn repair_copy(&self, t: Pid) {
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
            // Whole entries: a tail written across a page boundary is two writes, and the
            // copy may have been made between them.
            let whole = if now[1..] == s.after[1..] {
                &s.after
            } else {
                &s.before
            };
            if let Err(e) = mem.write_code(s.addr, whole, t, "repair a forked copy") {
                log::warn!("pid {tgid}: a breakpoint in this forked copy stays: {e}");
            }
        }
    }
}
