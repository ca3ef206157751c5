//! Running code in a held thread: single steps, and a syscall executed on our behalf from a
//! `syscall` instruction that already exists in the target, with the full register set saved
//! and restored exactly.

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::unistd::Pid;

use super::hold::{Report, StoppedProcess, wait_stop};
use crate::arch::{Arch, Native, Registers};
use crate::error::{Error, Result};

type Regs = <Native as Arch>::Regs;

/// A step is retried this often when signals keep arriving before the instruction runs.
const MAX_STEP_ATTEMPTS: usize = 64;
/// Instructions a thread may need to leave a hook window (windows are a few instructions).
const MAX_STEPS_OUT: usize = 16;

/// Saved registers of one thread, written back on `restore` or, failing that, on drop.
struct RegsGuard {
    pid: i32,
    tid: Pid,
    saved: Option<Regs>,
}

impl RegsGuard {
    fn save(pid: i32, tid: Pid) -> Result<RegsGuard> {
        let saved = Native::get_regs(tid)
            .map_err(|e| Error::from_errno(pid, tid.as_raw(), "save registers", e))?;
        Ok(RegsGuard {
            pid,
            tid,
            saved: Some(saved),
        })
    }

    fn regs(&self) -> Regs {
        self.saved.expect("present until restored")
    }

    fn restore(mut self) -> Result<()> {
        let saved = self.saved.take().expect("present until restored");
        Native::set_regs(self.tid, &saved)
            .map_err(|e| Error::from_errno(self.pid, self.tid.as_raw(), "restore registers", e))
    }
}

impl Drop for RegsGuard {
    fn drop(&mut self) {
        if let Some(saved) = self.saved.take()
            && let Err(e) = Native::set_regs(self.tid, &saved)
        {
            log::warn!(
                "pid {}: restoring registers of thread {} failed: {e}",
                self.pid,
                self.tid
            );
        }
    }
}

impl StoppedProcess {
    /// Executes one instruction in `tid`. A signal that arrives instead is kept for
    /// re-delivery; the caller looks at the instruction pointer to see whether it ran.
    fn step_once(&mut self, tid: Pid, step: &'static str) -> Result<()> {
        let pid = self.pid();
        match ptrace::step(tid, None) {
            Ok(()) => {}
            Err(Errno::ESRCH) => {
                self.forget(tid);
                return Err(Error::ProcessGone { pid, step });
            }
            Err(e) => return Err(Error::from_errno(pid, tid.as_raw(), step, e)),
        }
        match wait_stop(pid, tid, step)? {
            Report::Trap { signal_stop } => self.thread_mut(tid).in_signal_stop = signal_stop,
            Report::Signal(sig) | Report::GroupStop(sig) => {
                let t = self.thread_mut(tid);
                t.pending.push(sig);
                t.in_signal_stop = true;
            }
            Report::Exited => {
                self.forget(tid);
                return Err(Error::ProcessGone { pid, step });
            }
        }
        Ok(())
    }

    fn ip(&self, tid: Pid, step: &'static str) -> Result<u64> {
        Native::get_regs(tid)
            .map(|r| r.instruction_pointer())
            .map_err(|e| Error::from_errno(self.pid(), tid.as_raw(), step, e))
    }

    /// Runs syscall `nr` in a held thread from the syscall instruction at `insn` and returns the
    /// raw result (negative errno on failure). The thread's registers are restored exactly.
    pub fn syscall(
        &mut self,
        insn: u64,
        nr: i64,
        args: [u64; 6],
        name: &'static str,
    ) -> Result<i64> {
        let pid = self.pid();
        let tid = self.worker().ok_or(Error::ProcessGone {
            pid,
            step: "run an injected syscall",
        })?;
        let guard = RegsGuard::save(pid, tid)?;
        let outcome = self.run_syscall(tid, &guard, insn, nr, &args, name);
        let restored = guard.restore();
        let ret = outcome?;
        restored?;
        log::debug!("pid {pid}: injected {name} in thread {tid} returned {ret:#x}");
        Ok(ret)
    }

    fn run_syscall(
        &mut self,
        tid: Pid,
        guard: &RegsGuard,
        insn: u64,
        nr: i64,
        args: &[u64; 6],
        name: &'static str,
    ) -> Result<i64> {
        let pid = self.pid();
        let mut regs = guard.regs();
        Native::prepare_syscall(&mut regs, insn, nr, args);
        Native::set_regs(tid, &regs)
            .map_err(|e| Error::from_errno(pid, tid.as_raw(), "set up the injected syscall", e))?;
        let done = Native::after_syscall(insn);
        for _ in 0..MAX_STEP_ATTEMPTS {
            self.step_once(tid, "run the injected syscall")?;
            let after = Native::get_regs(tid)
                .map_err(|e| Error::from_errno(pid, tid.as_raw(), "read the syscall result", e))?;
            let ip = after.instruction_pointer();
            if ip == done {
                return Ok(Native::syscall_return(&after));
            }
            if ip != insn {
                return Err(Error::Ptrace {
                    pid,
                    tid: tid.as_raw(),
                    step: "run the injected syscall",
                    source: Errno::EFAULT,
                })
                .inspect_err(|_| {
                    log::warn!(
                        "pid {pid}: {name}: thread {tid} ended at {ip:#x}, expected {done:#x}"
                    )
                });
            }
            // A signal or an interrupt stop came first; the instruction has not run yet.
        }
        Err(Error::Ptrace {
            pid,
            tid: tid.as_raw(),
            step: "run the injected syscall (signals kept arriving)",
            source: Errno::EAGAIN,
        })
    }

    /// Single-steps every thread whose instruction pointer satisfies `inside` until it does
    /// not: nobody may be half-way through instructions we are about to overwrite.
    pub fn step_out_of(&mut self, inside: impl Fn(u64) -> bool) -> Result<()> {
        let tids: Vec<Pid> = self.threads().iter().map(|t| t.tid).collect();
        for tid in tids {
            let mut steps = 0;
            while inside(self.ip(tid, "read the instruction pointer")?) {
                if steps == MAX_STEPS_OUT {
                    return Err(Error::UnsafeToPatch {
                        pid: self.pid(),
                        symbol: "vDSO entry",
                        reason: format!(
                            "thread {tid} is still inside the instructions to be replaced after \
                             {MAX_STEPS_OUT} single steps"
                        ),
                    });
                }
                log::debug!(
                    "pid {}: stepping thread {tid} out of a hook window",
                    self.pid()
                );
                self.step_once(tid, "step a thread out of a hook window")?;
                steps += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use nix::sys::signal::{Signal, kill};
    use nix::sys::wait::waitpid;
    use nix::unistd::{ForkResult, fork};

    use super::*;
    use crate::target::{HOOKED_SYMBOLS, Target};

    /// A thread caught inside a patch window is single-stepped to its end before we patch.
    #[test]
    fn a_thread_inside_a_hook_window_is_stepped_out() {
        // SAFETY: the child only loops on clock_gettime (async-signal-safe) until killed.
        let child = match unsafe { fork() }.unwrap() {
            ForkResult::Child => loop {
                let mut ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                // SAFETY: ts is a valid timespec.
                unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
            },
            ForkResult::Parent { child } => child,
        };
        let _reap = Reap(child);
        let pid = child.as_raw();
        let target = Target::open(pid).unwrap();
        let plans = Native::plan_hooks(&target.vdso, &HOOKED_SYMBOLS).unwrap();
        let inside = |ip: u64| plans.iter().any(|p| p.contains_strictly(ip));
        let mut held = StoppedProcess::stop(pid).unwrap();
        // Walk the looping thread into clock_gettime's window, one instruction at a time.
        let mut caught = false;
        for _ in 0..100_000 {
            if inside(held.ip(child, "test").unwrap()) {
                caught = true;
                break;
            }
            held.step_once(child, "test").unwrap();
        }
        assert!(caught, "the child never entered a hook window");
        held.step_out_of(inside).unwrap();
        let ip = held.ip(child, "test").unwrap();
        assert!(!inside(ip), "still inside at {ip:#x}");
        let window = &plans[0];
        assert_eq!(
            ip,
            window.addr + window.original.len() as u64,
            "stopped at the window's end"
        );
    }

    /// Kills and reaps the child, also when an assertion fails.
    struct Reap(Pid);

    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = kill(self.0, Signal::SIGKILL);
            let _ = waitpid(self.0, None);
        }
    }
}
