//! The per-target lock: timeskew processes changing one target take turns.

use super::{Target, live_thread, procfs};
use crate::error::Result;

/// The per-target lock that makes timeskew processes changing one target take turns, held
/// while changing it; released on drop (or by the kernel when the last process holding it —
/// including a child that inherited it — exits).
///
/// While this process holds a target's lock, the operations on that target take no lock of
/// their own: a caller can hold it across several operations, or beyond one (the command line
/// holds it until it has printed its report and exits, so the order in which racing commands
/// finish is the order of their changes).
pub struct TargetLock {
    pid: i32,
    /// `None` when this process already held the lock: nothing to release then.
    lock: Option<nix::fcntl::Flock<std::fs::File>>,
}

/// The targets whose lock this process holds.
static HELD: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

impl TargetLock {
    /// Takes the lock of process `pid`, waiting for any other timeskew changing it.
    pub fn acquire(pid: i32) -> Result<TargetLock> {
        Target::lock(pid)
    }
}

impl Drop for TargetLock {
    fn drop(&mut self) {
        if let Some(lock) = self.lock.take() {
            // Every change was written under the lock, and this line is too: its timestamp
            // orders racing timeskews by their last write (the race attack of the campaign
            // reads it). Logged after the release, a holder descheduled in between logged
            // later than the next holder's whole turn (seen once in CI).
            log::debug!("pid {}: releasing the target lock", self.pid);
            drop(lock);
            if let Ok(mut held) = HELD.lock() {
                held.retain(|&p| p != self.pid);
            }
        }
    }
}

impl Target {
    /// Takes the per-target lock that serialises timeskew processes changing the same target;
    /// taken before the target is read, so what a process reads is what it changes.
    ///
    /// Two concurrent live updates could otherwise both fill the same spare parameter slot,
    /// one of them while readers already use it. The lock is an flock on the target's
    /// `/proc/PID` directory: no file of our own, released by the kernel if we die, and the inode
    /// is the same for every timeskew looking at that process (from the same PID namespace) while
    /// any of them holds it open. (Not `/proc/PID/mem`: it cannot be opened once the leader
    /// thread has exited, while the other threads still run.)
    pub fn lock(pid: i32) -> Result<TargetLock> {
        live_thread(pid)?;
        if HELD.lock().is_ok_and(|h| h.contains(&pid)) {
            return Ok(TargetLock { pid, lock: None });
        }
        let file = procfs::process_dir(pid)?;
        log::debug!("pid {pid}: waiting for the target lock");
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| procfs::errno_error(pid, pid, "lock the target", e))?;
        if let Ok(mut held) = HELD.lock() {
            held.push(pid);
        }
        Ok(TargetLock {
            pid,
            lock: Some(lock),
        })
    }
}
