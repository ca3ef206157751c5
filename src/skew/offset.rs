//! The clock [`Offset`] and its parser: the `--offset` text (`-600s`, `1h30m`) to nanoseconds,
//! with errors that point at the byte at fault.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

const NS_PER_US: i64 = 1_000;
const NS_PER_MS: i64 = 1_000_000;
const NS_PER_S: i64 = 1_000_000_000;

/// Units accepted in an offset, with their length in nanoseconds. `µs` appears twice: U+00B5
/// (MICRO SIGN, what keyboards type) and U+03BC (GREEK SMALL LETTER MU, which looks the same).
const UNITS: [(&str, i64); 9] = [
    ("ns", 1),
    ("us", NS_PER_US),
    ("\u{b5}s", NS_PER_US),
    ("\u{3bc}s", NS_PER_US),
    ("ms", NS_PER_MS),
    ("s", NS_PER_S),
    ("m", 60 * NS_PER_S),
    ("h", 3_600 * NS_PER_S),
    ("d", 86_400 * NS_PER_S),
];

/// The list of valid units as error messages show it.
const VALID_UNITS: &str = "ns, us, µs, ms, s, m, h, d";

/// Spelled-out units people type, and the unit they meant.
const UNIT_HINTS: [(&str, &str); 20] = [
    ("nsec", "ns"),
    ("nanosecond", "ns"),
    ("nanoseconds", "ns"),
    ("usec", "us"),
    ("microsecond", "us"),
    ("microseconds", "us"),
    ("msec", "ms"),
    ("millisecond", "ms"),
    ("milliseconds", "ms"),
    ("sec", "s"),
    ("secs", "s"),
    ("second", "s"),
    ("seconds", "s"),
    ("min", "m"),
    ("mins", "m"),
    ("minute", "m"),
    ("minutes", "m"),
    ("hour", "h"),
    ("hours", "h"),
    ("day", "d"),
];

/// A signed clock offset in nanoseconds: what is added to every reading of a skewed clock.
///
/// # Text form
///
/// [`FromStr`] accepts an optional sign followed by one or more `<decimal><unit>` parts, with no
/// spaces: `-600s`, `+2h`, `1h30m`, `-1.5s`, `250ms`, `-10us`, `-10µs`, `5ns`, `-1d`. Units are
/// `ns`, `us` (or `µs`), `ms`, `s`, `m` (minutes), `h`, `d` (86 400 s); they are case-sensitive and
/// may come in any order; every part needs one. Any part may carry a decimal fraction as long as
/// the result is a whole number of nanoseconds. The sign applies to the whole value. The
/// magnitude is limited to 100 years (100 × 365.25 days, [`Offset::MAX_ABS_NANOS`]).
///
/// [`Display`](fmt::Display) writes the one canonical form of a value, and that form parses back
/// to the same value. The rule: a `-` for negative values (never `+`), then the value in the
/// largest of `s`, `ms`, `us`, `ns` that is not larger than the magnitude, with a decimal fraction
/// when the value is not a whole number of that unit (trailing zeros dropped). So minutes, hours
/// and days are written as seconds, which keeps every output easy for scripts to compare:
///
/// | value            | Display        |
/// |------------------|----------------|
/// | `-10m`           | `-600s`        |
/// | `2h`, `+7200s`   | `7200s`        |
/// | `-1.5s`, `-1s500ms` | `-1.5s`     |
/// | `1.000000001s`   | `1.000000001s` |
/// | `250ms`          | `250ms`        |
/// | `-10µs`          | `-10us`        |
/// | `1ns`            | `1ns`          |
/// | `0s`, `-0h`      | `0s`           |
///
/// [`Offset::from_nanos`] accepts any `i64`; values beyond the 100-year limit still display in
/// the same form but do not parse back.
///
/// Serialized (for `--json`) as its Display string.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset(i64);

impl Offset {
    /// No skew.
    pub const ZERO: Offset = Offset(0);

    /// The largest magnitude [`FromStr`] accepts: 100 years of 365.25 days, in nanoseconds.
    pub const MAX_ABS_NANOS: i64 = 36_525 * 86_400 * NS_PER_S;

    /// The offset of `nanos` nanoseconds (negative: the clock reads earlier than the real one).
    pub const fn from_nanos(nanos: i64) -> Offset {
        Offset(nanos)
    }

    /// The offset in nanoseconds.
    pub const fn as_nanos(self) -> i64 {
        self.0
    }

    /// The offset in seconds, as a float (for display and comparisons with a tolerance).
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / NS_PER_S as f64
    }

    /// True for the zero offset.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let magnitude = self.0.unsigned_abs();
        let (unit, digits, suffix) = if magnitude >= NS_PER_S as u64 {
            (NS_PER_S as u64, 9, "s")
        } else if magnitude >= NS_PER_MS as u64 {
            (NS_PER_MS as u64, 6, "ms")
        } else if magnitude >= NS_PER_US as u64 {
            (NS_PER_US as u64, 3, "us")
        } else if magnitude > 0 {
            (1, 0, "ns")
        } else {
            return f.pad("0s");
        };
        let sign = if self.0 < 0 { "-" } else { "" };
        let whole = magnitude / unit;
        let frac = magnitude % unit;
        let text = if frac == 0 {
            format!("{sign}{whole}{suffix}")
        } else {
            let frac = format!("{frac:0digits$}");
            format!("{sign}{whole}.{}{suffix}", frac.trim_end_matches('0'))
        };
        // `pad` so that width and alignment work in tables: `{:>8}`.
        f.pad(&text)
    }
}

impl Serialize for Offset {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Offset {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What was wrong with an offset's text; see [`ParseOffsetError::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OffsetErrorKind {
    /// The text is empty.
    Empty,
    /// A number without a unit (`600`, `1h30`).
    MissingUnit,
    /// A unit that is not one of ns, us, µs, ms, s, m, h, d.
    UnknownUnit,
    /// A unit, sign or decimal point where a number should start (`h`, `-`, `1.s`).
    MissingNumber,
    /// A character that has no place in an offset (a space, a second sign, a comma).
    UnexpectedChar,
    /// A fraction finer than one nanosecond (`1.5ns`, `0.0000000001s`).
    TooPrecise,
    /// A number too large to compute with at all.
    Overflow,
    /// A value larger than 100 years in magnitude.
    OutOfRange,
}

/// Why a text is not an [`Offset`]. The message quotes the input and names the byte at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseOffsetError {
    input: String,
    kind: OffsetErrorKind,
    at: usize,
    detail: String,
}

impl ParseOffsetError {
    /// What kind of mistake it is.
    pub fn kind(&self) -> OffsetErrorKind {
        self.kind
    }

    /// The byte index in the input where the bad part starts.
    pub fn position(&self) -> usize {
        self.at
    }

    /// The text that failed to parse.
    pub fn input(&self) -> &str {
        &self.input
    }
}

impl fmt::Display for ParseOffsetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid offset \"{}\": {}", self.input, self.detail)
    }
}

impl std::error::Error for ParseOffsetError {}

impl FromStr for Offset {
    type Err = ParseOffsetError;

    fn from_str(s: &str) -> Result<Offset, ParseOffsetError> {
        OffsetParser { s, pos: 0 }.parse()
    }
}

/// A cursor over an offset's text; each method leaves `pos` after what it consumed.
struct OffsetParser<'a> {
    s: &'a str,
    pos: usize,
}

impl OffsetParser<'_> {
    fn fail(&self, kind: OffsetErrorKind, at: usize, detail: String) -> ParseOffsetError {
        ParseOffsetError {
            input: self.s.to_owned(),
            kind,
            at,
            detail,
        }
    }

    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    /// Consumes ASCII digits and returns them.
    fn digits(&mut self) -> &str {
        let start = self.pos;
        let len = self.s[start..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        self.pos += len;
        &self.s[start..start + len]
    }

    fn parse(mut self) -> Result<Offset, ParseOffsetError> {
        use OffsetErrorKind::*;
        if self.s.is_empty() {
            return Err(self.fail(
                Empty,
                0,
                "empty; expected a duration with a unit such as -600s, +2h, 1h30m or -1.5s".into(),
            ));
        }
        let negative = self.s.starts_with('-');
        if self.s.starts_with(['-', '+']) {
            self.pos = 1;
            if self.pos == self.s.len() {
                return Err(self.fail(
                    MissingNumber,
                    1,
                    "expected a number after the sign at byte 1".into(),
                ));
            }
        }
        let mut total: i128 = 0;
        let mut previous_unit: Option<i64> = None;
        while self.pos < self.s.len() {
            let part_start = self.pos;
            let (magnitude, unit) = self.part(previous_unit)?;
            if magnitude > i128::from(Offset::MAX_ABS_NANOS) {
                let part = &self.s[part_start..self.pos];
                return Err(self.fail(
                    OutOfRange,
                    part_start,
                    format!("\"{part}\" at byte {part_start} exceeds {}", limit_text()),
                ));
            }
            // Each part is at most the limit, so this sum cannot overflow an i128.
            total += magnitude;
            previous_unit = Some(unit);
        }
        if total > i128::from(Offset::MAX_ABS_NANOS) {
            return Err(self.fail(OutOfRange, 0, format!("the total exceeds {}", limit_text())));
        }
        // Checked above: total <= MAX_ABS_NANOS < i64::MAX.
        let total = total as i64;
        Ok(Offset(if negative { -total } else { total }))
    }

    /// Parses one `<decimal><unit>` part; returns its magnitude in nanoseconds and its unit.
    fn part(&mut self, previous_unit: Option<i64>) -> Result<(i128, i64), ParseOffsetError> {
        use OffsetErrorKind::*;
        let start = self.pos;
        let int_digits = self.digits().to_owned();
        if int_digits.is_empty() {
            return Err(self.unexpected_here());
        }
        let mut frac_digits = String::new();
        if self.peek() == Some('.') {
            self.pos += 1;
            frac_digits = self.digits().to_owned();
            if frac_digits.is_empty() {
                return Err(self.fail(
                    MissingNumber,
                    self.pos,
                    format!(
                        "expected a digit after the decimal point at byte {}",
                        self.pos
                    ),
                ));
            }
        }
        let number_end = self.pos;
        let number = &self.s[start..number_end];

        let unit_len: usize = self.s[self.pos..]
            .chars()
            .take_while(|c| c.is_alphabetic())
            .map(char::len_utf8)
            .sum();
        if unit_len == 0 {
            if self.pos == self.s.len() {
                let suggested = suggest_unit(previous_unit);
                return Err(self.fail(
                    MissingUnit,
                    start,
                    format!(
                        "missing unit after \"{number}\" at byte {start}; did you mean {}{suggested}? \
                         valid units: {VALID_UNITS}",
                        self.s
                    ),
                ));
            }
            return Err(self.unexpected_here());
        }
        let unit_text = &self.s[self.pos..self.pos + unit_len];
        let Some(&(_, unit)) = UNITS.iter().find(|(name, _)| *name == unit_text) else {
            return Err(self.fail(
                UnknownUnit,
                self.pos,
                format!(
                    "unknown unit \"{unit_text}\" at byte {}{}; valid units: {VALID_UNITS}",
                    self.pos,
                    unit_hint(unit_text)
                ),
            ));
        };
        self.pos += unit_len;
        let part = &self.s[start..self.pos];

        let overflow = || {
            self.fail(
                Overflow,
                start,
                format!("the number \"{number}\" at byte {start} is too large"),
            )
        };
        let mut nanos: i128 = 0;
        for d in int_digits.bytes() {
            nanos = nanos
                .checked_mul(10)
                .and_then(|n| n.checked_add(i128::from(d - b'0')))
                .ok_or_else(overflow)?;
        }
        nanos = nanos.checked_mul(i128::from(unit)).ok_or_else(overflow)?;

        // The fraction must come out as whole nanoseconds. Without trailing zeros, a fraction of
        // more than 18 digits never does (a unit has at most 2^16 and 5^11 as factors), and one of
        // at most 18 digits times a unit (< 10^14) fits an i128 easily.
        let frac = frac_digits.trim_end_matches('0');
        if !frac.is_empty() {
            let too_precise = || {
                self.fail(
                    TooPrecise,
                    start,
                    format!(
                        "\"{part}\" at byte {start} is finer than 1 ns, the resolution of an offset"
                    ),
                )
            };
            if frac.len() > 18 {
                return Err(too_precise());
            }
            let value: i128 = frac.parse().map_err(|_| too_precise())?;
            let scaled = value * i128::from(unit);
            let divisor = 10i128.pow(frac.len() as u32);
            if scaled % divisor != 0 {
                return Err(too_precise());
            }
            nanos = nanos.checked_add(scaled / divisor).ok_or_else(overflow)?;
        }
        Ok((nanos, unit))
    }

    /// The error for a character at `pos` that cannot start a part.
    fn unexpected_here(&self) -> ParseOffsetError {
        use OffsetErrorKind::*;
        let at = self.pos;
        let c = self.peek().unwrap_or(' ');
        if c.is_alphabetic() {
            let unit: String = self.s[at..]
                .chars()
                .take_while(|c| c.is_alphabetic())
                .collect();
            return self.fail(
                MissingNumber,
                at,
                format!("unit \"{unit}\" at byte {at} has no number before it"),
            );
        }
        if c == '.' {
            return self.fail(
                MissingNumber,
                at,
                format!("expected a digit before the decimal point at byte {at}"),
            );
        }
        let hint = match c {
            '+' | '-' => "; a sign is allowed only at the start and applies to the whole offset",
            ',' => "; use '.' for a fraction, e.g. 1.5s",
            c if c.is_whitespace() => "; write the parts without spaces, e.g. 1h30m",
            _ => "",
        };
        self.fail(
            UnexpectedChar,
            at,
            format!(
                "unexpected character '{}' at byte {at}{hint}",
                c.escape_debug()
            ),
        )
    }
}

/// The unit to suggest for a trailing bare number: the next smaller one after the previous
/// part's unit (`1h30` → `1h30m`), or seconds.
fn suggest_unit(previous_unit: Option<i64>) -> &'static str {
    match previous_unit {
        Some(u) if u == 86_400 * NS_PER_S => "h",
        Some(u) if u == 3_600 * NS_PER_S => "m",
        Some(u) if u == 60 * NS_PER_S => "s",
        Some(u) if u == NS_PER_S => "ms",
        Some(u) if u == NS_PER_MS => "us",
        Some(u) if u == NS_PER_US => "ns",
        _ => "s",
    }
}

/// `" (did you mean "s"?)"` for spelled-out or upper-case units, otherwise empty.
fn unit_hint(unit: &str) -> String {
    let lower = unit.to_lowercase();
    let meant = UNIT_HINTS
        .iter()
        .find(|(long, _)| *long == lower)
        .map(|(_, short)| *short)
        .or_else(|| {
            UNITS
                .iter()
                .find(|(name, _)| *name == lower && lower != unit)
                .map(|(name, _)| *name)
        });
    match meant {
        Some(short) => format!(" (did you mean \"{short}\"?)"),
        None => String::new(),
    }
}

fn limit_text() -> String {
    format!(
        "the limit of ±100 years ({}s)",
        Offset::MAX_ABS_NANOS / NS_PER_S
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(s: &str) -> i64 {
        s.parse::<Offset>()
            .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
            .as_nanos()
    }

    fn err(s: &str) -> ParseOffsetError {
        match s.parse::<Offset>() {
            Ok(o) => panic!(
                "{s:?} should be rejected, parsed as {o} ({} ns)",
                o.as_nanos()
            ),
            Err(e) => e,
        }
    }

    /// Asserts the error kind and that the message quotes the input and contains each of `parts`.
    fn assert_err(s: &str, kind: OffsetErrorKind, parts: &[&str]) {
        let e = err(s);
        let msg = e.to_string();
        assert_eq!(e.kind(), kind, "{msg}");
        assert!(
            msg.starts_with(&format!("invalid offset \"{s}\": ")),
            "{msg}"
        );
        for p in parts {
            assert!(msg.contains(p), "message for {s:?} lacks {p:?}: {msg}");
        }
    }

    const S: i64 = NS_PER_S;

    #[test]
    fn accepts_documented_forms() {
        assert_eq!(ns("-600s"), -600 * S);
        assert_eq!(ns("+2h"), 7_200 * S);
        assert_eq!(ns("2h"), 7_200 * S);
        assert_eq!(ns("1h30m"), 5_400 * S);
        assert_eq!(ns("-1.5s"), -1_500_000_000);
        assert_eq!(ns("250ms"), 250_000_000);
        assert_eq!(ns("-10us"), -10_000);
        assert_eq!(ns("-10µs"), -10_000);
        assert_eq!(ns("-10\u{3bc}s"), -10_000, "Greek mu");
        assert_eq!(ns("5ns"), 5);
        assert_eq!(ns("-1d"), -86_400 * S);
        assert_eq!(ns("1m"), 60 * S);
    }

    #[test]
    fn accepts_combinations_fractions_and_zero() {
        assert_eq!(ns("30m1h"), 5_400 * S, "any order");
        assert_eq!(ns("1s1s"), 2 * S, "repeats add up");
        assert_eq!(ns("-1h30m"), -5_400 * S, "sign covers every part");
        assert_eq!(ns("1d2h3m4s5ms6us7ns"), 93_784_005_006_007);
        assert_eq!(ns("1.5h"), 5_400 * S);
        assert_eq!(ns("0.5m30s"), 60 * S);
        assert_eq!(ns("1.000000001s"), S + 1);
        assert_eq!(ns("0.001ms"), 1_000);
        assert_eq!(ns("0.000001ms"), 1);
        assert_eq!(
            ns("1.50000000000000000000000s"),
            1_500_000_000,
            "trailing zeros"
        );
        assert_eq!(ns("0.0000001d"), 8_640_000);
        assert_eq!(ns("007s"), 7 * S);
        assert_eq!(ns("0s"), 0);
        assert_eq!(ns("-0h"), 0);
        assert_eq!(ns("+0ns"), 0);
    }

    #[test]
    fn accepts_up_to_one_hundred_years() {
        assert_eq!(ns("36525d"), Offset::MAX_ABS_NANOS);
        assert_eq!(ns("-36525d"), -Offset::MAX_ABS_NANOS);
        assert_eq!(ns("3155760000s"), Offset::MAX_ABS_NANOS);
        assert_eq!(ns("36524d24h"), Offset::MAX_ABS_NANOS);
    }

    #[test]
    fn rejects_empty_and_sign_only() {
        assert_err("", OffsetErrorKind::Empty, &["empty", "-600s"]);
        assert_err(
            "-",
            OffsetErrorKind::MissingNumber,
            &["after the sign at byte 1"],
        );
        assert_err("+", OffsetErrorKind::MissingNumber, &["after the sign"]);
    }

    #[test]
    fn rejects_bare_numbers_with_a_suggestion() {
        assert_err(
            "600",
            OffsetErrorKind::MissingUnit,
            &[
                "missing unit",
                "\"600\" at byte 0",
                "did you mean 600s?",
                VALID_UNITS,
            ],
        );
        assert_err(
            "-600",
            OffsetErrorKind::MissingUnit,
            &["at byte 1", "did you mean -600s?"],
        );
        assert_err(
            "1.5",
            OffsetErrorKind::MissingUnit,
            &["\"1.5\"", "did you mean 1.5s?"],
        );
        assert_err(
            "1h30",
            OffsetErrorKind::MissingUnit,
            &["after \"30\" at byte 2", "did you mean 1h30m?"],
        );
        assert_err(
            "2m30",
            OffsetErrorKind::MissingUnit,
            &["did you mean 2m30s?"],
        );
        assert_eq!(err("1h30").position(), 2);
    }

    #[test]
    fn rejects_unknown_units_naming_the_valid_ones() {
        let e = err("1h3x");
        assert_eq!(
            e.to_string(),
            "invalid offset \"1h3x\": unknown unit \"x\" at byte 3; valid units: ns, us, µs, ms, s, m, h, d"
        );
        assert_eq!(e.kind(), OffsetErrorKind::UnknownUnit);
        assert_eq!(e.position(), 3);
        assert_eq!(e.input(), "1h3x");
        assert_err(
            "5sec",
            OffsetErrorKind::UnknownUnit,
            &[
                "unknown unit \"sec\" at byte 1",
                "did you mean \"s\"?",
                VALID_UNITS,
            ],
        );
        assert_err(
            "10min",
            OffsetErrorKind::UnknownUnit,
            &["\"min\"", "did you mean \"m\"?"],
        );
        assert_err(
            "5S",
            OffsetErrorKind::UnknownUnit,
            &["\"S\"", "did you mean \"s\"?"],
        );
        assert_err(
            "5MS",
            OffsetErrorKind::UnknownUnit,
            &["did you mean \"ms\"?"],
        );
        assert_err("1y", OffsetErrorKind::UnknownUnit, &["\"y\" at byte 1"]);
        assert_err("1w", OffsetErrorKind::UnknownUnit, &["\"w\""]);
        assert_err("3µ", OffsetErrorKind::UnknownUnit, &["\"µ\" at byte 1"]);
        // Byte positions count UTF-8 bytes: "µs" is three bytes.
        assert_err("1µs2q", OffsetErrorKind::UnknownUnit, &["\"q\" at byte 5"]);
    }

    #[test]
    fn rejects_misplaced_characters() {
        assert_err(
            "h",
            OffsetErrorKind::MissingNumber,
            &["unit \"h\" at byte 0 has no number"],
        );
        assert_err(
            "-s",
            OffsetErrorKind::MissingNumber,
            &["unit \"s\" at byte 1"],
        );
        assert_err(
            "1hm",
            OffsetErrorKind::UnknownUnit,
            &["unknown unit \"hm\" at byte 1"],
        );
        assert_err(
            ".5s",
            OffsetErrorKind::MissingNumber,
            &["before the decimal point at byte 0"],
        );
        assert_err(
            "1.s",
            OffsetErrorKind::MissingNumber,
            &["after the decimal point at byte 2"],
        );
        assert_err("1..5s", OffsetErrorKind::MissingNumber, &["byte 2"]);
        assert_err(
            "1h 30m",
            OffsetErrorKind::UnexpectedChar,
            &["unexpected character ' ' at byte 2", "without spaces"],
        );
        assert_err(" 1s", OffsetErrorKind::UnexpectedChar, &["' ' at byte 0"]);
        assert_err("1s ", OffsetErrorKind::UnexpectedChar, &["' ' at byte 2"]);
        assert_err(
            "1h-30m",
            OffsetErrorKind::UnexpectedChar,
            &["'-' at byte 2", "only at the start"],
        );
        assert_err(
            "--600s",
            OffsetErrorKind::UnexpectedChar,
            &["'-' at byte 1"],
        );
        assert_err("+-1s", OffsetErrorKind::UnexpectedChar, &["'-' at byte 1"]);
        assert_err(
            "1,5s",
            OffsetErrorKind::UnexpectedChar,
            &["',' at byte 1", "use '.'"],
        );
        assert_err("1s/", OffsetErrorKind::UnexpectedChar, &["'/' at byte 2"]);
        assert_err(
            "1\ts",
            OffsetErrorKind::UnexpectedChar,
            &["'\\t' at byte 1"],
        );
    }

    #[test]
    fn rejects_fractions_finer_than_a_nanosecond() {
        assert_err(
            "1.5ns",
            OffsetErrorKind::TooPrecise,
            &["\"1.5ns\" at byte 0 is finer than 1 ns"],
        );
        assert_err(
            "0.0000000001s",
            OffsetErrorKind::TooPrecise,
            &["finer than 1 ns"],
        );
        assert_err(
            "1h0.0001us",
            OffsetErrorKind::TooPrecise,
            &["\"0.0001us\" at byte 2"],
        );
        assert_err(
            "1.0000000000000000000000000000000000000001s",
            OffsetErrorKind::TooPrecise,
            &["finer than 1 ns"],
        );
    }

    #[test]
    fn rejects_overflow_and_more_than_one_hundred_years() {
        assert_err(
            "36525d1ns",
            OffsetErrorKind::OutOfRange,
            &["the total exceeds the limit of ±100 years (3155760000s)"],
        );
        assert_err(
            "-36526d",
            OffsetErrorKind::OutOfRange,
            &["\"36526d\" at byte 1 exceeds the limit of ±100 years"],
        );
        assert_err(
            "1h10000000000000h",
            OffsetErrorKind::OutOfRange,
            &["at byte 2"],
        );
        assert_err(
            "9223372036854775807ns",
            OffsetErrorKind::OutOfRange,
            &["exceeds"],
        );
        assert_err(
            "99999999999999999999999999999999999999999s",
            OffsetErrorKind::Overflow,
            &["the number \"99999999999999999999999999999999999999999\" at byte 0 is too large"],
        );
        assert_err(
            "99999999999999999999999999999d",
            OffsetErrorKind::Overflow,
            &["too large"],
        );
    }

    #[test]
    fn display_is_canonical() {
        let cases = [
            ("-600s", "-600s"),
            ("-10m", "-600s"),
            ("2h", "7200s"),
            ("+2h", "7200s"),
            ("-1.5s", "-1.5s"),
            ("-1s500ms", "-1.5s"),
            ("1.000000001s", "1.000000001s"),
            ("1.25s", "1.25s"),
            ("250ms", "250ms"),
            ("1.5ms", "1.5ms"),
            ("999999ns", "999.999us"),
            ("-10µs", "-10us"),
            ("1ns", "1ns"),
            ("-999ns", "-999ns"),
            ("0s", "0s"),
            ("-0h", "0s"),
            ("1d", "86400s"),
            ("-36525d", "-3155760000s"),
        ];
        for (input, shown) in cases {
            let offset: Offset = input.parse().unwrap();
            assert_eq!(offset.to_string(), shown, "Display of {input}");
        }
        assert_eq!(format!("{:>7}|", Offset::from_nanos(-S)), "    -1s|");
    }

    #[test]
    fn display_round_trips() {
        let mut values = vec![
            0,
            1,
            -1,
            999,
            1_000,
            1_001,
            999_999,
            1_000_000,
            999_999_999,
            S,
            S + 1,
            -S - 1,
            1_500_000_000,
            Offset::MAX_ABS_NANOS,
            -Offset::MAX_ABS_NANOS,
            Offset::MAX_ABS_NANOS - 1,
        ];
        // A deterministic spread of awkward values.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let magnitude = (x % Offset::MAX_ABS_NANOS as u64) >> (x % 60);
            let v = magnitude as i64;
            values.push(if x & 1 == 0 { v } else { -v });
        }
        for v in values {
            let o = Offset::from_nanos(v);
            let back: Offset = o.to_string().parse().unwrap_or_else(|e| panic!("{v}: {e}"));
            assert_eq!(back, o, "{v} displayed as {o}");
        }
    }

    #[test]
    fn display_of_values_beyond_the_limit_does_not_panic() {
        assert_eq!(
            Offset::from_nanos(i64::MIN).to_string(),
            "-9223372036.854775808s"
        );
        assert_eq!(
            Offset::from_nanos(i64::MAX).to_string(),
            "9223372036.854775807s"
        );
        assert!(
            Offset::from_nanos(i64::MIN)
                .to_string()
                .parse::<Offset>()
                .is_err()
        );
    }

    #[test]
    fn offset_serializes_as_its_display() {
        let json = serde_json::to_string(&Offset::from_nanos(-1_500_000_000)).unwrap();
        assert_eq!(json, "\"-1.5s\"");
        assert_eq!(
            serde_json::to_string(&Offset::from_nanos(-600 * S)).unwrap(),
            "\"-600s\""
        );
    }
}
