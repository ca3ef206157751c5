//! Deadlines for `--duration`: per clock, the real reading (as the target sees that clock) at
//! which the skew ends by itself. Stored in the target, they end the skew on time even when
//! timeskew is killed.

use std::time::Duration;

use nix::time::{ClockId, clock_gettime};

use crate::error::{Error, Result};
use crate::layout::{MAX_CLOCK_ID, NEVER};

/// Clock ids whose readings a time namespace shifts by its monotonic offset…
const MONOTONIC_FAMILY: [u32; 3] = [1, 4, 6]; // MONOTONIC, MONOTONIC_RAW, MONOTONIC_COARSE
/// … and by its boottime offset.
const BOOTTIME_FAMILY: [u32; 2] = [7, 9]; // BOOTTIME, BOOTTIME_ALARM

/// Expiry per clock id for the clocks in `mask`, `duration` from now, in `pid`'s view.
pub fn expiries(pid: i32, mask: u32, duration: Duration) -> Result<[i64; MAX_CLOCK_ID + 1]> {
    let (mono, boot) = timens_offsets(pid);
    let span = i64::try_from(duration.as_nanos()).unwrap_or(NEVER);
    let mut out = [NEVER; MAX_CLOCK_ID + 1];
    for (id, slot) in out.iter_mut().enumerate() {
        if mask & (1 << id) == 0 {
            continue;
        }
        let now =
            clock_gettime(ClockId::from_raw(id as libc::clockid_t)).map_err(|e| Error::Io {
                pid,
                step: "read the clock to compute the deadline",
                source: e.into(),
            })?;
        let mut ns = now.tv_sec() as i64 * 1_000_000_000 + now.tv_nsec() as i64;
        if MONOTONIC_FAMILY.contains(&(id as u32)) {
            ns += mono;
        } else if BOOTTIME_FAMILY.contains(&(id as u32)) {
            ns += boot;
        }
        *slot = ns.saturating_add(span);
    }
    Ok(out)
}

/// Remaining time until the earliest deadline among `mask`'s clocks, seen from `pid`; `None`
/// when nothing expires.
pub fn remaining(pid: i32, mask: u32, expires: &[i64; MAX_CLOCK_ID + 1]) -> Option<Duration> {
    let now = expiries(pid, mask, Duration::ZERO).ok()?;
    (0..=MAX_CLOCK_ID)
        .filter(|&id| mask & (1 << id) != 0 && expires[id] != NEVER)
        .map(|id| Duration::from_nanos(expires[id].saturating_sub(now[id]).max(0) as u64))
        .min()
}

/// The target's time-namespace offsets (nanoseconds) for monotonic and boottime; zero outside
/// a time namespace or on kernels without them.
fn timens_offsets(pid: i32) -> (i64, i64) {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/timens_offsets")) else {
        return (0, 0);
    };
    let mut mono = 0;
    let mut boot = 0;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [name, sec, nsec] = f.as_slice() {
            let v =
                sec.parse::<i64>().unwrap_or(0) * 1_000_000_000 + nsec.parse::<i64>().unwrap_or(0);
            match *name {
                "monotonic" => mono = v,
                "boottime" => boot = v,
                _ => {}
            }
        }
    }
    (mono, boot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_are_now_plus_duration_for_selected_clocks_only() {
        let me = std::process::id() as i32;
        let before = clock_gettime(ClockId::CLOCK_MONOTONIC).unwrap();
        let e = expiries(me, 0b11, Duration::from_secs(10)).unwrap();
        let b = before.tv_sec() as i64 * 1_000_000_000 + before.tv_nsec() as i64;
        assert!(e[1] >= b + 10_000_000_000 && e[1] < b + 11_000_000_000);
        assert!(e[0] > 1_700_000_000_000_000_000);
        assert!(e[2..].iter().all(|&x| x == NEVER));
        let left = remaining(me, 0b11, &e).unwrap();
        assert!(left <= Duration::from_secs(10) && left > Duration::from_secs(9));
    }
}
