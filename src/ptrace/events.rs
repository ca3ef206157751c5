//! Waking up when a tracee changes state, so that polling for its stop neither spins (the
//! threads we wait for need the CPU to reach their stop) nor oversleeps.
//!
//! Every ptrace stop sends the tracer SIGCHLD. With SIGCHLD blocked in the calling thread (and
//! in the reaper thread it starts, which inherits the mask), the signal stays pending and a
//! `signalfd` becomes readable: `poll` on it sleeps until the next stop or the timeout. Where
//! the signal goes elsewhere (another thread of a library caller that does not block it), the
//! timeout bounds the wait anyway. SIGCHLDs we consume that were not about our tracees are
//! raised again when we are done, for the caller's own handler.
//!
//! The same signals spare the live path most of its looks for anyone's report: a `waitpid` for
//! any tracee walks the list of every one (tens of µs at 1,000 threads), and no tracee can have
//! a report that no SIGCHLD announced — when SIGCHLDs reach us. Whether they do is checked: a
//! look is still made at least every `SWEEP_EVERY`, and one that finds an unannounced report
//! turns the gate off for good (another thread of the caller takes them, or the caller's
//! SIGCHLD is ignored or SA_NOCLDSTOP, and stops send none).

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask, raise};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::time::TimeSpec;

/// The longest a wait sleeps without news (the deadline checks run at least this often).
const MAX_NAP: Duration = Duration::from_millis(1);
/// How often anyone's reports are looked for without a SIGCHLD announcing one: the longest a
/// thread at a breakpoint waits if a SIGCHLD is lost, once (the gate is then off).
const SWEEP_EVERY: Duration = Duration::from_micros(500);

#[derive(Debug)]
pub(crate) struct ChildEvents {
    fd: Option<SignalFd>,
    /// The thread's signal mask before we blocked SIGCHLD.
    old_mask: Option<SigSet>,
    /// Whether a consumed SIGCHLD came from a process that is not our tracee.
    foreign: bool,
    tracees: i32,
    /// A SIGCHLD was read since the last look for anyone's report that found none.
    news: bool,
    /// A report came that no SIGCHLD announced: every look is made (`may_have_reports`).
    unannounced: bool,
    last_sweep: Option<Instant>,
    /// Threads whose SIGCHLD was found to be about our tracees: asked about once each (every
    /// breakpoint trap sends one, and asking costs a `/proc` read).
    own: std::collections::HashSet<i32>,
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
            news: true,
            unannounced: false,
            last_sweep: None,
            own: Default::default(),
        }
    }

    /// No wake-ups: waits sleep (for a process another loop of ours traces and reaps).
    pub(crate) fn none() -> ChildEvents {
        ChildEvents {
            fd: None,
            old_mask: None,
            foreign: false,
            tracees: 0,
            news: true,
            unannounced: true,
            last_sweep: None,
            own: Default::default(),
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
        self.take_signals();
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
        self.take_signals();
    }
}

impl ChildEvents {
    /// Reads every SIGCHLD pending for us: news of some tracee (or a foreign child).
    fn take_signals(&mut self) {
        let Some(fd) = &self.fd else {
            return;
        };
        while let Ok(Some(info)) = fd.read_signal() {
            self.news = true;
            let from = info.ssi_pid as i32;
            if self.tracees == 0 || self.foreign || self.own.contains(&from) {
                continue;
            }
            if crate::target::procfs::tgid_of(from) == Some(self.tracees) {
                self.own.insert(from);
            } else {
                self.foreign = true;
            }
        }
    }

    /// Whether a look for anyone's report is worth making: a SIGCHLD came since the last one
    /// that found none, SIGCHLDs are not known to reach us, or `SWEEP_EVERY` has passed.
    pub(crate) fn may_have_reports(&mut self) -> bool {
        self.take_signals();
        self.news
            || self.unannounced
            || self.fd.is_none()
            || self.last_sweep.is_none_or(|t| t.elapsed() >= SWEEP_EVERY)
    }

    /// After a look for anyone's report: `found`, or none (then no news is left until the next
    /// SIGCHLD). A report found with no news is checked against the SIGCHLD it should have
    /// sent meanwhile; missing, the gate is off.
    pub(crate) fn looked(&mut self, found: bool) {
        if found {
            if !self.news && !self.unannounced {
                self.take_signals();
                if !self.news {
                    log::debug!("a report came without a SIGCHLD: looking for reports every time");
                    self.unannounced = true;
                }
            }
        } else {
            self.news = false;
            self.last_sweep = Some(Instant::now());
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The gate on looking for anyone's reports. The SIGCHLD is sent to this thread itself: one
    /// from a child's exit goes to whichever thread of the process does not block it (the test
    /// harness has many), which is the loss the gate must survive, not what it is tested with.
    #[test]
    fn reports_are_looked_for_when_a_sigchld_announces_them_or_when_none_could() {
        let me = std::process::id() as i32;
        let mut events = ChildEvents::new(me);
        assert!(events.fd.is_some(), "a signalfd on this kernel");
        assert!(events.may_have_reports(), "nothing is known at first");
        let looked = Instant::now();
        events.looked(false);
        let asked = events.may_have_reports();
        if looked.elapsed() < SWEEP_EVERY {
            assert!(!asked, "no news since a look that found nothing");
        }
        // raise: to the calling thread.
        raise(Signal::SIGCHLD).expect("a signal to this thread");
        assert!(events.may_have_reports(), "a SIGCHLD came");
        events.looked(true);
        assert!(!events.unannounced, "that report was announced");
        events.looked(false);
        // A report found with no SIGCHLD for it (taken by another thread, or never sent): from
        // then on every look is made.
        events.looked(true);
        assert!(events.unannounced);
        events.looked(false);
        assert!(events.may_have_reports());
        assert!(!events.foreign, "the SIGCHLDs were this process's own");
    }
}
