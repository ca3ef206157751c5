//! `timeskew demo`: an injection from start to finish on a throwaway child process.
//!
//! The child is this same executable run as `timeskew __demo-child`. It prints `ready`, then one
//! line of clock readings for every line it reads on stdin, and exits at the end of its input.
//! The parent asks for a reading after each step and brackets the request between two readings
//! of its own (unskewed) clocks, so it can check what the child saw without sleeping to
//! synchronise: the child's reading happened after the first and before the second.

use std::io::{self, BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use timeskew::{Clock, Offset, Skew};

use crate::cli::{self, Backend, CliError};

/// The hidden subcommand that runs the child.
pub const CHILD_COMMAND: &str = "__demo-child";

const READY: &str = "ready";

/// How long the parent waits for one answer. This synchronises nothing (every answer is awaited
/// by reading a line); it turns a child left stopped or hung into an error instead of a hang.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Disagreement tolerated between a reading and its bracket, for a clock stepped meanwhile (NTP).
const SLACK_NS: i128 = 5_000_000;

const NS_PER_S: i128 = 1_000_000_000;

/// The demo. Every path out of it, error or not, kills and reaps the child.
pub fn run(backend: &impl Backend, out: &mut impl Write) -> Result<(), CliError> {
    let mut child = DemoChild::spawn()?;
    let pid = child.pid();
    writeln!(
        out,
        "timeskew demo: started a throwaway child process (pid {pid}, `timeskew {CHILD_COMMAND}`) \
         that prints its clocks when asked.\n"
    )?;
    show(out, &mut child, "1/4: before injection", Expect::REAL)?;

    let skew = Skew::new(Offset::from_nanos(-600 * NS_PER_S as i64));
    writeln!(out, "$ timeskew inject --pid {pid} --offset -600s")?;
    let report = backend.inject(pid, &skew)?;
    writeln!(out, "{}\n", cli::format_inject(&report))?;
    let expect = Expect {
        realtime: skew.offset(),
        monotonic: Offset::ZERO,
    };
    show(
        out,
        &mut child,
        "2/4: after inject -600s (realtime)",
        expect,
    )?;

    let skew = Skew::new(Offset::from_nanos(3_600 * NS_PER_S as i64))
        .with_clock(Clock::Realtime)
        .with_clock(Clock::Monotonic);
    writeln!(
        out,
        "$ timeskew inject --pid {pid} --offset +1h --clock realtime,monotonic"
    )?;
    if let Some(warning) = cli::timer_warning(&skew) {
        writeln!(out, "warning: {warning}")?;
    }
    let report = backend.inject(pid, &skew)?;
    writeln!(out, "{}", cli::format_inject(&report))?;
    writeln!(out, "$ timeskew status --pid {pid}")?;
    writeln!(out, "{}\n", cli::format_status(&backend.status(pid)?))?;
    let expect = Expect {
        realtime: skew.offset(),
        monotonic: skew.offset(),
    };
    show(
        out,
        &mut child,
        "3/4: after the live update to +1h (realtime, monotonic)",
        expect,
    )?;

    writeln!(out, "$ timeskew recover --pid {pid}")?;
    writeln!(out, "{}\n", cli::format_recover(&backend.recover(pid)?))?;
    show(out, &mut child, "4/4: after recover", Expect::REAL)?;

    child.finish()?;
    writeln!(
        out,
        "demo passed: the child saw each skew and real time again after recover, and exited normally."
    )?;
    out.flush()?;
    Ok(())
}

/// The child: `ready`, then one line of readings per line of input, until end of input.
pub fn child(input: &mut impl BufRead, out: &mut impl Write) -> Result<(), CliError> {
    child_loop(input, out, Readings::now).map_err(|e| CliError::io("demo child", e))
}

fn child_loop(
    input: &mut impl BufRead,
    out: &mut impl Write,
    read: impl Fn() -> io::Result<Readings>,
) -> io::Result<()> {
    writeln!(out, "{READY}")?;
    out.flush()?;
    let mut line = String::new();
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            return Ok(());
        }
        writeln!(out, "{}", read()?.to_line())?;
        out.flush()?;
    }
}

// ---------------------------------------------------------------------------------------------
// Clock readings
// ---------------------------------------------------------------------------------------------

/// One reading of every clock the demo shows, as the child's libc returns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Readings {
    /// `clock_gettime(CLOCK_REALTIME)`, ns.
    realtime_ns: i128,
    /// `gettimeofday`, µs.
    gettimeofday_us: i128,
    /// `time()`, s.
    time_s: i128,
    /// `clock_gettime(CLOCK_MONOTONIC)`, ns.
    monotonic_ns: i128,
}

impl Readings {
    fn now() -> io::Result<Readings> {
        Ok(Readings {
            realtime_ns: clock_gettime(libc::CLOCK_REALTIME)?,
            gettimeofday_us: gettimeofday()?,
            time_s: time()?,
            monotonic_ns: clock_gettime(libc::CLOCK_MONOTONIC)?,
        })
    }

    fn to_line(self) -> String {
        format!(
            "realtime_ns={} gettimeofday_us={} time_s={} monotonic_ns={}",
            self.realtime_ns, self.gettimeofday_us, self.time_s, self.monotonic_ns
        )
    }

    fn parse(line: &str) -> Result<Readings, String> {
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
struct RealClocks {
    realtime_ns: i128,
    monotonic_ns: i128,
}

impl RealClocks {
    fn now() -> Result<RealClocks, CliError> {
        let read =
            |clock| clock_gettime(clock).map_err(|e| CliError::io("cannot read the real clock", e));
        Ok(RealClocks {
            realtime_ns: read(libc::CLOCK_REALTIME)?,
            monotonic_ns: read(libc::CLOCK_MONOTONIC)?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Comparison and display
// ---------------------------------------------------------------------------------------------

/// The skew the child should show at a step.
#[derive(Debug, Clone, Copy)]
struct Expect {
    realtime: Offset,
    monotonic: Offset,
}

impl Expect {
    const REAL: Expect = Expect {
        realtime: Offset::ZERO,
        monotonic: Offset::ZERO,
    };
}

/// One line of a step's table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    clock: &'static str,
    real: String,
    seen: String,
    difference: String,
    expected: Offset,
    ok: bool,
}

/// Compares what the child saw with the parent's clocks read `before` and `after` the request.
fn compare(before: RealClocks, seen: Readings, after: RealClocks, expect: Expect) -> Vec<Row> {
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

fn table(title: &str, rows: &[Row]) -> String {
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
            cli::signed(r.expected),
            if r.ok { "ok" } else { "WRONG" }
        );
    }
    text
}

/// Asks the child for a reading, prints the step's table, and fails on any wrong row.
fn show(
    out: &mut impl Write,
    child: &mut DemoChild,
    title: &str,
    expect: Expect,
) -> Result<(), CliError> {
    let before = RealClocks::now()?;
    let seen = child.ask()?;
    let after = RealClocks::now()?;
    let rows = compare(before, seen, after, expect);
    writeln!(out, "{}", table(title, &rows))?;
    out.flush()?;
    let wrong: Vec<String> = rows
        .iter()
        .filter(|r| !r.ok)
        .map(|r| {
            format!(
                "{} is off by {} instead of {}",
                r.clock,
                r.difference,
                cli::signed(r.expected)
            )
        })
        .collect();
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(CliError::Demo(format!(
            "step {title}: in the child, {}",
            wrong.join("; ")
        )))
    }
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

// ---------------------------------------------------------------------------------------------
// The child process
// ---------------------------------------------------------------------------------------------

/// The running child; dropping it kills and reaps the child and joins the thread reading its
/// output, whatever happened before.
#[derive(Debug)]
struct DemoChild {
    process: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<io::Result<String>>,
    reader: Option<JoinHandle<()>>,
    reaped: bool,
    /// How long to wait for one answer (see [`ANSWER_TIMEOUT`]).
    timeout: Duration,
}

impl DemoChild {
    /// Starts `timeskew __demo-child` and waits for its `ready`.
    fn spawn() -> Result<DemoChild, CliError> {
        let exe = std::env::current_exe().map_err(|e| {
            CliError::io(
                "cannot find the timeskew executable to run the demo child",
                e,
            )
        })?;
        let mut command = Command::new(exe);
        command.arg(CHILD_COMMAND);
        DemoChild::start(command)
    }

    /// Starts `command` as the child and waits for its `ready`.
    fn start(mut command: Command) -> Result<DemoChild, CliError> {
        let mut process = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                let program = command.get_program().to_string_lossy();
                CliError::io(format!("cannot start the demo child {program}"), e)
            })?;
        let stdin = process.stdin.take();
        let stdout = process.stdout.take();
        let (tx, lines) = mpsc::channel();
        // From here on the guard owns the child: any error below kills and reaps it.
        let mut child = DemoChild {
            process,
            stdin,
            lines,
            reader: None,
            reaped: false,
            timeout: ANSWER_TIMEOUT,
        };
        let stdout = stdout.ok_or_else(|| CliError::Demo("the child has no stdout pipe".into()))?;
        let reader = std::thread::Builder::new()
            .name("demo-child-reader".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let failed = line.is_err();
                    if tx.send(line).is_err() || failed {
                        break;
                    }
                }
            })
            .map_err(|e| CliError::io("cannot start a thread to read the demo child", e))?;
        child.reader = Some(reader);
        let first = child.answer()?;
        if first != READY {
            return Err(CliError::Demo(format!(
                "the child said {first:?} instead of {READY:?}"
            )));
        }
        Ok(child)
    }

    fn pid(&self) -> i32 {
        self.process.id() as i32
    }

    /// Asks the child to read its clocks and returns what it saw.
    fn ask(&mut self) -> Result<Readings, CliError> {
        let sent = match self.stdin.as_mut() {
            Some(stdin) => writeln!(stdin, "read").and_then(|()| stdin.flush()),
            None => Err(io::ErrorKind::BrokenPipe.into()),
        };
        if let Err(e) = sent {
            return Err(match e.kind() {
                io::ErrorKind::BrokenPipe => CliError::Demo(self.ended()),
                _ => CliError::io("cannot write to the demo child", e),
            });
        }
        let line = self.answer()?;
        Readings::parse(&line).map_err(CliError::Demo)
    }

    /// The next line the child prints.
    fn answer(&mut self) -> Result<String, CliError> {
        match self.lines.recv_timeout(self.timeout) {
            Ok(Ok(line)) => Ok(line),
            Ok(Err(e)) => Err(CliError::io("cannot read from the demo child", e)),
            Err(RecvTimeoutError::Timeout) => Err(CliError::Demo(format!(
                "the child (pid {pid}) did not answer within {:?}; if it is still stopped, \
                 `grep -E 'State|TracerPid' /proc/{pid}/status` shows by whom",
                self.timeout,
                pid = self.pid()
            ))),
            Err(RecvTimeoutError::Disconnected) => Err(CliError::Demo(self.ended())),
        }
    }

    /// Reaps a child whose output ended and says how it ended.
    fn ended(&mut self) -> String {
        let pid = self.pid();
        // It closed its output, so it is exiting or gone; the kill only makes sure of it.
        let _ = self.process.kill();
        match self.process.wait() {
            Ok(status) => {
                self.reaped = true;
                format!("the child (pid {pid}) ended unexpectedly: {status}")
            }
            Err(e) => format!("the child (pid {pid}) stopped answering (wait failed: {e})"),
        }
    }

    /// Closes the child's input and checks that it exits normally.
    fn finish(&mut self) -> Result<(), CliError> {
        drop(self.stdin.take());
        match self.lines.recv_timeout(self.timeout) {
            Err(RecvTimeoutError::Disconnected) => {}
            Ok(Ok(line)) => {
                return Err(CliError::Demo(format!(
                    "the child printed {line:?} after its input ended"
                )));
            }
            Ok(Err(e)) => return Err(CliError::io("cannot read from the demo child", e)),
            Err(RecvTimeoutError::Timeout) => {
                return Err(CliError::Demo(format!(
                    "the child (pid {}) did not exit within {:?} after its input ended",
                    self.pid(),
                    self.timeout
                )));
            }
        }
        let status = self
            .process
            .wait()
            .map_err(|e| CliError::io("cannot wait for the demo child", e))?;
        self.reaped = true;
        if status.success() {
            Ok(())
        } else {
            Err(CliError::Demo(format!(
                "the child (pid {}) exited with {status}",
                self.pid()
            )))
        }
    }
}

impl Drop for DemoChild {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if !self.reaped {
            let pid = self.pid();
            match self.process.kill() {
                Ok(()) => match self.process.wait() {
                    Ok(_) => self.reaped = true,
                    Err(e) => log::warn!("demo: cannot reap the child (pid {pid}): {e}"),
                },
                Err(e) => log::warn!("demo: cannot kill the child (pid {pid}): {e}"),
            }
        }
        // The reader ends when the child's stdout closes, which a reaped child guarantees.
        if self.reaped
            && let Some(reader) = self.reader.take()
            && reader.join().is_err()
        {
            log::warn!("demo: the thread reading the child's output panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i128 = NS_PER_S;

    fn real(realtime_s: i128, monotonic_s: i128) -> RealClocks {
        RealClocks {
            realtime_ns: realtime_s * S,
            monotonic_ns: monotonic_s * S,
        }
    }

    fn seen_at(realtime_ns: i128, monotonic_ns: i128) -> Readings {
        Readings {
            realtime_ns,
            gettimeofday_us: realtime_ns.div_euclid(1_000),
            time_s: realtime_ns.div_euclid(S),
            monotonic_ns,
        }
    }

    #[test]
    fn child_answers_each_line_after_ready() {
        let readings = seen_at(1_700_000_000 * S + 5, 42 * S);
        let mut input = io::Cursor::new("read\nread\n");
        let mut out = Vec::new();
        child_loop(&mut input, &mut out, || Ok(readings)).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], READY);
        assert_eq!(Readings::parse(lines[1]).unwrap(), readings);
        assert_eq!(lines[1], lines[2]);
    }

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

    // --- the child guard, with shell scripts standing in for the child ----------------------------

    fn sh(script: &str) -> Command {
        let mut command = Command::new("/bin/sh");
        command.args(["-c", script]);
        command
    }

    const QUICK: Duration = Duration::from_millis(300);

    /// True while `pid` exists (as a live process or an unreaped zombie).
    fn exists(pid: i32) -> bool {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
    }

    fn demo_err(result: Result<impl std::fmt::Debug, CliError>) -> String {
        match result {
            Ok(v) => panic!("expected an error, got {v:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn guard_talks_to_a_well_behaved_child_and_sees_it_exit() {
        let line = seen_at(7 * S, 8 * S).to_line();
        let script = format!("echo ready; while read l; do echo '{line}'; done");
        let mut child = DemoChild::start(sh(&script)).unwrap();
        assert_eq!(child.ask().unwrap(), seen_at(7 * S, 8 * S));
        assert_eq!(child.ask().unwrap(), seen_at(7 * S, 8 * S));
        let pid = child.pid();
        child.finish().unwrap();
        drop(child);
        assert!(!exists(pid), "reaped");
    }

    #[test]
    fn guard_rejects_a_child_without_the_handshake() {
        let e = demo_err(DemoChild::start(sh("echo hello; exec sleep 100")));
        assert!(e.contains("said \"hello\" instead of \"ready\""), "{e}");
        let e = demo_err(DemoChild::start(sh("exit 0")));
        assert!(e.contains("ended unexpectedly: exit status: 0"), "{e}");
    }

    #[test]
    fn guard_reports_a_child_that_dies() {
        let mut child = DemoChild::start(sh("echo ready; read l; exit 3")).unwrap();
        let e = demo_err(child.ask());
        assert!(e.contains("ended unexpectedly: exit status: 3"), "{e}");
    }

    #[test]
    fn guard_times_out_on_a_silent_child_and_kills_it() {
        let mut child = DemoChild::start(sh("echo ready; exec sleep 100")).unwrap();
        child.timeout = QUICK;
        let pid = child.pid();
        let e = demo_err(child.ask());
        assert!(
            e.contains(&format!("(pid {pid}) did not answer within 300ms")),
            "{e}"
        );
        assert!(exists(pid));
        drop(child);
        assert!(!exists(pid), "killed and reaped by the guard");
    }

    #[test]
    fn guard_rejects_garbage_and_a_child_that_keeps_talking() {
        let mut child = DemoChild::start(sh("echo ready; read l; echo nonsense; cat")).unwrap();
        let e = demo_err(child.ask());
        assert!(
            e.contains("unexpected line from the child: \"nonsense\""),
            "{e}"
        );
        // `cat` echoes nothing more and exits at end of input: a clean finish.
        child.finish().unwrap();

        let mut child =
            DemoChild::start(sh("echo ready; read l; echo late; exec sleep 100")).unwrap();
        let e = demo_err(child.finish());
        assert!(e.contains("printed \"late\" after its input ended"), "{e}");
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
