//! The target's view of the clocks: what each clock reads *in the target* (time namespaces
//! shift the monotonic and boottime families), used for the deadlines of `--duration` — per
//! clock, the real reading at which the skew ends by itself, stored in the target so it ends on
//! time even when timeskew is killed — and to refuse an offset that would make a clock read
//! negative there.

use std::time::Duration;

use nix::time::{ClockId, clock_gettime};

use crate::error::{Error, Result};
use crate::fake_clock::data_page::{MAX_CLOCK_ID, NEVER, Params};
use crate::skew::{Clock, NegativeClock, Offset};
use crate::target::procfs;

/// Clock ids whose readings a time namespace shifts by its monotonic offset…
const MONOTONIC_FAMILY: [u32; 3] = [1, 4, 6]; // MONOTONIC, MONOTONIC_RAW, MONOTONIC_COARSE
/// … and by its boottime offset.
const BOOTTIME_FAMILY: [u32; 2] = [7, 9]; // BOOTTIME, BOOTTIME_ALARM

/// Expiry per clock id for the clocks in `mask`, `duration` from now, in `pid`'s view.
pub(crate) fn expiries(pid: i32, mask: u32, duration: Duration) -> Result<[i64; MAX_CLOCK_ID + 1]> {
    let shift = NamespaceShift::of(pid);
    let span = i64::try_from(duration.as_nanos()).unwrap_or(NEVER);
    let mut out = [NEVER; MAX_CLOCK_ID + 1];
    for (id, slot) in out.iter_mut().enumerate() {
        if mask & (1 << id) == 0 {
            continue;
        }
        let ns = shift.reading(pid, id as u32, "read the clock to compute the deadline")?;
        *slot = ns.saturating_add(span);
    }
    Ok(out)
}

/// What each clock of `mask` reads in `pid` now (without any skew), in ns; 0 elsewhere.
pub(crate) fn now(pid: i32, mask: u32) -> Result<[i64; MAX_CLOCK_ID + 1]> {
    let shift = NamespaceShift::of(pid);
    let mut out = [0; MAX_CLOCK_ID + 1];
    for (id, slot) in out.iter_mut().enumerate() {
        if mask & (1 << id) != 0 {
            *slot = shift.reading(pid, id as u32, "read the target's clocks")?;
        }
    }
    Ok(out)
}

/// Remaining time until the earliest deadline among `mask`'s clocks, seen from `pid`; `None`
/// when nothing expires.
pub(crate) fn remaining(
    pid: i32,
    mask: u32,
    expires: &[i64; MAX_CLOCK_ID + 1],
) -> Option<Duration> {
    let now = expiries(pid, mask, Duration::ZERO).ok()?;
    (0..=MAX_CLOCK_ID)
        .filter(|&id| mask & (1 << id) != 0 && expires[id] != NEVER)
        .map(|id| Duration::from_nanos(expires[id].saturating_sub(now[id]).max(0) as u64))
        .min()
}

/// Refuses `params` for `pid` if any selected clock, shifted by its offset, would read negative
/// in `pid` (as `pid` sees the clock: time namespaces included). Programs do not expect it —
/// CPython's `time.sleep` fails with EINVAL, Node reads 2^64 − n ns, absolute sleeps spin — and
/// the kernel refuses the same for time namespaces (ERANGE). Among several offending clocks the
/// one that reads least is named, so the bound given holds for all of them. Reads no clock for
/// a non-negative offset.
pub(crate) fn check_not_negative(pid: i32, params: &Params) -> Result<()> {
    match negative_clock(pid, params)? {
        None => Ok(()),
        Some(refusal) => Err(Error::NegativeClock { pid, refusal }),
    }
}

/// The clock [`check_not_negative`] refuses for, if any.
pub(crate) fn negative_clock(pid: i32, params: &Params) -> Result<Option<NegativeClock>> {
    let shift = NamespaceShift::of(pid);
    let mut worst: Option<NegativeClock> = None;
    for clock in Clock::ALL {
        let id = clock.id() as usize;
        let offset = params.lowest_offset(id);
        if params.mask & (1 << id) == 0 || offset >= 0 {
            continue;
        }
        let reading_ns = shift.reading(pid, clock.id(), "read the clock to check the offset")?;
        if reading_ns.saturating_add(offset) < 0 && worst.is_none_or(|w| reading_ns < w.reading_ns)
        {
            worst = Some(NegativeClock {
                clock,
                offset: Offset::from_nanos(offset),
                reading_ns,
            });
        }
    }
    Ok(worst)
}

/// How much `pid`'s monotonic and boottime clocks read more than ours (ns): zero when it is in
/// our time namespace, else the difference of the two namespaces' offsets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct NamespaceShift {
    mono: i64,
    boot: i64,
}

impl NamespaceShift {
    fn of(pid: i32) -> NamespaceShift {
        let me = std::process::id() as i32;
        let ns = procfs::namespace;
        if pid == me || (ns(pid, "time").is_some() && ns(pid, "time") == ns(me, "time")) {
            return NamespaceShift::default();
        }
        let (theirs, ours) = (namespace_offsets(pid), namespace_offsets(me));
        NamespaceShift {
            mono: theirs.0 - ours.0,
            boot: theirs.1 - ours.1,
        }
    }

    /// Clock `id` as `pid` reads it now (without any skew), in ns.
    fn reading(self, pid: i32, id: u32, step: &'static str) -> Result<i64> {
        let now =
            clock_gettime(ClockId::from_raw(id as libc::clockid_t)).map_err(|e| Error::Io {
                pid,
                step,
                source: e.into(),
            })?;
        let ns = now.tv_sec() as i64 * 1_000_000_000 + now.tv_nsec() as i64;
        Ok(if MONOTONIC_FAMILY.contains(&id) {
            ns + self.mono
        } else if BOOTTIME_FAMILY.contains(&id) {
            ns + self.boot
        } else {
            ns
        })
    }
}

/// The monotonic and boottime offsets (ns) of the time namespace `pid` lives in; zero in the
/// initial namespace or on kernels without time namespaces.
///
/// `/proc/PID/timens_offsets` shows the namespace of PID's *future children*; that is its own
/// unless it called unshare(CLONE_NEWTIME) without exec'ing since. Then another process that
/// lives in PID's namespace (and whose children do too) tells the offsets.
fn namespace_offsets(pid: i32) -> (i64, i64) {
    let link = procfs::namespace;
    let own = link(pid, "time");
    if own.is_none() || own == link(pid, "time_for_children") {
        return read_offsets(pid);
    }
    let witness = procfs::all_pids()
        .into_iter()
        .find(|&p| link(p, "time") == own && link(p, "time_for_children") == own);
    match witness {
        Some(p) => read_offsets(p),
        None => {
            log::debug!(
                "pid {pid}: no process shows the offsets of its time namespace; assuming none"
            );
            (0, 0)
        }
    }
}

fn read_offsets(pid: i32) -> (i64, i64) {
    procfs::timens_offsets(pid).map_or((0, 0), |text| parse_offsets(&text))
}

/// `monotonic   -100  0` / `boottime  0  0` lines → (monotonic, boottime) in ns.
fn parse_offsets(text: &str) -> (i64, i64) {
    let mut mono = 0;
    let mut boot = 0;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [name, sec, nsec] = f.as_slice() {
            let v =
                sec.parse::<i64>().unwrap_or(0) * 1_000_000_000 + nsec.parse::<i64>().unwrap_or(0);
            match *name {
                "monotonic" | "1" => mono = v,
                "boottime" | "7" => boot = v,
                _ => {}
            }
        }
    }
    (mono, boot)
}

impl crate::skew::Skew {
    /// The clock this skew would make read negative in process `pid` (as `pid` sees it: time
    /// namespaces included), if any: [`inject`](crate::inject) refuses such a skew, since
    /// programs do not expect a negative clock.
    pub fn negative_clock(&self, pid: i32) -> crate::Result<Option<NegativeClock>> {
        negative_clock(pid, &self.params())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;

    use super::*;
    use crate::skew::Skew;

    const SEC: i64 = 1_000_000_000;

    fn now(id: libc::clockid_t) -> i64 {
        let t = clock_gettime(ClockId::from_raw(id)).unwrap();
        t.tv_sec() as i64 * SEC + t.tv_nsec() as i64
    }

    fn me() -> i32 {
        std::process::id() as i32
    }

    /// `sleep 60` in a new time namespace whose monotonic and boottime clocks read `mono_s` and
    /// `boot_s` seconds less than ours. Spawn returns after its exec, which moves it into the
    /// namespace.
    pub(crate) fn in_time_namespace(mono_s: i64, boot_s: i64) -> std::process::Child {
        // A namespace's offsets count from the initial namespace's clocks, not from ours.
        let (own_mono, own_boot) = read_offsets(me());
        let offsets = std::ffi::CString::new(format!(
            "monotonic {} 0\nboottime {} 0\n",
            own_mono / SEC - mono_s,
            own_boot / SEC - boot_s
        ))
        .unwrap();
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("60");
        // SAFETY: only async-signal-safe calls between fork and exec; `offsets` is prepared.
        unsafe {
            cmd.pre_exec(move || {
                if libc::unshare(libc::CLONE_NEWTIME) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let fd = libc::open(c"/proc/self/timens_offsets".as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let bytes = offsets.as_bytes();
                let n = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
                libc::close(fd);
                if n != bytes.len() as isize {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn()
            .expect("sleep in a new time namespace (needs root)")
    }

    #[test]
    fn expiries_are_now_plus_duration_for_selected_clocks_only() {
        let before = now(libc::CLOCK_MONOTONIC);
        let e = expiries(me(), 0b11, Duration::from_secs(10)).unwrap();
        assert!(e[1] >= before + 10 * SEC && e[1] < before + 11 * SEC);
        assert!(e[0] > 1_700_000_000 * SEC);
        assert!(e[2..].iter().all(|&x| x == NEVER));
        let left = remaining(me(), 0b11, &e).unwrap();
        assert!(left <= Duration::from_secs(10) && left > Duration::from_secs(9));
    }

    #[test]
    fn refusal_names_the_clock_its_reading_and_the_bound() {
        let r = NegativeClock {
            clock: Clock::Monotonic,
            offset: Offset::from_nanos(-600 * SEC),
            reading_ns: 312 * SEC + 402_999_999,
        };
        assert_eq!(
            r.to_string(),
            "refusing --offset -600s for clock monotonic: it reads 312.402s in this process \
             (time since boot), so the most negative offset allowed is -312.402s"
        );
        assert_eq!(r.most_negative_allowed().as_nanos(), -312_402_000_000);
        let e = Error::NegativeClock {
            pid: 123,
            refusal: r,
        };
        assert_eq!(e.to_string(), format!("pid 123: {r}; nothing was changed"));
        let r = NegativeClock {
            clock: Clock::Realtime,
            offset: Offset::from_nanos(-SEC / 2),
            reading_ns: 7_000_000,
        };
        assert!(
            r.to_string().ends_with(
                "it reads 0.007s in this process (wall-clock time since 1970-01-01 UTC), so the \
                 most negative offset allowed is -0.007s"
            ),
            "{r}"
        );
    }

    #[test]
    fn offsets_that_keep_every_clock_non_negative_pass() {
        let mono = now(libc::CLOCK_MONOTONIC);
        let skew = |text: &str, clocks: &str| {
            Skew::new(text.parse().unwrap())
                .with_clocks(clocks.parse().unwrap())
                .params()
        };
        let all = "realtime,monotonic,monotonic-raw,realtime-coarse,monotonic-coarse,boottime,tai";
        for ok in ["+36500d", "0s", "-1ns", "-1s"] {
            check_not_negative(me(), &skew(ok, all)).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        // Just inside the uptime; the clock only grows meanwhile.
        let inside = Offset::from_nanos(-(mono - SEC)).to_string();
        check_not_negative(me(), &skew(&inside, "monotonic")).unwrap();
    }

    #[test]
    fn offsets_that_make_a_clock_negative_are_refused_naming_the_least_reading_clock() {
        let beyond = |ns: i64| Offset::from_nanos(-(ns + 1000 * SEC)).to_string();
        let params = |text: &str, clocks: &str| {
            Skew::new(text.parse().unwrap())
                .with_clocks(clocks.parse().unwrap())
                .params()
        };
        let mono = now(libc::CLOCK_MONOTONIC);
        let over = beyond(mono);
        let e = check_not_negative(me(), &params(&over, "monotonic")).unwrap_err();
        let Error::NegativeClock { pid, refusal } = &e else {
            panic!("{e}")
        };
        assert_eq!(*pid, me());
        assert_eq!(refusal.clock, Clock::Monotonic);
        assert_eq!(refusal.offset.to_string(), over);
        assert!(refusal.reading_ns >= mono && refusal.reading_ns < mono + 60 * SEC);
        // -36500 days (100 years) passes the parser; no clock may go before its epoch either.
        for clock in ["realtime", "realtime-coarse", "tai"] {
            let e = negative_clock(me(), &params("-36500d", clock))
                .unwrap()
                .unwrap();
            assert_eq!(e.clock.name(), clock);
        }
        // Several clocks too far: the bound given is that of the one that reads least.
        let e = negative_clock(
            me(),
            &params("-36500d", "realtime,boottime,monotonic-coarse"),
        )
        .unwrap()
        .unwrap();
        let least = if now(libc::CLOCK_MONOTONIC_COARSE) <= now(libc::CLOCK_BOOTTIME) {
            Clock::MonotonicCoarse
        } else {
            Clock::Boottime
        };
        assert_eq!(e.clock, least, "{e}");
        // Only selected clocks count.
        assert_eq!(
            negative_clock(me(), &params(&over, "realtime")).unwrap(),
            None
        );
    }

    #[test]
    fn the_targets_time_namespace_is_what_counts() {
        let (mono, boot) = (now(libc::CLOCK_MONOTONIC), now(libc::CLOCK_BOOTTIME));
        // Looks freshly booted: its clocks read about 30 s (and 40 s).
        let mut child = in_time_namespace(mono / SEC - 30, boot / SEC - 40);
        let pid = child.id() as i32;
        let shift = NamespaceShift::of(pid);
        let seen = (
            shift.reading(pid, 1, "test").unwrap(),
            shift.reading(pid, 7, "test").unwrap(),
        );
        let e = negative_clock(
            pid,
            &Skew::new("-60s".parse().unwrap())
                .with_clocks("monotonic,realtime".parse().unwrap())
                .params(),
        );
        let ok = check_not_negative(
            pid,
            &Skew::new("-10s".parse().unwrap())
                .with_clocks("monotonic,boottime".parse().unwrap())
                .params(),
        );
        let far = expiries(pid, 1 << 1, Duration::from_secs(10));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(seen.0 > 29 * SEC && seen.0 < 40 * SEC, "{seen:?}");
        assert!(seen.1 > 39 * SEC && seen.1 < 50 * SEC, "{seen:?}");
        let e = e.unwrap().expect("-60s on a clock that reads 30 s");
        assert_eq!(e.clock, Clock::Monotonic);
        assert!(e.reading_ns > 29 * SEC && e.reading_ns < 40 * SEC, "{e}");
        ok.unwrap();
        let far = far.unwrap()[1];
        assert!(
            far > 39 * SEC && far < 50 * SEC,
            "deadline in its view: {far}"
        );
        // Seen from inside its own namespace, nothing is shifted.
        assert_eq!(NamespaceShift::of(me()), NamespaceShift::default());
    }

    #[test]
    fn offsets_file_parsing() {
        let text = "monotonic        -100         5\nboottime            7         0\n";
        assert_eq!(parse_offsets(text), (-100 * SEC + 5, 7 * SEC));
        assert_eq!(parse_offsets(""), (0, 0));
    }
}
