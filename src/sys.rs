//! The few raw system calls nix does not wrap. Every `unsafe` of the library outside the
//! fake-clock blob lives here.

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

/// `tgkill(2)`: a signal to one thread of a process.
pub fn tgkill(pid: i32, tid: i32, sig: Signal) -> nix::Result<()> {
    tgkill_raw(pid, tid, sig as libc::c_int)
}

/// `tgkill(2)` with a raw signal number: real-time signals have no `Signal` value in nix.
pub fn tgkill_raw(pid: i32, tid: i32, sig: libc::c_int) -> nix::Result<()> {
    // SAFETY: tgkill takes three integers and touches no memory of ours.
    let rc = unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig) };
    Errno::result(rc).map(drop)
}

/// `PTRACE_CONT` delivering raw signal `sig` (0 for none), real-time signals included.
pub fn ptrace_cont(tid: nix::unistd::Pid, sig: libc::c_int) -> nix::Result<()> {
    ptrace_word(libc::PTRACE_CONT, tid, sig)
}

/// `PTRACE_DETACH` delivering raw signal `sig` (0 for none): nix's takes only the signals it
/// can name, not the real-time ones a target may have been stopped with.
pub fn ptrace_detach(tid: nix::unistd::Pid, sig: libc::c_int) -> nix::Result<()> {
    ptrace_word(libc::PTRACE_DETACH, tid, sig)
}

/// A ptrace request that takes no address and a plain number as its data word (a signal to
/// deliver, or 0).
fn ptrace_word(request: libc::c_uint, tid: nix::unistd::Pid, data: libc::c_int) -> nix::Result<()> {
    // SAFETY: PTRACE_CONT, PTRACE_DETACH and PTRACE_LISTEN read and write no memory of ours: the
    // address is ignored and the data word is a number, not a pointer.
    let rc = unsafe {
        libc::ptrace(
            request,
            tid.as_raw(),
            std::ptr::null_mut::<libc::c_void>(),
            data as libc::c_long as *mut libc::c_void,
        )
    };
    Errno::result(rc).map(drop)
}

/// The signals that would end timeskew half-way through changing a target: SIGINT (Ctrl-C),
/// SIGTERM, SIGHUP, SIGQUIT. Deferred during a change; `inject --duration` waits for them.
pub fn termination_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        set.add(s);
    }
    set
}

/// Blocks the signals that would kill us half-way through changing a target (Ctrl-C, SIGTERM,
/// SIGHUP, SIGQUIT) in the calling thread; the old mask comes back on drop, and a signal that
/// arrived meanwhile is then delivered — after the target has been left consistent.
pub struct TerminationDeferred {
    old: Option<SigSet>,
}

impl TerminationDeferred {
    pub fn new() -> Self {
        let set = termination_signals();
        let mut old = SigSet::empty();
        match pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)) {
            Ok(()) => TerminationDeferred { old: Some(old) },
            Err(e) => {
                log::warn!("could not defer termination signals: {e}");
                TerminationDeferred { old: None }
            }
        }
    }
}

impl Default for TerminationDeferred {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TerminationDeferred {
    fn drop(&mut self) {
        if let Some(old) = self.old.take()
            && let Err(e) = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None)
        {
            log::warn!("could not restore the signal mask: {e}");
        }
    }
}

// --- `timeskew run`: a child held before exec, signals, PTRACE_LISTEN --------------------------

/// `PTRACE_LISTEN`: leaves a tracee in its group-stop (job control) while the tracer keeps
/// receiving its events; nix has no wrapper.
pub fn ptrace_listen(tid: nix::unistd::Pid) -> nix::Result<()> {
    ptrace_word(libc::PTRACE_LISTEN, tid, 0)
}

/// A signal taken with [`sigtimedwait`]: number, `si_code` and sender.
#[derive(Debug, Clone, Copy)]
pub struct SigInfo {
    pub signal: Signal,
    /// `si_code`: `<= 0` for a signal sent by a process (kill, sigqueue, tgkill), `> 0` when the
    /// kernel sent it (a terminal's Ctrl-C, a hangup).
    pub code: i32,
    /// The sender's process id, for `code <= 0`.
    pub pid: i32,
}

/// `sigtimedwait(2)`: takes one pending signal of `set` (which the caller has blocked), waiting
/// up to `timeout`. `Ok(None)` on timeout; `Err(EINTR)` when another signal interrupted it.
pub fn sigtimedwait(set: &SigSet, timeout: std::time::Duration) -> nix::Result<Option<SigInfo>> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    let mut info = std::mem::MaybeUninit::<libc::siginfo_t>::zeroed();
    // SAFETY: the set, the siginfo buffer and the timespec are valid for the call.
    let rc = unsafe { libc::sigtimedwait(set.as_ref(), info.as_mut_ptr(), &ts) };
    match Errno::result(rc) {
        Err(Errno::EAGAIN) => Ok(None),
        Err(e) => Err(e),
        Ok(signo) => {
            // SAFETY: the kernel filled the buffer, which started zeroed.
            let info = unsafe { info.assume_init() };
            Ok(Some(SigInfo {
                signal: Signal::try_from(signo)?,
                code: info.si_code,
                pid: sender(&info),
            }))
        }
    }
}

/// The sending process of a signal a process sent (`si_code <= 0`: kill, sigqueue, tgkill);
/// 0 for a signal from the kernel.
pub fn sender(info: &libc::siginfo_t) -> i32 {
    if info.si_code <= 0 {
        // SAFETY: for these codes the kernel fills the `_kill`/`_rt` union member, which both
        // start with si_pid.
        unsafe { info.si_pid() }
    } else {
        0
    }
}

/// Sets the disposition of SIGCHLD to the default and returns the previous one (SIG_IGN or
/// SA_NOCLDSTOP would hide the ptrace stops of the tracees from `sigtimedwait`).
pub fn sigchld_default() -> nix::Result<libc::sigaction> {
    // SAFETY: both sigaction structs are valid; SIG_DFL installs no code.
    unsafe {
        let mut new: libc::sigaction = std::mem::zeroed();
        new.sa_sigaction = libc::SIG_DFL;
        let mut old: libc::sigaction = std::mem::zeroed();
        Errno::result(libc::sigaction(libc::SIGCHLD, &new, &mut old))?;
        Ok(old)
    }
}

/// Puts back a SIGCHLD disposition saved by [`sigchld_default`].
pub fn sigchld_restore(old: &libc::sigaction) -> nix::Result<()> {
    // SAFETY: `old` is a disposition the kernel gave us.
    Errno::result(unsafe { libc::sigaction(libc::SIGCHLD, old, std::ptr::null_mut()) }).map(drop)
}

/// A forked child that waits, before `execvp`, until [`HeldChild::release`]: the parent can
/// attach to it first, so the command is traced from its first instruction.
#[derive(Debug)]
pub struct HeldChild {
    pub pid: nix::unistd::Pid,
    go: std::os::fd::OwnedFd,
    errors: std::os::fd::OwnedFd,
}

impl HeldChild {
    /// Lets the child go on to `execvp`.
    pub fn release(&self) -> nix::Result<()> {
        match nix::unistd::write(&self.go, &[1]) {
            Ok(1) => Ok(()),
            Ok(_) => Err(Errno::EIO),
            Err(e) => Err(e),
        }
    }

    /// The errno of a failed `execvp`, once the child has exited without running the command.
    pub fn exec_error(&self) -> Option<Errno> {
        let mut buf = [0u8; 4];
        match nix::unistd::read(&self.errors, &mut buf) {
            Ok(4) => Some(Errno::from_raw(i32::from_ne_bytes(buf))),
            _ => None,
        }
    }
}

/// Forks a child that restores the caller's signal state (`mask`, the SIGCHLD disposition
/// `sigchld`, SIGPIPE at its default like `std::process::Command`), waits for
/// [`HeldChild::release`] and then runs `execvp(argv[0], argv)`, inheriting stdio, environment
/// and working directory. An exec failure is reported through [`HeldChild::exec_error`] and exit
/// status 127. Everything the child needs is prepared before the fork: between fork and exec it
/// makes only async-signal-safe system calls, so this is sound in a multi-threaded process.
pub fn fork_held(
    argv: &[std::ffi::CString],
    mask: &SigSet,
    sigchld: &libc::sigaction,
) -> nix::Result<HeldChild> {
    use std::os::fd::AsRawFd;
    let Some(program) = argv.first() else {
        return Err(Errno::EINVAL);
    };
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let (go_rd, go_wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // Non-blocking: the parent reads it only after the child exited, and four bytes always fit.
    let (err_rd, err_wr) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
    let child_fds = [go_rd.as_raw_fd(), err_wr.as_raw_fd()];
    let parent_fds = [go_wr.as_raw_fd(), err_rd.as_raw_fd()];
    let mask: &libc::sigset_t = mask.as_ref();
    // SAFETY: the child runs only `held_child_exec`, which makes async-signal-safe calls on
    // memory prepared above and never returns.
    match unsafe { nix::unistd::fork() }? {
        // SAFETY: we are the freshly forked child, and the pointers are the child's copies of
        // the memory prepared above (see `held_child_exec`).
        nix::unistd::ForkResult::Child => unsafe {
            held_child_exec(
                program.as_ptr(),
                &ptrs,
                child_fds,
                parent_fds,
                mask,
                sigchld,
            )
        },
        nix::unistd::ForkResult::Parent { child } => Ok(HeldChild {
            pid: child,
            go: go_wr,
            errors: err_rd,
        }),
    }
}

/// The child side of [`fork_held`].
///
/// # Safety
/// Only to be called in a freshly forked child; the pointers must stay valid (they do: the
/// child's copy of the parent's memory is not freed before exec).
unsafe fn held_child_exec(
    program: *const libc::c_char,
    argv: &[*const libc::c_char],
    [go, errors]: [libc::c_int; 2],
    parent_fds: [libc::c_int; 2],
    mask: &libc::sigset_t,
    sigchld: &libc::sigaction,
) -> ! {
    // SAFETY: plain system calls on valid pointers; see the function's contract.
    unsafe {
        for fd in parent_fds {
            libc::close(fd);
        }
        libc::sigaction(libc::SIGCHLD, sigchld, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::pthread_sigmask(libc::SIG_SETMASK, mask, std::ptr::null_mut());
        let mut byte = 0u8;
        loop {
            match libc::read(go, (&raw mut byte).cast(), 1) {
                1 => break,
                -1 if Errno::last_raw() == libc::EINTR => {}
                // The parent went away without letting us run: never run untraced.
                _ => libc::_exit(125),
            }
        }
        libc::execvp(program, argv.as_ptr());
        let errno = Errno::last_raw().to_ne_bytes();
        libc::write(errors, errno.as_ptr().cast(), errno.len());
        libc::_exit(127)
    }
}

/// Ends the calling process by `signal`, as a child killed by it would end: its default action
/// restored and unblocked, no core file of ours (RLIMIT_CORE 0). Exits with 128 + signal if the
/// signal does not terminate (it always does for a signal that terminated a child).
pub fn die_by(signal: Signal) -> ! {
    let signo = signal as libc::c_int;
    // SAFETY: SIG_DFL installs no code; the rlimit and sigset are valid locals.
    unsafe {
        let limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &limit);
        libc::signal(signo, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signo);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(signo);
    }
    std::process::exit(128 + signo)
}

// --- seccomp: reading a held thread's filters ---------------------------------------------------

/// `PTRACE_SECCOMP_GET_FILTER` (include/uapi/linux/ptrace.h); neither nix nor libc has it.
const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;

/// The seccomp filter program number `index` (0 = the oldest) of thread `tid`, which the caller
/// holds in a ptrace-stop. `Err(ENOENT)` past the oldest filter; `EACCES` without CAP_SYS_ADMIN
/// or when we are under seccomp ourselves; `EMEDIUMTYPE`/`EINVAL` when the kernel cannot give it.
pub fn ptrace_seccomp_get_filter(
    tid: nix::unistd::Pid,
    index: u32,
) -> nix::Result<Vec<libc::sock_filter>> {
    // One call into a buffer of the largest size the kernel accepts for a filter: asking for
    // the length first and then the program could overflow a buffer sized by the first answer
    // if the filters changed in between.
    let empty = libc::sock_filter {
        code: 0,
        jt: 0,
        jf: 0,
        k: 0,
    };
    let mut program = vec![empty; crate::seccomp::MAX_FILTER_LEN];
    // SAFETY: `addr` is an index, not an address; the kernel copies at most BPF_MAXINSNS
    // instructions (the longest filter it accepts) into `data`, which has room for that many.
    let rc = unsafe {
        libc::ptrace(
            PTRACE_SECCOMP_GET_FILTER,
            tid.as_raw(),
            index as usize as *mut libc::c_void,
            program.as_mut_ptr().cast::<libc::c_void>(),
        )
    };
    let len = Errno::result(rc)? as usize;
    if len > program.len() {
        // Cannot happen (the kernel refuses longer filters); never read beyond what we own.
        return Err(Errno::E2BIG);
    }
    program.truncate(len);
    Ok(program)
}
