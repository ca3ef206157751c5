//! What the commands run against: the [`Backend`] trait, the real one ([`Isolated`]), and the
//! fan-out of one operation over the selected targets.

use std::cell::RefCell;

use serde::Serialize;
use serde::de::DeserializeOwned;
use timeskew::follow::{Follower, FollowerUpdate};
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
    /// before any of their locks is taken: a follower recovers what it touched (or, with
    /// `slew`, slews it back), taking locks. Each of `pids` whose follower ended, with it.
    fn end_followers(&self, _pids: &[i32], _slew: Option<SlewRate>) -> Vec<(i32, Follower)> {
        Vec::new()
    }
    /// Gives the experiment of each follower tracing any of `pids` the fault `skew` (every
    /// process it follows but `pids`, which the caller injects, and every newcomer), before any
    /// of their locks is taken. What each followed pid's follower did.
    fn update_followers(&self, _pids: &[i32], _skew: &Skew) -> Vec<(i32, FollowerUpdate)> {
        Vec::new()
    }
    /// The timeskew follower tracing `pid`, if any.
    fn follower(&self, _pid: i32) -> Option<Follower> {
        None
    }
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
    fn end_followers(&self, pids: &[i32], slew: Option<SlewRate>) -> Vec<(i32, Follower)> {
        // Who follows whom, before the first end lets them all go.
        let followed: Vec<(i32, Follower)> = pids
            .iter()
            .filter_map(|&pid| Some((pid, timeskew::follow::follower_of(pid)?)))
            .collect();
        let mut ended: Vec<Follower> = Vec::new();
        for &(pid, follower) in &followed {
            if ended.contains(&follower) {
                continue;
            }
            match timeskew::follow::end_follower_of(pid, slew) {
                Ok(Some(_)) => ended.push(follower),
                Ok(None) => {}
                Err(e) => log::warn!("{e}"),
            }
        }
        followed
            .into_iter()
            .filter(|(_, f)| ended.contains(f))
            .collect()
    }
    fn update_followers(&self, pids: &[i32], skew: &Skew) -> Vec<(i32, FollowerUpdate)> {
        let mut asked: Vec<(Follower, Option<FollowerUpdate>)> = Vec::new();
        let mut updated = Vec::new();
        for &pid in pids {
            let Some(follower) = timeskew::follow::follower_of(pid) else {
                continue;
            };
            // One request per follower, however many of `pids` it follows.
            if !asked.iter().any(|(f, _)| *f == follower) {
                let update =
                    timeskew::follow::update_follower_of(pid, skew, pids).unwrap_or_else(|e| {
                        log::warn!("{e}");
                        None
                    });
                asked.push((follower, update));
            }
            if let Some((_, Some(update))) = asked.iter().find(|(f, _)| *f == follower) {
                updated.push((pid, update.clone()));
            }
        }
        updated
    }
    fn follower(&self, pid: i32) -> Option<Follower> {
        timeskew::follow::follower_of(pid)
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
