//! `status`: what timeskew state a process holds, read from the target without stopping it.

use crate::error::Result;
use crate::report::Status;
use crate::state::{self, status::status_of};
use crate::target::Target;

/// What timeskew state `pid` holds, without stopping it.
pub fn status(pid: i32) -> Result<Status> {
    let target = Target::open(pid)?;
    let existing = state::find(&target)?;
    Ok(status_of(pid, existing.as_ref()))
}
