//! Letting go of a held process: each thread detached with the signals that arrived while we
//! held it re-delivered, and threads killed meanwhile reaped so that none is left for the
//! group leader's exit to wait on.

use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::stop::{HeldThread, Report, StoppedProcess, poll, signal_name};
use crate::target::procfs;

/// How long `Drop` keeps trying to detach or reap threads that are on their way out.
const RELEASE_DEADLINE: Duration = Duration::from_millis(300);

impl StoppedProcess {
    /// Lets one thread go: PTRACE_DETACH (with its first pending signal when it sits in a
    /// signal-delivery-stop), the other pending signals sent after it. `false` when the thread
    /// is not in a stop any more: it is on its way out (killed while held).
    fn release(&self, t: &mut HeldThread) -> bool {
        // PTRACE_DETACH delivers its signal only from a signal-delivery-stop.
        let first = if t.in_signal_stop && !t.pending.is_empty() {
            Some(t.pending.remove(0))
        } else {
            None
        };
        match crate::ptrace::raw::ptrace_detach(t.tid, first.unwrap_or(0)) {
            Ok(()) => {}
            Err(Errno::ESRCH) => {
                if let Some(sig) = first {
                    t.pending.insert(0, sig);
                }
                return false;
            }
            Err(e) => log::warn!("pid {}: detaching thread {} failed: {e}", self.pid, t.tid),
        }
        for sig in t.pending.drain(..) {
            // Further signals cannot ride on the detach: send them to the same thread.
            let name = signal_name(sig);
            match crate::ptrace::raw::tgkill_raw(self.pid, t.tid.as_raw(), sig) {
                Ok(()) => {}
                // The thread is gone, and the signal with it.
                Err(Errno::ESRCH) => log::debug!("pid {}: {name} not re-delivered: gone", self.pid),
                Err(e) => log::warn!("pid {}: re-delivering {name} failed: {e}", self.pid),
            }
        }
        true
    }

    /// Threads that were not in a stop when we let go are dying: each is reaped as a zombie (or
    /// detached if it stops again), round-robin, so that no traced zombie of ours is left for
    /// a group leader's exit to wait on — the leader can only be reaped after the others.
    fn reap_dying(&mut self, mut dying: Vec<HeldThread>) {
        let deadline = Instant::now() + RELEASE_DEADLINE;
        let mut round = 0;
        while !dying.is_empty() {
            let mut still = Vec::new();
            for mut t in dying {
                match poll(self.pid, t.tid, "release a thread") {
                    Ok(Some(Report::Exited)) | Err(_) => {}
                    Ok(Some(_)) => {
                        if !self.release(&mut t) {
                            still.push(t);
                        }
                    }
                    Ok(None) => still.push(t),
                }
            }
            dying = still;
            if dying.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                // Gone or going: nothing of ours is left in it. Otherwise say so.
                let level = if procfs::task_info(self.pid, None).is_ok_and(|i| i.state != 'Z') {
                    log::Level::Warn
                } else {
                    log::Level::Debug
                };
                log::log!(
                    level,
                    "pid {}: {} thread(s) neither stopped nor exited; the kernel lets them go \
                     when this process exits",
                    self.pid,
                    dying.len()
                );
                return;
            }
            self.events.pause(&mut round);
        }
    }
}

impl Drop for StoppedProcess {
    fn drop(&mut self) {
        if !self.owned {
            for t in self.threads.drain(..) {
                for sig in t.pending {
                    if let Err(e) = crate::ptrace::raw::tgkill_raw(self.pid, t.tid.as_raw(), sig) {
                        log::warn!(
                            "pid {}: re-queueing {} failed: {e}",
                            self.pid,
                            signal_name(sig)
                        );
                    }
                }
            }
            return;
        }
        let threads: Vec<HeldThread> = self.threads.drain(..).collect();
        let mut dying = Vec::new();
        for mut t in threads {
            if !self.release(&mut t) {
                dying.push(t);
            }
        }
        if !dying.is_empty() {
            self.reap_dying(dying);
        }
    }
}
