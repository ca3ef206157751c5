//! Waking up when a tracee changes state, so that polling for its stop neither spins (the
//! threads we wait for need the CPU to reach their stop) nor oversleeps.
//!
//! Every ptrace stop sends the tracer SIGCHLD. With SIGCHLD blocked in the calling thread (and
//! in the reaper thread it starts, which inherits the mask), the signal stays pending and a
//! `signalfd` becomes readable: `poll` on it sleeps until the next stop or the timeout. Where
//! the signal goes elsewhere (another thread of a library caller that does not block it), the
//! timeout bounds the wait anyway. SIGCHLDs we consume that were not about our tracees are
//! raised again when we are done, for the caller's own handler.

use std::os::fd::AsFd;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask, raise};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::time::TimeSpec;

/// The longest a wait sleeps without news (the deadline checks run at least this often).
const MAX_NAP: Duration = Duration::from_millis(1);

#[derive(Debug)]
pub(crate) struct ChildEvents {
    fd: Option<SignalFd>,
    /// The thread's signal mask before we blocked SIGCHLD.
    old_mask: Option<SigSet>,
    /// Whether a consumed SIGCHLD came from a process that is not our tracee.
    foreign: bool,
    tracees: i32,
}

impl ChildEvents {
    /// SIGCHLD blocked in this thread and read from a signalfd; `pid` is the process we trace.
    pub(crate) fn new(pid: i32) -> ChildEvents {
        let mut set = SigSet::empty();
        set.add(Signal::SIGCHLD);
        let mut old = SigSet::empty();
        if let Err(e) = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)) {
            log::debug!("cannot block SIGCHLD ({e}); polling on a timer");
            return ChildEvents::none();
        }
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .inspect_err(|e| log::debug!("no signalfd ({e}); polling on a timer"))
            .ok();
        ChildEvents {
            fd,
            old_mask: Some(old),
            foreign: false,
            tracees: pid,
        }
    }

    /// No wake-ups: waits sleep (for a process another loop of ours traces and reaps).
    pub(crate) fn none() -> ChildEvents {
        ChildEvents {
            fd: None,
            old_mask: None,
            foreign: false,
            tracees: 0,
        }
    }

    /// Pauses before the next poll: yields at first (a stop usually takes microseconds), then
    /// sleeps until a tracee changes state, at most `MAX_NAP` (without a signalfd, a little
    /// longer each round).
    pub(crate) fn pause(&mut self, round: &mut u32) {
        *round += 1;
        if *round < 3 {
            std::thread::yield_now();
            return;
        }
        // Growing naps, so that a SIGCHLD taken by another thread of a library caller costs
        // little; the signalfd ends a nap as soon as a stop is reported to us.
        let nap = Duration::from_micros(u64::from(*round * 20)).min(MAX_NAP);
        let Some(fd) = &self.fd else {
            std::thread::sleep(nap);
            return;
        };
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        if let Err(e) = ppoll(&mut fds, Some(TimeSpec::from_duration(nap)), None) {
            log::debug!("poll on the SIGCHLD signalfd: {e}");
        }
        // Drain: the signal stays pending until read, and poll would return at once.
        while let Ok(Some(info)) = fd.read_signal() {
            if self.tracees != 0
                && crate::target::procfs::tgid_of(info.ssi_pid as i32) != Some(self.tracees)
            {
                self.foreign = true;
            }
        }
    }
}

impl ChildEvents {
    /// Sleeps until a tracee changes state, at most `max` (a live change keeps this short:
    /// a thread at a breakpoint waits for the answer).
    pub(crate) fn pause_at_most(&mut self, max: Duration) {
        let Some(fd) = &self.fd else {
            std::thread::sleep(max);
            return;
        };
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        if let Err(e) = ppoll(&mut fds, Some(TimeSpec::from_duration(max)), None) {
            log::debug!("poll on the SIGCHLD signalfd: {e}");
        }
        while let Ok(Some(info)) = fd.read_signal() {
            if self.tracees != 0
                && crate::target::procfs::tgid_of(info.ssi_pid as i32) != Some(self.tracees)
            {
                self.foreign = true;
            }
        }
    }
}

impl Drop for ChildEvents {
    fn drop(&mut self) {
        self.fd = None;
        if let Some(old) = self.old_mask.take() {
            if let Err(e) = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None) {
                log::warn!("cannot restore the signal mask: {e}");
            }
            // A SIGCHLD about the caller's own children went to us: let its handler see one.
            if self.foreign && !old.contains(Signal::SIGCHLD) {
                let _ = raise(Signal::SIGCHLD);
            }
        }
    }
}
