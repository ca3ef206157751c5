//! `status`: what timeskew state a process holds, read from the target without stopping it.

use crate::error::Result;
use crate::report::{ClockOffset, Status};
use crate::skew::{Clock, Offset, deadline};
use crate::state::data_page;
use crate::state::{self, Existing};
use crate::target::Target;

/// What timeskew state `pid` holds, without stopping it.
pub fn status(pid: i32) -> Result<Status> {
    let target = Target::open(pid)?;
    let existing = state::find(&target)?;
    Ok(status_of(pid, existing.as_ref()))
}

pub(crate) fn status_of(pid: i32, existing: Option<&Existing>) -> Status {
    let Some(e) = existing else {
        return Status {
            pid,
            injected: false,
            trampoline: None,
            layout_version: None,
            clocks: Vec::new(),
            generation: 0,
            expires_in: None,
        };
    };
    let clocks = (0..=data_page::MAX_CLOCK_ID)
        .filter(|id| e.data.params.mask & (1 << id) != 0)
        .filter_map(|id| {
            Some(ClockOffset {
                clock: Clock::from_id(id as u32)?,
                offset: Offset::from_nanos(e.data.params.offsets_ns[id]),
            })
        })
        .collect();
    let params = &e.data.params;
    Status {
        pid,
        injected: e.hooks_live,
        trampoline: Some(e.code_addr),
        layout_version: Some(data_page::LAYOUT_VERSION),
        clocks,
        generation: e.data.generation,
        expires_in: if params.is_open_ended() {
            None
        } else {
            Some(deadline::remaining(pid, params.mask, &params.expires_ns).unwrap_or_default())
        },
    }
}
