//! A forked test child that locks itself down with real seccomp filters (or strict mode) and
//! waits to be held with ptrace and checked, as timeskew holds a target.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

use super::*;

/// Serialises the tests that fork: a child forked by one test would otherwise inherit the
/// pipes of another and keep them open.
static FORK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// How a test child locks itself down before it says it is ready.
pub(super) enum Lockdown {
    Nothing,
    /// Installed oldest first, each with its SECCOMP_FILTER_FLAG_* flags.
    Filters(Vec<(Vec<sock_filter>, libc::c_ulong)>),
    Strict,
}

/// A forked child that installed its policy and now blocks in read(); killed and reaped on
/// drop. `results`: what the calls it made itself under the policy returned (see `spawn`).
pub(super) struct Child {
    pub(super) pid: Pid,
    pub(super) results: Vec<u32>,
    _block: OwnedFd,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
        loop {
            match waitpid(self.pid, Some(WaitPidFlag::__WALL)) {
                Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

/// Test-only ptrace hold of one thread: seize, interrupt, wait for the stop; detach on drop.
struct Held(Pid);

impl Held {
    fn new(pid: Pid) -> Held {
        ptrace::seize(pid, ptrace::Options::empty()).expect("PTRACE_SEIZE");
        let held = Held(pid);
        ptrace::interrupt(pid).expect("PTRACE_INTERRUPT");
        match waitpid(pid, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::PtraceEvent(_, _, libc::PTRACE_EVENT_STOP)) => held,
            other => panic!("child {pid} did not stop for PTRACE_INTERRUPT: {other:?}"),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = ptrace::detach(self.0, None);
    }
}

/// Forks a child that locks itself down as `lockdown` says, then makes
/// `syscall(libc::SYS_getppid, args…)` once per entry of `probes` (reporting the errno it
/// got, 0 for a return of 0, u32::MAX otherwise), says it is ready, and blocks in read().
pub(super) fn spawn(lockdown: Lockdown, probes: &[[u64; 6]]) -> Child {
    let serial = FORK.lock().unwrap_or_else(|e| e.into_inner());
    let (ready_rd, ready_wr) = nix::unistd::pipe().unwrap();
    let (block_rd, block_wr) = nix::unistd::pipe().unwrap();
    // Everything the child uses is built before the fork: it only makes system calls.
    let programs: Vec<(libc::sock_fprog, libc::c_ulong)> = match &lockdown {
        Lockdown::Filters(f) => f
            .iter()
            .map(|(p, flags)| {
                let prog = libc::sock_fprog {
                    len: p.len() as u16,
                    filter: p.as_ptr().cast_mut(),
                };
                (prog, *flags)
            })
            .collect(),
        _ => Vec::new(),
    };
    let strict = matches!(lockdown, Lockdown::Strict);
    let fds = [
        ready_wr.as_raw_fd(),
        block_rd.as_raw_fd(),
        block_wr.as_raw_fd(),
    ];
    // SAFETY: the child runs only `child_main`, which makes plain system calls on memory
    // prepared above and never returns.
    match unsafe { nix::unistd::fork() }.expect("fork") {
        // SAFETY: we are the freshly forked child; see above.
        nix::unistd::ForkResult::Child => unsafe { child_main(&programs, strict, probes, fds) },
        nix::unistd::ForkResult::Parent { child } => {
            drop(ready_wr);
            drop(block_rd);
            let mut c = Child {
                pid: child,
                results: Vec::new(),
                _block: block_wr,
                _serial: serial,
            };
            let mut buf = vec![0u8; 4 * probes.len() + 1];
            let mut got = 0;
            while got < buf.len() {
                match nix::unistd::read(&ready_rd, &mut buf[got..]) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(Errno::EINTR) => {}
                    Err(e) => panic!("reading from child {child}: {e}"),
                }
            }
            assert_eq!(
                (got, buf.last()),
                (buf.len(), Some(&b'+')),
                "child {child} failed to lock itself down"
            );
            c.results = buf[..4 * probes.len()]
                .chunks(4)
                .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            c
        }
    }
}

/// The child side of [`spawn`].
///
/// # Safety
/// Only in a freshly forked child: it makes system calls only, never allocates or returns.
unsafe fn child_main(
    programs: &[(libc::sock_fprog, libc::c_ulong)],
    strict: bool,
    probes: &[[u64; 6]],
    [ready, block, block_wr]: [libc::c_int; 3],
) -> ! {
    // SAFETY: plain system calls on valid pointers; see the function's contract.
    unsafe {
        // Our copy would keep the child waiting if the test process died.
        libc::close(block_wr);
        let mut ok = true;
        if !programs.is_empty() {
            ok = libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0;
        }
        for (prog, flags) in programs {
            ok = ok
                && libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    *flags,
                    prog as *const libc::sock_fprog,
                ) >= 0;
        }
        if strict {
            ok = ok
                && libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_STRICT as libc::c_ulong,
                ) == 0;
        }
        // From here on only read, write and exit: allowed even in strict mode.
        for a in probes {
            let r = libc::syscall(libc::SYS_getppid, a[0], a[1], a[2], a[3], a[4], a[5]);
            let v: u32 = match r {
                -1 => *libc::__errno_location() as u32,
                0 => 0,
                _ => u32::MAX,
            };
            libc::write(ready, (&raw const v).cast(), 4);
        }
        let byte = if ok { b'+' } else { b'-' };
        libc::write(ready, (&raw const byte).cast(), 1);
        let mut buf = 0u8;
        while libc::read(block, (&raw mut buf).cast(), 1) != 0 {}
        libc::syscall(libc::SYS_exit, 0);
        libc::_exit(0)
    }
}

/// `check` on a child held with ptrace, as timeskew holds a target.
pub(super) fn check_child(child: &Child, calls: &[PlannedSyscall]) -> Result<()> {
    let _held = Held::new(child.pid);
    check(child.pid.as_raw(), child.pid, calls)
}

pub(super) fn filters(list: Vec<Vec<sock_filter>>) -> Lockdown {
    Lockdown::Filters(list.into_iter().map(|p| (p, 0)).collect())
}

/// The reason of a refusal of `call`, after checking the rest of the error.
pub(super) fn refusal(child: &Child, calls: &[PlannedSyscall], call: &str) -> String {
    match check_child(child, calls) {
        Err(Error::Seccomp {
            pid,
            tid,
            syscall,
            reason,
        }) => {
            assert_eq!(
                (pid, tid, syscall),
                (child.pid.as_raw(), child.pid.as_raw(), call)
            );
            reason
        }
        other => panic!("expected a seccomp refusal of {call}(), got {other:?}"),
    }
}
