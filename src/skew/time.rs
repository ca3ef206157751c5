//! An absolute wall-clock time, [`At`] (`--at 2038-01-19T03:14:00Z`), and its parser; the
//! calendar itself is jiff's.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

const NS_PER_S: i128 = 1_000_000_000;

/// A point in wall-clock time, in nanoseconds since 1970-01-01T00:00:00Z (Unix time, leap
/// seconds not counted): what a realtime clock should read (`--at`).
///
/// # Text form
///
/// - RFC 3339: `2038-01-19T03:14:00Z`, `2026-12-31T23:59:50+01:00`, `2026-12-31T23:59:50.25Z`
///   (`T` or a space between date and time; `Z` or an offset `±HH:MM` required);
/// - `YYYY-MM-DD HH:MM:SS[.frac]` with a space and no offset: UTC;
/// - `@UNIXSECONDS[.frac]`: `@2147483640`, `@1700000000.5`.
///
/// At most nine fractional digits. Times before 1970 are refused (a clock counting from 1970
/// cannot read them), and so are times after 2262-04-11T23:47:16.854775807Z, the last a signed
/// 64-bit count of nanoseconds holds.
///
/// [`Display`](fmt::Display) writes RFC 3339 in UTC, fractional seconds only when there are any
/// (`2038-01-19T03:14:00Z`), which parses back to the same value; serialized the same.
///
/// ```
/// use timeskew::At;
/// let at: At = "2026-12-31T23:59:50+01:00".parse()?;
/// assert_eq!(at.to_string(), "2026-12-31T22:59:50Z");
/// assert_eq!("@0.5".parse::<At>()?.as_nanos(), 500_000_000);
/// # Ok::<(), timeskew::ParseAtError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct At(i64);

impl At {
    /// The time `nanos` nanoseconds after the Unix epoch, if not negative.
    pub const fn from_nanos(nanos: i64) -> Option<At> {
        if nanos < 0 { None } else { Some(At(nanos)) }
    }

    /// Nanoseconds since the Unix epoch.
    pub const fn as_nanos(self) -> i64 {
        self.0
    }
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every i64 nanosecond count is within jiff's range (years -9999..=9999).
        match jiff::Timestamp::from_nanosecond(i128::from(self.0)) {
            Ok(ts) => f.pad(&ts.to_string()),
            Err(_) => write!(f, "@{}ns", self.0),
        }
    }
}

impl Serialize for At {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What was wrong with a time's text; see [`ParseAtError::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AtErrorKind {
    /// The text is empty.
    Empty,
    /// Not shaped like any accepted form (a wrong separator, a missing field).
    Syntax,
    /// A `T` form without `Z` or an offset: it could be meant as local time.
    MissingOffset,
    /// A field out of its range (month 13, 31 April, hour 24, offset +25:00).
    InvalidDate,
    /// More than nine fractional digits.
    TooPrecise,
    /// Before 1970 or after 2262-04-11.
    OutOfRange,
}

/// Why a text is not an [`At`]: quotes the input and names the byte at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseAtError {
    input: String,
    kind: AtErrorKind,
    at: usize,
    detail: String,
}

impl ParseAtError {
    /// What kind of mistake it is.
    pub fn kind(&self) -> AtErrorKind {
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

impl fmt::Display for ParseAtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid time \"{}\": {}", self.input, self.detail)
    }
}

impl std::error::Error for ParseAtError {}

/// The accepted forms, for messages.
const FORMS: &str = "expected RFC 3339 (2038-01-19T03:14:00Z, 2026-12-31T23:59:50+01:00), \
                     YYYY-MM-DD HH:MM:SS in UTC, or @UNIXSECONDS";

/// The fixed part of a date-time: `D` a digit, anything else itself (`T` also `t` or space).
const SHAPE: &[u8; 19] = b"DDDD-DD-DDTDD:DD:DD";

impl FromStr for At {
    type Err = ParseAtError;

    fn from_str(s: &str) -> Result<At, ParseAtError> {
        let fail = |kind, at, detail: String| ParseAtError {
            input: s.to_owned(),
            kind,
            at,
            detail,
        };
        if s.is_empty() {
            return Err(fail(AtErrorKind::Empty, 0, format!("empty; {FORMS}")));
        }
        let nanos = match s.strip_prefix('@') {
            Some(rest) => {
                unix_seconds(rest).map_err(|(kind, at, detail)| fail(kind, at + 1, detail))?
            }
            None => date_time(s).map_err(|(kind, at, detail)| fail(kind, at, detail))?,
        };
        if nanos < 0 {
            return Err(fail(
                AtErrorKind::OutOfRange,
                0,
                "before 1970-01-01T00:00:00Z: a realtime clock cannot read a time before the \
                 Unix epoch"
                    .into(),
            ));
        }
        i64::try_from(nanos).map(At).map_err(|_| {
            fail(
                AtErrorKind::OutOfRange,
                0,
                "after 2262-04-11T23:47:16Z, the last time a 64-bit count of nanoseconds holds"
                    .into(),
            )
        })
    }
}

type Failure = (AtErrorKind, usize, String);

/// `UNIXSECONDS[.frac]` (after the `@`) to nanoseconds.
fn unix_seconds(s: &str) -> Result<i128, Failure> {
    if s.starts_with('-') {
        return Err((
            AtErrorKind::OutOfRange,
            0,
            "before 1970-01-01T00:00:00Z: a realtime clock cannot read a time before the Unix \
             epoch"
                .into(),
        ));
    }
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let bad = s.bytes().position(|b| !b.is_ascii_digit() && b != b'.');
    if int.is_empty() || bad.is_some() || (s.contains('.') && frac.is_empty()) {
        let at = bad.unwrap_or(if int.is_empty() { 0 } else { s.len() });
        return Err((
            AtErrorKind::Syntax,
            at,
            format!(
                "expected digits (seconds since 1970) after '@' at byte {}",
                at + 1
            ),
        ));
    }
    if frac.len() > 9 {
        return Err(too_precise(int.len() + 1 + 9));
    }
    // More than 20 digits is past any representable time; stops the parse overflowing.
    let seconds: i128 = if int.trim_start_matches('0').len() > 20 {
        i128::MAX / (2 * NS_PER_S)
    } else {
        int.parse().unwrap_or(0)
    };
    let frac_ns: i128 = format!("{frac:0<9}").parse().unwrap_or(0);
    Ok(seconds * NS_PER_S + frac_ns)
}

fn too_precise(at: usize) -> Failure {
    (
        AtErrorKind::TooPrecise,
        at,
        format!("more than nine fractional digits at byte {at}; a time is kept to the nanosecond"),
    )
}

/// The RFC 3339 and `YYYY-MM-DD HH:MM:SS` forms to nanoseconds: the shape is checked here (to
/// point at the byte), the calendar by jiff.
fn date_time(s: &str) -> Result<i128, Failure> {
    let bytes = s.as_bytes();
    for (i, &want) in SHAPE.iter().enumerate() {
        let got = bytes.get(i).copied();
        let ok = match (want, got) {
            (_, None) => false,
            (b'D', Some(b)) => b.is_ascii_digit(),
            (b'T', Some(b)) => matches!(b, b'T' | b't' | b' '),
            (w, Some(b)) => w == b,
        };
        if !ok {
            let expected = match want {
                b'D' => "a digit".to_owned(),
                b'T' => "'T' or a space".to_owned(),
                w => format!("'{}'", w as char),
            };
            let found = match s.get(i..).and_then(|r| r.chars().next()) {
                None => "the end".to_owned(),
                Some(c) => format!("'{}'", c.escape_debug()),
            };
            return Err((
                AtErrorKind::Syntax,
                i,
                format!("expected {expected} at byte {i}, found {found}; {FORMS}"),
            ));
        }
    }
    let mut pos = SHAPE.len();
    if bytes.get(pos) == Some(&b'.') {
        let digits = bytes[pos + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 {
            return Err((
                AtErrorKind::Syntax,
                pos + 1,
                format!(
                    "expected a digit after the decimal point at byte {}",
                    pos + 1
                ),
            ));
        }
        if digits > 9 {
            return Err(too_precise(pos + 10));
        }
        pos += 1 + digits;
    }
    let zone = &s[pos..];
    let zone_ok = match zone.as_bytes() {
        [] | [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|b| b.is_ascii_digit()),
        _ => false,
    };
    if !zone_ok {
        return Err((
            AtErrorKind::Syntax,
            pos,
            format!(
                "unexpected \"{zone}\" at byte {pos}; expected Z, an offset such as +01:00, or \
                 the end"
            ),
        ));
    }
    // jiff takes offsets up to ±25:59; RFC 3339's stop at ±23:59.
    if let [b'+' | b'-', h1, h2, b':', m1, m2] = zone.as_bytes()
        && ((h1 - b'0') * 10 + (h2 - b'0') > 23 || (m1 - b'0') * 10 + (m2 - b'0') > 59)
    {
        return Err((
            AtErrorKind::InvalidDate,
            pos,
            format!("the offset \"{zone}\" at byte {pos} is beyond ±23:59"),
        ));
    }
    let text = if zone.is_empty() {
        if bytes[10] != b' ' {
            return Err((
                AtErrorKind::MissingOffset,
                pos,
                format!(
                    "missing UTC offset at byte {pos}: add Z for UTC ({s}Z) or an offset such as \
                     +01:00 (local time is not guessed)"
                ),
            ));
        }
        // The space form without an offset is UTC.
        format!("{s}Z")
    } else {
        s.to_owned()
    };
    let ts: jiff::Timestamp = text.parse().map_err(|e: jiff::Error| {
        (
            AtErrorKind::InvalidDate,
            0,
            format!("not a valid date and time: {e}"),
        )
    })?;
    Ok(ts.as_nanosecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(s: &str) -> i64 {
        s.parse::<At>()
            .unwrap_or_else(|e| panic!("{s:?}: {e}"))
            .as_nanos()
    }

    fn err(s: &str) -> (AtErrorKind, usize, String) {
        let e = s.parse::<At>().expect_err(s);
        (e.kind(), e.position(), e.to_string())
    }

    const Y2038: i64 = 2_147_483_640 * 1_000_000_000;

    #[test]
    fn accepts_the_three_forms() {
        assert_eq!(ns("2038-01-19T03:14:00Z"), Y2038);
        assert_eq!(ns("2038-01-19t03:14:00z"), Y2038);
        assert_eq!(ns("2038-01-19 03:14:00"), Y2038, "space form is UTC");
        assert_eq!(ns("2038-01-19 03:14:00Z"), Y2038);
        assert_eq!(ns("2038-01-19T04:14:00+01:00"), Y2038);
        assert_eq!(ns("2038-01-19T02:44:00-00:30"), Y2038);
        assert_eq!(ns("@2147483640"), Y2038);
        assert_eq!(ns("@2147483640.000"), Y2038);
        assert_eq!(ns("2038-01-19T03:14:00.5Z"), Y2038 + 500_000_000);
        assert_eq!(ns("2038-01-19 03:14:00.000000001"), Y2038 + 1);
        assert_eq!(ns("@1.000000001"), 1_000_000_001);
        assert_eq!(ns("@0"), 0);
        assert_eq!(ns("1970-01-01T00:00:00Z"), 0);
        assert_eq!(ns("2026-12-31T23:59:50+01:00"), ns("2026-12-31 22:59:50"));
        assert_eq!(ns("2024-02-29 12:00:00"), ns("@1709208000"), "leap day");
        assert_eq!(ns("2262-04-11T23:47:16.854775807Z"), i64::MAX);
    }

    #[test]
    fn refuses_bad_times_pointing_at_the_fault() {
        let (kind, at, msg) = err("1969-12-31T23:59:59Z");
        assert_eq!((kind, at), (AtErrorKind::OutOfRange, 0));
        assert!(msg.contains("before 1970-01-01T00:00:00Z"), "{msg}");
        assert_eq!(err("@-1").0, AtErrorKind::OutOfRange);
        assert_eq!(err("1970-01-01T00:30:00+01:00").0, AtErrorKind::OutOfRange);
        assert_eq!(
            err("2262-04-11T23:47:16.854775808Z").0,
            AtErrorKind::OutOfRange
        );
        assert_eq!(
            err("@99999999999999999999999999").0,
            AtErrorKind::OutOfRange
        );
        let (kind, at, msg) = err("2038-01-19T03:14:00");
        assert_eq!((kind, at), (AtErrorKind::MissingOffset, 19));
        assert!(
            msg.contains("add Z for UTC (2038-01-19T03:14:00Z)"),
            "{msg}"
        );
        let (kind, at, msg) = err("2038-01-19T03:14");
        assert_eq!((kind, at), (AtErrorKind::Syntax, 16));
        assert!(
            msg.contains("expected ':' at byte 16, found the end"),
            "{msg}"
        );
        let (kind, at, msg) = err("2038/01/19 03:14:00");
        assert_eq!((kind, at), (AtErrorKind::Syntax, 4));
        assert!(msg.contains("expected '-' at byte 4, found '/'"), "{msg}");
        assert_eq!(err("38-01-19T03:14:00Z").1, 2);
        assert_eq!(err("2038-01-19_03:14:00Z").1, 10);
        let (kind, at, msg) = err("2038-01-19T03:14:00 UTC");
        assert_eq!((kind, at), (AtErrorKind::Syntax, 19));
        assert!(msg.contains("unexpected \" UTC\" at byte 19"), "{msg}");
        assert_eq!(err("2038-01-19T03:14:00+1").1, 19);
        assert_eq!(err("2038-01-19T03:14:00.Z").1, 20);
        let (kind, at, _) = err("2038-01-19T03:14:00.1234567891Z");
        assert_eq!((kind, at), (AtErrorKind::TooPrecise, 29));
        assert_eq!(err("@1.1234567891").0, AtErrorKind::TooPrecise);
        for bad in [
            "2038-13-19T03:14:00Z",
            "2038-04-31T03:14:00Z",
            "2038-02-29 03:14:00",
            "2038-01-19T24:00:00Z",
            "2038-01-19T03:60:00Z",
        ] {
            let (kind, _, msg) = err(bad);
            assert_eq!(kind, AtErrorKind::InvalidDate, "{bad}: {msg}");
            assert!(msg.contains("not a valid date and time"), "{msg}");
        }
        let (kind, at, msg) = err("2038-01-19T03:14:00+25:00");
        assert_eq!((kind, at), (AtErrorKind::InvalidDate, 19));
        assert!(msg.contains("beyond ±23:59"), "{msg}");
        assert_eq!(err("2038-01-19T03:14:00-00:60").0, AtErrorKind::InvalidDate);
        let (kind, at, msg) = err("@12x");
        assert_eq!((kind, at), (AtErrorKind::Syntax, 3));
        assert!(msg.contains("after '@'"), "{msg}");
        assert_eq!(err("@").1, 1);
        assert_eq!(err("@1.").0, AtErrorKind::Syntax);
        assert_eq!(err("@.5").0, AtErrorKind::Syntax);
        assert_eq!(err("").0, AtErrorKind::Empty);
        assert!(err("tomorrow").2.contains("RFC 3339"));
    }

    #[test]
    fn display_is_rfc3339_utc_and_round_trips() {
        for (input, shown) in [
            ("2038-01-19T03:14:00Z", "2038-01-19T03:14:00Z"),
            ("2026-12-31T23:59:50+01:00", "2026-12-31T22:59:50Z"),
            ("@1.5", "1970-01-01T00:00:01.5Z"),
            ("@0.000000001", "1970-01-01T00:00:00.000000001Z"),
            (
                "2262-04-11T23:47:16.854775807Z",
                "2262-04-11T23:47:16.854775807Z",
            ),
        ] {
            let at: At = input.parse().unwrap();
            assert_eq!(at.to_string(), shown, "{input}");
            assert_eq!(shown.parse::<At>().unwrap(), at, "{shown}");
        }
        assert_eq!(At::from_nanos(-1), None);
        assert_eq!(
            serde_json::to_string(&At::from_nanos(Y2038).unwrap()).unwrap(),
            "\"2038-01-19T03:14:00Z\""
        );
    }
}
