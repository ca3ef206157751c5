//! The clocks the demo shows: the child's readings, the line they travel in, and the parent's own
//! real clocks to bracket them.

use std::io;

use crate::error::CliError;

pub(super) const NS_PER_S: i128 = 1_000_000_000;

/// One reading of every clock the demo shows, as the child's libc returns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Readings {
    /// `clock_gettime(CLOCK_REALTIME)`, ns.
    pub(super) realtime_ns: i128,
    /// `gettimeofday`, µs.
    pub(super) gettimeofday_us: i128,
    /// `time()`, s.
    pub(super) time_s: i128,
    /// `clock_gettime(CLOCK_MONOTONIC)`, ns.
    pub(super) monotonic_ns: i128,
}

impl Readings {
    pub(super) fn now() -> io::Result<Readings> {
        Ok(Readings {
            realtime_ns: clock_gettime(libc::CLOCK_REALTIME)?,
            gettimeofday_us: gettimeofday()?,
            time_s: time()?,
            monotonic_ns: clock_gettime(libc::CLOCK_MONOTONIC)?,
        })
    }

    pub(super) fn to_line(self) -> String {
        format!(
            "realtime_ns={} gettimeofday_us={} time_s={} monotonic_ns={}",
            self.realtime_ns, self.gettimeofday_us, self.time_s, self.monotonic_ns
        )
    }

    pub(super) fn parse(line: &str) -> Result<Readings, String> {
        let bad = || format!("unexpected line from the child: {line:?}");
        let mut fields = [None; 4];
        for field in line.split_whitespace() {
            let (key, value) = field.split_once('=').ok_or_else(bad)?;
            let index = match key {
                "realtime_ns" => 0,
                "gettimeofday_us" => 1,
                "time_s" => 2,
                "monotonic_ns" => 3,
                _ => return Err(bad()),
            };
            fields[index] = Some(value.parse::<i128>().map_err(|_| bad())?);
        }
        match fields {
            [
                Some(realtime_ns),
                Some(gettimeofday_us),
                Some(time_s),
                Some(monotonic_ns),
            ] => Ok(Readings {
                realtime_ns,
                gettimeofday_us,
                time_s,
                monotonic_ns,
            }),
            _ => Err(bad()),
        }
    }
}

fn clock_gettime(clock: libc::clockid_t) -> io::Result<i128> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec that outlives the call.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(i128::from(ts.tv_sec) * NS_PER_S + i128::from(ts.tv_nsec))
}

fn gettimeofday() -> io::Result<i128> {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    // SAFETY: `tv` is a valid, writable timeval that outlives the call; the timezone argument
    // may be null.
    if unsafe { libc::gettimeofday(&mut tv, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(i128::from(tv.tv_sec) * 1_000_000 + i128::from(tv.tv_usec))
}

fn time() -> io::Result<i128> {
    // SAFETY: with a null argument time() only returns the value and writes nothing.
    let t = unsafe { libc::time(std::ptr::null_mut()) };
    if t == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(i128::from(t))
}

/// The parent's own, unskewed clocks.
#[derive(Debug, Clone, Copy)]
pub(super) struct RealClocks {
    pub(super) realtime_ns: i128,
    pub(super) monotonic_ns: i128,
}

impl RealClocks {
    pub(super) fn now() -> Result<RealClocks, CliError> {
        let read =
            |clock| clock_gettime(clock).map_err(|e| CliError::io("cannot read the real clock", e));
        Ok(RealClocks {
            realtime_ns: read(libc::CLOCK_REALTIME)?,
            monotonic_ns: read(libc::CLOCK_MONOTONIC)?,
        })
    }
}

/// Readings consistent with one instant: gettimeofday and time() truncate `realtime_ns`.
#[cfg(test)]
pub(super) fn seen_at(realtime_ns: i128, monotonic_ns: i128) -> Readings {
    Readings {
        realtime_ns,
        gettimeofday_us: realtime_ns.div_euclid(1_000),
        time_s: realtime_ns.div_euclid(NS_PER_S),
        monotonic_ns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i128 = NS_PER_S;

    #[test]
    fn readings_line_round_trips_and_rejects_garbage() {
        let r = seen_at(-5, 1);
        assert_eq!(Readings::parse(&r.to_line()).unwrap(), r);
        for bad in [
            "",
            "ready",
            "realtime_ns=1 gettimeofday_us=2 time_s=3",
            "realtime_ns=x gettimeofday_us=2 time_s=3 monotonic_ns=4",
            "foo=1 realtime_ns=1 gettimeofday_us=2 time_s=3 monotonic_ns=4",
        ] {
            let e = Readings::parse(bad).unwrap_err();
            assert!(e.contains("unexpected line from the child"), "{e}");
        }
    }

    #[test]
    fn own_clocks_are_readable() {
        let a = Readings::now().unwrap();
        let b = Readings::now().unwrap();
        assert!(a.realtime_ns <= b.realtime_ns);
        assert!(a.monotonic_ns <= b.monotonic_ns);
        assert!((a.gettimeofday_us * 1_000 - a.realtime_ns).abs() < S);
        assert!((a.time_s * S - a.realtime_ns).abs() < 2 * S);
    }
}
