//! Changing the target: what can be worked out before the stop (`plan`), where the pages go
//! (`placement`), the steps under stop (`install`) and their undo log (`transaction`).

pub(crate) mod install;
pub(crate) mod live;
pub(crate) mod placement;
pub(crate) mod plan;
pub(crate) mod transaction;

use crate::error::Error;
use crate::fake_clock::data_page::PAGE_SIZE;

/// Both pages: code (r-x) then data (rw-).
pub(crate) const PAGES_LEN: u64 = 2 * PAGE_SIZE;

pub(crate) fn unsafe_to_patch(pid: i32, symbol: &'static str, reason: String) -> Error {
    Error::UnsafeToPatch {
        pid,
        symbol,
        reason,
    }
}
