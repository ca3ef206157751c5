//! The reference model: what a fake must return for a real reading, in i128 nanoseconds,
//! written from the data page's documented semantics; and the parameter sets the tests build.

use crate::fake_clock::data_page::{self as layout, Params};

pub(super) const NS: i128 = 1_000_000_000;
pub(super) const US: i128 = 1_000_000;
pub(super) const HOUR_NS: i64 = 3600 * 1_000_000_000;
pub(super) const CENTURY_NS: i64 = 100 * 31_557_600 * 1_000_000_000; // 100 Julian years

pub(super) fn params(mask: u32, offsets: &[(usize, i64)]) -> Params {
    let mut p = Params {
        mask,
        ..Params::default()
    };
    for &(id, off) in offsets {
        p.offsets_ns[id] = off;
    }
    p
}

/// `p` with the given deadlines (`expires_ns`, real nanoseconds of that clock).
pub(super) fn with_deadlines(mut p: Params, deadlines: &[(usize, i64)]) -> Params {
    for &(id, d) in deadlines {
        p.expires_ns[id] = d;
    }
    p
}

// ---- the reference model: what a fake must return for a real reading -------------------

/// clock_gettime(id): shifted while selected and the real reading is below the deadline.
pub(super) fn model_clock(real_ns: i128, p: &Params, id: usize) -> i128 {
    if p.mask & (1 << id) != 0 && real_ns < p.expires_ns[id] as i128 {
        real_ns + p.offsets_ns[id] as i128
    } else {
        real_ns
    }
}

/// gettimeofday: follows CLOCK_REALTIME (mask bit 0, deadlines[0]), the offset floored to
/// microseconds, the real reading compared as `tv_usec * 1000` nanoseconds.
pub(super) fn model_gtod(real_us: i128, p: &Params) -> i128 {
    if p.mask & 1 != 0 && real_us * 1000 < p.expires_ns[0] as i128 {
        real_us + (p.offsets_ns[0] as i128).div_euclid(1000)
    } else {
        real_us
    }
}

/// time: floor(coarse + offset) while realtime is selected and the coarse reading is below
/// deadlines[0]; the coarse seconds otherwise.
pub(super) fn model_time(coarse_ns: i128, p: &Params) -> i64 {
    model_clock(coarse_ns, p, 0).div_euclid(NS) as i64
}

/// Whether time() must take its slow path (read CLOCK_REALTIME_COARSE) for real seconds
/// `t`: realtime selected, not past the deadline's second, and either in that second or
/// with a fractional offset.
pub(super) fn time_needs_slow_path(t: i64, p: &Params) -> bool {
    let dsec = match p.expires_ns[0] {
        layout::NEVER => i64::MAX,
        e => e.div_euclid(1_000_000_000),
    };
    p.mask & 1 != 0 && t <= dsec && (t == dsec || p.offsets_ns[0] % 1_000_000_000 != 0)
}
