//! The speed of a skewed clock: [`Rate`] (`--rate 2`, `--rate -50ppm`) and [`SlewRate`]
//! (`--slew 500ppm`), exact to one part per billion, with parsers that point at the bad byte.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// Parts per billion in one whole (a factor of 1, or 100%).
const PPB_PER_ONE: u64 = 1_000_000_000;

/// Deviation units, in parts per billion.
const UNITS: [(&str, u64); 3] = [("ppb", 1), ("ppm", 1_000), ("%", 10_000_000)];

/// `round(ppb · 2^32 / 10^9)`: the Q32.32 fixed-point form the fake clock multiplies by.
fn ppb_to_q32(ppb: u64) -> u64 {
    let scaled = (u128::from(ppb) << 32) + u128::from(PPB_PER_ONE / 2);
    (scaled / u128::from(PPB_PER_ONE)) as u64
}

/// How fast a clock runs compared with real time: 2 is twice as fast, 0.5 half as fast, 0
/// stands still (`--freeze`), 1 is real speed. Between 0 and 1000, exact to 10⁻⁹.
///
/// # Text form
///
/// A factor, an unsigned decimal number (`2`, `0.5`, `1.0001`, `0`), or a signed deviation
/// from real speed with a unit `ppb`, `ppm` or `%` (`+500ppm` is 1.0005, `-50ppm` is 0.99995,
/// `+10%` is 1.1, `-100%` is 0). A deviation needs its sign (is `5%` a factor of 0.05 or of
/// 1.05?) and a factor must not have one. The result must be a whole number of parts per
/// billion, at least 0 (a clock cannot run backwards) and at most 1000.
///
/// [`Display`](fmt::Display) writes the factor as a decimal with no trailing zeros (`1.0005`,
/// `0.99995`, `2`, `0`), which parses back to the same value; serialized (`--json`) the same.
///
/// ```
/// use timeskew::Rate;
/// let rate: Rate = "+500ppm".parse()?;
/// assert_eq!(rate.to_string(), "1.0005");
/// assert_eq!(rate.as_ppb(), 1_000_500_000);
/// assert_eq!("2".parse::<Rate>()?.as_q32(), 2 << 32);
/// # Ok::<(), timeskew::ParseRateError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate(u64);

impl Rate {
    /// Standing still (`--freeze`).
    pub const ZERO: Rate = Rate(0);
    /// Real speed.
    pub const ONE: Rate = Rate(PPB_PER_ONE);
    /// The fastest rate accepted: 1000 times real speed.
    pub const MAX: Rate = Rate(1000 * PPB_PER_ONE);

    /// The rate whose factor is `ppb` / 10⁹, if it is at most [`Rate::MAX`].
    pub const fn from_ppb(ppb: u64) -> Option<Rate> {
        if ppb > Rate::MAX.0 {
            None
        } else {
            Some(Rate(ppb))
        }
    }

    /// The factor in parts per billion: 1 000 000 000 is real speed.
    pub const fn as_ppb(self) -> u64 {
        self.0
    }

    /// The factor in Q32.32 fixed point, `round(R · 2^32)`: what the fake clock multiplies the
    /// elapsed real time by.
    pub fn as_q32(self) -> u64 {
        ppb_to_q32(self.0)
    }

    /// The factor as a float (for display and approximate comparisons).
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / PPB_PER_ONE as f64
    }

    /// True for a clock that stands still.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&decimal(self.0))
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl FromStr for Rate {
    type Err = ParseRateError;

    fn from_str(s: &str) -> Result<Rate, ParseRateError> {
        let what = "rate";
        let number = parse_number(s, what)?;
        let fail = |kind, at, detail: String| ParseRateError::new(what, s, kind, at, detail);
        let ppb = match (number.sign, number.unit) {
            (None, None) => number.magnitude_ppb,
            (Some(Sign::Minus), None) => {
                return Err(fail(
                    RateErrorKind::Backwards,
                    0,
                    "a clock cannot run backwards; use --offset to step back".into(),
                ));
            }
            (Some(Sign::Plus), None) => {
                return Err(fail(
                    RateErrorKind::MissingUnit,
                    number.end,
                    format!(
                        "a signed rate is a deviation and needs a unit after \"{s}\": ppm, ppb \
                         or % (e.g. +500ppm, +10%); a factor has no sign (e.g. 2, 0.5)"
                    ),
                ));
            }
            (None, Some(_)) => {
                return Err(fail(
                    RateErrorKind::MissingSign,
                    0,
                    format!(
                        "a deviation needs a sign: +{s} or -{s} (a factor of 2 or 0.5 has no unit)"
                    ),
                ));
            }
            (Some(Sign::Plus), Some(_)) => PPB_PER_ONE.saturating_add(number.magnitude_ppb),
            (Some(Sign::Minus), Some(_)) => {
                if number.magnitude_ppb > PPB_PER_ONE {
                    return Err(fail(
                        RateErrorKind::Backwards,
                        0,
                        "a deviation below -100% would make the clock run backwards; a clock \
                         cannot run backwards; use --offset to step back"
                            .into(),
                    ));
                }
                PPB_PER_ONE - number.magnitude_ppb
            }
        };
        Rate::from_ppb(ppb).ok_or_else(|| {
            fail(
                RateErrorKind::OutOfRange,
                0,
                format!("{} is more than the limit of 1000", decimal(ppb)),
            )
        })
    }
}

/// How fast a clock moves towards its target offset while slewing (`--slew 500ppm`): it runs
/// at 1 ± this rate until it gets there. More than 0, at most 100%, exact to 1 ppb.
///
/// Text form: an unsigned decimal with a unit, `ppb`, `ppm` or `%`: `500ppm`, `5%`, `0.5%`
/// (the direction comes from the offset, so there is no sign). [`Display`](fmt::Display) uses
/// the largest unit that shows the value exactly, `%` only for whole per cents (`5%`, `500ppm`,
/// `12.5ppm`, `7ppb`); serialized the same.
///
/// ```
/// use timeskew::SlewRate;
/// let slew: SlewRate = "0.05%".parse()?;
/// assert_eq!(slew.to_string(), "500ppm");
/// assert_eq!(slew.as_ppb(), 500_000);
/// assert_eq!("100%".parse::<SlewRate>()?.as_q32(), 1 << 32);
/// # Ok::<(), timeskew::ParseRateError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlewRate(u32);

impl SlewRate {
    /// The fastest slew: 100% (a clock slewing back stands still until it gets there).
    pub const MAX: SlewRate = SlewRate(PPB_PER_ONE as u32);

    /// The slew rate of `ppb` parts per billion, if it is more than 0 and at most 100%.
    pub const fn from_ppb(ppb: u32) -> Option<SlewRate> {
        if ppb == 0 || ppb > SlewRate::MAX.0 {
            None
        } else {
            Some(SlewRate(ppb))
        }
    }

    /// The deviation from real speed in parts per billion.
    pub const fn as_ppb(self) -> u32 {
        self.0
    }

    /// The deviation in Q32.32 fixed point, `round(RATE · 2^32)` (100% is 2^32).
    pub fn as_q32(self) -> u64 {
        ppb_to_q32(u64::from(self.0))
    }
}

impl fmt::Display for SlewRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ppb = u64::from(self.0);
        let text = if ppb % 10_000_000 == 0 {
            format!("{}%", ppb / 10_000_000)
        } else if ppb % 1_000 == 0 || ppb > 1_000 {
            // ppm with up to three decimals is exact for any whole ppb.
            let micro = decimal(ppb * 1_000_000);
            format!("{micro}ppm")
        } else {
            format!("{ppb}ppb")
        };
        f.pad(&text)
    }
}

impl Serialize for SlewRate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl FromStr for SlewRate {
    type Err = ParseRateError;

    fn from_str(s: &str) -> Result<SlewRate, ParseRateError> {
        let what = "slew rate";
        let number = parse_number(s, what)?;
        let fail = |kind, at, detail: String| ParseRateError::new(what, s, kind, at, detail);
        if number.sign.is_some() {
            return Err(fail(
                RateErrorKind::UnexpectedChar,
                0,
                "a slew rate has no sign: the direction comes from the offset (e.g. 500ppm)".into(),
            ));
        }
        if number.unit.is_none() {
            return Err(fail(
                RateErrorKind::MissingUnit,
                number.end,
                format!("missing unit after \"{s}\": add ppm or %, e.g. {s}ppm, or 5%"),
            ));
        }
        if number.magnitude_ppb == 0 {
            return Err(fail(
                RateErrorKind::OutOfRange,
                0,
                "a slew rate must be more than 0".into(),
            ));
        }
        u32::try_from(number.magnitude_ppb)
            .ok()
            .and_then(SlewRate::from_ppb)
            .ok_or_else(|| {
                fail(
                    RateErrorKind::OutOfRange,
                    0,
                    "a slew rate is at most 100% (the clock stands still or runs at double \
                     speed until it reaches the offset)"
                        .into(),
                )
            })
    }
}

/// What was wrong with a rate's text; see [`ParseRateError::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RateErrorKind {
    /// The text is empty.
    Empty,
    /// A sign, unit or decimal point where a digit should be.
    MissingNumber,
    /// A character that has no place in a rate (a space, a comma, a sign in a slew rate).
    UnexpectedChar,
    /// A unit other than ppb, ppm, %.
    UnknownUnit,
    /// A number needing a unit: a signed rate, or any slew rate.
    MissingUnit,
    /// A deviation (a number with a unit) without its sign, in a rate.
    MissingSign,
    /// Finer than one part per billion.
    TooPrecise,
    /// A rate below 0.
    Backwards,
    /// Beyond the limits: a rate above 1000; a slew rate of 0 or above 100%.
    OutOfRange,
}

/// Why a text is not a [`Rate`] or a [`SlewRate`]: quotes the input and names the byte at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseRateError {
    what: &'static str,
    input: String,
    kind: RateErrorKind,
    at: usize,
    detail: String,
}

impl ParseRateError {
    fn new(
        what: &'static str,
        input: &str,
        kind: RateErrorKind,
        at: usize,
        detail: String,
    ) -> ParseRateError {
        ParseRateError {
            what,
            input: input.to_owned(),
            kind,
            at,
            detail,
        }
    }

    /// What kind of mistake it is.
    pub fn kind(&self) -> RateErrorKind {
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

impl fmt::Display for ParseRateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} \"{}\": {}",
            self.what, self.input, self.detail
        )
    }
}

impl std::error::Error for ParseRateError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sign {
    Plus,
    Minus,
}

/// `[sign] digits [. digits] [unit]`, the magnitude in ppb of a whole (a factor) or of the unit.
struct Number {
    sign: Option<Sign>,
    unit: Option<&'static str>,
    magnitude_ppb: u64,
    /// Where the number ends (the unit, if any, starts).
    end: usize,
}

/// Parses the common syntax of rates and slew rates; `what` names it in messages.
fn parse_number(s: &str, what: &'static str) -> Result<Number, ParseRateError> {
    use RateErrorKind::*;
    let fail = |kind, at, detail: String| ParseRateError::new(what, s, kind, at, detail);
    if s.is_empty() {
        return Err(fail(
            Empty,
            0,
            "empty; expected a factor such as 2 or 0.5, or a deviation such as +500ppm or -10%"
                .into(),
        ));
    }
    let bytes = s.as_bytes();
    let (sign, mut pos) = match bytes[0] {
        b'+' => (Some(Sign::Plus), 1),
        b'-' => (Some(Sign::Minus), 1),
        _ => (None, 0),
    };
    let digits = |from: usize| {
        bytes[from..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let int_len = digits(pos);
    if int_len == 0 {
        let detail = match s[pos..].chars().next() {
            None => format!("expected a number after the sign at byte {pos}"),
            Some('.') => format!("expected a digit before the decimal point at byte {pos}"),
            Some(c) => format!(
                "expected a number at byte {pos}, found '{}'",
                c.escape_debug()
            ),
        };
        return Err(fail(MissingNumber, pos, detail));
    }
    let int_part = &s[pos..pos + int_len];
    pos += int_len;
    let mut frac_part = "";
    if bytes.get(pos) == Some(&b'.') {
        pos += 1;
        let frac_len = digits(pos);
        if frac_len == 0 {
            return Err(fail(
                MissingNumber,
                pos,
                format!("expected a digit after the decimal point at byte {pos}"),
            ));
        }
        frac_part = &s[pos..pos + frac_len];
        pos += frac_len;
    }
    let end = pos;
    let rest = &s[pos..];
    let unit = if rest.is_empty() {
        None
    } else if let Some(&(name, _)) = UNITS.iter().find(|(name, _)| *name == rest) {
        Some(name)
    } else if rest.starts_with(|c: char| c.is_alphabetic()) {
        let hint = match rest.to_lowercase().as_str() {
            "ppm" | "ppb" => " (units are lower case)",
            "percent" | "pct" => " (did you mean \"%\"?)",
            _ => "",
        };
        return Err(fail(
            UnknownUnit,
            pos,
            format!("unknown unit \"{rest}\" at byte {pos}{hint}; valid units: ppb, ppm, %"),
        ));
    } else {
        let c = rest.chars().next().unwrap_or(' ');
        let hint = match c {
            ',' => "; use '.' for a fraction, e.g. 0.5",
            c if c.is_whitespace() => "; write the number and unit without spaces, e.g. +500ppm",
            _ => "",
        };
        return Err(fail(
            UnexpectedChar,
            pos,
            format!(
                "unexpected character '{}' at byte {pos}{hint}",
                c.escape_debug()
            ),
        ));
    };
    let per_unit = unit.map_or(PPB_PER_ONE, |name| {
        UNITS.iter().find(|(n, _)| *n == name).map_or(1, |u| u.1)
    });
    // Every unit divides 10^9, so a fraction of more than 9 significant digits is never a
    // whole number of ppb; and anything with more than 15 integer digits is far out of range.
    let frac = frac_part.trim_end_matches('0');
    let too_precise = || {
        fail(
            TooPrecise,
            0,
            format!("\"{s}\" is finer than 1 ppb (10⁻⁹), the resolution of a {what}"),
        )
    };
    if frac.len() > 9 {
        return Err(too_precise());
    }
    let int_digits = int_part.trim_start_matches('0');
    if int_digits.len() > 15 {
        return Err(fail(
            OutOfRange,
            0,
            format!("the number \"{int_part}\" is far too large"),
        ));
    }
    let int: u128 = int_digits.parse().unwrap_or(0);
    let frac_value: u128 = frac.parse().unwrap_or(0);
    let scale = 10u128.pow(frac.len() as u32);
    let numerator = (int * scale + frac_value) * u128::from(per_unit);
    if !numerator.is_multiple_of(scale) {
        return Err(too_precise());
    }
    Ok(Number {
        sign,
        unit,
        magnitude_ppb: (numerator / scale) as u64,
        end,
    })
}

/// `ppb` / 10⁹ as a decimal without trailing zeros: `1.0005`, `2`, `0`.
fn decimal(ppb: u64) -> String {
    let (whole, frac) = (ppb / PPB_PER_ONE, ppb % PPB_PER_ONE);
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:09}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(s: &str) -> u64 {
        s.parse::<Rate>()
            .unwrap_or_else(|e| panic!("{s:?}: {e}"))
            .as_ppb()
    }

    fn slew(s: &str) -> u32 {
        s.parse::<SlewRate>()
            .unwrap_or_else(|e| panic!("{s:?}: {e}"))
            .as_ppb()
    }

    /// The error's kind, position and full message.
    fn rate_err(s: &str) -> (RateErrorKind, usize, String) {
        let e = s.parse::<Rate>().expect_err(s);
        (e.kind(), e.position(), e.to_string())
    }

    fn slew_err(s: &str) -> (RateErrorKind, usize, String) {
        let e = s.parse::<SlewRate>().expect_err(s);
        (e.kind(), e.position(), e.to_string())
    }

    #[test]
    fn rates_as_factors_and_deviations() {
        assert_eq!(rate("2"), 2_000_000_000);
        assert_eq!(rate("0.5"), 500_000_000);
        assert_eq!(rate("1.0001"), 1_000_100_000);
        assert_eq!(rate("1"), PPB_PER_ONE);
        assert_eq!(rate("0"), 0);
        assert_eq!(rate("0.000000001"), 1);
        assert_eq!(rate("1000"), 1000 * PPB_PER_ONE);
        assert_eq!(rate("1000.000000000"), 1000 * PPB_PER_ONE, "trailing zeros");
        assert_eq!(rate("002.50"), 2_500_000_000);
        assert_eq!(rate("+500ppm"), 1_000_500_000);
        assert_eq!(rate("-50ppm"), 999_950_000);
        assert_eq!(rate("+10%"), 1_100_000_000);
        assert_eq!(rate("-100%"), 0);
        assert_eq!(rate("+1ppb"), PPB_PER_ONE + 1);
        assert_eq!(rate("-0.5ppm"), PPB_PER_ONE - 500);
        assert_eq!(rate("+99900%"), 1000 * PPB_PER_ONE);
        assert_eq!(rate("+0%"), PPB_PER_ONE);
    }

    #[test]
    fn bad_rates_point_at_the_fault() {
        let (kind, at, msg) = rate_err("-2");
        assert_eq!((kind, at), (RateErrorKind::Backwards, 0));
        assert_eq!(
            msg,
            "invalid rate \"-2\": a clock cannot run backwards; use --offset to step back"
        );
        let (kind, _, msg) = rate_err("-101%");
        assert_eq!(kind, RateErrorKind::Backwards);
        assert!(
            msg.contains("a clock cannot run backwards; use --offset"),
            "{msg}"
        );
        let (kind, at, msg) = rate_err("1000.000000001");
        assert_eq!((kind, at), (RateErrorKind::OutOfRange, 0));
        assert!(
            msg.ends_with("1000.000000001 is more than the limit of 1000"),
            "{msg}"
        );
        assert_eq!(rate_err("+99901%").0, RateErrorKind::OutOfRange);
        assert_eq!(
            rate_err("99999999999999999999").0,
            RateErrorKind::OutOfRange
        );
        let (kind, at, msg) = rate_err("500ppm");
        assert_eq!((kind, at), (RateErrorKind::MissingSign, 0));
        assert!(msg.contains("+500ppm or -500ppm"), "{msg}");
        let (kind, at, msg) = rate_err("+2");
        assert_eq!((kind, at), (RateErrorKind::MissingUnit, 2));
        assert!(msg.contains("needs a unit"), "{msg}");
        let (kind, at, msg) = rate_err("+5ppx");
        assert_eq!((kind, at), (RateErrorKind::UnknownUnit, 2));
        assert_eq!(
            msg,
            "invalid rate \"+5ppx\": unknown unit \"ppx\" at byte 2; valid units: ppb, ppm, %"
        );
        assert!(rate_err("+5PPM").2.contains("lower case"));
        assert!(rate_err("+5percent").2.contains("did you mean \"%\"?"));
        assert_eq!(rate_err("").0, RateErrorKind::Empty);
        assert_eq!(rate_err("-").0, RateErrorKind::MissingNumber);
        assert_eq!(rate_err("-").1, 1);
        assert_eq!(rate_err(".5").0, RateErrorKind::MissingNumber);
        assert_eq!(
            rate_err("x").2,
            "invalid rate \"x\": expected a number at byte 0, found 'x'"
        );
        let (kind, at, _) = rate_err("1.");
        assert_eq!((kind, at), (RateErrorKind::MissingNumber, 2));
        let (kind, at, msg) = rate_err("1,5");
        assert_eq!((kind, at), (RateErrorKind::UnexpectedChar, 1));
        assert!(msg.contains("use '.'"), "{msg}");
        let (kind, at, msg) = rate_err("+5 ppm");
        assert_eq!((kind, at), (RateErrorKind::UnexpectedChar, 2));
        assert!(msg.contains("without spaces"), "{msg}");
        assert_eq!(rate_err("2x2").0, RateErrorKind::UnknownUnit);
        let (kind, _, msg) = rate_err("1.0000000001");
        assert_eq!(kind, RateErrorKind::TooPrecise);
        assert!(msg.contains("finer than 1 ppb"), "{msg}");
        assert_eq!(rate_err("+0.0001ppb").0, RateErrorKind::TooPrecise);
        assert_eq!(rate_err("--1").0, RateErrorKind::MissingNumber);
    }

    #[test]
    fn rate_display_round_trips_and_q32_rounds() {
        for (input, shown) in [
            ("2", "2"),
            ("+500ppm", "1.0005"),
            ("-50ppm", "0.99995"),
            ("0.500", "0.5"),
            ("-100%", "0"),
            ("+1ppb", "1.000000001"),
        ] {
            let r: Rate = input.parse().unwrap();
            assert_eq!(r.to_string(), shown, "{input}");
            assert_eq!(shown.parse::<Rate>().unwrap(), r);
        }
        assert_eq!(serde_json::to_string(&Rate::ONE).unwrap(), "\"1\"");
        assert_eq!(Rate::ONE.as_q32(), 1 << 32);
        assert_eq!(Rate::ZERO.as_q32(), 0);
        assert_eq!(Rate::MAX.as_q32(), 1000 << 32);
        assert_eq!(rate_q32("0.5"), 1 << 31);
        // 1 ppb of 2^32 is 4.29…: rounded to 4, and 1.5 ppb would be 6.44 → 6.
        assert_eq!(rate_q32("1.000000001"), (1 << 32) + 4);
        assert_eq!(rate_q32("0.000000001"), 4);
        // 1/3 is not exact in ppb; 0.333333333 · 2^32 = 1431655764.0 (rounded).
        assert_eq!(rate_q32("0.333333333"), 1_431_655_764);
        assert_eq!(Rate::from_ppb(1000 * PPB_PER_ONE + 1), None);
        assert!((rate_f("1.0005") - 1.0005).abs() < 1e-12);
    }

    fn rate_q32(s: &str) -> u64 {
        s.parse::<Rate>().unwrap().as_q32()
    }

    fn rate_f(s: &str) -> f64 {
        s.parse::<Rate>().unwrap().as_f64()
    }

    #[test]
    fn slew_rates_need_a_unit_and_no_sign() {
        assert_eq!(slew("500ppm"), 500_000);
        assert_eq!(slew("5%"), 50_000_000);
        assert_eq!(slew("50%"), 500_000_000);
        assert_eq!(slew("100%"), 1_000_000_000);
        assert_eq!(slew("1ppb"), 1);
        assert_eq!(slew("0.5ppm"), 500);
        let (kind, at, msg) = slew_err("500");
        assert_eq!((kind, at), (RateErrorKind::MissingUnit, 3));
        assert_eq!(
            msg,
            "invalid slew rate \"500\": missing unit after \"500\": add ppm or %, e.g. 500ppm, or 5%"
        );
        let (kind, at, msg) = slew_err("+500ppm");
        assert_eq!((kind, at), (RateErrorKind::UnexpectedChar, 0));
        assert!(msg.contains("no sign"), "{msg}");
        assert_eq!(slew_err("-5%").0, RateErrorKind::UnexpectedChar);
        let (kind, _, msg) = slew_err("0ppm");
        assert_eq!(kind, RateErrorKind::OutOfRange);
        assert!(msg.contains("more than 0"), "{msg}");
        let (kind, _, msg) = slew_err("100.1%");
        assert_eq!(kind, RateErrorKind::OutOfRange);
        assert!(msg.contains("at most 100%"), "{msg}");
        assert_eq!(slew_err("5x").1, 1);
        assert_eq!(slew_err("0.0001ppb").0, RateErrorKind::TooPrecise);
        assert_eq!(slew_err("").0, RateErrorKind::Empty);
    }

    #[test]
    fn slew_display_round_trips_and_q32() {
        for (input, shown) in [
            ("5%", "5%"),
            ("0.05%", "500ppm"),
            ("500ppm", "500ppm"),
            ("12.5ppm", "12.5ppm"),
            ("1.001ppm", "1.001ppm"),
            ("7ppb", "7ppb"),
            ("1000ppb", "1ppm"),
            ("12.5%", "125000ppm"),
            ("100%", "100%"),
        ] {
            let r: SlewRate = input.parse().unwrap();
            assert_eq!(r.to_string(), shown, "{input}");
            assert_eq!(shown.parse::<SlewRate>().unwrap(), r, "{shown}");
        }
        assert_eq!(SlewRate::MAX.as_q32(), 1 << 32);
        assert_eq!("50%".parse::<SlewRate>().unwrap().as_q32(), 1 << 31);
        assert_eq!(
            "500ppm".parse::<SlewRate>().unwrap().as_q32(),
            2_147_484 // 0.0005 · 2^32 = 2147483.648
        );
        assert_eq!(SlewRate::from_ppb(0), None);
        assert_eq!(
            serde_json::to_string(&"5%".parse::<SlewRate>().unwrap()).unwrap(),
            "\"5%\""
        );
    }
}
