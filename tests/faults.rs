//! End-to-end, the clock faults beyond a constant offset: rate, freeze, suspend, slew (there and
//! back), strobe, `--at` across 2038-01-19T03:14:08Z, resolution and slow reads — each on a C
//! target (static glibc) and a Go target (CGO_ENABLED=0), rate and freeze also on the JVM. The
//! values a target reports are checked against the expected function of real time, bracketed by
//! our own clock reads around each request (the tolerance is that bracket, plus the 2 ms by
//! which a new program takes over after the tool reads the clocks where stated).
//!
//! Also: CLOCK_MONOTONIC never goes backwards under any shape or live change (spinner threads
//! of examples/probe count it), `--duration` ends every shape on time with timeskew SIGKILLed,
//! and every bad value or conflicting combination is a usage error that leaves the target
//! untouched. docs/faults.md shows what the targets saw.

mod common;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::e2e::*;
use common::*;

const MS: i128 = 1_000_000;
/// The program a fault compiles to takes over this long after the tool read the clocks
/// (`SWITCH_MARGIN_NS`), so a rate's origin is known to within the bracket of the inject call
/// shifted by it. Samples meant to see the new shape wait a little longer than that.
const SWITCH: i128 = 50 * MS;

/// A runtime to run a shape on: its name, how to start it, and the realtime field it reports
/// (ns).
struct Runtime {
    name: &'static str,
    spawn: fn() -> LineTarget,
}

fn c_target() -> LineTarget {
    LineTarget::spawn("C (static glibc)", Command::new(static_glibc_probe()))
}

fn go_target() -> LineTarget {
    LineTarget::spawn("Go (CGO_ENABLED=0)", Command::new(go_static_probe()))
}

fn jvm_target() -> LineTarget {
    let java = require("java", "openjdk-17-jdk-headless");
    let mut cmd = Command::new(java);
    cmd.args(["-XX:+UseSerialGC", "-Xmx64m", "-cp"])
        .arg(java_classes())
        .arg("Probe");
    LineTarget::spawn("JVM", cmd)
}

const C_AND_GO: [Runtime; 2] = [
    Runtime {
        name: "C",
        spawn: c_target,
    },
    Runtime {
        name: "Go",
        spawn: go_target,
    },
];

/// `timeskew inject --pid PID ARGS…`, which must succeed; returns our realtime just before and
/// just after the call.
fn inject(t: &LineTarget, args: &[&str]) -> (i128, i128) {
    let pid = t.pid_str();
    let mut all = vec!["inject", "--pid", pid.as_str()];
    all.extend_from_slice(args);
    let before = realtime_ns();
    timeskew_ok(&all);
    (before, realtime_ns())
}

fn recover(t: &LineTarget) {
    timeskew_ok(&["recover", "--pid", &t.pid_str()]);
}

/// The realtime offset a sample shows, bounded by the bracket: (lowest, highest) possible.
fn offset_range(s: &Sample) -> (i128, i128) {
    let seen = s.get("realtime");
    (seen - s.after, seen - s.before)
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Waits until a fault just injected has taken over.
fn past_switch() {
    sleep_ms(60);
}

/// Asserts the target's realtime advanced by `num/den` of the real time between two samples.
fn assert_rate(t: &mut LineTarget, what: &str, num: i128, den: i128) {
    past_switch();
    let s0 = t.now();
    sleep_ms(400);
    let s1 = t.now();
    let moved = s1.get("realtime") - s0.get("realtime");
    let lo = (s1.before - s0.after) * num / den;
    let hi = (s1.after - s0.before) * num / den;
    assert!(
        (lo..=hi).contains(&moved),
        "{} under {what}: realtime moved {moved} ns while real time moved [{}, {}] ns; \
         expected [{lo}, {hi}]",
        t.name,
        s1.before - s0.after,
        s1.after - s0.before,
    );
}

#[test]
fn rates_2_half_and_500ppm() {
    for rt in &C_AND_GO {
        let mut t = (rt.spawn)();
        for (rate, num, den) in [
            ("2", 2, 1),
            ("0.5", 1, 2),
            ("+500ppm", 1_000_500, 1_000_000),
            ("-50ppm", 999_950, 1_000_000),
        ] {
            inject(&t, &["--rate", rate]);
            assert_rate(&mut t, &format!("--rate {rate} ({})", rt.name), num, den);
        }
        recover(&t);
        t.now().assert_realtime_shift("realtime", 1, 0, 0);
    }
}

#[test]
fn freeze_stands_still_and_a_rate_after_it_continues_from_there() {
    for rt in &C_AND_GO {
        let mut t = (rt.spawn)();
        inject(&t, &["--freeze"]);
        past_switch();
        let a = t.now().get("realtime");
        sleep_ms(200);
        let b = t.now().get("realtime");
        assert_eq!(a, b, "{}: a frozen clock moved", t.name);
        // `--rate 2` from the frozen value: no jump, then twice real speed.
        let (before, _) = inject(&t, &["--rate", "2"]);
        let s = t.now();
        let c = s.get("realtime");
        // At most twice the real time since the command began (the switch is later still).
        assert!(
            c >= a && c - a <= 2 * (s.after - before),
            "{}: jumped {} ns in {} ns",
            t.name,
            c - a,
            s.after - before
        );
        assert_rate(&mut t, "--rate 2 after --freeze", 2, 1);
        recover(&t);
    }
}

#[test]
fn suspend_stands_still_then_runs_on_behind() {
    for rt in &C_AND_GO {
        let mut t = (rt.spawn)();
        let (_, after) = inject(&t, &["--suspend", "1s"]);
        past_switch();
        let a = t.now().get("realtime");
        sleep_ms(300);
        assert_eq!(
            t.now().get("realtime"),
            a,
            "{}: moved while suspended",
            t.name
        );
        // After the second: real speed, exactly one second behind real time.
        while realtime_ns() < after + SWITCH + 1_050 * MS {
            sleep_ms(20);
        }
        let s = t.now();
        s.assert_realtime_shift("realtime", 1, -1_000 * MS, 0);
        assert_rate(&mut t, "after --suspend", 1, 1);
        recover(&t);
    }
}

#[test]
fn slew_to_an_offset_and_back_to_real_time() {
    for rt in &C_AND_GO {
        let mut t = (rt.spawn)();
        // +1 s at 50 %: two seconds of running at 1.5.
        let (b0, a0) = inject(&t, &["--offset", "1s", "--slew", "50%"]);
        sleep_ms(600);
        let s = t.now();
        let (lo, hi) = offset_range(&s);
        let expect_lo = (s.before - a0 - SWITCH) / 2;
        let expect_hi = (s.after - b0 - SWITCH) / 2 + 1;
        assert!(
            lo <= expect_hi && hi >= expect_lo,
            "{}: offset in [{lo}, {hi}] ns half-way, expected [{expect_lo}, {expect_hi}]",
            t.name
        );
        let status = status_json(t.pid);
        assert!(
            status["shape"]["state"]
                .as_str()
                .unwrap()
                .starts_with("slewing at"),
            "{status}"
        );
        while realtime_ns() < a0 + 2_100 * MS {
            sleep_ms(20);
        }
        t.now().assert_realtime_shift("realtime", 1, 1_000 * MS, 0);
        assert_rate(&mut t, "after the slew", 1, 1);
        // Back at 50 %: offset shrinks by half a second per second, then stays at 0.
        let before = realtime_ns();
        timeskew_ok(&["recover", "--pid", &t.pid_str(), "--slew", "50%"]);
        let after = realtime_ns();
        let status = status_json(t.pid);
        assert!(
            status["shape"]["state"]
                .as_str()
                .unwrap()
                .starts_with("returning to real time"),
            "{status}"
        );
        sleep_ms(1_000);
        let s = t.now();
        let (lo, hi) = offset_range(&s);
        let expect_lo = 1_000 * MS - (s.after - before - SWITCH) / 2;
        let expect_hi = 1_000 * MS - (s.before - after - SWITCH) / 2 + 1;
        assert!(
            lo <= expect_hi && hi >= expect_lo,
            "{}: offset in [{lo}, {hi}] ns during the slew back, expected [{expect_lo}, \
             {expect_hi}]",
            t.name
        );
        while realtime_ns() < after + 2_100 * MS {
            sleep_ms(20);
        }
        t.now().assert_realtime_shift("realtime", 1, 0, 0);
        recover(&t);
    }
}

#[test]
fn strobe_flips_between_two_offsets_every_period() {
    for rt in &C_AND_GO {
        let mut t = (rt.spawn)();
        inject(&t, &["--strobe", "1s", "--period", "100ms"]);
        past_switch();
        // Sample for a second: every reading is at offset 0 or +1 s; count the phases. Each
        // reading, less its phase's offset, is the real time the target read its clock at, so
        // a phase's start lies between the last reading before it and the first one in it —
        // however late our requests were answered (CI saw a 36 ms gap between two).
        let start = Instant::now();
        // (ahead?, real time of its first reading, of the last reading before it)
        let mut phases: Vec<(bool, i128, i128)> = Vec::new();
        let mut last_read = 0;
        while start.elapsed() < Duration::from_millis(1_000) {
            let s = t.now();
            let (lo, hi) = offset_range(&s);
            let ahead = if lo <= 0 && hi >= 0 {
                false
            } else if lo <= 1_000 * MS && hi >= 1_000 * MS {
                true
            } else {
                panic!("{}: offset in [{lo}, {hi}] ns, neither 0 nor 1 s", t.name);
            };
            let read_at = s.get("realtime") - if ahead { 1_000 * MS } else { 0 };
            if phases.last().is_none_or(|p| p.0 != ahead) {
                phases.push((ahead, read_at, last_read));
            }
            last_read = read_at;
        }
        // Ten periods in a second: 9 to 12 phase starts seen.
        assert!(
            (9..=12).contains(&phases.len()),
            "{}: {} phases in a second: {phases:?}",
            t.name,
            phases.len()
        );
        // Each whole phase (not the first or last seen) lasts 100 ms: its length, between the
        // bounds its two starts allow, may be 100 ms (± 2 ms for the readings' own cost) —
        // and most starts are pinned within 10 ms, or the check would say little.
        let mut pinned = 0;
        for pair in phases.windows(2).skip(1) {
            let (shortest, longest) = (pair[1].2 - pair[0].1, pair[1].1 - pair[0].2);
            assert!(
                shortest <= 102 * MS && longest >= 98 * MS,
                "{}: a phase lasted between {} and {} ms: {phases:?}",
                t.name,
                shortest / MS,
                longest / MS
            );
            pinned += usize::from(pair[1].1 - pair[1].2 <= 10 * MS);
        }
        assert!(
            pinned * 2 >= phases.len() - 2,
            "{}: only {pinned} of {} phase starts seen within 10 ms: {phases:?}",
            t.name,
            phases.len() - 2
        );
        recover(&t);
    }
}

#[test]
fn at_runs_a_live_process_across_2038() {
    // 2^31 - 1 s is 2038-01-19T03:14:07Z: start 3 s before it.
    let wrap = 2_147_483_647i128 * 1_000 * MS;
    for rt in &C_AND_GO {
        let mut t = (rt.spawn)();
        let (before, after) = inject(&t, &["--at", "2038-01-19T03:14:05Z"]);
        let start = wrap - 2_000 * MS;
        past_switch();
        let s = t.now();
        let seen = s.get("realtime");
        assert!(
            seen >= start && seen <= start + (s.after - before),
            "{}: reads {seen}, expected 2038-01-19T03:14:05Z + up to {} ms",
            t.name,
            (s.after - before) / MS
        );
        while realtime_ns() < after + 3_000 * MS {
            sleep_ms(50);
        }
        let s = t.now();
        assert!(s.get("realtime") > wrap + 1_000 * MS, "{}: {s:?}", t.name);
        if rt.name == "C" {
            // 64-bit time_t: time() and gettimeofday go past 2^31 too.
            assert!(s.get("time") > 2_147_483_647, "{s:?}");
            assert!(s.get("gtod") > 2_147_483_647_000_000, "{s:?}");
        }
        recover(&t);
    }
}

#[test]
fn resolution_rounds_every_reading_down() {
    for rt in &C_AND_GO {
        let mut t = (rt.spawn)();
        inject(
            &t,
            &["--resolution", "15ms", "--clock", "realtime,monotonic"],
        );
        for _ in 0..50 {
            let s = t.now();
            assert_eq!(s.get("realtime") % (15 * MS), 0, "{}: {s:?}", t.name);
            assert_eq!(s.get("monotonic") % (15 * MS), 0, "{}: {s:?}", t.name);
            if rt.name == "C" {
                assert_eq!(s.get("gtod") % 15_000, 0, "{s:?}");
            }
            // Rounded down: never ahead of real time, at most 15 ms behind.
            s.assert_realtime_shift("realtime", 1, 0, 15 * MS);
        }
        recover(&t);
    }
}

#[test]
fn jvm_rate_and_freeze() {
    let mut t = jvm_target();
    inject(&t, &["--rate", "2"]);
    assert_rate(&mut t, "--rate 2 (JVM)", 2, 1);
    inject(&t, &["--freeze"]);
    past_switch();
    let a = t.now();
    sleep_ms(200);
    let b = t.now();
    assert_eq!(a.get("realtime"), b.get("realtime"));
    assert_eq!(a.get("millis"), b.get("millis"));
    recover(&t);
}

/// `bench` of examples/probe: ns per call of clock_gettime through libc and of the raw
/// system call, the median of five runs.
fn bench(p: &mut Probe) -> (f64, f64) {
    let mut runs: Vec<(f64, f64)> = (0..5)
        .map(|_| {
            let line = p.ask_line("bench 200000");
            let field = |key: &str| -> f64 {
                line.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
                    .unwrap_or_else(|| panic!("no {key} in {line:?}"))
            };
            (field("clock_gettime"), field("syscall"))
        })
        .collect();
    runs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    runs[2]
}

#[test]
fn slow_reads_make_every_read_a_system_call() {
    let mut p = Probe::spawn(&[]);
    let (vdso, syscall) = bench(&mut p);
    assert!(
        syscall > 2.0 * vdso,
        "the system call ({syscall} ns) should cost clearly more than the vDSO ({vdso} ns) here"
    );
    timeskew_ok(&["inject", "--pid", &p.pid_str(), "--slow-reads"]);
    let (slow, syscall_then) = bench(&mut p);
    assert!(
        slow >= 0.8 * syscall_then && slow > 2.0 * vdso,
        "with --slow-reads clock_gettime costs {slow} ns; the system call {syscall_then} ns, \
         the vDSO {vdso} ns"
    );
    // Values stay right.
    p.now().assert_realtime_shift("realtime", 1, 0, 0);
    timeskew_ok(&["recover", "--pid", &p.pid_str()]);
    let (fast, _) = bench(&mut p);
    assert!(
        2.0 * fast < slow,
        "back to the vDSO: {fast} ns vs {slow} ns"
    );
}

#[test]
fn monotonic_never_goes_back_under_any_shape_or_live_change() {
    use timeskew::{Clock, Offset, Skew};
    let mut p = Probe::spawn(&["--threads", "4"]);
    let ms = Duration::from_millis;
    let secs = |s: i64| Offset::from_nanos(s * 1_000_000_000);
    let shapes = [
        Skew::rate("2".parse().unwrap()),
        Skew::freeze(),
        Skew::as_is().with_suspend(ms(30)),
        Skew::new(secs(5)).with_slew("20%".parse().unwrap()),
        Skew::rate("0.5".parse().unwrap()),
        Skew::as_is().with_resolution(ms(1)),
        Skew::rate("+500ppm".parse().unwrap()).with_resolution(ms(10)),
        Skew::new(secs(0)).with_slew("50%".parse().unwrap()),
    ];
    // 1,000 live changes (the first one injects), the spinners reading all along.
    let mut changes = 0;
    for round in 0..125 {
        for shape in &shapes {
            let skew = shape
                .with_clock(Clock::Realtime)
                .with_clock(Clock::Monotonic);
            let report = timeskew::inject(p.pid, &skew).expect("inject");
            assert!(changes == 0 || report.stopped_for.is_zero(), "{report:?}");
            changes += 1;
            if round == 0 {
                sleep_ms(40);
            }
        }
    }
    assert_eq!(changes, 1_000);
    let stats = p.stats();
    assert_eq!(stats["backwards"], 0, "{stats:?}");
    assert_eq!(stats["anomalies"], 0, "{stats:?}");
    assert!(stats["calls"] > 1_000, "{stats:?}");
    timeskew_ok(&["recover", "--pid", &p.pid_str()]);
}

#[test]
fn manual_clock_example_crosses_midnight() {
    let out = Command::new(example("manual_clock")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(
        text.contains("frozen:   the child reads 2026-12-31T23:59:58"),
        "{text}"
    );
    assert!(
        text.contains("advanced: the child reads 2027-01-01T00:00:01"),
        "{text}"
    );
}

#[test]
fn duration_ends_every_shape_on_time_when_timeskew_is_killed() {
    let shapes: [&[&str]; 6] = [
        &["--rate", "2"],
        &["--freeze"],
        &["--suspend", "5s"],
        &["--offset", "10s", "--slew", "10%"],
        &["--strobe", "3s", "--period", "50ms"],
        &[
            "--at",
            "2038-01-19T03:14:00Z",
            "--resolution",
            "1s",
            "--slow-reads",
        ],
    ];
    for shape in shapes {
        let mut t = c_target();
        let pid = t.pid_str();
        let mut cmd = Command::new(timeskew_bin());
        cmd.args(["inject", "--pid", &pid, "--duration", "1s"])
            .args(shape)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = realtime_ns();
        let mut tool = Reaped(cmd.spawn().unwrap());
        // Its report is printed once the fault is in place; then it waits for the deadline.
        let mut line = String::new();
        std::io::BufReader::new(tool.0.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("injected"), "{shape:?}: {line}");
        tool.0.kill().unwrap();
        tool.0.wait().unwrap();
        let injected = status_json(t.pid);
        assert_eq!(injected["injected"], true, "{shape:?}: {injected}");
        while realtime_ns() < started + 1_300 * MS {
            sleep_ms(20);
        }
        let s = t.now();
        s.assert_realtime_shift("realtime", 1, 0, 0);
        s.assert_realtime_shift("gtod", 1_000, 0, 0);
        s.assert_realtime_shift("time", 1_000 * MS, 0, COARSE_TICK);
        recover(&t);
    }
}

#[test]
fn bad_values_and_conflicts_are_usage_errors_that_change_nothing() {
    let probe = Probe::spawn(&[]);
    let pid = probe.pid_str();
    let cases: [(&[&str], &[&str]); 16] = [
        (&[], &["--offset", "--at", "--rate"]),
        (&["--rate", "-2"], &["cannot run backwards", "--offset"]),
        (&["--rate", "1001"], &["1000"]),
        (&["--rate", "2", "--freeze"], &["--rate", "--freeze"]),
        (&["--offset", "1s", "--at", "@5"], &["--offset", "--at"]),
        (&["--slew", "500ppm"], &["--slew", "--offset"]),
        (&["--offset", "1s", "--slew", "5"], &["ppm or %"]),
        (&["--period", "1s"], &["--period", "--strobe"]),
        (&["--strobe", "1s"], &["--strobe", "--period"]),
        (&["--strobe", "1s", "--period", "0s"], &["--period"]),
        (
            &["--rate", "2", "--suspend", "1s"],
            &["--rate", "--suspend"],
        ),
        (
            &["--at", "2038-01-19T03:14:00Z", "--clock", "monotonic"],
            &["--at", "monotonic"],
        ),
        (&["--at", "yesterday"], &["yesterday"]),
        (&["--resolution", "0s"], &["--resolution"]),
        (&["--suspend", "soon"], &["soon"]),
        (
            &[
                "--offset", "1s", "--slew", "5%", "--strobe", "1s", "--period", "1s",
            ],
            &["--slew", "--strobe"],
        ),
    ];
    for (args, words) in cases {
        let mut all = vec!["inject", "--pid", pid.as_str()];
        all.extend_from_slice(args);
        let out = timeskew(&all);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        for w in words {
            assert!(
                err.contains(w),
                "{args:?}: the error should name {w:?}: {err}"
            );
        }
    }
    let status = status_json(probe.pid);
    assert_eq!(status["injected"], false, "{status}");
    assert!(status["trampoline"].is_null(), "{status}");
}
