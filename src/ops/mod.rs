//! The three operations of the library, one file each.

pub(crate) mod follower;
pub(crate) mod inject;
pub(crate) mod manual;
pub(crate) mod recover;
pub(crate) mod status;

pub use inject::{inject, inject_traced};
pub use manual::ManualClock;
pub use recover::{recover, recover_slewed};
pub use status::status;
