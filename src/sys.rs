//! The few raw system calls nix does not wrap. Every `unsafe` of the library outside the
//! fake-clock blob lives here.

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

/// `tgkill(2)`: a signal to one thread of a process.
pub fn tgkill(pid: i32, tid: i32, sig: Signal) -> nix::Result<()> {
    // SAFETY: tgkill takes three integers and touches no memory of ours.
    let rc = unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig as libc::c_int) };
    Errno::result(rc).map(drop)
}

/// Blocks the signals that would kill us half-way through changing a target (Ctrl-C, SIGTERM,
/// SIGHUP, SIGQUIT) in the calling thread; the old mask comes back on drop, and a signal that
/// arrived meanwhile is then delivered — after the target has been left consistent.
pub struct TerminationDeferred {
    old: Option<SigSet>,
}

impl TerminationDeferred {
    pub fn new() -> Self {
        let mut set = SigSet::empty();
        for s in [
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGQUIT,
        ] {
            set.add(s);
        }
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
