//! What to skew: an [`Offset`], the [`Clock`]s it applies to, and for how long — a [`Skew`].
//!
//! Everything a user types goes through the parsers here (`--offset`, `--clock`), so their error
//! messages quote the input and point at the byte that is wrong.

mod clock;
pub(crate) mod negative;
mod offset;

pub use clock::{Clock, ClockSet, ClockSetIter, ParseClockError};
pub use negative::NegativeClock;
pub use offset::{Offset, OffsetErrorKind, ParseOffsetError};

use std::fmt;

use serde::{Serialize, Serializer};

/// What an injection does: add `offset` to the readings of `clocks`.
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
#[derive(Debug, Clone, Copy)]
pub struct Skew {
    offset: Offset,
    clocks: ClockSet,
    /// False while `clocks` is still the default of `new`.
    chosen: bool,
    /// How long the skew lasts; `None`: until recovered.
    duration: Option<std::time::Duration>,
}

impl Skew {
    /// Skews `CLOCK_REALTIME` (and with it `gettimeofday` and `time`) by `offset`.
    pub fn new(offset: Offset) -> Skew {
        Skew {
            offset,
            clocks: ClockSet::from(Clock::Realtime),
            chosen: false,
            duration: None,
        }
    }

    /// Ends the skew `duration` after the injection, inside the target itself: once the real
    /// clock passes the deadline the fake returns real time, even if timeskew is long gone.
    pub fn for_duration(mut self, duration: std::time::Duration) -> Skew {
        self.duration = Some(duration);
        self
    }

    /// How long the skew lasts, if it ends by itself.
    pub fn duration(&self) -> Option<std::time::Duration> {
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

    pub fn offset(&self) -> Offset {
        self.offset
    }

    pub fn clocks(&self) -> ClockSet {
        self.clocks
    }
}

impl PartialEq for Skew {
    fn eq(&self, other: &Skew) -> bool {
        self.offset == other.offset
            && self.clocks == other.clocks
            && self.duration == other.duration
    }
}

impl Eq for Skew {}

impl fmt::Display for Skew {
    /// `realtime,monotonic -600s`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.clocks, self.offset)?;
        match self.duration {
            Some(d) => write!(f, " for {}", Offset::from_nanos(d.as_nanos() as i64)),
            None => Ok(()),
        }
    }
}

impl Serialize for Skew {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Skew", 3)?;
        st.serialize_field("offset", &self.offset)?;
        st.serialize_field("clocks", &self.clocks)?;
        st.serialize_field("duration_ms", &self.duration.map(|d| d.as_millis() as u64))?;
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
