//! The [`Status`] report of a target, built from what was found (or just written) in it.

use crate::fake_clock::data_page;
use crate::report::{ClockOffset, Status};
use crate::skew::{Clock, Offset};
use crate::state::Existing;
use crate::target::clocks;

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
            Some(clocks::remaining(pid, params.mask, &params.expires_ns).unwrap_or_default())
        },
    }
}
