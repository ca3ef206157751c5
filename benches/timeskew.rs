//! Benchmarks, side by side in one run (`cargo bench`):
//! 1. cost per call of clock_gettime(CLOCK_REALTIME), gettimeofday and time in one probe process,
//!    native and then injected, next to a raw syscall (what a syscall-per-call fake costs) and to
//!    libfaketime (LD_PRELOAD, when `faketime` is installed);
//! 2. how long a target is stopped, seen from inside as the longest gap between two clock reads
//!    of a spinning thread: first injection, live update, recover — and the same gap with no
//!    injection at all, for the scheduler's own noise;
//! 3. memory the injection adds to the target (Rss from /proc/PID/smaps_rollup);
//! 4. what `timeskew run` adds to each program start: a loop of fork + exec of `/bin/true`,
//!    timed round by round from inside, natively and under `timeskew run`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::Probe;

const CALLS: u64 = 3_000_000;
const ROUNDS: usize = 5;
const STOP_ROUNDS: usize = 30;
/// How long the per-shape table waits after each change before measuring.
const SETTLE: Duration = Duration::from_millis(1100);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Nanoseconds per call of clock_gettime, gettimeofday, time and the raw syscall.
fn bench_line(probe: &mut Probe) -> [f64; 4] {
    parse_bench(&probe.ask_line(&format!("bench {CALLS}")))
}

fn parse_bench(line: &str) -> [f64; 4] {
    let mut out = [f64::NAN; 4];
    for (i, kv) in line.split_whitespace().skip(1).take(4).enumerate() {
        out[i] = kv
            .split_once('=')
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(f64::NAN);
    }
    out
}

/// Sets the test-build switch that makes `time()`'s hook call the genuine `time()` instead of
/// running a copy of it (`TIMESKEW_INLINE_TIME=0`), or clears it.
fn call_genuine_time(on: bool) {
    // SAFETY: the benchmark is single-threaded here (the probe is a child process talked to
    // over pipes from this thread): nothing reads or writes the environment concurrently.
    unsafe {
        if on {
            std::env::set_var("TIMESKEW_INLINE_TIME", "0");
        } else {
            std::env::remove_var("TIMESKEW_INLINE_TIME");
        }
    }
}

fn per_call_costs() {
    let skew = timeskew::Skew::new("-600s".parse().unwrap());
    let mut probe = Probe::spawn(&[]);
    let mut native = vec![Vec::new(); 4];
    let mut injected = vec![Vec::new(); 4];
    // time() through the calling fake (what every injection did before the copy), same rounds:
    // a second probe, with fresh pages (the first one's hold the copy, reused by each inject).
    let mut other = Probe::spawn(&[]);
    let mut called = Vec::new();
    for _ in 0..ROUNDS {
        for (i, v) in bench_line(&mut probe).into_iter().enumerate() {
            native[i].push(v);
        }
        timeskew::inject(probe.pid, &skew).expect("inject");
        for (i, v) in bench_line(&mut probe).into_iter().enumerate() {
            injected[i].push(v);
        }
        timeskew::recover(probe.pid).expect("recover");
        call_genuine_time(true);
        let injected_other = timeskew::inject(other.pid, &skew);
        call_genuine_time(false);
        injected_other.expect("inject (time() calling the genuine one)");
        called.push(bench_line(&mut other)[2]);
        timeskew::recover(other.pid).expect("recover");
    }
    let faketime = libfaketime_costs();
    println!("## Cost per call (ns, median of {ROUNDS} runs of {CALLS} calls)");
    println!(
        "| call | native vDSO | timeskew injected | ratio | raw syscall (syscall-per-call fake) | libfaketime |"
    );
    println!("|---|---|---|---|---|---|");
    let names = ["clock_gettime(CLOCK_REALTIME)", "gettimeofday", "time"];
    let sys = median(native[3].clone());
    for (i, name) in names.iter().enumerate() {
        let n = median(native[i].clone());
        let j = median(injected[i].clone());
        let ft = faketime
            .map(|f| format!("{:.0}", f[i]))
            .unwrap_or_else(|| "not installed".into());
        let sys_col = if i == 0 {
            format!("{sys:.0}")
        } else {
            "—".into()
        };
        println!(
            "| {name} | {n:.0} | {j:.0} | {:.2}× | {sys_col} | {ft} |",
            j / n
        );
    }
    let (n, j, c) = (
        median(native[2].clone()),
        median(injected[2].clone()),
        median(called.clone()),
    );
    let worst = |v: &[f64]| v.iter().cloned().fold(f64::NAN, f64::max);
    println!(
        "\n`time()` (ns, median / worst of {ROUNDS}): native {n:.2} / {:.2}; inlined copy of the \
         genuine {j:.2} / {:.2} ({:.2}×); calling the genuine {c:.2} / {:.2} ({:.2}×)",
        worst(&native[2]),
        worst(&injected[2]),
        j / n,
        worst(&called),
        c / n
    );
}

/// Cost per call under each fault shape, side by side with native in the same rounds (a round:
/// native, then each shape as a live update of the one before).
fn per_shape_costs() {
    use timeskew::{Offset, Skew};
    let secs = |s: i64| Offset::from_nanos(s * 1_000_000_000);
    let ms = Duration::from_millis;
    let shapes: Vec<(&str, Skew)> = vec![
        ("--offset -600s", Skew::new(secs(-600))),
        ("--rate 2", Skew::rate("2".parse().unwrap())),
        ("--freeze", Skew::freeze()),
        (
            "--suspend 1h",
            Skew::as_is().with_suspend(Duration::from_secs(3600)),
        ),
        (
            "--offset 10s --slew 500ppm",
            Skew::new(secs(10)).with_slew("500ppm".parse().unwrap()),
        ),
        (
            "--strobe 1s --period 100ms",
            Skew::as_is().with_strobe(secs(1), ms(100)),
        ),
        ("--resolution 15ms", Skew::as_is().with_resolution(ms(15))),
        (
            "--rate +500ppm --resolution 1ms",
            Skew::rate("+500ppm".parse().unwrap()).with_resolution(ms(1)),
        ),
        ("--slow-reads", Skew::as_is().with_slow_reads()),
    ];
    let mut probe = Probe::spawn(&[]);
    let mut native = vec![Vec::new(); 4];
    let mut floor = vec![Vec::new(); 3];
    let mut under: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); 4]; shapes.len()];
    for _ in 0..ROUNDS {
        timeskew::recover(probe.pid).expect("recover");
        for (i, v) in bench_line(&mut probe).into_iter().enumerate() {
            native[i].push(v);
        }
        let line = probe.ask_line(&format!("floor {CALLS}"));
        for (i, v) in parse_bench(&line).into_iter().take(3).enumerate() {
            floor[i].push(v);
        }
        for (k, (_, skew)) in shapes.iter().enumerate() {
            timeskew::inject(probe.pid, skew).expect("inject");
            // Steady state: a shape takes over 50 ms after the change, and time()'s fast case
            // starts with the next whole second after that.
            std::thread::sleep(SETTLE);
            for (i, v) in bench_line(&mut probe).into_iter().enumerate() {
                under[k][i].push(v);
            }
        }
    }
    timeskew::recover(probe.pid).expect("recover");
    let n: Vec<f64> = native.iter().map(|v| median(v.clone())).collect();
    println!();
    println!(
        "## Cost per call by fault shape (ns and ratio to native, median of {ROUNDS} runs, \
         measured {} ms after each change)",
        SETTLE.as_millis()
    );
    println!("| shape | clock_gettime | gettimeofday | time | worst run, clock_gettime |");
    println!("|---|---|---|---|---|");
    println!(
        "| native vDSO | {:.1} | {:.1} | {:.1} | {:.1} |",
        n[0],
        n[1],
        n[2],
        native[0].iter().cloned().fold(0.0, f64::max)
    );
    for (k, (name, _)) in shapes.iter().enumerate() {
        let m: Vec<f64> = under[k].iter().map(|v| median(v.clone())).collect();
        println!(
            "| {name} | {:.1} ({:.2}×) | {:.1} ({:.2}×) | {:.1} ({:.2}×) | {:.1} |",
            m[0],
            m[0] / n[0],
            m[1],
            m[1] / n[1],
            m[2],
            m[2] / n[2],
            under[k][0].iter().cloned().fold(0.0, f64::max)
        );
    }
    println!("| raw clock_gettime system call | {:.1} | | | |", n[3]);
    // The floor: the same arithmetic compiled from Rust right after the genuine call, in the
    // same rounds (no hook installed) — what exact evaluation costs at least here.
    println!();
    println!(
        "Floor (`clock_gettime` then the arithmetic compiled from Rust in the probe, no hook; \
         median of {ROUNDS}):"
    );
    for (i, what) in [
        "constant offset",
        "rate 2 (multiply, split)",
        "resolution 15ms",
    ]
    .iter()
    .enumerate()
    {
        let m = median(floor[i].clone());
        println!("| {what} | {m:.1} ({:.2}×) |", m / n[0]);
    }
}

fn libfaketime_costs() -> Option<[f64; 4]> {
    let status = Command::new("faketime")
        .arg("--version")
        .stdout(Stdio::null())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        return None;
    }
    let mut child = Command::new("faketime")
        .args(["-f", "-600s"])
        .arg(common::example("probe"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    use std::io::{BufRead, BufReader, Write};
    let mut stdin = child.stdin.take()?;
    let mut out = BufReader::new(child.stdout.take()?);
    let mut line = String::new();
    out.read_line(&mut line).ok()?;
    let mut runs = vec![Vec::new(); 4];
    for _ in 0..ROUNDS {
        writeln!(stdin, "bench {CALLS}").ok()?;
        line.clear();
        out.read_line(&mut line).ok()?;
        for (i, v) in parse_bench(&line).into_iter().enumerate() {
            runs[i].push(v);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Some([0, 1, 2, 3].map(|i| median(runs[i].clone())))
}

/// The longest gap the spinner saw around `action`. A held thread records its gap only at its
/// next clock read, so wait (bounded) until it has made progress after the action.
fn gap_us(probe: &mut Probe, action: impl FnOnce()) -> f64 {
    probe.ask("reset");
    action();
    let calls = probe.stats()["calls"];
    let mut stats = probe.stats();
    for _ in 0..100_000 {
        if stats["calls"] > calls + 100 {
            break;
        }
        std::thread::yield_now();
        stats = probe.stats();
    }
    assert!(
        stats["calls"] > calls + 100,
        "the spinner made no progress: {stats:?}"
    );
    stats["max_gap_us"] as f64
}

fn stop_times() {
    println!(
        "\n## Time the target is stopped, all-stop fallback (µs, longest gap a spinning thread sees)"
    );
    println!(
        "Probe: 1 spinning thread + 4 idle threads + main thread = 6 threads; {STOP_ROUNDS} rounds."
    );
    println!("| operation | median | worst | tool-side hold (median) |");
    println!("|---|---|---|---|");
    let mut probe = Probe::spawn(&["--threads", "1", "--idle-threads", "4"]);
    let pid = probe.pid;
    let skew = timeskew::Skew::new("-600s".parse().unwrap());
    let update = timeskew::Skew::new("+1h".parse().unwrap());
    let (mut idle, mut first, mut live, mut rec, mut held) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut control = vec![];
    let (mut fresh, mut fresh_held) = (vec![], vec![]);
    for _ in 0..STOP_ROUNDS {
        // A first injection into a new process: mmap + mprotect + patch.
        let mut new = Probe::spawn(&["--threads", "1", "--idle-threads", "4"]);
        let new_pid = new.pid;
        fresh.push(gap_us(&mut new, || {
            let r = timeskew::inject(new_pid, &skew).unwrap();
            fresh_held.push(r.stopped_for.as_secs_f64() * 1e6);
        }));
        drop(new);
        idle.push(gap_us(&mut probe, || {
            std::thread::sleep(Duration::from_millis(5))
        }));
        // Control: the same reads as a live update, no write. On 2 cores the tool's own CPU
        // work competes with the spinner; this row shows how much of a gap that alone causes.
        control.push(gap_us(&mut probe, || {
            timeskew::status(pid).unwrap();
        }));
        first.push(gap_us(&mut probe, || {
            let r = timeskew::inject(pid, &skew).unwrap();
            held.push(r.stopped_for.as_secs_f64() * 1e6);
        }));
        live.push(gap_us(&mut probe, || {
            timeskew::inject(pid, &update).unwrap();
        }));
        rec.push(gap_us(&mut probe, || {
            timeskew::recover(pid).unwrap();
        }));
        // Fresh pages next round: a new probe would measure the same; keep it, re-patch is the
        // same stop as a first injection minus the mmap.
    }
    let row = |name: &str, v: &Vec<f64>, h: Option<&Vec<f64>>| {
        let worst = v.iter().cloned().fold(0.0, f64::max);
        let h = h
            .map(|h| format!("{:.0}", median(h.clone())))
            .unwrap_or_else(|| "—".into());
        println!("| {name} | {:.0} | {worst:.0} | {h} |", median(v.clone()));
    };
    row("no injection (scheduler noise, 5 ms window)", &idle, None);
    row("first inject (maps the pages)", &fresh, Some(&fresh_held));
    if std::env::var_os("TIMESKEW_BENCH_DETAIL").is_some() {
        eprintln!(
            "first inject, per round (gap µs, hold µs): {:?}",
            fresh
                .iter()
                .zip(&fresh_held)
                .map(|(g, h)| (*g as u64, *h as u64))
                .collect::<Vec<_>>()
        );
    }
    row(
        "inject again after recover (pages reused)",
        &first,
        Some(&held),
    );
    row(
        "status (control: same reads as a live update, no ptrace, no write)",
        &control,
        None,
    );
    row("live update (no ptrace)", &live, None);
    row("recover", &rec, None);
}

fn rss_kib(pid: i32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    (field("Rss:"), field("Private_Dirty:"))
}

fn memory() {
    let mut probe = Probe::spawn(&[]);
    let before = rss_kib(probe.pid);
    let maps_before = common::maps(probe.pid).len();
    timeskew::inject(probe.pid, &timeskew::Skew::new("-600s".parse().unwrap())).unwrap();
    probe.now();
    let after = rss_kib(probe.pid);
    let maps_after = common::maps(probe.pid).len();
    println!("\n## Memory added to the target");
    println!(
        "Rss {} → {} KiB (+{}), private dirty {} → {} KiB (+{}), mappings {maps_before} → {maps_after}",
        before.0,
        after.0,
        after.0 as i64 - before.0 as i64,
        before.1,
        after.1,
        after.1 as i64 - before.1 as i64
    );
}

/// The environment variable that turns this binary into the exec loop of [`exec_costs`].
const SPAWN_ENV: &str = "TIMESKEW_BENCH_SPAWN";
const SPAWNS: usize = 300;
const SPAWN_ROUNDS: usize = 3;

/// The exec loop: `n` times spawn `/bin/true` (posix_spawn: a vfork and an exec) and wait for
/// it; prints each round's wall time in µs on one line.
fn spawn_loop(n: usize) {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = std::time::Instant::now();
        let status = Command::new("/bin/true").status().expect("run /bin/true");
        assert!(status.success());
        times.push(started.elapsed().as_secs_f64() * 1e6);
    }
    let line: Vec<String> = times.iter().map(|t| format!("{t:.1}")).collect();
    println!("{}", line.join(" "));
}

/// Runs the exec loop (this binary again), natively or under `timeskew run`: the round times
/// in µs, the first tenth left out (caches warming up), and the CPU time (user + system, µs)
/// of the whole tree — the loop, every /bin/true, and timeskew when it runs it.
fn spawn_times(under_run: bool) -> (Vec<f64>, f64) {
    let me = std::env::current_exe().expect("bench exe path");
    let mut cmd = if under_run {
        let mut c = Command::new(common::timeskew_bin());
        c.args(["run", "--offset", "-600s", "--"]).arg(&me);
        c
    } else {
        Command::new(&me)
    };
    // Reaped by the wait4 below (which Child does not know about).
    #[allow(clippy::zombie_processes)]
    let mut child = cmd
        .env(SPAWN_ENV, SPAWNS.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the exec loop");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut text)
        .expect("read the exec loop's output");
    // wait4 rather than Child::wait: its rusage counts the whole tree, reaped level by level.
    let mut status = 0;
    // SAFETY: rusage is plain data the kernel fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers; the pid is our own child, not reaped yet.
    let waited = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert!(
        waited > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "exec loop failed: status {status:#x}"
    );
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    let cpu = us(usage.ru_utime) + us(usage.ru_stime);
    let times = text
        .split_whitespace()
        .skip(SPAWNS / 10)
        .map(|v| v.parse().expect("a time"))
        .collect();
    (times, cpu)
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn exec_costs() {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let (mut native, mut run) = (Vec::new(), Vec::new());
    let (mut native_cpu, mut run_cpu) = (Vec::new(), Vec::new());
    for _ in 0..SPAWN_ROUNDS {
        let (times, cpu) = spawn_times(false);
        native.extend(times);
        native_cpu.push(cpu / SPAWNS as f64);
        let (times, cpu) = spawn_times(true);
        run.extend(times);
        run_cpu.push(cpu / SPAWNS as f64);
    }
    let base = median(native.clone());
    println!(
        "\n## Cost of an exec under `timeskew run` (µs; spawn + exec + exit of /bin/true, \
         {SPAWN_ROUNDS}×{SPAWNS} rounds each way; load average before: {})",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("| | median | p90 | p99 | worst |");
    println!("|---|---|---|---|---|");
    for (name, v) in [("native", &native), ("under `timeskew run`", &run)] {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} |",
            median(v.to_vec()),
            percentile(v.to_vec(), 0.9),
            percentile(v.to_vec(), 0.99),
            percentile(v.to_vec(), 1.0)
        );
    }
    println!(
        "| added by `run` (minus the native median) | **{:.0}** | {:.0} | {:.0} | {:.0} |",
        median(run.clone()) - base,
        percentile(run.clone(), 0.9) - base,
        percentile(run.clone(), 0.99) - base,
        percentile(run.clone(), 1.0) - base
    );
    let (n, r) = (median(native_cpu), median(run_cpu));
    println!(
        "\nCPU time per round (user + system, all processes, median of {SPAWN_ROUNDS} loops): \
         native {n:.0} µs, under `timeskew run` {r:.0} µs: **{:.0} µs** added — the part of \
         the cost that does not depend on how busy the machine is.",
        r - n
    );
}

fn main() {
    if let Some(n) = std::env::var(SPAWN_ENV).ok().and_then(|v| v.parse().ok()) {
        spawn_loop(n);
        return;
    }
    // `cargo bench` passes --bench; any filter argument is ignored: the run is one report.
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l[13..].trim().to_string())
        })
        .unwrap_or_default();
    println!(
        "# timeskew benchmark — {cpu}, {} cores, kernel {}, clocksource {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .unwrap_or_default()
            .trim()
    );
    // TIMESKEW_BENCH=calls|shapes|stop|memory|exec runs only that part (for investigating it).
    let only = std::env::var("TIMESKEW_BENCH").unwrap_or_default();
    if only.is_empty() || only == "calls" {
        per_call_costs();
    }
    if only.is_empty() || only == "shapes" {
        per_shape_costs();
    }
    if only.is_empty() || only == "stop" {
        // The all-stop fallback's figures (the README's table); the default one-thread-at-a-
        // time path is measured beside it by benches/stops.rs.
        // SAFETY: the benchmark is single-threaded while it switches (no other thread reads
        // the environment meanwhile).
        unsafe { std::env::set_var("TIMESKEW_LIVE", "0") };
        stop_times();
        // SAFETY: as above.
        unsafe { std::env::remove_var("TIMESKEW_LIVE") };
    }
    if only.is_empty() || only == "memory" {
        memory();
    }
    if only.is_empty() || only == "exec" {
        exec_costs();
    }
}
