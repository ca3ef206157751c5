//! What to skew: an [`Offset`], the [`Clock`]s it applies to, and for how long — a [`Skew`] —
//! and the other fault shapes: an absolute time ([`At`]), a [`Rate`], a [`SlewRate`], a
//! suspend, a strobe, a resolution, slow reads.
//!
//! Everything a user types goes through the parsers here (`--offset`, `--clock`, `--at`,
//! `--rate`, `--slew`), so their error messages quote the input and point at the byte that is
//! wrong; [`Skew::validate`] says which shapes combine.

mod clock;
pub(crate) mod negative;
mod offset;
mod rate;
mod shape;
mod time;

pub use clock::{Clock, ClockSet, ClockSetIter, ParseClockError};
pub use negative::NegativeClock;
pub use offset::{Offset, OffsetErrorKind, ParseOffsetError};
pub use rate::{ParseRateError, Rate, RateErrorKind, SlewRate};
pub use shape::{MAX_RESOLUTION, ShapeError};
pub use time::{At, AtErrorKind, ParseAtError};

use std::fmt;
use std::time::Duration;

use serde::{Serialize, Serializer};

/// Where a skew puts the clock when it starts: a step from real time, or to an absolute time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Reads real time plus this offset (`--offset`).
    Offset(Offset),
    /// Reads this time at the moment of the injection, then runs on (`--at`).
    At(At),
}

/// What an injection does: add `offset` to the readings of `clocks` — or more generally, give
/// those clocks a *fault shape*.
///
/// A `Skew` always selects at least one clock: [`Skew::new`] selects `CLOCK_REALTIME`, and the
/// first [`with_clock`](Skew::with_clock)/[`with_clocks`](Skew::with_clocks) call replaces that
/// default while later calls add to the selection.
///
/// ```
/// use timeskew::{Clock, Skew};
/// let skew = Skew::new("+1h".parse()?)
///     .with_clock(Clock::Realtime)
///     .with_clock(Clock::Monotonic);
/// assert_eq!(skew.clocks().to_string(), "realtime,monotonic");
/// assert_eq!(skew.to_string(), "realtime,monotonic 3600s");
/// # Ok::<(), timeskew::skew::ParseOffsetError>(())
/// ```
///
/// # Shapes
///
/// A skew starts from a *step* ([`new`](Skew::new): an offset from real time; [`at`](Skew::at):
/// an absolute time) or from no step at all ([`rate`](Skew::rate), [`freeze`](Skew::freeze),
/// [`as_is`](Skew::as_is): the clock continues from the value it reads at that moment, which in
/// an injected process keeps its current offset). The builders add the rest:
///
/// ```
/// use std::time::Duration;
/// use timeskew::{Clock, Skew};
/// // Jump to the 2038 rollover and run ten times as fast from there.
/// let y2038 = Skew::at("2038-01-19T03:14:00Z".parse()?).with_rate("10".parse()?);
/// assert_eq!(y2038.to_string(), "realtime at 2038-01-19T03:14:00Z rate 10");
/// // Reach -2s gradually, 500 ppm at a time.
/// let slew = Skew::new("-2s".parse()?).with_slew("500ppm".parse()?);
/// // Stand still for 5s (a VM pause), then run on 5s behind.
/// let pause = Skew::as_is().with_suspend(Duration::from_secs(5)).with_clock(Clock::Monotonic);
/// // Flip between +0s and +1s every 10s, readings rounded down to 15 ms, through the syscall.
/// let flaky = Skew::as_is()
///     .with_strobe("1s".parse()?, Duration::from_secs(10))
///     .with_resolution(Duration::from_millis(15))
///     .with_slow_reads();
/// for skew in [y2038, slew, pause, flaky] {
///     skew.validate()?;
/// }
/// assert!(Skew::freeze().with_slew("5%".parse()?).validate().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Skew {
    /// `None`: no step, the clock continues from what it reads.
    step: Option<Step>,
    clocks: ClockSet,
    /// False while `clocks` is still the default of `new`.
    chosen: bool,
    /// How long the skew lasts; `None`: until recovered.
    duration: Option<Duration>,
    /// `None`: real speed (and no opinion, so a step alone is a plain offset).
    rate: Option<Rate>,
    slew: Option<SlewRate>,
    suspend: Option<Duration>,
    /// The extra offset and the period it alternates with.
    strobe: Option<(Offset, Duration)>,
    resolution: Option<Duration>,
    slow_reads: bool,
}

impl Skew {
    /// Skews `CLOCK_REALTIME` (and with it `gettimeofday` and `time`) by `offset`.
    pub fn new(offset: Offset) -> Skew {
        Skew::with_step(Some(Step::Offset(offset)))
    }

    /// Steps the clocks so that they read `at` at the moment of the injection, then run on
    /// (realtime-family clocks only, see [`validate`](Skew::validate)).
    pub fn at(at: At) -> Skew {
        Skew::with_step(Some(Step::At(at)))
    }

    /// The clocks run at `rate` times real speed from the moment of the injection, continuing
    /// from the value they read then.
    pub fn rate(rate: Rate) -> Skew {
        Skew::as_is().with_rate(rate)
    }

    /// The clocks stand still at the value they read at the moment of the injection: a rate
    /// of 0.
    pub fn freeze() -> Skew {
        Skew::rate(Rate::ZERO)
    }

    /// No step and no rate: a base for the shapes that start from the value the clock reads
    /// (a suspend, a strobe, a resolution, slow reads). Alone it is no fault at all.
    pub fn as_is() -> Skew {
        Skew::with_step(None)
    }

    fn with_step(step: Option<Step>) -> Skew {
        Skew {
            step,
            clocks: ClockSet::from(Clock::Realtime),
            chosen: false,
            duration: None,
            rate: None,
            slew: None,
            suspend: None,
            strobe: None,
            resolution: None,
            slow_reads: false,
        }
    }

    /// Ends the skew `duration` after the injection, inside the target itself: once the real
    /// clock passes the deadline the fake returns real time, even if timeskew is long gone.
    pub fn for_duration(mut self, duration: Duration) -> Skew {
        self.duration = Some(duration);
        self
    }

    /// How long the skew lasts, if it ends by itself.
    pub fn duration(&self) -> Option<Duration> {
        self.duration
    }

    /// Selects `clock`: the first call replaces the default (realtime), later ones add.
    pub fn with_clock(self, clock: Clock) -> Skew {
        self.with_clocks(ClockSet::from(clock))
    }

    /// Selects `clocks`, like [`with_clock`](Skew::with_clock) for each. An empty set changes
    /// nothing (the default stays), so a `Skew` never selects no clock.
    pub fn with_clocks(mut self, clocks: ClockSet) -> Skew {
        if clocks.is_empty() {
            return self;
        }
        self.clocks = if self.chosen {
            self.clocks.union(clocks)
        } else {
            clocks
        };
        self.chosen = true;
        self
    }

    /// After the step (if any), the clocks run at `rate` times real speed; replaces an earlier
    /// rate or freeze.
    pub fn with_rate(mut self, rate: Rate) -> Skew {
        self.rate = Some(rate);
        self
    }

    /// Reaches the step gradually instead of at once: the clocks run at 1 ± `slew` until they
    /// read the target offset, then at real speed. Needs a step.
    pub fn with_slew(mut self, slew: SlewRate) -> Skew {
        self.slew = Some(slew);
        self
    }

    /// The clocks stand still for `duration`, then run on, `duration` behind where they were.
    pub fn with_suspend(mut self, duration: Duration) -> Skew {
        self.suspend = Some(duration);
        self
    }

    /// The clocks alternate every `period` between their offset and that offset plus `extra`,
    /// until the skew ends.
    pub fn with_strobe(mut self, extra: Offset, period: Duration) -> Skew {
        self.strobe = Some((extra, period));
        self
    }

    /// Every reading of the selected clocks is rounded down to a multiple of `resolution`.
    pub fn with_resolution(mut self, resolution: Duration) -> Skew {
        self.resolution = Some(resolution);
        self
    }

    /// Reads of the selected clocks go through the real system call instead of the vDSO.
    pub fn with_slow_reads(mut self) -> Skew {
        self.slow_reads = true;
        self
    }

    /// The offset of a [`Step::Offset`]; zero for a skew stepping to an absolute time or not
    /// stepping at all (see [`step`](Skew::step) to tell them apart).
    pub fn offset(&self) -> Offset {
        match self.step {
            Some(Step::Offset(offset)) => offset,
            _ => Offset::ZERO,
        }
    }

    pub fn clocks(&self) -> ClockSet {
        self.clocks
    }

    /// The step the skew starts with, if any.
    pub fn step(&self) -> Option<Step> {
        self.step
    }

    /// The absolute time the skew steps to, if it is a [`Step::At`].
    pub fn at_time(&self) -> Option<At> {
        match self.step {
            Some(Step::At(at)) => Some(at),
            _ => None,
        }
    }

    /// The rate the clocks run at after the step; `None`: real speed.
    pub fn speed(&self) -> Option<Rate> {
        self.rate
    }

    pub fn slew(&self) -> Option<SlewRate> {
        self.slew
    }

    pub fn suspend(&self) -> Option<Duration> {
        self.suspend
    }

    /// The strobe's extra offset and period.
    pub fn strobe(&self) -> Option<(Offset, Duration)> {
        self.strobe
    }

    pub fn resolution(&self) -> Option<Duration> {
        self.resolution
    }

    pub fn slow_reads(&self) -> bool {
        self.slow_reads
    }
}

impl PartialEq for Skew {
    /// Ignores how the clock selection came about.
    fn eq(&self, other: &Skew) -> bool {
        self.step == other.step
            && self.clocks == other.clocks
            && self.duration == other.duration
            && self.rate == other.rate
            && self.slew == other.slew
            && self.suspend == other.suspend
            && self.strobe == other.strobe
            && self.resolution == other.resolution
            && self.slow_reads == other.slow_reads
    }
}

impl Eq for Skew {}

/// A duration in the offset notation: `1.5s`, `15ms`.
fn show(d: Duration) -> Offset {
    Offset::from_nanos(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

impl fmt::Display for Skew {
    /// `realtime,monotonic -600s`; the other shapes as words: `realtime at
    /// 2038-01-19T03:14:00Z rate 10`, `realtime -2s slew 500ppm`, `monotonic suspend 5s`,
    /// `realtime strobe 1s every 10s resolution 15ms slow-reads for 1m`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.clocks)?;
        match self.step {
            Some(Step::Offset(offset)) => write!(f, " {offset}")?,
            Some(Step::At(at)) => write!(f, " at {at}")?,
            None => {}
        }
        match self.rate {
            Some(r) if r.is_zero() => f.write_str(" frozen")?,
            Some(r) => write!(f, " rate {r}")?,
            None => {}
        }
        if let Some(slew) = self.slew {
            write!(f, " slew {slew}")?;
        }
        if let Some(d) = self.suspend {
            write!(f, " suspend {}", show(d))?;
        }
        if let Some((extra, period)) = self.strobe {
            write!(f, " strobe {extra} every {}", show(period))?;
        }
        if let Some(r) = self.resolution {
            write!(f, " resolution {}", show(r))?;
        }
        if self.slow_reads {
            f.write_str(" slow-reads")?;
        }
        match self.duration {
            Some(d) => write!(f, " for {}", show(d)),
            None => Ok(()),
        }
    }
}

impl Serialize for Skew {
    /// `{"offset":"-600s","clocks":["realtime"],"duration_ms":null}` for a plain offset, as
    /// before the other shapes; each of them adds its field only when set (`"at"`, `"rate"`,
    /// `"slew"`, `"suspend"`, `"strobe": {"offset", "period"}`, `"resolution"`,
    /// `"slow_reads"`), and `"offset"` is null when the skew does not step by an offset.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Skew", 10)?;
        match self.step {
            Some(Step::Offset(offset)) => st.serialize_field("offset", &offset)?,
            _ => st.serialize_field("offset", &None::<Offset>)?,
        }
        st.serialize_field("clocks", &self.clocks)?;
        st.serialize_field("duration_ms", &self.duration.map(|d| d.as_millis() as u64))?;
        if let Some(at) = self.at_time() {
            st.serialize_field("at", &at)?;
        }
        if let Some(rate) = self.rate {
            st.serialize_field("rate", &rate)?;
        }
        if let Some(slew) = self.slew {
            st.serialize_field("slew", &slew)?;
        }
        if let Some(d) = self.suspend {
            st.serialize_field("suspend", &show(d))?;
        }
        if let Some((offset, period)) = self.strobe {
            #[derive(Serialize)]
            struct Strobe {
                offset: Offset,
                period: Offset,
            }
            st.serialize_field(
                "strobe",
                &Strobe {
                    offset,
                    period: show(period),
                },
            )?;
        }
        if let Some(r) = self.resolution {
            st.serialize_field("resolution", &show(r))?;
        }
        if self.slow_reads {
            st.serialize_field("slow_reads", &true)?;
        }
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_defaults_to_realtime_and_first_choice_replaces_it() {
        let off: Offset = "-600s".parse().unwrap();
        let skew = Skew::new(off);
        assert_eq!(skew.offset(), off);
        assert_eq!(skew.clocks(), ClockSet::from(Clock::Realtime));

        let skew = Skew::new(off).with_clock(Clock::Monotonic);
        assert_eq!(
            skew.clocks(),
            ClockSet::from(Clock::Monotonic),
            "replaces the default"
        );

        let skew = Skew::new(off)
            .with_clock(Clock::Monotonic)
            .with_clock(Clock::Realtime)
            .with_clock(Clock::Monotonic);
        assert_eq!(
            skew.clocks().to_string(),
            "realtime,monotonic",
            "later calls add"
        );

        let skew = Skew::new(off)
            .with_clocks("boottime,tai".parse().unwrap())
            .with_clock(Clock::Realtime);
        assert_eq!(skew.clocks().to_string(), "realtime,boottime,tai");

        let skew = Skew::new(off).with_clocks(ClockSet::new());
        assert_eq!(
            skew.clocks(),
            ClockSet::from(Clock::Realtime),
            "empty set keeps default"
        );
        let skew = skew.with_clock(Clock::Tai);
        assert_eq!(skew.clocks(), ClockSet::from(Clock::Tai));

        // Equality ignores how the selection came about.
        assert_eq!(Skew::new(off), Skew::new(off).with_clock(Clock::Realtime));
        assert_eq!(Skew::new(off).to_string(), "realtime -600s");
        assert_eq!(
            serde_json::to_string(&Skew::new(off)).unwrap(),
            r#"{"offset":"-600s","clocks":["realtime"],"duration_ms":null}"#
        );
        let timed = Skew::new(off).for_duration(std::time::Duration::from_millis(1500));
        assert_eq!(timed.to_string(), "realtime -600s for 1.5s");
        assert_ne!(timed, Skew::new(off));
        assert!(
            serde_json::to_string(&timed)
                .unwrap()
                .contains(r#""duration_ms":1500"#)
        );
    }

    #[test]
    fn skew_params_fill_selected_slots_only() {
        let off = Offset::from_nanos(-1_500_000_000);
        let params = Skew::new(off)
            .with_clock(Clock::Realtime)
            .with_clock(Clock::Tai)
            .params();
        assert_eq!(params.mask, 1 | (1 << 11));
        assert!(params.is_open_ended());
        for (id, &value) in params.offsets_ns.iter().enumerate() {
            let expected = if id == 0 || id == 11 {
                off.as_nanos()
            } else {
                0
            };
            assert_eq!(value, expected, "clock id {id}");
        }
        let params = Skew::new(off).with_clocks(ClockSet::all()).params();
        assert_eq!(params.mask, ClockSet::all().mask());
        for clock in Clock::ALL {
            assert_eq!(params.offsets_ns[clock.id() as usize], off.as_nanos());
        }
    }
}
