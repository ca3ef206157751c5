//! Is any thread using the instructions we are about to overwrite? Either executing them (its
//! instruction pointer strictly inside a hook window) or interrupted there by a signal whose
//! handler is still running: then the interrupted context, saved in the signal frame on the
//! thread's stack (or alternate signal stack), resumes inside the window once the handler
//! returns. Hook windows hold no calls, so no return address ever points into one: any 8-byte
//! word above a thread's stack pointer that equals an address strictly inside a window is such a
//! saved context (or, rarely, a stale copy of one — then we wait for nothing, never harm).

use crate::arch::{Arch, Native, Registers};
use crate::error::Result;
use crate::target::mem::RemoteMemory;
use crate::target::procfs::{self, Mapping};

use super::StoppedProcess;

/// How far above the stack pointer saved contexts are looked for: far more than a signal frame
/// (a few KiB with the FPU state) plus the frames of a handler that reads the clock.
pub(super) const STACK_SCAN: u64 = 256 * 1024;

impl StoppedProcess {
    /// Why patching now could crash a thread, if it could: the first thread found executing
    /// inside a window (`inside` says whether an address lies strictly inside one), or with a
    /// saved context pointing inside one. `maps` must have been read while the threads are held.
    pub fn window_in_use(
        &self,
        mem: &RemoteMemory,
        maps: &[Mapping],
        inside: impl Fn(u64) -> bool,
    ) -> Result<Option<String>> {
        let pid = self.pid();
        for t in self.threads() {
            let regs = Native::get_regs(t.tid).map_err(|e| {
                procfs::errno_error(
                    pid,
                    t.tid.as_raw(),
                    "read the registers of a held thread",
                    e,
                )
            })?;
            let ip = regs.instruction_pointer();
            if inside(ip) {
                return Ok(Some(format!(
                    "thread {} is executing inside the instructions to be replaced (at {ip:#x})",
                    t.tid
                )));
            }
            let sp = regs.stack_pointer() & !7;
            let Some(stack) = maps.iter().find(|m| m.start <= sp && sp < m.end) else {
                // No memory there, so no saved context either.
                continue;
            };
            let end = stack.end.min(sp.saturating_add(STACK_SCAN));
            let words = mem.read(sp, (end - sp) as usize, "read a held thread's stack")?;
            if let Some((i, addr)) = words
                .chunks_exact(8)
                .map(|w| u64::from_le_bytes(w.try_into().expect("chunks of 8")))
                .enumerate()
                .find(|(_, w)| inside(*w))
            {
                return Ok(Some(format!(
                    "thread {} was interrupted at {addr:#x}, inside the instructions to be \
                     replaced, by a signal handler that is still running (saved context at \
                     {:#x})",
                    t.tid,
                    sp + 8 * i as u64
                )));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicI32, Ordering};

    use nix::sys::ptrace;
    use nix::sys::signal::{Signal, kill};
    use nix::sys::wait::{WaitPidFlag, waitpid};
    use nix::unistd::{ForkResult, Pid, fork, pipe};

    use super::*;
    use crate::arch::HookPlan;
    use crate::target::Target;

    static HANDLER_FD: AtomicI32 = AtomicI32::new(-1);

    extern "C" fn announce_and_spin(_: libc::c_int) {
        let fd = HANDLER_FD.load(Ordering::Relaxed);
        // SAFETY: write(2) is async-signal-safe; the buffer is a static byte string.
        unsafe { libc::write(fd, b"h".as_ptr().cast(), 1) };
        loop {
            std::hint::spin_loop();
        }
    }

    /// A child that spins on clock_gettime; SIGUSR1 runs a handler that writes one byte to
    /// `fd` and then spins forever (a handler still running on top of the interrupted code).
    fn spinning_child(fd: i32) -> Pid {
        // SAFETY: the child only installs a handler and loops on clock_gettime until killed.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                HANDLER_FD.store(fd, Ordering::Relaxed);
                // SAFETY: the handler only calls write(2) and spins.
                unsafe {
                    libc::signal(
                        libc::SIGUSR1,
                        announce_and_spin as *const () as libc::sighandler_t,
                    )
                };
                loop {
                    let mut ts = libc::timespec {
                        tv_sec: 0,
                        tv_nsec: 0,
                    };
                    // SAFETY: ts is a valid timespec.
                    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
                }
            }
            ForkResult::Parent { child } => child,
        }
    }

    /// Traces `child` and single-steps it until it sits strictly inside a hook window.
    fn walk_into_a_window(child: Pid, plans: &[HookPlan]) {
        ptrace::seize(child, ptrace::Options::empty()).unwrap();
        ptrace::interrupt(child).unwrap();
        waitpid(child, Some(WaitPidFlag::__WALL)).unwrap();
        for _ in 0..100_000 {
            let ip = Native::get_regs(child).unwrap().instruction_pointer();
            if plans.iter().any(|p| p.contains_strictly(ip)) {
                return;
            }
            ptrace::step(child, None).unwrap();
            waitpid(child, Some(WaitPidFlag::__WALL)).unwrap();
        }
        panic!("the child never entered a hook window");
    }

    fn check(child: Pid, plans: &[HookPlan]) -> Option<String> {
        let pid = child.as_raw();
        let target = Target::open(pid).unwrap();
        let held = StoppedProcess::stop(pid).unwrap();
        let maps = crate::target::procfs::maps_of(pid, pid).unwrap();
        let inside = |ip: u64| plans.iter().any(|p| p.contains_strictly(ip));
        held.window_in_use(&target.mem, &maps, inside).unwrap()
    }

    #[test]
    fn a_thread_executing_inside_a_window_is_seen() {
        let child = spinning_child(-1);
        let _reap = Reap(child);
        let target = Target::open(child.as_raw()).unwrap();
        let plans = Native::plan_hooks(&target.vdso).unwrap().0;
        walk_into_a_window(child, &plans);
        let ip = Native::get_regs(child).unwrap().instruction_pointer();
        let maps = crate::target::procfs::maps_of(child.as_raw(), child.as_raw()).unwrap();
        let inside = |ip: u64| plans.iter().any(|p| p.contains_strictly(ip));
        // Stopped by this thread's own ptrace calls: borrowed as a one-thread hold.
        let held = StoppedProcess::adopt(child.as_raw());
        let why = held
            .window_in_use(&target.mem, &maps, inside)
            .unwrap()
            .expect("a thread inside a window must be seen");
        assert!(
            why.contains("executing inside") && why.contains(&format!("{ip:#x}")),
            "{why}"
        );
        drop(held);
        ptrace::detach(child, None).unwrap();
    }

    #[test]
    fn a_signal_handler_running_on_top_of_a_window_is_seen() {
        let (read_end, write_end) = pipe().unwrap();
        let child = spinning_child(write_end.as_raw_fd());
        drop(write_end);
        let _reap = Reap(child);
        let target = Target::open(child.as_raw()).unwrap();
        let plans = Native::plan_hooks(&target.vdso).unwrap().0;
        assert_eq!(check(child, &plans), None, "a plain spinning loop is clear");
        walk_into_a_window(child, &plans);
        let interrupted_at = Native::get_regs(child).unwrap().instruction_pointer();
        // The signal is taken before the next instruction: its frame saves an address inside
        // the window, and the handler then spins on top of it.
        kill(child, Signal::SIGUSR1).unwrap();
        ptrace::cont(child, None).unwrap();
        let status = waitpid(child, Some(WaitPidFlag::__WALL)).unwrap();
        assert!(
            matches!(
                status,
                nix::sys::wait::WaitStatus::Stopped(_, Signal::SIGUSR1)
            ),
            "{status:?}"
        );
        ptrace::detach(child, Some(Signal::SIGUSR1)).unwrap();
        let mut byte = [0u8; 1];
        std::fs::File::from(read_end).read_exact(&mut byte).unwrap();
        let why = check(child, &plans).expect("the saved context must be seen");
        assert!(
            why.contains("signal handler") && why.contains(&format!("{interrupted_at:#x}")),
            "{why}"
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
