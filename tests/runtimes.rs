//! End-to-end, per runtime: the programs of tests/targets/ — static glibc, static musl, Go with
//! and without cgo, CPython, the JVM, Node — each read the time through their own clock API
//! while timeskew skews them (realtime), updates the skew live (realtime and monotonic) and
//! recovers, and each runs a 10 ms sleep loop whose fate under monotonic steps is asserted.
//! Plus the scope of an injection (fork inherits, exec starts clean) and threads at scale:
//! 1,000 threads held and released, threads created and ended continuously while we attach.
//!
//! The toolchains come from scripts/install-test-deps.sh; a missing one fails the test.
//! Results are documented in docs/runtimes.md.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::e2e::*;
use common::*;

/// A clock field of a target's `now` answer: its name, its unit in ns, and extra slack in ns
/// beyond the exact bracket (for clocks that are not read exactly).
#[derive(Clone, Copy)]
struct Field {
    key: &'static str,
    unit: i128,
    slack: i128,
}

const fn f(key: &'static str, unit: i128, slack: i128) -> Field {
    Field { key, unit, slack }
}

/// What a runtime's 10 ms sleep loop (the `ticks` field; Go's is a ticker, Node's an interval)
/// does over half a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timers {
    /// Sleeps as asked: tens of rounds, little CPU.
    Run,
    /// Its sleep waits for the offset (an hour): no round completes.
    Stall,
    /// Its sleeps return at once and it burns a CPU (or more).
    Spin,
}

/// What each runtime's timed waits do when CLOCK_MONOTONIC steps: measured by the tests, and
/// explained in docs/runtimes.md. A step forward is `inject +1h --clock realtime,monotonic`;
/// recovering it is a step back, as is a negative monotonic skew.
#[derive(Clone, Copy)]
struct TimerExpectations {
    forward: Timers,
    forward_recovered: Timers,
    backward: Timers,
    backward_recovered: Timers,
}

/// Relative sleeps (nanosleep, poll): the kernel measures them, the skew cannot touch them.
const RELATIVE: TimerExpectations = TimerExpectations {
    forward: Timers::Run,
    forward_recovered: Timers::Run,
    backward: Timers::Run,
    backward_recovered: Timers::Run,
};

/// A runtime timer queue on the monotonic clock (Go's runtime timers, libuv's): deadlines armed
/// on the skewed clock are an offset away once the clock steps back.
const TIMER_QUEUE: TimerExpectations = TimerExpectations {
    forward: Timers::Run,
    forward_recovered: Timers::Stall,
    backward: Timers::Stall,
    backward_recovered: Timers::Run,
};

/// Absolute monotonic deadlines handed to the kernel (HotSpot's park, CPython's
/// clock_nanosleep(TIMER_ABSTIME)): the kernel measures them on the real clock.
const ABSOLUTE_DEADLINES: TimerExpectations = TimerExpectations {
    forward: Timers::Stall,
    forward_recovered: Timers::Stall,
    backward: Timers::Spin,
    backward_recovered: Timers::Run,
};

/// What a target reports: realtime-family and monotonic-family fields, plus fields that must
/// never move (a raw syscall bypasses the vDSO), and what its sleep loop does.
struct Spec<'a> {
    realtime: &'a [Field],
    monotonic: &'a [Field],
    unskewed: &'a [Field],
    timers: TimerExpectations,
    /// A step back that lands while the runtime runs a timer aborts it if the clock then reads
    /// earlier than its start, and otherwise stalls nothing — the timer re-armed on the stepped
    /// clock (Node: docs/runtimes.md). Its step stays within its age ([`step_back`]), and a
    /// step back that stalled nothing is made once more.
    aborts_before_its_start: bool,
}

const MIN10: i128 = -600 * SEC;
const HOUR: i128 = 3600 * SEC;

/// The step back of [`exercise`]'s second instance: -600 s, or on a machine up for less than
/// that, 5 s less than its uptime. timeskew refuses an offset that would make a clock read
/// negative (CLOCK_MONOTONIC is the time since boot), and a target we spawn reads the same
/// clocks as we do (same time namespace), already past our reading by the time we inject. Any
/// step of a few seconds or more shows what a step back does to the runtime's timers: each
/// watch lasts half a second. Returns the offset in ns and as `--offset` text.
///
/// `ready_at`: for a runtime that aborts when its clock reads earlier than its own start
/// ([`Spec::aborts_before_its_start`]), when the instance answered its first line (after its
/// start): the step is then 1 s less than its age, which is first made at least
/// [`MIN_AGE`] — a step past its start would abort it only if it landed mid-timer, a race.
fn step_back(ready_at: Option<Instant>) -> (i128, String) {
    let uptime_s = clock_ns(libc::CLOCK_MONOTONIC) / SEC;
    let mut back_s = (uptime_s - 5).clamp(1, 600);
    if let Some(ready_at) = ready_at {
        // The age is waited for, not a readiness: the instance answered long before.
        if let Some(left) = MIN_AGE.checked_sub(ready_at.elapsed()) {
            std::thread::sleep(left);
        }
        back_s = back_s.min(ready_at.elapsed().as_secs() as i128 - 1);
    }
    (-back_s * SEC, format!("-{back_s}s"))
}

/// The least age of an instance stepped back within its age: a step of 5 s or more, well past
/// the half-second watch that follows it.
const MIN_AGE: Duration = Duration::from_secs(6);

/// Whether any thread of `pid` is running or waiting for a CPU (state `R`) right now.
fn any_thread_runnable(pid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    dir.flatten().any(|task| {
        std::fs::read_to_string(task.path().join("stat"))
            .ok()
            .and_then(|stat| {
                let (_, rest) = stat.rsplit_once(") ")?;
                Some(rest.starts_with('R'))
            })
            .unwrap_or(false)
    })
}

/// CPU time (user + system) of `pid` so far, in ns.
fn cpu_ns(pid: i32) -> i128 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<i128>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as i128;
    (ticks(11) + ticks(12)) * SEC / hz.max(1)
}

/// Watches the target's 10 ms sleep loop for half a second: how many rounds it completes, the
/// CPU it uses, and in how many of 25 samples some thread of it was runnable (state `R`).
/// A loop whose sleeps return at once stays runnable and burns CPU; one that sleeps is in
/// state `S` nearly all the time and uses next to no CPU. Both must agree before we call it
/// spinning: on a busy machine a sleeper waiting for a CPU is runnable too, and a spinner
/// gets only a share of a CPU.
fn watch_timers(t: &mut LineTarget) -> (Timers, String) {
    let cpu0 = cpu_ns(t.pid);
    let wall0 = clock_ns(libc::CLOCK_MONOTONIC);
    let a = t.now().get("ticks");
    let samples = 25;
    let mut runnable = 0;
    for _ in 0..samples {
        std::thread::sleep(Duration::from_millis(20));
        runnable += any_thread_runnable(t.pid) as u32;
    }
    let rounds = t.now().get("ticks") - a;
    let cpu = (cpu_ns(t.pid) - cpu0) * 100 / (clock_ns(libc::CLOCK_MONOTONIC) - wall0);
    let spinning = runnable * 2 >= samples && cpu >= 15;
    let seen = if spinning || rounds > 1_000 {
        Timers::Spin
    } else if rounds <= 1 {
        Timers::Stall
    } else {
        Timers::Run
    };
    (
        seen,
        format!(
            "{rounds} rounds of a 10 ms sleep in 0.5 s, {cpu}% CPU, runnable in \
             {runnable}/{samples} samples"
        ),
    )
}

fn expect_timers(t: &mut LineTarget, phase: &str, expected: Timers) -> String {
    let (seen, detail) = watch_timers(t);
    assert_eq!(
        seen, expected,
        "{}: {phase}: its sleep loop should {expected:?}, it did {seen:?}: {detail}",
        t.name
    );
    format!("{phase}: {seen:?} ({detail})")
}

fn keys(fields: &[Field]) -> String {
    fields.iter().map(|f| f.key).collect::<Vec<_>>().join(", ")
}

/// The common scenario, on two instances of the target. Prints a summary for the test output.
///
/// First instance, a step forward:
/// 1. before: every realtime field equals real time;
/// 2. `inject -600s` (realtime): realtime fields 10 min behind, monotonic ones untouched, the
///    sleep loop runs;
/// 3. `inject +1h --clock realtime,monotonic` on the injected process: a live update (nothing
///    stopped), realtime fields 1 h ahead, monotonic ones jumped by 1 h;
/// 4. `recover`: real time again, monotonic back to the real elapsed time;
/// 5. the process still answers, and exits cleanly on `quit`.
///
/// Second instance, a step back: `inject -600s --clock realtime,monotonic` (less on a machine
/// that booted less than ten minutes ago: [`step_back`]), then `recover`.
/// Throughout, the sleep loop does what `spec.timers` says.
fn exercise(spawn: impl Fn() -> LineTarget, spec: &Spec, version: &str) {
    let check = |r: &Sample, rt_offset: i128, mono_offset: i128, base: Option<&Sample>| {
        for fl in spec.realtime {
            r.assert_realtime_shift(fl.key, fl.unit, rt_offset, fl.slack);
        }
        for fl in spec.unskewed {
            r.assert_realtime_shift(fl.key, fl.unit, 0, fl.slack);
        }
        if let Some(base) = base {
            for fl in spec.monotonic {
                r.assert_mono_advance(base, fl.key, mono_offset, fl.slack + fl.unit);
            }
        }
    };
    let mut log = vec![];

    // The second instance starts first: seconds old by its step back (`step_back`).
    let second = spawn();
    let second_ready = Instant::now();
    let mut t = spawn();
    let pid = t.pid;
    let r0 = t.now();
    check(&r0, 0, 0, None);

    let injected = inject_json(pid, "-600s", "realtime");
    assert_eq!(injected["action"], "injected", "{injected}");
    let r1 = t.now();
    check(&r1, MIN10, 0, Some(&r0));
    log.push(expect_timers(&mut t, "realtime -600s", Timers::Run));

    let updated = inject_json(pid, "+1h", "realtime,monotonic");
    assert_eq!(updated["action"], "updated", "{updated}");
    assert_eq!(
        updated["threads"], 0,
        "a live update stops nothing: {updated}"
    );
    let r2 = t.now();
    check(&r2, HOUR, HOUR, Some(&r0));
    log.push(expect_timers(
        &mut t,
        "realtime,monotonic +1h",
        spec.timers.forward,
    ));

    let recovered = recover_json(pid);
    assert_eq!(recovered["was_injected"], true, "{recovered}");
    let r3 = t.now();
    check(&r3, 0, 0, Some(&r0));
    assert_eq!(status_json(pid)["injected"], false);
    log.push(expect_timers(
        &mut t,
        "recovered",
        spec.timers.forward_recovered,
    ));
    t.assert_alive();
    let name = t.name.clone();
    let status = t.quit();
    assert!(status.success(), "{name} exited with {status} after `quit`");

    let mut t = second;
    let pid = t.pid;
    let (back, back_text) = step_back(spec.aborts_before_its_start.then_some(second_ready));
    let b0 = t.now();
    let step = |t: &mut LineTarget| {
        let stepping = Instant::now();
        inject_json(pid, &back_text, "realtime,monotonic");
        let stepped = Instant::now();
        let b1 = t.now();
        check(&b1, back, back, Some(&b0));
        let (seen, detail) = watch_timers(t);
        let took = format!(
            "the inject took {:?}, watched from {:?} after it",
            stepped - stepping,
            stepped.elapsed()
        );
        (seen, format!("{detail}; {took}"))
    };
    let (mut seen, mut detail) = step(&mut t);
    if spec.aborts_before_its_start && seen == Timers::Run && spec.timers.backward == Timers::Stall
    {
        // Landed while it ran its timer, which re-armed on the stepped clock: nothing to stall
        // (`Spec::aborts_before_its_start`). Real time again, then a second step.
        recover_json(pid);
        let first = detail;
        (seen, detail) = step(&mut t);
        detail = format!("{detail}; a second step: the first stalled nothing ({first})");
    }
    assert_eq!(
        seen, spec.timers.backward,
        "{name}: realtime,monotonic {back_text}: its sleep loop should {:?}, it did {seen:?}: \
         {detail}",
        spec.timers.backward
    );
    log.push(format!(
        "realtime,monotonic {back_text}: {seen:?} ({detail})"
    ));
    recover_json(pid);
    let b2 = t.now();
    check(&b2, 0, 0, Some(&b0));
    log.push(expect_timers(
        &mut t,
        "recovered",
        spec.timers.backward_recovered,
    ));
    t.assert_alive();
    let status = t.quit();
    assert!(status.success(), "{name} exited with {status} after `quit`");

    eprintln!(
        "RESULT {name} ({version}): realtime [{}] and monotonic [{}] skewed, updated live, recovered; \
         {} threads held {} µs at inject; sleep loop: {}",
        keys(spec.realtime),
        keys(spec.monotonic),
        injected["threads"],
        injected["stopped_for"],
        log.join("; ")
    );
}

/// Static C probe fields: libc's clock_gettime, gettimeofday and time(), and a raw syscall.
const C_SPEC: Spec<'static> = Spec {
    realtime: &[
        f("realtime", 1, 0),
        f("gtod", 1_000, 0),
        // time() reads the coarse clock: up to one tick behind.
        f("time", SEC, 20_000_000),
    ],
    monotonic: &[f("monotonic", 1, 0)],
    // syscall(SYS_clock_gettime) bypasses the vDSO: the documented gap.
    unskewed: &[f("raw_syscall", 1, 0)],
    // nanosleep() is relative.
    timers: RELATIVE,
    aborts_before_its_start: false,
};

#[test]
fn static_glibc_binary() {
    let bin = static_glibc_probe();
    exercise(
        || LineTarget::spawn("static glibc (cc -static)", Command::new(bin)),
        &C_SPEC,
        &version_of("ldd", &["--version"]),
    );
}

#[test]
fn static_musl_binary() {
    let bin = static_musl_probe();
    exercise(
        || LineTarget::spawn("static musl (musl-gcc -static)", Command::new(bin)),
        &C_SPEC,
        &format!(
            "musl {}",
            version_of("/usr/lib/x86_64-linux-musl/libc.so", &[])
        ),
    );
}

/// time.Now() (wall and monotonic), runtime.nanotime(), time.Since(start); time.Sleep.
const GO_SPEC: Spec<'static> = Spec {
    realtime: &[f("realtime", 1, 0)],
    monotonic: &[f("monotonic", 1, 0), f("since", 1, 0)],
    unskewed: &[],
    aborts_before_its_start: false,
    timers: TIMER_QUEUE,
};

#[test]
fn go_with_cgo() {
    let bin = go_cgo_probe();
    exercise(
        || {
            let mut t = LineTarget::spawn("Go with cgo", Command::new(bin));
            assert_eq!(t.now().get("cgo"), 1, "built with cgo");
            t
        },
        &GO_SPEC,
        &version_of("go", &["version"]),
    );
}

#[test]
fn go_without_cgo_static() {
    let bin = go_static_probe();
    exercise(
        || {
            let mut t = LineTarget::spawn("Go, CGO_ENABLED=0 (static)", Command::new(bin));
            assert_eq!(t.now().get("cgo"), 0, "built without cgo");
            t
        },
        &GO_SPEC,
        &version_of("go", &["version"]),
    );
}

#[test]
fn python() {
    let python = require("python3", "python3");
    exercise(
        || {
            let mut cmd = Command::new(&python);
            cmd.arg("-u").arg(sources().join("probe.py"));
            LineTarget::spawn("CPython", cmd)
        },
        &Spec {
            // time.time_ns(); time.time() is a double (~0.2 µs resolution at today's epoch).
            realtime: &[f("realtime", 1, 0), f("time", 1, 1_000)],
            // time.monotonic_ns().
            monotonic: &[f("monotonic", 1, 0)],
            unskewed: &[],
            aborts_before_its_start: false,
            // time.sleep() is clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME) since 3.11.
            timers: ABSOLUTE_DEADLINES,
        },
        &version_of(python.to_str().unwrap(), &["--version"]),
    );
}

#[test]
fn jvm() {
    let java = require("java", "openjdk-17-jdk-headless");
    let classes = java_classes();
    exercise(
        || {
            let mut cmd = Command::new(&java);
            // Small and quick to start; the clock paths are the same as with any other flags.
            cmd.args(["-XX:+UseSerialGC", "-Xmx64m", "-cp"])
                .arg(classes)
                .arg("Probe");
            LineTarget::spawn("JVM", cmd)
        },
        &Spec {
            // Instant.now() (µs on Linux), System.currentTimeMillis() (ms).
            realtime: &[f("realtime", 1, 1_000), f("millis", 1_000_000, 0)],
            // System.nanoTime().
            monotonic: &[f("monotonic", 1, 0)],
            unskewed: &[],
            aborts_before_its_start: false,
            // Thread.sleep parks on pthread_cond_timedwait with an absolute CLOCK_MONOTONIC
            // deadline.
            timers: ABSOLUTE_DEADLINES,
        },
        &version_of(java.to_str().unwrap(), &["-version"]),
    );
}

#[test]
fn node() {
    let node = require("node", "nodejs");
    exercise(
        || {
            let mut cmd = Command::new(&node);
            cmd.arg(sources().join("probe.js"));
            LineTarget::spawn("Node", cmd)
        },
        &Spec {
            // Date.now() (ms).
            realtime: &[f("millis", 1_000_000, 0)],
            // process.hrtime.bigint().
            monotonic: &[f("monotonic", 1, 0)],
            unskewed: &[],
            // setInterval: libuv's timer heap on uv_now (CLOCK_MONOTONIC).
            timers: TIMER_QUEUE,
            // `Assertion failed: (now) >= (timer_base())` when a step back past its start
            // meets a timer.
            aborts_before_its_start: true,
        },
        &format!(
            "Node {}",
            version_of(node.to_str().unwrap(), &["--version"])
        ),
    );
}

/// 1,000 threads blocked in a futex plus two spinning on the clocks: every one is held for the
/// patch and released afterwards; the stop time is reported.
#[test]
fn a_thousand_threads_injected_and_recovered() {
    let mut probe = Probe::spawn(&["--idle-threads", "1000", "--threads", "2"]);
    let threads = thread_count(probe.pid);
    assert!(threads >= 1003, "{threads} threads");
    probe.ask("reset");

    let started = Instant::now();
    let injected = inject_json(probe.pid, "-600s", "realtime");
    let inject_wall = started.elapsed();
    assert_eq!(injected["action"], "injected", "{injected}");
    let held = injected["threads"].as_u64().unwrap() as usize;
    assert!(held >= threads, "held {held} of {threads} threads");
    assert!(
        held_threads(probe.pid).is_empty(),
        "{:?}",
        held_threads(probe.pid)
    );
    probe.now().assert_realtime_shift("realtime", 1, MIN10, 0);
    let gap_inject = probe.stats()["max_gap_us"];

    probe.ask("reset");
    let started = Instant::now();
    let recovered = recover_json(probe.pid);
    let recover_wall = started.elapsed();
    assert_eq!(recovered["restored"], 3, "{recovered}");
    assert!(
        held_threads(probe.pid).is_empty(),
        "{:?}",
        held_threads(probe.pid)
    );
    probe.now().assert_realtime_shift("realtime", 1, 0, 0);
    let stats = probe.stats();
    assert_eq!(stats["anomalies"], 0, "{stats:?}");
    assert!(probe.alive());
    eprintln!(
        "RESULT 1000 threads: inject held {held} threads, stopped_for {} µs (CLI wall {:.1} ms, \
         longest gap a spinner saw {gap_inject} µs); recover CLI wall {:.1} ms (longest gap {} µs)",
        injected["stopped_for"],
        inject_wall.as_secs_f64() * 1e3,
        recover_wall.as_secs_f64() * 1e3,
        stats["max_gap_us"],
    );
}

/// A process creating and ending threads continuously, with 200 more blocked: every attach
/// finds every thread (none left stopped or traced afterwards), threads born after the inject
/// see the skew, and the churn never stalls.
#[test]
fn thread_churn_at_scale_leaves_no_thread_behind() {
    let mut probe = Probe::spawn(&["--churn", "--idle-threads", "200", "--threads", "2"]);
    let pid = probe.pid_str();
    let mut stops = vec![];
    for round in 0..6 {
        let (off, text) = if round % 2 == 0 {
            (MIN10, "-600s")
        } else {
            (HOUR, "+1h")
        };
        let injected = inject_json(probe.pid, text, "realtime");
        assert_ne!(injected["action"], "updated", "{injected}");
        stops.push(injected["stopped_for"].as_u64().unwrap());
        let held = held_threads(probe.pid);
        assert!(held.is_empty(), "threads left held after inject: {held:?}");
        probe.assert_new_threads_see(off);
        probe.now().assert_realtime_shift("realtime", 1, off, 0);
        timeskew_ok(&["recover", "--pid", &pid]);
        let held = held_threads(probe.pid);
        assert!(held.is_empty(), "threads left held after recover: {held:?}");
        probe.now().assert_realtime_shift("realtime", 1, 0, 0);
    }
    let stats = probe.stats();
    assert_eq!(stats["anomalies"], 0, "{stats:?}");
    assert!(probe.alive());
    eprintln!(
        "RESULT churn + 200 idle threads: {} inject/recover rounds, stopped_for µs {stops:?}, \
         {} threads churned",
        stops.len(),
        probe.ask("churn")["threads"]
    );
}

/// The scope of an injection: the process and the children it forks afterwards see the skew; a
/// program it execs gets a fresh vDSO and reads real time (the documented gap).
#[test]
fn forked_children_inherit_the_skew_exec_starts_clean() {
    let bash = require("bash", "bash");
    let spawn = || {
        let mut cmd = Command::new(&bash);
        cmd.arg(sources().join("probe.sh"));
        LineTarget::spawn("bash", cmd)
    };
    let mut t = spawn();
    let r = t.now();
    for key in ["builtin", "forked", "exec"] {
        r.assert_realtime_shift(key, 1_000, 0, 0);
    }
    inject_json(t.pid, "-600s", "realtime");
    let r = t.now();
    r.assert_realtime_shift("builtin", 1_000, MIN10, 0);
    r.assert_realtime_shift("forked", 1_000, MIN10, 0);
    r.assert_realtime_shift("exec", 1_000, 0, 0);
    recover_json(t.pid);
    let r = t.now();
    for key in ["builtin", "forked", "exec"] {
        r.assert_realtime_shift(key, 1_000, 0, 0);
    }
    let status = t.quit();
    assert!(status.success(), "bash exited with {status}");
    eprintln!(
        "RESULT {}: $EPOCHREALTIME skewed in the shell and in a forked subshell; `date` \
         exec'd from it reads real time",
        version_of(bash.to_str().unwrap(), &["--version"])
    );
}
