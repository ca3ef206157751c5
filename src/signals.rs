//! Signals seen from timeskew's side: deferring Ctrl-C/SIGTERM while a target is being
//! changed, waiting for a signal, SIGCHLD's disposition, and ending like a killed child.

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

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
