//! Reports of the traced threads: waiting for them and answering each — breakpoint traps
//! redirected, signals passed on, new threads and processes taken in, exec and exit ending
//! the change.

use super::*;

/// The longest nap between looks for reports: SIGCHLD may be taken by another thread of the
/// caller's process, so this bounds how long a thread at a breakpoint waits for us.
pub(super) const MAX_NAP: Duration = Duration::from_micros(40);
/// Other tracees' reports handled between two looks for the ones waited for.
const OTHERS_PER_LOOK: usize = 8;
/// How a tracee reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ev {
    /// Exited with this status (`exit`'s argument; -1: killed by a signal).
    Exited(i32),
    Syscall,
    Signal(i32),
    /// PTRACE_EVENT_STOP: our interrupt, or a new tracee's first stop.
    Interrupt,
    GroupStop(i32),
    Exec,
    /// A fork, vfork or clone event of the parent: the child reports on its own.
    Child,
}

pub(super) fn classify(status: libc::c_int) -> Option<Ev> {
    if libc::WIFEXITED(status) {
        return Some(Ev::Exited(libc::WEXITSTATUS(status)));
    }
    if libc::WIFSIGNALED(status) {
        return Some(Ev::Exited(-1));
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

impl LiveSession {
    /// One look for a report of any tracee: `(tid, event)`. Unless `always`, skipped while no
    /// SIGCHLD says there may be one (`ChildEvents::may_have_reports`): with 1,000 tracees
    /// each look walks all of them in the kernel. Polling loops skip; a drain that must leave
    /// nothing behind (before the tracer ends, after a failed write) does not.
    pub(super) fn wait_any(&mut self, always: bool) -> Result<Option<(i32, Ev)>> {
        if !self.events.may_have_reports() && !always {
            return Ok(None);
        }
        let found = self.wait_for(-1)?;
        self.events.looked(found.is_some());
        Ok(found)
    }

    /// One look for a report of `tid` alone.
    pub(super) fn wait_one(&self, tid: i32) -> Result<Option<Ev>> {
        Ok(self.wait_for(tid)?.map(|(_, ev)| ev))
    }

    /// One look for a report of `who` (a tracee, or -1: any).
    fn wait_for(&self, who: i32) -> Result<Option<(i32, Ev)>> {
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: waitpid writes the status into the integer we pass. __WNOTHREAD: only this
            // thread's tracees, never the caller's own children.
            let rc = unsafe {
                libc::waitpid(
                    who,
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
                        tid: who,
                        step: "wait for a thread's report",
                        source: e,
                    });
                }
            }
        }
    }

    pub(super) fn nap(&mut self, round: &mut u32) {
        *round += 1;
        if *round < 4 {
            std::thread::yield_now();
        } else {
            self.events.pause_at_most(MAX_NAP);
        }
    }

    /// Handles every report waiting; returns `awaited`'s report if it came.
    pub(super) fn drain(&mut self, awaited: Option<i32>) -> Result<Option<Ev>> {
        Ok(self.drain_upto(awaited, usize::MAX, true)?.0)
    }

    /// Handles at most `limit` waiting reports. Between steps of a long look: a thread that
    /// keeps calling the clock meets a breakpoint again as soon as it is answered, so handling
    /// every report until none is left could answer traps for as long as the window lasts and
    /// never get on with the look that ends it.
    pub(super) fn drain_some(&mut self, limit: usize) -> Result<()> {
        self.drain_upto(None, limit, false).map(|_| ())
    }

    /// Handles up to `limit` waiting reports: `awaited`'s report if it came (not handled), and
    /// how many others were. `always`: as [`wait_any`](Self::wait_any).
    fn drain_upto(
        &mut self,
        awaited: Option<i32>,
        limit: usize,
        always: bool,
    ) -> Result<(Option<Ev>, usize)> {
        let mut handled = 0;
        while handled < limit {
            let Some((tid, ev)) = self.wait_any(always)? else {
                break;
            };
            if Some(tid) == awaited {
                return Ok((Some(ev), handled));
            }
            self.handle(tid, ev)?;
            handled += 1;
        }
        Ok((None, handled))
    }

    /// Waits for `tid`'s next report, handling everyone else's meanwhile. `tid` is asked by
    /// name first, the others a few at a time: the kernel looks at tracees in a fixed order
    /// when asked for anyone's report, and threads that meet a breakpoint at every clock call
    /// always have one waiting — answering all of them first kept a worker's report waiting
    /// for up to 1.2 s (crowd target, 6 threads reading the clock every 100 µs).
    pub(super) fn next_of(&mut self, tid: Pid, step: &'static str) -> Result<Ev> {
        self.next_report_of(tid, step, false)
    }

    /// The worker's next report while it runs a call of ours — between the registers set for
    /// the call and its exit stop, where they are written back. Other tracees' reports are
    /// answered meanwhile, but nothing they bring (job control stopping the process, a thread's
    /// exit, an error answering one) ends the wait: it is kept in `abandoned` for the caller to
    /// act on once the worker has its own registers again. Leaving earlier would let the
    /// worker return from the call with ours — a crash of the target (found with SIGSTOP and
    /// SIGCONT sent every few ms during injections).
    pub(super) fn next_of_in_flight(&mut self, tid: Pid, step: &'static str) -> Result<Ev> {
        self.next_report_of(tid, step, true)
    }

    fn next_report_of(&mut self, tid: Pid, step: &'static str, in_flight: bool) -> Result<Ev> {
        let deadline = Instant::now()
            + if in_flight {
                IN_FLIGHT_DEADLINE
            } else {
                STOP_DEADLINE
            };
        let mut round = 0;
        loop {
            if let Some(ev) = self.wait_one(tid.as_raw())? {
                return Ok(ev);
            }
            let handled = match self.drain_upto(Some(tid.as_raw()), OTHERS_PER_LOOK, false) {
                Ok((Some(ev), _)) => return Ok(ev),
                Ok((None, handled)) => handled,
                Err(e) if in_flight => {
                    self.abandoned.get_or_insert(e);
                    0
                }
                Err(e) => return Err(e),
            };
            if !in_flight && let Some(e) = self.abandoned.take() {
                return Err(e);
            }
            if Instant::now() >= deadline {
                return Err(stuck(self.pid, tid.as_raw(), step));
            }
            if handled == 0 {
                self.nap(&mut round);
            }
        }
    }

    /// The tracees whose stop we asked for and have not had yet.
    fn waiting(&self) -> Vec<i32> {
        self.tracees
            .iter()
            .filter(|(_, t)| t.want != Want::Nothing)
            .map(|(tid, _)| *tid)
            .collect()
    }

    /// Handles everything that reports until no tracee has `want` set; a thread that stops
    /// neither in time nor at all (it exited) is dropped or named. The threads waited for are
    /// asked by name first, as in [`next_of`](Self::next_of).
    pub(super) fn settle(&mut self, step: &'static str) -> Result<()> {
        let deadline = Instant::now() + STOP_DEADLINE;
        let mut round = 0;
        let mut nudge = Instant::now() + Duration::from_millis(20);
        loop {
            let mut handled = 0;
            for tid in self.waiting() {
                if let Some(ev) = self.wait_one(tid)? {
                    self.handle(tid, ev)?;
                    handled += 1;
                }
            }
            handled += self.drain_upto(None, OTHERS_PER_LOOK, false)?.1;
            if let Some(e) = self.abandoned.take() {
                return Err(e);
            }
            let waiting = self.waiting();
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
                    if !procfs::thread_alive(tgid, tid) {
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
            if handled == 0 {
                self.nap(&mut round);
            }
        }
    }

    /// Lets stopped `t` run on, delivering `sig` (0: none); its stop ends here.
    pub(super) fn resume(&mut self, t: Pid, sig: i32) {
        self.resumed = Instant::now();
        let _ = crate::ptrace::raw::ptrace_cont(t, sig);
    }

    /// Notes the stop of `tid`, seen at `seen` and ended by the `resume` or `let_go` just
    /// made. Timed to that call, not to its return: the thread woken may take this one's CPU
    /// at once, and the time this one then waits is not a stop of that thread.
    pub(super) fn log_stop(&mut self, tid: i32, seen: Instant, seen_ns: u64, why: &'static str) {
        let held = self.resumed.saturating_duration_since(seen);
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
    pub(super) fn handle(&mut self, tid: i32, ev: Ev) -> Result<()> {
        let pid = self.pid;
        let t = Pid::from_raw(tid);
        let (at, at_ns) = (Instant::now(), monotonic_ns());
        match ev {
            Ev::Exited(code) => {
                // Our registration helper ends on its own: never a sign of the process going.
                let helper = self.helper == Some(tid);
                if helper {
                    self.helper_exit = Some(code);
                }
                // Its fork event may still come: not to be taken in again then.
                self.let_go.insert(tid);
                let tgid = self.tracees.remove(&tid).map_or(pid, |t| t.tgid);
                // A thread of the target exits alone (pthread_exit) — or the whole process is
                // going: then stop at once, nothing is left to change or undo. A leader seen
                // exited says so only if it was alive when the change began: a process whose
                // main thread exited long ago (leaderless) shows it so all along.
                if tgid == pid
                    && !helper
                    && (tid == pid
                        || !procfs::exists(pid)
                        || procfs::is_zombie(pid)
                        || (!self.leaderless
                            && procfs::task_info(pid, None).is_ok_and(|i| i.state == 'Z'))
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
                let _ = crate::ptrace::raw::ptrace_detach(t, 0);
                self.let_go.insert(tid);
                if tgid == pid {
                    self.execed = true;
                    self.abandoned = Some(Error::Execed { pid });
                }
            }
            Ev::GroupStop(sig) => {
                // Job control stopped the process: a change in progress gives up (it is undone,
                // then said). An undo or a release goes on, or a thread would be left with a
                // breakpoint trap owed (it dies of it at SIGCONT) or a barrier missing: a thread
                // in a job-control stop is in a ptrace stop, so it serves as the stop asked of
                // it — a queued trap is still taken and answered before it is let go — and the
                // kernel puts it back into the job-control stop when it is detached. Not asked
                // for anything, it is left stopped.
                let wanted = self
                    .tracees
                    .get(&tid)
                    .is_some_and(|x| x.want != Want::Nothing);
                if wanted {
                    self.on_interrupt(t, at, at_ns)?;
                } else {
                    let _ = crate::ptrace::raw::ptrace_listen(t);
                }
                self.job_control_stopped(sig);
            }
            Ev::Child => {
                self.take_in_child_of(t);
                self.resume(t, 0);
            }
            Ev::Syscall => {
                self.resume(t, 0);
            }
            Ev::Signal(sig) => self.on_signal(t, sig, at, at_ns)?,
            Ev::Interrupt => self.on_interrupt(t, at, at_ns)?,
        }
        Ok(())
    }

    /// Job control stopped the process (`sig`): a change in progress ends with that said; an
    /// undo or a release goes on.
    pub(super) fn job_control_stopped(&mut self, sig: i32) {
        if self.abandoned.is_none() && !self.releasing && !self.undoing {
            self.abandoned = Some(Error::StoppedByJobControl {
                pid: self.pid,
                signal: Some(signal_name(sig)),
                meanwhile: true,
            });
        }
    }

    /// The process is being killed: a fatal signal is shared-pending (SIGKILL shows in ShdPnd
    /// until every thread has seen it), or its threads are leaving.
    pub(super) fn dying(&self) -> bool {
        code::killed(self.pid)
    }

    /// A signal-delivery stop: our breakpoint (redirected, the SIGTRAP dropped), or a signal
    /// passed on unchanged. Entering any ptrace stop cancels a pending PTRACE_INTERRUPT, so for
    /// a thread we asked to stop this *is* that stop: it is looked at or let go here.
    pub(super) fn on_signal(&mut self, t: Pid, sig: i32, at: Instant, at_ns: u64) -> Result<()> {
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
                self.resume(t, deliver);
            }
            Want::Release | Want::ReleaseAfterTrap => {
                if ours.is_none() && self.trap_queued(t) {
                    if let Some(x) = self.tracees.get_mut(&tid) {
                        x.want = Want::ReleaseAfterTrap;
                    }
                    self.resume(t, deliver);
                } else {
                    // Detaching from a signal stop delivers `deliver` (none: the trap dropped).
                    self.let_go(t, deliver);
                }
            }
            Want::Nothing | Want::Look => {
                if want == Want::Look
                    && let Some(x) = self.tracees.get_mut(&tid)
                {
                    x.want = Want::Nothing;
                    x.settled = true;
                }
                self.resume(t, deliver);
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
    pub(super) fn breakpoint_hit(&self, t: Pid) -> Option<u64> {
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

    /// A thread or process the kernel traced for us (created by one we trace): known from here
    /// on, with nothing asked of it — except, while everyone is let go, a process whose copy
    /// of the memory holds a breakpoint (forked before the last one was gone): it is let go
    /// too, repaired. The others need nothing: the kernel lets them go with the rest.
    fn adopt(&mut self, tid: i32, tgid: i32) -> Want {
        let want = if self.releasing && self.copy_has_breakpoint(tgid, tid) {
            Want::Release
        } else {
            Want::Nothing
        };
        self.tracees.insert(
            tid,
            Tracee {
                tgid,
                want,
                settled: true,
                busy: false,
            },
        );
        self.stats.threads += 1;
        want
    }

    /// The child named by `parent`'s fork, vfork or clone event, known from now on — before
    /// its own first stop reports, so that letting everyone go waits for it if its copy of the
    /// memory holds a breakpoint. One already known, let go or exited is left as it is.
    /// Traces the thread or process `parent` just made; returns its id.
    pub(super) fn take_in_child_of(&mut self, parent: Pid) -> Option<i32> {
        let new = ptrace::getevent(parent).ok()? as i32;
        if !self.tracees.contains_key(&new) && !self.let_go.contains(&new) {
            self.adopt(new, procfs::tgid_of(new).unwrap_or(new));
        }
        Some(new)
    }

    pub(super) fn on_interrupt(&mut self, t: Pid, at: Instant, at_ns: u64) -> Result<()> {
        let tid = t.as_raw();
        let Some(tracee) = self.tracees.get(&tid) else {
            // A new thread or process, at its first instruction: traced from here on.
            if self.adopt(tid, procfs::tgid_of(tid).unwrap_or(self.pid)) == Want::Release {
                self.let_go(t, 0);
            } else {
                self.resume(t, 0);
            }
            self.log_stop(tid, at, at_ns, "new");
            return Ok(());
        };
        match tracee.want {
            // Met a breakpoint and the trap is still queued (the interrupt stop comes first):
            // its signal stop comes next and is the one to look at; moving it now would make
            // the trap unrecognisable.
            Want::Check if self.trap_pending(t) => {
                self.resume(t, 0);
                self.log_stop(tid, at, at_ns, "check");
            }
            Want::Check => {
                let done = self.check_stopped(t)?;
                if let Some(x) = self.tracees.get_mut(&tid) {
                    x.want = Want::Nothing;
                    x.busy = !done;
                }
                self.resume(t, 0);
                self.log_stop(tid, at, at_ns, "check");
            }
            Want::Release => self.release_stopped(t, at, at_ns),
            Want::Look => {
                if let Some(x) = self.tracees.get_mut(&tid) {
                    x.want = Want::Nothing;
                    x.settled = true;
                }
                self.resume(t, 0);
                self.log_stop(tid, at, at_ns, "look");
            }
            Want::Nothing | Want::ReleaseAfterTrap => {
                self.resume(t, 0);
            }
        }
        Ok(())
    }
}
