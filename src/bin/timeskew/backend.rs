//! What the commands run against: the [`Backend`] trait, the real one ([`Isolated`]), and the
//! fan-out of one operation over the selected targets.

use std::cell::RefCell;

use serde::Serialize;
use serde::de::DeserializeOwned;
use timeskew::{InjectReport, RecoverReport, Skew, SlewRate, Status, TargetLock};

use crate::args::TargetArgs;
use crate::error::CliError;
use crate::isolate::in_helper;

/// The operations the commands run; the binary uses [`Isolated`] (the library, each change made
/// in a helper process), tests use a fake.
pub trait Backend {
    fn inject(&self, pid: i32, skew: &Skew) -> timeskew::Result<InjectReport>;
    fn recover(&self, pid: i32) -> timeskew::Result<RecoverReport>;
    /// Back to real time gradually (`recover --slew`): the status after the change.
    fn recover_slewed(&self, pid: i32, slew: SlewRate) -> timeskew::Result<Status>;
    fn status(&self, pid: i32) -> timeskew::Result<Status>;
    /// Lets go of the target locks held since the last changes (see [`Isolated`]).
    fn release_locks(&self) {}
    /// Ends the experiments of the timeskew followers (`inject --follow`) tracing any of `pids`,
    /// before any of their locks is taken: a follower recovers what it touched, taking locks.
    fn end_followers(&self, _pids: &[i32]) {}
}

/// The real library, each change made in a helper process (see `isolate.rs`).
///
/// The command takes the target's lock itself before starting the helper (which inherits it)
/// and keeps it until it has reported and exits, or until `release_locks`: racing commands then
/// finish in the order of their changes, and the last to finish has the last word.
#[derive(Default)]
pub struct Isolated {
    locks: RefCell<Vec<TargetLock>>,
}

impl Isolated {
    fn locked<T: Serialize + DeserializeOwned>(
        &self,
        pid: i32,
        op: impl FnOnce() -> timeskew::Result<T>,
    ) -> timeskew::Result<T> {
        let lock = TargetLock::acquire(pid)?;
        let result = in_helper(pid, op);
        self.locks.borrow_mut().push(lock);
        result
    }
}

impl Backend for Isolated {
    fn end_followers(&self, pids: &[i32]) {
        for &pid in pids {
            if let Err(e) = timeskew::follow::end_follower_of(pid) {
                log::warn!("{e}");
            }
        }
    }
    fn inject(&self, pid: i32, skew: &Skew) -> timeskew::Result<InjectReport> {
        self.locked(pid, || timeskew::inject(pid, skew))
    }
    fn recover(&self, pid: i32) -> timeskew::Result<RecoverReport> {
        self.locked(pid, || timeskew::recover(pid))
    }
    fn recover_slewed(&self, pid: i32, slew: SlewRate) -> timeskew::Result<Status> {
        self.locked(pid, || timeskew::recover_slewed(pid, slew))
    }
    // Reading needs no helper and no lock.
    fn status(&self, pid: i32) -> timeskew::Result<Status> {
        timeskew::status(pid)
    }
    fn release_locks(&self) {
        self.locks.borrow_mut().clear();
    }
}

/// The processes `args` select now.
pub fn resolve(args: &TargetArgs) -> Result<Vec<i32>, CliError> {
    let selection = args.selection();
    let pids = selection.resolve()?;
    if pids.is_empty() {
        return Err(CliError::NothingSelected(format!(
            "{selection}: no live process"
        )));
    }
    Ok(pids)
}

/// The result of one operation on one target.
pub struct Outcome<T> {
    pub pid: i32,
    pub result: timeskew::Result<T>,
}

/// Runs `op` on every pid; a failure does not stop the others.
pub fn for_each<T>(pids: &[i32], op: impl Fn(i32) -> timeskew::Result<T>) -> Vec<Outcome<T>> {
    pids.iter()
        .map(|&pid| Outcome {
            pid,
            result: op(pid),
        })
        .collect()
}

/// Whether `result`, a failure on `pid`, only says that the process has exited: it vanished
/// while we worked, or it is a zombie now (e.g. `recover --tree` with a child its parent has not
/// reaped yet, refused as a zombie).
pub fn is_gone<T>(pid: i32, result: &timeskew::Result<T>) -> bool {
    match result {
        Ok(_) => false,
        Err(timeskew::Error::NoSuchProcess { .. } | timeskew::Error::ProcessGone { .. }) => true,
        Err(_) => timeskew::select::has_exited(pid),
    }
}
