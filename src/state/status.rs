//! The [`Status`] report of a target, built from what was found (or just written) in it.

use std::time::Duration;

use crate::fake_clock::data_page::{self, MAX_CLOCK_ID, Params, RATE_ONE};
use crate::report::{ClockOffset, ShapeStatus, Status};
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
            shape: None,
        };
    };
    let params = &e.data.params;
    // The offsets as they are now: with a program they change with time.
    let now = if params.program.is_some() {
        clocks::now(pid, params.mask).ok()
    } else {
        None
    };
    let clocks = (0..=data_page::MAX_CLOCK_ID)
        .filter(|id| e.data.params.mask & (1 << id) != 0)
        .filter_map(|id| {
            Some(ClockOffset {
                clock: Clock::from_id(id as u32)?,
                offset: Offset::from_nanos(match now {
                    Some(now) => params
                        .reading(id, now[id])
                        .map_or(0, |r| r.saturating_sub(now[id])),
                    None => params.offsets_ns[id],
                }),
            })
        })
        .collect();
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
        shape: shape_of(params, now.as_ref()),
    }
}

/// The shape `params` give the clocks at `now` (each clock's real reading), in words.
fn shape_of(params: &Params, now: Option<&[i64; MAX_CLOCK_ID + 1]>) -> Option<ShapeStatus> {
    let resolution = (params.resolution_ns > 1).then(|| Duration::from_nanos(params.resolution_ns));
    let program = params.program.as_ref();
    if program.is_none() && resolution.is_none() && !params.slow_reads {
        return None;
    }
    let mut shape = ShapeStatus {
        state: String::new(),
        rate: 1.0,
        left: None,
        of: None,
        strobe: None,
        resolution,
        slow_reads: params.slow_reads,
    };
    let (Some(p), Some(now)) = (program, now) else {
        return Some(shape);
    };
    let id = (0..=MAX_CLOCK_ID).find(|id| params.mask & (1 << id) != 0)?;
    if params.reading(id, now[id]).is_none() {
        shape.state = "ended (deadline passed)".into();
        return Some(shape);
    }
    let e = now[id].saturating_sub(p.anchors_ns[id]);
    // Before the switch the program still plays what was in force: describe what comes.
    let k = p
        .segments
        .iter()
        .rposition(|s| s.start_ns <= e.max(0))
        .unwrap_or(0);
    let seg = p.segments[k];
    let next = p.segments.get(k + 1);
    shape.rate = seg.rate as f64 / RATE_ONE as f64;
    if let Some(next) = next {
        shape.left = Some(Duration::from_nanos(
            next.start_ns.saturating_sub(e).max(0) as u64
        ));
        shape.of = Some(Duration::from_nanos(
            next.start_ns.saturating_sub(seg.start_ns).max(0) as u64,
        ));
    }
    let deviation = format_deviation(seg.rate);
    shape.state = match (seg.rate, next) {
        (0, Some(_)) => "suspended".into(),
        (0, None) => "frozen".into(),
        (RATE_ONE, _) => "real speed".into(),
        (_, Some(n)) if n.rate == RATE_ONE => {
            // Where the slew ends: real time again, or an offset.
            let end = p.anchors_ns[id].saturating_add(n.start_ns);
            let offset_then = params.reading(id, end).map_or(0, |r| r.saturating_sub(end));
            if offset_then.abs() < 1_000 {
                format!("returning to real time at {deviation}")
            } else {
                format!("slewing at {deviation}")
            }
        }
        _ => format!("running at {deviation}"),
    };
    shape.strobe = p.strobe.map(|s| {
        (
            Offset::from_nanos(s.delta_ns),
            Duration::from_nanos(s.period_ns),
        )
    });
    Some(shape)
}

/// A rate as people write it: `+500ppm` near 1, `2×` or `0.5×` further away.
fn format_deviation(rate: u64) -> String {
    let factor = rate as f64 / RATE_ONE as f64;
    let ppm = (factor - 1.0) * 1e6;
    if ppm.abs() < 10_000.0 {
        format!("{ppm:+.0}ppm")
    } else {
        format!("{factor}×")
    }
}
