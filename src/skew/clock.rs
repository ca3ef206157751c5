//! The vDSO [`Clock`]s, sets of them ([`ClockSet`]), and the `--clock` parser.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// A clock the vDSO serves, with its kernel clock id. These are exactly the clocks
/// `__vdso_clock_gettime` answers without a syscall, so exactly the ones timeskew can skew.
///
/// Text form: the kebab-case [`name`](Clock::name) (`monotonic-raw`) or the C name
/// (`CLOCK_MONOTONIC_RAW`), case-insensitive, with `_` and `-` interchangeable. Serialized as the
/// kebab-case name.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
#[repr(u32)]
pub enum Clock {
    Realtime = 0,
    Monotonic = 1,
    MonotonicRaw = 4,
    RealtimeCoarse = 5,
    MonotonicCoarse = 6,
    Boottime = 7,
    Tai = 11,
}

impl Clock {
    /// Every clock, in id order.
    pub const ALL: [Clock; 7] = [
        Clock::Realtime,
        Clock::Monotonic,
        Clock::MonotonicRaw,
        Clock::RealtimeCoarse,
        Clock::MonotonicCoarse,
        Clock::Boottime,
        Clock::Tai,
    ];

    /// The kernel clock id (`CLOCK_MONOTONIC` = 1, …).
    pub const fn id(self) -> u32 {
        self as u32
    }

    /// The clock with kernel id `id`, if the vDSO serves it.
    pub fn from_id(id: u32) -> Option<Clock> {
        Clock::ALL.into_iter().find(|c| c.id() == id)
    }

    /// The kebab-case name: `realtime`, `monotonic-raw`, …
    pub const fn name(self) -> &'static str {
        match self {
            Clock::Realtime => "realtime",
            Clock::Monotonic => "monotonic",
            Clock::MonotonicRaw => "monotonic-raw",
            Clock::RealtimeCoarse => "realtime-coarse",
            Clock::MonotonicCoarse => "monotonic-coarse",
            Clock::Boottime => "boottime",
            Clock::Tai => "tai",
        }
    }

    /// The C name: `CLOCK_REALTIME`, `CLOCK_MONOTONIC_RAW`, …
    pub const fn c_name(self) -> &'static str {
        match self {
            Clock::Realtime => "CLOCK_REALTIME",
            Clock::Monotonic => "CLOCK_MONOTONIC",
            Clock::MonotonicRaw => "CLOCK_MONOTONIC_RAW",
            Clock::RealtimeCoarse => "CLOCK_REALTIME_COARSE",
            Clock::MonotonicCoarse => "CLOCK_MONOTONIC_COARSE",
            Clock::Boottime => "CLOCK_BOOTTIME",
            Clock::Tai => "CLOCK_TAI",
        }
    }

    /// What a reading of the clock counts: `time since boot`, … (for messages).
    pub const fn meaning(self) -> &'static str {
        match self {
            Clock::Realtime | Clock::RealtimeCoarse => "wall-clock time since 1970-01-01 UTC",
            Clock::Tai => "TAI time since 1970-01-01",
            Clock::Monotonic | Clock::MonotonicCoarse => "time since boot",
            Clock::MonotonicRaw => "time since boot, without NTP adjustments",
            Clock::Boottime => "time since boot, including suspend",
        }
    }

    /// True for the monotonic/boottime family, whose skew shifts absolute timers: a program that
    /// computes a deadline from the skewed reading and hands it to the kernel (`clock_nanosleep`
    /// with `TIMER_ABSTIME`, `timerfd_settime` with `TFD_TIMER_ABSTIME`, `pthread_cond_timedwait`
    /// on a `CLOCK_MONOTONIC` condition variable) waits `offset` too long or too short, because
    /// the kernel measures the deadline against the real clock. Relative sleeps are unaffected.
    ///
    /// The realtime family is `false` here because it is the default and the usual intent, but the
    /// same mechanism applies to absolute deadlines on `CLOCK_REALTIME` (for example
    /// `pthread_cond_timedwait` with a default condition variable, `sem_timedwait`).
    pub const fn affects_timers(self) -> bool {
        matches!(
            self,
            Clock::Monotonic | Clock::MonotonicRaw | Clock::MonotonicCoarse | Clock::Boottime
        )
    }
}

impl fmt::Display for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// Clock names the kernel knows but the vDSO does not serve (normalised like user input).
const UNSKEWABLE_CLOCKS: [&str; 7] = [
    "process-cputime-id",
    "process-cputime",
    "thread-cputime-id",
    "thread-cputime",
    "realtime-alarm",
    "boottime-alarm",
    "sgi-cycle",
];

/// Why a text is not a [`Clock`] or a [`ClockSet`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseClockError {
    message: String,
}

impl fmt::Display for ParseClockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ParseClockError {}

fn valid_clocks_text() -> String {
    let names: Vec<&str> = Clock::ALL.iter().map(|c| c.name()).collect();
    format!(
        "valid clocks: {} (or the C names, e.g. CLOCK_MONOTONIC_RAW)",
        names.join(", ")
    )
}

impl FromStr for Clock {
    type Err = ParseClockError;

    fn from_str(s: &str) -> Result<Clock, ParseClockError> {
        let normal = s.to_ascii_lowercase().replace('_', "-");
        let name = normal.strip_prefix("clock-").unwrap_or(&normal);
        if let Some(clock) = Clock::ALL.into_iter().find(|c| c.name() == name) {
            return Ok(clock);
        }
        let message = if s.is_empty() {
            format!("empty clock name; {}", valid_clocks_text())
        } else if UNSKEWABLE_CLOCKS.contains(&name) {
            format!(
                "clock \"{s}\" cannot be skewed: the vDSO does not serve it (reads go to the \
                 kernel); {}",
                valid_clocks_text()
            )
        } else {
            format!("unknown clock \"{s}\"; {}", valid_clocks_text())
        };
        Err(ParseClockError { message })
    }
}

// ---------------------------------------------------------------------------------------------
// ClockSet
// ---------------------------------------------------------------------------------------------

/// A set of [`Clock`]s, stored as a bitmask of kernel clock ids (bit n: clock id n), the form the
/// data page uses. `Default` is the empty set.
///
/// Text form: a comma-separated list of clock names (`realtime,monotonic`; spaces around names
/// are ignored, duplicates are fine). Display writes the names in id order, joined by commas
/// (the empty set displays as an empty string, which does not parse). Serialized as a list of
/// names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ClockSet(u32);

impl ClockSet {
    /// The empty set.
    pub const fn new() -> ClockSet {
        ClockSet(0)
    }

    /// All clocks.
    pub fn all() -> ClockSet {
        Clock::ALL.into_iter().collect()
    }

    /// The set with bits `mask`, if every set bit is the id of a [`Clock`].
    pub fn from_mask(mask: u32) -> Option<ClockSet> {
        let all = ClockSet::all().0;
        (mask & !all == 0).then_some(ClockSet(mask))
    }

    /// The bitmask: bit n is set when the clock with id n is in the set.
    pub const fn mask(self) -> u32 {
        self.0
    }

    pub const fn contains(self, clock: Clock) -> bool {
        self.0 & (1 << clock.id()) != 0
    }

    /// Adds `clock`; returns true if it was not in the set before.
    pub fn insert(&mut self, clock: Clock) -> bool {
        let new = !self.contains(clock);
        self.0 |= 1 << clock.id();
        new
    }

    /// Every clock of `self` and `other`.
    pub const fn union(self, other: ClockSet) -> ClockSet {
        ClockSet(self.0 | other.0)
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The clocks in the set, in id order.
    pub fn iter(self) -> ClockSetIter {
        ClockSetIter {
            set: self,
            index: 0,
        }
    }

    /// True if skewing this set shifts absolute timers (see [`Clock::affects_timers`]).
    pub fn affects_timers(self) -> bool {
        self.iter().any(Clock::affects_timers)
    }
}

impl From<Clock> for ClockSet {
    fn from(clock: Clock) -> ClockSet {
        let mut set = ClockSet::new();
        set.insert(clock);
        set
    }
}

impl FromIterator<Clock> for ClockSet {
    fn from_iter<I: IntoIterator<Item = Clock>>(iter: I) -> ClockSet {
        let mut set = ClockSet::new();
        set.extend(iter);
        set
    }
}

impl Extend<Clock> for ClockSet {
    fn extend<I: IntoIterator<Item = Clock>>(&mut self, iter: I) {
        for clock in iter {
            self.insert(clock);
        }
    }
}

/// The clocks of a [`ClockSet`], in id order.
#[derive(Debug, Clone)]
pub struct ClockSetIter {
    set: ClockSet,
    index: usize,
}

impl Iterator for ClockSetIter {
    type Item = Clock;

    fn next(&mut self) -> Option<Clock> {
        while let Some(&clock) = Clock::ALL.get(self.index) {
            self.index += 1;
            if self.set.contains(clock) {
                return Some(clock);
            }
        }
        None
    }
}

impl IntoIterator for ClockSet {
    type Item = Clock;
    type IntoIter = ClockSetIter;

    fn into_iter(self) -> ClockSetIter {
        self.iter()
    }
}

impl fmt::Display for ClockSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Clock::name).collect();
        f.pad(&names.join(","))
    }
}

impl Serialize for ClockSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl FromStr for ClockSet {
    type Err = ParseClockError;

    fn from_str(s: &str) -> Result<ClockSet, ParseClockError> {
        if s.trim().is_empty() {
            return Err(ParseClockError {
                message: format!("empty clock list; {}", valid_clocks_text()),
            });
        }
        let mut set = ClockSet::new();
        for (index, item) in s.split(',').enumerate() {
            let item = item.trim();
            let clock = item.parse::<Clock>().map_err(|e| {
                let message = if item.is_empty() {
                    format!(
                        "empty clock name at position {} in \"{s}\"; {}",
                        index + 1,
                        valid_clocks_text()
                    )
                } else if s.contains(',') {
                    format!("{e} (in the list \"{s}\")")
                } else {
                    e.message
                };
                ParseClockError { message }
            })?;
            set.insert(clock);
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_ids_and_names() {
        let expected = [
            (Clock::Realtime, 0, "realtime", "CLOCK_REALTIME"),
            (Clock::Monotonic, 1, "monotonic", "CLOCK_MONOTONIC"),
            (
                Clock::MonotonicRaw,
                4,
                "monotonic-raw",
                "CLOCK_MONOTONIC_RAW",
            ),
            (
                Clock::RealtimeCoarse,
                5,
                "realtime-coarse",
                "CLOCK_REALTIME_COARSE",
            ),
            (
                Clock::MonotonicCoarse,
                6,
                "monotonic-coarse",
                "CLOCK_MONOTONIC_COARSE",
            ),
            (Clock::Boottime, 7, "boottime", "CLOCK_BOOTTIME"),
            (Clock::Tai, 11, "tai", "CLOCK_TAI"),
        ];
        assert_eq!(Clock::ALL.len(), expected.len());
        for (clock, id, name, c_name) in expected {
            assert_eq!(clock.id(), id);
            assert_eq!(clock.name(), name);
            assert_eq!(clock.c_name(), c_name);
            assert_eq!(clock.to_string(), name);
            assert_eq!(Clock::from_id(id), Some(clock));
            assert_eq!(name.parse::<Clock>().unwrap(), clock);
            assert_eq!(c_name.parse::<Clock>().unwrap(), clock);
            assert_eq!(name.to_uppercase().parse::<Clock>().unwrap(), clock);
            assert_eq!(name.replace('-', "_").parse::<Clock>().unwrap(), clock);
            assert_eq!(c_name.to_lowercase().parse::<Clock>().unwrap(), clock);
            assert_eq!(c_name.replace('_', "-").parse::<Clock>().unwrap(), clock);
            assert_eq!(
                serde_json::to_string(&clock).unwrap(),
                format!("\"{name}\""),
                "serialized as the kebab-case name"
            );
        }
        for id in [2, 3, 8, 9, 10, 12, 31, 32, u32::MAX] {
            assert_eq!(Clock::from_id(id), None, "id {id}");
        }
        assert!(
            Clock::ALL.windows(2).all(|w| w[0].id() < w[1].id()),
            "ALL is in id order"
        );
    }

    #[test]
    fn clock_rejections_name_the_valid_clocks() {
        let e = "wallclock".parse::<Clock>().unwrap_err().to_string();
        assert!(e.contains("unknown clock \"wallclock\""), "{e}");
        assert!(
            e.contains("realtime, monotonic, monotonic-raw, realtime-coarse, monotonic-coarse, boottime, tai"),
            "{e}"
        );
        let e = "CLOCK_PROCESS_CPUTIME_ID"
            .parse::<Clock>()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"CLOCK_PROCESS_CPUTIME_ID\" cannot be skewed"),
            "{e}"
        );
        let e = "realtime_alarm".parse::<Clock>().unwrap_err().to_string();
        assert!(e.contains("cannot be skewed"), "{e}");
        assert!(
            "".parse::<Clock>()
                .unwrap_err()
                .to_string()
                .contains("empty clock name")
        );
        assert!("clock-".parse::<Clock>().is_err());
        assert!("monotonicraw".parse::<Clock>().is_err());
        assert!(
            " realtime".parse::<Clock>().is_err(),
            "no trimming for a single name"
        );
    }

    #[test]
    fn affects_timers_is_the_monotonic_family() {
        let timers: Vec<Clock> = Clock::ALL
            .into_iter()
            .filter(|c| c.affects_timers())
            .collect();
        assert_eq!(
            timers,
            [
                Clock::Monotonic,
                Clock::MonotonicRaw,
                Clock::MonotonicCoarse,
                Clock::Boottime
            ]
        );
        assert!(!ClockSet::from(Clock::Realtime).affects_timers());
        assert!(
            "realtime,boottime"
                .parse::<ClockSet>()
                .unwrap()
                .affects_timers()
        );
    }

    #[test]
    fn clock_set_operations() {
        let mut set = ClockSet::default();
        assert!(set.is_empty());
        assert_eq!(set.mask(), 0);
        assert_eq!(set.len(), 0);
        assert!(set.insert(Clock::Tai));
        assert!(set.insert(Clock::Realtime));
        assert!(!set.insert(Clock::Tai), "second insert reports no change");
        assert!(set.contains(Clock::Tai) && set.contains(Clock::Realtime));
        assert!(!set.contains(Clock::Monotonic));
        assert_eq!(set.mask(), (1 << 11) | 1);
        assert_eq!(set.len(), 2);
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [Clock::Realtime, Clock::Tai]
        );
        assert_eq!(set.into_iter().count(), 2);
        assert_eq!(set.to_string(), "realtime,tai");
        assert_eq!(
            serde_json::to_string(&set).unwrap(),
            r#"["realtime","tai"]"#
        );
        assert_eq!(ClockSet::from_mask(set.mask()), Some(set));
        assert_eq!(
            ClockSet::from_mask(1 << 2),
            None,
            "id 2 is not a vDSO clock"
        );
        assert_eq!(ClockSet::all().len(), Clock::ALL.len());
        assert_eq!(ClockSet::all().mask(), 0b1000_1111_0011);
    }

    #[test]
    fn clock_set_parses_lists() {
        let set: ClockSet = "realtime,monotonic".parse().unwrap();
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [Clock::Realtime, Clock::Monotonic]
        );
        let set: ClockSet = "CLOCK_TAI, monotonic_raw ,tai".parse().unwrap();
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [Clock::MonotonicRaw, Clock::Tai]
        );
        assert_eq!(
            "boottime".parse::<ClockSet>().unwrap(),
            ClockSet::from(Clock::Boottime)
        );
        for clocks in [ClockSet::all(), ClockSet::from(Clock::MonotonicCoarse)] {
            assert_eq!(clocks.to_string().parse::<ClockSet>().unwrap(), clocks);
        }
    }

    #[test]
    fn clock_set_rejections() {
        let e = "".parse::<ClockSet>().unwrap_err().to_string();
        assert!(e.contains("empty clock list"), "{e}");
        let e = "realtime,,tai".parse::<ClockSet>().unwrap_err().to_string();
        assert!(
            e.contains("empty clock name at position 2 in \"realtime,,tai\""),
            "{e}"
        );
        let e = "realtime,".parse::<ClockSet>().unwrap_err().to_string();
        assert!(e.contains("position 2"), "{e}");
        let e = "realtime,foo".parse::<ClockSet>().unwrap_err().to_string();
        assert!(e.contains("unknown clock \"foo\""), "{e}");
        assert!(e.contains("in the list \"realtime,foo\""), "{e}");
        assert!(e.contains("valid clocks: realtime"), "{e}");
        let e = "foo".parse::<ClockSet>().unwrap_err().to_string();
        assert!(e.starts_with("unknown clock \"foo\"; valid clocks"), "{e}");
    }
}
