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
