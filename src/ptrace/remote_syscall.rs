//! A syscall executed inside a held thread, from a `syscall` instruction that already exists in
//! the target, with the full register set saved and restored exactly.
//!
//! It runs under PTRACE_SYSCALL, never a single step: a single-step trap is a *forced* SIGTRAP,
//! and the kernel forces one on a thread that blocks or ignores SIGTRAP by resetting its handler
//! and unblocking it — the target's own SIGTRAP handling would be lost. The sequence:
//! 1. registers set for the call (`orig_rax = -1`: no restart logic for our registers);
//! 2. PTRACE_SYSCALL → syscall-entry stop; PTRACE_SYSCALL → syscall-exit stop; result read;
//! 3. the saved registers written back *at the exit stop*, then PTRACE_INTERRUPT + PTRACE_CONT:
//!    the thread takes the interrupt trap on its way back to user space, before any instruction
//!    of it runs, in the signal path where the kernel then applies the syscall-restart logic to
//!    the restored registers exactly as it would have for the original stop. From step 3 on, the
//!    thread is right even if timeskew vanishes.

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::unistd::Pid;

use super::remote_mm::RemoteCall;
use super::stop::{Report, StoppedProcess};
use crate::arch::{Arch, Native, Registers};
use crate::error::{Error, Result};
use crate::target::procfs;

type Regs = <Native as Arch>::Regs;

/// The syscall is retried this often when signals keep arriving before it runs.
const MAX_ATTEMPTS: usize = 64;
/// How long one stop of the worker thread may take (an mmap, a scheduler delay).
const STOP_DEADLINE: Duration = Duration::from_millis(500);

/// Saved registers of one thread, written back on `restore` or, failing that, on drop.
pub(super) struct RegsGuard {
    pid: i32,
    tid: Pid,
    saved: Option<Regs>,
    /// The `syscall` instruction the thread was sent to, once it was.
    sent_to: Option<u64>,
}

impl RegsGuard {
    pub(super) fn save(pid: i32, tid: Pid) -> Result<RegsGuard> {
        let saved = Native::get_regs(tid)
            .map_err(|e| procfs::errno_error(pid, tid.as_raw(), "save registers", e))?;
        Ok(RegsGuard {
            pid,
            tid,
            saved: Some(saved),
            sent_to: None,
        })
    }

    /// The saved registers (present until `restore`, which consumes the guard).
    pub(super) fn regs(&self) -> Option<Regs> {
        self.saved
    }

    /// Notes that the thread's registers now point at the `syscall` instruction `insn`.
    pub(super) fn sent_to(&mut self, insn: u64) {
        self.sent_to = Some(insn);
    }

    /// Whether the thread is still where we left it: at its own instruction, or at or just
    /// past the `syscall` we sent it to. Anywhere else it is not the code we stopped — its id
    /// names another program's thread after an exec — and the saved registers must not go in.
    fn where_we_left_it(&self, saved: &Regs) -> bool {
        let Ok(now) = Native::get_regs(self.tid) else {
            return true; // not in a stop (gone): the write below fails harmlessly
        };
        let ip = now.instruction_pointer();
        ip == saved.instruction_pointer()
            || self
                .sent_to
                .is_some_and(|insn| ip == insn || ip == Native::after_syscall(insn))
    }

    /// Gives up the saved registers without writing them: the thread reported an exec or its
    /// exit, so its id may now name the thread of a *new* program (a non-leader thread that
    /// execs takes the leader's id) — the old registers would send that program into code it
    /// does not have.
    pub(super) fn forget(mut self) {
        self.saved = None;
    }

    pub(super) fn restore(mut self) -> Result<()> {
        match self.saved.take() {
            Some(saved) => Native::set_regs(self.tid, &saved).map_err(|e| {
                procfs::errno_error(self.pid, self.tid.as_raw(), "restore registers", e)
            }),
            None => Ok(()),
        }
    }
}

impl Drop for RegsGuard {
    fn drop(&mut self) {
        let Some(saved) = self.saved.take() else {
            return;
        };
        if !self.where_we_left_it(&saved) {
            log::warn!(
                "pid {}: thread {} is no longer where it was stopped (an exec took its id?): \
                 its registers are left as they are",
                self.pid,
                self.tid
            );
            return;
        }
        if let Err(e) = Native::set_regs(self.tid, &saved) {
            // ESRCH: the thread is no longer in a stop — killed, and dying with the process.
            let level = if e == Errno::ESRCH {
                log::Level::Debug
            } else {
                log::Level::Warn
            };
            log::log!(
                level,
                "pid {}: restoring registers of thread {} failed: {e}",
                self.pid,
                self.tid
            );
        }
    }
}

/// Whether signal `sig`, reported by `tid` before it entered the system call we set it up
/// for at `insn`, was raised by that instruction itself (a fault at it: the address no longer
/// holds a system call — the program exec'd, or the page went away). Such a signal is ours and
/// must never be passed on: it would kill the target. Returns what to say.
pub(super) fn our_fault(tid: Pid, sig: i32, insn: u64) -> Option<String> {
    // (Not SIGTRAP: a system call instruction raises none; a trap reported here was owed
    // from before, and its owner must answer it.)
    if !matches!(sig, libc::SIGSEGV | libc::SIGBUS | libc::SIGILL) {
        return None;
    }
    // si_code > 0: raised by the kernel for what the thread executed (not kill/tgkill/queue).
    let info = ptrace::getsiginfo(tid).ok()?;
    let ip = Native::get_regs(tid).ok()?.instruction_pointer();
    (info.si_code > 0 && (ip == insn || ip == Native::after_syscall(insn))).then(|| {
        format!(
            "the instruction it was sent to at {insn:#x} raised signal {sig} (is the program \
             still the one examined?); the signal was not passed on"
        )
    })
}

/// How to let a held thread run until its next stop.
#[derive(Clone, Copy)]
enum Resume {
    /// Until the next syscall-entry or -exit stop.
    Syscall,
    /// Until the next stop of any other kind (our pending interrupt).
    Cont,
}

impl StoppedProcess {
    /// Resumes `tid` without delivering anything and waits for its next report.
    fn resume_and_wait(&mut self, tid: Pid, how: Resume, step: &'static str) -> Result<Report> {
        let pid = self.pid();
        let resumed = match how {
            Resume::Syscall => ptrace::syscall(tid, None),
            Resume::Cont => ptrace::cont(tid, None),
        };
        match resumed {
            Ok(()) => {}
            Err(Errno::ESRCH) => {
                self.forget(tid);
                return Err(Error::ProcessGone { pid, step });
            }
            Err(e) => return Err(procfs::errno_error(pid, tid.as_raw(), step, e)),
        }
        self.wait_stop(tid, step, Instant::now() + STOP_DEADLINE)
    }

    /// Runs `call` in a held thread from the syscall instruction at `insn` and returns the
    /// thread and the raw result (negative errno on failure). The thread's registers are
    /// restored exactly and it is left held, as before.
    pub(super) fn syscall(&mut self, insn: u64, call: &RemoteCall) -> Result<(Pid, i64)> {
        let pid = self.pid();
        let tid = self.worker().ok_or(Error::ProcessGone {
            pid,
            step: "run an injected syscall",
        })?;
        // A seccomp filter could kill, trap or block the thread on this very call: know first.
        self.check_calls(tid, insn, std::slice::from_ref(call))?;
        let (nr, args) = call.nr_and_args();
        let name = call.name();
        let guard = RegsGuard::save(pid, tid)?;
        let ret = self.run_syscall(tid, guard, insn, nr, &args, name)?;
        log::debug!("pid {pid}: injected {name} in thread {tid} returned {ret:#x}");
        Ok((tid, ret))
    }

    fn run_syscall(
        &mut self,
        tid: Pid,
        mut guard: RegsGuard,
        insn: u64,
        nr: i64,
        args: &[u64; 6],
        name: &'static str,
    ) -> Result<i64> {
        let pid = self.pid();
        let step = "run the injected syscall";
        let Some(mut regs) = guard.regs() else {
            return Err(Error::ProcessGone { pid, step });
        };
        Native::prepare_syscall(&mut regs, insn, nr, args);
        guard.sent_to(insn);
        Native::set_regs(tid, &regs).map_err(|e| {
            procfs::errno_error(pid, tid.as_raw(), "set up the injected syscall", e)
        })?;
        let done = Native::after_syscall(insn);
        let unexpected = |ip: u64, stop: &str| {
            log::debug!(
                "pid {pid}: {name}: thread {tid} at {ip:#x} at its {stop}, expected {done:#x}"
            );
            Error::RemoteSyscallLost {
                pid,
                tid: tid.as_raw(),
                syscall: name,
                detail: format!("the thread stopped at {ip:#x} instead of {done:#x} ({stop})"),
            }
        };

        // Into the syscall. A signal may stop the thread first: the instruction has not run yet
        // (the signal is kept for re-delivery), so resume again.
        let mut entered = false;
        for _ in 0..MAX_ATTEMPTS {
            let report = self.resume_and_wait(tid, Resume::Syscall, step)?;
            if matches!(report, Report::Syscall) {
                entered = true;
                break;
            }
            self.note(tid, &report, step)?;
        }
        if !entered {
            return Err(Error::RemoteSyscallLost {
                pid,
                tid: tid.as_raw(),
                syscall: name,
                detail: format!("signals kept arriving before it could run ({MAX_ATTEMPTS} tries)"),
            });
        }
        let ip = self.ip(tid, step)?;
        if ip != done {
            return Err(unexpected(ip, "syscall-entry stop"));
        }

        // Out of it: the next report is its exit stop (signals are only taken after it).
        let report = self.resume_and_wait(tid, Resume::Syscall, step)?;
        if !matches!(report, Report::Syscall) {
            self.note(tid, &report, step)?;
            return Err(Error::RemoteSyscallLost {
                pid,
                tid: tid.as_raw(),
                syscall: name,
                detail: format!("it stopped with {report:?} instead of leaving the syscall"),
            });
        }
        let after = Native::get_regs(tid)
            .map_err(|e| procfs::errno_error(pid, tid.as_raw(), "read the syscall result", e))?;
        if after.instruction_pointer() != done {
            return Err(unexpected(after.instruction_pointer(), "syscall-exit stop"));
        }
        let ret = Native::syscall_return(&after);

        // Registers back while still at the exit stop, then trap again on the way out.
        guard.restore()?;
        match ptrace::interrupt(tid) {
            Ok(()) => {}
            Err(Errno::ESRCH) => return Err(Error::ProcessGone { pid, step }),
            Err(e) => return Err(procfs::errno_error(pid, tid.as_raw(), step, e)),
        }
        let report = self.resume_and_wait(tid, Resume::Cont, step)?;
        self.note(tid, &report, step)?;
        Ok(ret)
    }

    pub(crate) fn ip(&self, tid: Pid, step: &'static str) -> Result<u64> {
        Native::get_regs(tid)
            .map(|r| r.instruction_pointer())
            .map_err(|e| procfs::errno_error(self.pid(), tid.as_raw(), step, e))
    }
}
