//! The refusal of an offset that would make a clock read negative: what it says and what
//! would be allowed instead.

use std::fmt;

use super::clock::Clock;
use super::offset::Offset;

/// An offset that would make a clock read negative: the clock, the offset, and what the clock
/// reads (ns) in the process it was checked for. Displayed as
/// `refusing --offset -600s for clock monotonic: it reads 312.402s in this process (time since
/// boot), so the most negative offset allowed is -312.402s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NegativeClock {
    pub clock: Clock,
    pub offset: Offset,
    /// The clock's real reading in that process, in ns (never negative).
    pub reading_ns: i64,
}

impl NegativeClock {
    /// The most negative offset allowed for this clock, truncated to the millisecond shown.
    pub fn most_negative_allowed(&self) -> Offset {
        Offset::from_nanos(-(self.reading_ns - self.reading_ns % 1_000_000))
    }
}

impl fmt::Display for NegativeClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.reading_ns / 1_000_000;
        write!(
            f,
            "refusing --offset {} for clock {}: it reads {}.{:03}s in this process ({}), so the \
             most negative offset allowed is -{}.{:03}s",
            self.offset,
            self.clock,
            ms / 1000,
            ms % 1000,
            self.clock.meaning(),
            ms / 1000,
            ms % 1000,
        )
    }
}
