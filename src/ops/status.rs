//! `status`: what timeskew state a process holds, read from the target without stopping it;
//! and whether a timeskew follower traces it.

use crate::error::Result;
use crate::report::{Follower, Status};
use crate::state::{self, status::status_of};
use crate::target::{Target, procfs};

/// What timeskew state `pid` holds, without stopping it.
pub fn status(pid: i32) -> Result<Status> {
    let target = Target::open(pid)?;
    let existing = state::find(&target)?;
    Ok(status_of(pid, existing.as_ref()))
}

/// The name of a follower's tracer thread: what a followed process's `TracerPid` shows as its
/// `comm` (15 characters, the most a thread name holds).
pub(crate) const FOLLOWER_THREAD: &str = "timeskew-follow";

/// The timeskew follower (`inject --follow`) that traces `pid`, if any: none when `pid` is not
/// traced, or traced by something else (a debugger, strace, `timeskew run`).
pub fn follower_of(pid: i32) -> Option<Follower> {
    let (tracer, name) = procfs::tracer_of(pid)?;
    (name == FOLLOWER_THREAD).then(|| Follower {
        tracer,
        pid: procfs::tgid_of(tracer).unwrap_or(tracer),
    })
}
