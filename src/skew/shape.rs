//! Which fault shapes combine: [`Skew::validate`] and its [`ShapeError`], whose messages are the
//! command line's usage errors, so the library and the CLI refuse the same things alike.

use std::fmt;
use std::time::Duration;

use super::clock::Clock;
use super::{Skew, Step};

/// The coarsest `--resolution`: one hour.
pub const MAX_RESOLUTION: Duration = Duration::from_secs(3600);

/// The fault flags, as the "no fault" error lists them.
const FAULT_FLAGS: &str =
    "--offset, --at, --rate, --freeze, --suspend, --strobe, --resolution or --slow-reads";

/// A [`Skew`] whose parts do not make sense together (or a part that makes no sense alone).
/// Each message names the flags involved, as `timeskew inject` spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShapeError {
    /// Nothing to do: no step, rate, suspend, strobe, resolution or slow reads.
    NoFault,
    /// Two parts that exclude each other.
    Conflict {
        first: &'static str,
        second: &'static str,
        why: &'static str,
    },
    /// `--slew` with nothing to reach: it needs `--offset` or `--at`.
    SlewWithoutTarget,
    /// A shape that would make a monotonic-family clock jump backwards or read a calendar time.
    MonotonicClock { flag: &'static str, clock: Clock },
    /// A value outside its range (zero durations, a zero strobe, a resolution over an hour).
    Value {
        flag: &'static str,
        why: &'static str,
    },
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShapeError::NoFault => write!(f, "no fault given: give one or more of {FAULT_FLAGS}"),
            ShapeError::Conflict { first, second, why } => {
                write!(f, "{first} cannot be combined with {second}: {why}")
            }
            ShapeError::SlewWithoutTarget => f.write_str(
                "--slew needs an offset to reach: give --offset or --at with it (or use \
                 `timeskew recover --slew` to return to real time gradually)",
            ),
            ShapeError::MonotonicClock { flag, clock } => write!(
                f,
                "{flag} cannot be used with --clock {clock}: {}",
                match *flag {
                    "--at" =>
                        "a time of day means something only to the realtime clocks \
                               (realtime, realtime-coarse, tai)",
                    _ =>
                        "it steps the clock back every other period, and a monotonic clock \
                          never goes backwards; select realtime clocks only",
                }
            ),
            ShapeError::Value { flag, why } => write!(f, "{flag}: {why}"),
        }
    }
}

impl std::error::Error for ShapeError {}

impl Skew {
    /// Checks that the parts of this skew make sense together; the errors are the ones
    /// `timeskew inject` reports as usage errors. The rules:
    ///
    /// - at least one fault (a step, a rate, a suspend, a strobe, a resolution or slow reads);
    /// - a slew needs a step to reach (`--offset` or `--at`);
    /// - a rate (or freeze) sets the speed for good, so it excludes a slew, a suspend and a
    ///   strobe, which set the speed or the offset for a while and then return to real speed;
    /// - a suspend, a strobe and a slew exclude each other (each is its own timeline);
    /// - `--at` and `--strobe` need realtime-family clocks only: a time of day means nothing to
    ///   a monotonic clock, and a strobe steps back every other period;
    /// - a suspend, a strobe offset and period, and a resolution are not zero; a resolution is
    ///   at most an hour.
    ///
    /// A step combines with a rate or freeze (step, then run at that rate), a suspend or a
    /// strobe (which start from the stepped value); a resolution and slow reads combine with
    /// anything.
    ///
    /// ```
    /// use timeskew::{Clock, Skew, ShapeError};
    /// let ok = Skew::new("-600s".parse()?).with_suspend(std::time::Duration::from_secs(5));
    /// assert_eq!(ok.validate(), Ok(()));
    /// let bad = Skew::freeze().with_slew("500ppm".parse()?);
    /// assert!(matches!(bad.validate(), Err(ShapeError::Conflict { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn validate(&self) -> Result<(), ShapeError> {
        let rate_flag = self.rate_flag();
        if self.step.is_none()
            && self.rate.is_none()
            && self.suspend.is_none()
            && self.strobe.is_none()
            && self.resolution.is_none()
            && !self.slow_reads
        {
            // A slew alone has nothing to reach: say that rather than "no fault".
            return Err(if self.slew.is_some() {
                ShapeError::SlewWithoutTarget
            } else {
                ShapeError::NoFault
            });
        }
        // The timelines: each pair that cannot share one.
        let rate_why = "a rate holds for good, the other returns to real speed by itself";
        let timeline_why = "each follows its own course; apply one, then the other";
        let timelines: [(Option<&'static str>, Option<&'static str>, &'static str); 6] = [
            (rate_flag, self.slew.map(|_| "--slew"), rate_why),
            (rate_flag, self.suspend.map(|_| "--suspend"), rate_why),
            (rate_flag, self.strobe.map(|_| "--strobe"), rate_why),
            (
                self.slew.map(|_| "--slew"),
                self.suspend.map(|_| "--suspend"),
                timeline_why,
            ),
            (
                self.slew.map(|_| "--slew"),
                self.strobe.map(|_| "--strobe"),
                timeline_why,
            ),
            (
                self.suspend.map(|_| "--suspend"),
                self.strobe.map(|_| "--strobe"),
                timeline_why,
            ),
        ];
        for (first, second, why) in timelines {
            if let (Some(first), Some(second)) = (first, second) {
                return Err(ShapeError::Conflict { first, second, why });
            }
        }
        if self.slew.is_some() && self.step.is_none() {
            return Err(ShapeError::SlewWithoutTarget);
        }
        let wall_only = [
            (matches!(self.step, Some(Step::At(_))), "--at"),
            (self.strobe.is_some(), "--strobe"),
        ];
        for (used, flag) in wall_only {
            if let Some(clock) = self.clocks.iter().find(|c| c.affects_timers())
                && used
            {
                return Err(ShapeError::MonotonicClock { flag, clock });
            }
        }
        if self.suspend.is_some_and(|d| d.is_zero()) {
            return Err(ShapeError::Value {
                flag: "--suspend",
                why: "the clock must stand still for more than 0s",
            });
        }
        if let Some((offset, period)) = self.strobe {
            if offset.is_zero() {
                return Err(ShapeError::Value {
                    flag: "--strobe",
                    why: "a strobe of 0s changes nothing; give a non-zero offset such as 1s or -1s",
                });
            }
            if period.is_zero() {
                return Err(ShapeError::Value {
                    flag: "--period",
                    why: "the period must be more than 0s",
                });
            }
        }
        if let Some(r) = self.resolution {
            if r.is_zero() {
                return Err(ShapeError::Value {
                    flag: "--resolution",
                    why: "the resolution must be more than 0s",
                });
            }
            if r > MAX_RESOLUTION {
                return Err(ShapeError::Value {
                    flag: "--resolution",
                    why: "the resolution is at most 1h (3600s)",
                });
            }
        }
        Ok(())
    }

    /// `--freeze` for a zero rate, `--rate` for any other, as the user most likely wrote it.
    fn rate_flag(&self) -> Option<&'static str> {
        self.rate
            .map(|r| if r.is_zero() { "--freeze" } else { "--rate" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::skew::{At, Offset, Rate, SlewRate};

    fn secs(s: i64) -> Offset {
        Offset::from_nanos(s * 1_000_000_000)
    }

    fn at() -> At {
        "2038-01-19T03:14:00Z".parse().unwrap()
    }

    fn slew() -> SlewRate {
        "500ppm".parse().unwrap()
    }

    const D: Duration = Duration::from_secs(5);

    #[test]
    fn valid_combinations() {
        let rate: Rate = "2".parse().unwrap();
        for skew in [
            Skew::new(secs(-600)),
            Skew::new(Offset::ZERO),
            Skew::at(at()),
            Skew::rate(rate),
            Skew::freeze(),
            Skew::new(secs(10)).with_rate(rate),
            Skew::at(at()).with_rate(Rate::ZERO),
            Skew::new(secs(10)).with_slew(slew()),
            Skew::at(at()).with_slew(slew()),
            Skew::new(secs(10)).with_suspend(D),
            Skew::as_is().with_suspend(D),
            Skew::as_is().with_strobe(secs(1), D),
            Skew::new(secs(-5)).with_strobe(secs(-1), D),
            Skew::as_is().with_resolution(Duration::from_millis(15)),
            Skew::as_is().with_slow_reads(),
            Skew::new(Offset::ZERO).with_slow_reads(),
            Skew::freeze()
                .with_resolution(Duration::from_secs(3600))
                .with_slow_reads(),
            Skew::rate(rate).with_clock(Clock::Monotonic),
            Skew::new(secs(1))
                .with_suspend(D)
                .with_clock(Clock::Boottime),
            Skew::at(at()).with_clocks("realtime,realtime-coarse,tai".parse().unwrap()),
        ] {
            assert_eq!(skew.validate(), Ok(()), "{skew}");
        }
    }

    #[test]
    fn conflicts_name_both_flags() {
        let rate: Rate = "2".parse().unwrap();
        let cases = [
            (Skew::rate(rate).with_slew(slew()), "--rate", "--slew"),
            (Skew::freeze().with_suspend(D), "--freeze", "--suspend"),
            (
                Skew::rate(rate).with_strobe(secs(1), D),
                "--rate",
                "--strobe",
            ),
            (
                Skew::new(secs(1)).with_slew(slew()).with_suspend(D),
                "--slew",
                "--suspend",
            ),
            (
                Skew::new(secs(1)).with_slew(slew()).with_strobe(secs(1), D),
                "--slew",
                "--strobe",
            ),
            (
                Skew::as_is().with_suspend(D).with_strobe(secs(1), D),
                "--suspend",
                "--strobe",
            ),
        ];
        for (skew, first, second) in cases {
            let e = skew.validate().unwrap_err();
            assert!(
                matches!(e, ShapeError::Conflict { first: f, second: s, .. } if f == first && s == second),
                "{e:?}"
            );
            assert!(
                e.to_string()
                    .starts_with(&format!("{first} cannot be combined with {second}: ")),
                "{e}"
            );
        }
    }

    #[test]
    fn other_rules() {
        assert_eq!(Skew::as_is().validate(), Err(ShapeError::NoFault));
        assert_eq!(
            ShapeError::NoFault.to_string(),
            "no fault given: give one or more of --offset, --at, --rate, --freeze, --suspend, \
             --strobe, --resolution or --slow-reads"
        );
        for skew in [
            Skew::as_is().with_slew(slew()),
            Skew::as_is().with_slew(slew()).with_resolution(D),
        ] {
            let e = skew.validate().unwrap_err();
            assert_eq!(e, ShapeError::SlewWithoutTarget);
            assert!(e.to_string().contains("--offset or --at"), "{e}");
        }
        let e = Skew::at(at())
            .with_clock(Clock::Realtime)
            .with_clock(Clock::MonotonicRaw)
            .validate()
            .unwrap_err();
        assert_eq!(
            e,
            ShapeError::MonotonicClock {
                flag: "--at",
                clock: Clock::MonotonicRaw
            }
        );
        assert!(
            e.to_string()
                .starts_with("--at cannot be used with --clock monotonic-raw: "),
            "{e}"
        );
        let e = Skew::as_is()
            .with_strobe(secs(1), D)
            .with_clock(Clock::Boottime)
            .validate()
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--strobe cannot be used with --clock boottime: "),
            "{e}"
        );
        let value = |skew: Skew| match skew.validate() {
            Err(ShapeError::Value { flag, .. }) => flag,
            other => panic!("{skew}: {other:?}"),
        };
        assert_eq!(
            value(Skew::as_is().with_suspend(Duration::ZERO)),
            "--suspend"
        );
        assert_eq!(
            value(Skew::as_is().with_strobe(Offset::ZERO, D)),
            "--strobe"
        );
        assert_eq!(
            value(Skew::as_is().with_strobe(secs(1), Duration::ZERO)),
            "--period"
        );
        assert_eq!(
            value(Skew::as_is().with_resolution(Duration::ZERO)),
            "--resolution"
        );
        assert_eq!(
            value(Skew::as_is().with_resolution(Duration::from_secs(3601))),
            "--resolution"
        );
    }
}
