//! What the child should have seen at a step, the check of what it did see, and the step's
//! table.

use timeskew::Offset;

use super::readings::{NS_PER_S, Readings, RealClocks};
use crate::output::signed;

/// Disagreement tolerated between a reading and its bracket, for a clock stepped meanwhile (NTP).
const SLACK_NS: i128 = 5_000_000;

/// The skew the child should show at a step.
#[derive(Debug, Clone, Copy)]
pub(super) struct Expect {
    pub(super) realtime: Offset,
    pub(super) monotonic: Offset,
}

impl Expect {
    pub(super) const REAL: Expect = Expect {
        realtime: Offset::ZERO,
        monotonic: Offset::ZERO,
    };
}

/// One line of a step's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Row {
    pub(super) clock: &'static str,
    real: String,
    seen: String,
    pub(super) difference: String,
    pub(super) expected: Offset,
    pub(super) ok: bool,
}

/// Compares what the child saw with the parent's clocks read `before` and `after` the request.
pub(super) fn compare(
    before: RealClocks,
    seen: Readings,
    after: RealClocks,
    expect: Expect,
) -> Vec<Row> {
    let rt_off = i128::from(expect.realtime.as_nanos());
    let mono_off = i128::from(expect.monotonic.as_nanos());
    let mid_rt = (before.realtime_ns + after.realtime_ns) / 2;
    let mid_mono = (before.monotonic_ns + after.monotonic_ns) / 2;
    let within = |value: i128, lo: i128, hi: i128| lo - SLACK_NS <= value && value <= hi + SLACK_NS;

    let gtod_ns = seen.gettimeofday_us * 1_000;
    // time() reads the kernel's per-tick seconds, which may trail clock_gettime by one tick.
    let time_lo = (before.realtime_ns + rt_off).div_euclid(NS_PER_S) - 1;
    let time_hi = (after.realtime_ns + rt_off + SLACK_NS).div_euclid(NS_PER_S);
    vec![
        Row {
            clock: "clock_gettime(REALTIME)",
            real: utc(mid_rt, 9),
            seen: utc(seen.realtime_ns, 9),
            difference: seconds_diff(seen.realtime_ns - mid_rt),
            expected: expect.realtime,
            ok: within(
                seen.realtime_ns,
                before.realtime_ns + rt_off,
                after.realtime_ns + rt_off,
            ),
        },
        Row {
            clock: "gettimeofday()",
            real: utc(mid_rt, 6),
            seen: utc(gtod_ns, 6),
            difference: seconds_diff(gtod_ns - mid_rt),
            expected: expect.realtime,
            // Truncated to whole microseconds.
            ok: within(
                gtod_ns,
                before.realtime_ns + rt_off - 1_000,
                after.realtime_ns + rt_off,
            ),
        },
        Row {
            clock: "time()",
            real: utc(mid_rt, 0),
            seen: utc(seen.time_s * NS_PER_S, 0),
            difference: format!("{:+}s", seen.time_s - mid_rt.div_euclid(NS_PER_S)),
            expected: expect.realtime,
            ok: (time_lo..=time_hi).contains(&seen.time_s),
        },
        Row {
            clock: "clock_gettime(MONOTONIC)",
            real: monotonic(mid_mono),
            seen: monotonic(seen.monotonic_ns),
            difference: seconds_diff(seen.monotonic_ns - mid_mono),
            expected: expect.monotonic,
            ok: within(
                seen.monotonic_ns,
                before.monotonic_ns + mono_off,
                after.monotonic_ns + mono_off,
            ),
        },
    ]
}

pub(super) fn table(title: &str, rows: &[Row]) -> String {
    let mut text = format!(
        "{title}\n  {:<26}{:<31}{:<31}{:>12}{:>10}\n",
        "clock", "real time", "child saw", "difference", "expected"
    );
    for r in rows {
        text += &format!(
            "  {:<26}{:<31}{:<31}{:>12}{:>10}  {}\n",
            r.clock,
            r.real,
            r.seen,
            r.difference,
            signed(r.expected),
            if r.ok { "ok" } else { "WRONG" }
        );
    }
    text
}

/// `2026-05-01 11:50:00.123456789` (UTC) with `digits` fractional digits (0..=9).
fn utc(ns: i128, digits: u32) -> String {
    let secs = ns.div_euclid(NS_PER_S);
    let sub = ns.rem_euclid(NS_PER_S);
    let (days, of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let mut text = format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        of_day / 3_600,
        of_day % 3_600 / 60,
        of_day % 60
    );
    if digits > 0 {
        let frac = sub / 10i128.pow(9 - digits);
        text += &format!(".{frac:0width$}", width = digits as usize);
    }
    text
}

/// The proleptic Gregorian date of a day number counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i128) -> (i128, i128, i128) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i128::from(m <= 2);
    (y, m, d)
}

/// A monotonic reading: `12345.678901234s`.
fn monotonic(ns: i128) -> String {
    format!(
        "{}.{:09}s",
        ns.div_euclid(NS_PER_S),
        ns.rem_euclid(NS_PER_S)
    )
}

/// A difference in seconds with millisecond precision: `-600.000s`, `+0.000s`.
fn seconds_diff(ns: i128) -> String {
    // Round to whole milliseconds first, so a few µs either way print as +0.000s, not -0.000s.
    let ms = (ns as f64 / 1e6).round();
    format!("{:+.3}s", if ms == 0.0 { 0.0 } else { ms / 1e3 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::readings::seen_at;

    const S: i128 = NS_PER_S;

    fn real(realtime_s: i128, monotonic_s: i128) -> RealClocks {
        RealClocks {
            realtime_ns: realtime_s * S,
            monotonic_ns: monotonic_s * S,
        }
    }

    #[test]
    fn compare_accepts_the_expected_skew_and_rejects_others() {
        let before = real(1_700_000_000, 1_000);
        let after = RealClocks {
            realtime_ns: before.realtime_ns + 2_000_000,
            monotonic_ns: before.monotonic_ns + 2_000_000,
        };
        let expect = Expect {
            realtime: Offset::from_nanos(-600_000_000_000),
            monotonic: Offset::ZERO,
        };
        let seen = seen_at(
            before.realtime_ns - 600 * S + 1_000_000,
            before.monotonic_ns + 1_000_000,
        );
        let rows = compare(before, seen, after, expect);
        assert!(rows.iter().all(|r| r.ok), "{rows:#?}");
        assert_eq!(rows[0].difference, "-600.000s");
        assert_eq!(rows[0].real, "2023-11-14 22:13:20.001000000");
        assert_eq!(rows[0].seen, "2023-11-14 22:03:20.001000000");
        assert_eq!(rows[1].seen, "2023-11-14 22:03:20.001000");
        assert_eq!(rows[2].seen, "2023-11-14 22:03:20");
        assert_eq!(rows[2].difference, "-600s");
        assert_eq!(rows[3].difference, "+0.000s");
        assert_eq!(rows[3].seen, "1000.001000000s");

        // The same readings, expected to be real: every realtime row is wrong.
        let rows = compare(before, seen, after, Expect::REAL);
        let wrong: Vec<&str> = rows.iter().filter(|r| !r.ok).map(|r| r.clock).collect();
        assert_eq!(
            wrong,
            ["clock_gettime(REALTIME)", "gettimeofday()", "time()"]
        );

        // A monotonic skew that did not happen.
        let expect = Expect {
            realtime: expect.realtime,
            monotonic: Offset::from_nanos(3_600_000_000_000),
        };
        let rows = compare(before, seen, after, expect);
        assert!(!rows[3].ok && rows[0].ok);
    }

    #[test]
    fn time_may_trail_by_one_tick() {
        // Real time just past a second boundary; time() still shows the previous second.
        let before = RealClocks {
            realtime_ns: 100 * S + 1_000_000,
            monotonic_ns: 5 * S,
        };
        let after = before;
        let mut seen = seen_at(before.realtime_ns, before.monotonic_ns);
        seen.time_s = 99;
        assert!(compare(before, seen, after, Expect::REAL)[2].ok);
        seen.time_s = 98;
        assert!(!compare(before, seen, after, Expect::REAL)[2].ok);
        seen.time_s = 101;
        assert!(!compare(before, seen, after, Expect::REAL)[2].ok);
    }

    #[test]
    fn table_marks_wrong_rows() {
        let before = real(1_700_000_000, 1_000);
        let rows = compare(
            before,
            seen_at(0, before.monotonic_ns),
            before,
            Expect::REAL,
        );
        let text = table("step", &rows);
        assert!(text.starts_with("step\n  clock"), "{text}");
        assert!(text.contains("1970-01-01 00:00:00.000000000"), "{text}");
        assert_eq!(text.matches("WRONG").count(), 3, "{text}");
        assert_eq!(text.matches(" ok\n").count(), 1, "{text}");
    }

    #[test]
    fn utc_formats_dates() {
        assert_eq!(utc(0, 0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_700_000_000 * S, 0), "2023-11-14 22:13:20");
        assert_eq!(utc(951_782_400 * S, 3), "2000-02-29 00:00:00.000");
        assert_eq!(
            utc(951_868_799 * S + 999_999_999, 9),
            "2000-02-29 23:59:59.999999999"
        );
        assert_eq!(utc(951_868_800 * S, 0), "2000-03-01 00:00:00");
        assert_eq!(utc(-S, 6), "1969-12-31 23:59:59.000000");
        assert_eq!(utc(-1, 9), "1969-12-31 23:59:59.999999999");
        assert_eq!(utc(4_102_444_800 * S, 0), "2100-01-01 00:00:00");
    }

    #[test]
    fn differences_and_monotonic_format() {
        assert_eq!(seconds_diff(-600 * S - 12_345), "-600.000s");
        assert_eq!(seconds_diff(3_600 * S + 2_000_000), "+3600.002s");
        assert_eq!(seconds_diff(-8_000), "+0.000s");
        assert_eq!(seconds_diff(-600_000), "-0.001s");
        assert_eq!(monotonic(12_345 * S + 678_901_234), "12345.678901234s");
    }
}
