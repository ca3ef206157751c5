//! Issue 11's figures, side by side in one run: how long any thread of a target is stopped by
//! a first injection and by a recover — one thread at a time (the live path) against every
//! thread at once (the fallback, forced in test builds with `TIMESKEW_LIVE=0`) — at 6 and at
//! 1,000 threads, on an idle machine and with a competing busy process on every CPU; the tool's wall time; how long a
//! breakpoint is in place (the SIGKILL-of-timeskew risk window).
//!
//! The target is tests/targets/live/stress.c: spinners check every clock reading against raw
//! system calls and keep their longest gap between two iterations (what a stop costs them,
//! measured from inside); the other threads sleep in read(). "stop" is the longest any thread
//! was held as timeskew saw it (report to resume; the old path: the whole hold).
//! `cargo bench --bench stops` (scripts/bench-stops.sh); `TIMESKEW_STOPS_ROUNDS` (default 7);
//! `TIMESKEW_STOPS_DETAIL=1` also prints, per live change, its stops of 0.5 ms or more (up to 8:
//! thread, why, µs, when after the first stop) and the count of stops per reason — where a longest stop comes
//! from; `TIMESKEW_STOPS_ONLY=6|1000` runs one thread count, idle only (busy CPUs only with
//! `TIMESKEW_STOPS_BUSY=1`), live path only.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

fn build_target() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target-bench-stops");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("stress");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/targets/live/stress.c");
    let o = Command::new("cc")
        .args(["-O2", "-pthread", "-o"])
        .arg(&out)
        .arg(src)
        .output()
        .expect("cc");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

struct Target {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<std::process::ChildStdout>,
    pid: i32,
}

impl Target {
    fn start(bin: &Path, spin: usize, idle: usize) -> Target {
        let mut child = Command::new(bin)
            .args(["-s", &spin.to_string(), "-i", &idle.to_string()])
            .args(["-o", "-600000000000"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let pid = child.id() as i32;
        let mut t = Target {
            child,
            stdin,
            out,
            pid,
        };
        let l = t.line();
        assert!(l.starts_with("ready"), "{l}");
        t
    }
    fn line(&mut self) -> String {
        let mut l = String::new();
        self.out.read_line(&mut l).unwrap();
        l
    }
    fn ask(&mut self, c: &str) -> String {
        writeln!(self.stdin, "{c}").unwrap();
        self.line()
    }
    fn stat(&mut self, k: &str) -> i64 {
        let l = self.ask("stats");
        l.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap()
            .parse()
            .unwrap()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One operation's figures, in microseconds.
#[derive(Default, Clone, Copy)]
struct Sample {
    gap: u64,
    stop: u64,
    /// The longest stop of a thread other than the worker (the live path's system calls).
    others: u64,
    wall: u64,
    window: u64,
    stopped: usize,
    threads: usize,
}

/// The all-stop path is the fallback; test builds (which benchmarks are) force it with
/// `TIMESKEW_LIVE=0`.
fn all_stop(on: bool) {
    // SAFETY: the benchmark is single-threaded when it switches (no other thread reads the
    // environment meanwhile).
    unsafe {
        if on {
            std::env::set_var("TIMESKEW_LIVE", "0");
        } else {
            std::env::remove_var("TIMESKEW_LIVE");
        }
    }
}

/// With `TIMESKEW_STOPS_DETAIL`: the longest stops of one live change and the stops per reason.
fn detail(what: &str, live: Option<&timeskew::LiveStats>) {
    let Some(l) = live.filter(|_| std::env::var_os("TIMESKEW_STOPS_DETAIL").is_some()) else {
        return;
    };
    let first = l.stop_log.iter().map(|s| s.seen_ns).min().unwrap_or(0);
    let mut by_len: Vec<_> = l.stop_log.iter().collect();
    by_len.sort_by_key(|s| std::cmp::Reverse(s.held_ns));
    let mut per_why = std::collections::BTreeMap::new();
    for s in &l.stop_log {
        *per_why.entry(s.why).or_insert(0) += 1;
    }
    let longest: Vec<String> = by_len
        .iter()
        .take(8)
        .filter(|s| s.held_ns >= 500_000)
        .map(|s| {
            format!(
                "{} {} {} µs at +{} µs",
                s.tid,
                s.why,
                s.held_ns / 1000,
                (s.seen_ns - first) / 1000
            )
        })
        .collect();
    println!(
        "  {what}: wall {} µs, window {} µs, registration {} ({} µs), stops {per_why:?}; \
         longest: {}",
        l.wall_us,
        l.breakpoint_window_us,
        l.registration,
        l.registration_us,
        longest.join("; ")
    );
}

/// The longest stop of any thread but the worker, in µs.
fn others(l: &timeskew::LiveStats) -> u64 {
    let not_worker = l.stop_log.iter().filter(|s| s.tid != l.worker);
    not_worker.map(|s| s.held_ns / 1000).max().unwrap_or(0)
}

fn one(bin: &Path, spin: usize, idle: usize, old: bool) -> (Sample, Sample) {
    let mut t = Target::start(bin, spin, idle);
    std::thread::sleep(Duration::from_millis(50));
    let skew = timeskew::Skew::new("-600s".parse().unwrap());
    all_stop(old);
    t.ask("reset");
    let started = Instant::now();
    let r = timeskew::inject(t.pid, &skew).expect("inject");
    let wall = started.elapsed().as_micros() as u64;
    let gap = t.stat("maxgap_ns") as u64 / 1000;
    detail("inject", r.live.as_ref());
    let inj = match &r.live {
        Some(l) => Sample {
            gap,
            stop: l.longest_stop_us,
            others: others(l),
            wall,
            window: l.breakpoint_window_us,
            stopped: l.threads_stopped,
            threads: l.threads,
        },
        None => Sample {
            gap,
            stop: r.stopped_for.as_micros() as u64,
            others: r.stopped_for.as_micros() as u64,
            wall,
            window: 0,
            stopped: r.threads,
            threads: r.threads,
        },
    };
    std::thread::sleep(Duration::from_millis(20));
    t.ask("reset");
    let started = Instant::now();
    let r = timeskew::recover(t.pid).expect("recover");
    let wall = started.elapsed().as_micros() as u64;
    let gap = t.stat("maxgap_ns") as u64 / 1000;
    detail("recover", r.live.as_ref());
    let rec = match &r.live {
        Some(l) => Sample {
            gap,
            stop: l.longest_stop_us,
            others: others(l),
            wall,
            window: l.breakpoint_window_us,
            stopped: l.threads_stopped,
            threads: l.threads,
        },
        None => Sample {
            gap,
            stop: r.stopped_for.as_micros() as u64,
            others: r.stopped_for.as_micros() as u64,
            wall,
            window: 0,
            stopped: r.threads,
            threads: r.threads,
        },
    };
    all_stop(false);
    assert_eq!(t.stat("bad"), 0, "a wrong clock reading");
    (inj, rec)
}

fn med_max(v: &mut [u64]) -> (u64, u64) {
    v.sort_unstable();
    (v[v.len() / 2], v[v.len() - 1])
}

fn row(label: &str, s: &[Sample]) {
    let pick = |f: fn(&Sample) -> u64| med_max(&mut s.iter().map(f).collect::<Vec<_>>());
    let (gm, gx) = pick(|x| x.gap);
    let (sm, sx) = pick(|x| x.stop);
    let (om, ox) = pick(|x| x.others);
    let (wm, wx) = pick(|x| x.wall);
    let (bm, bx) = pick(|x| x.window);
    let stopped = s.iter().map(|x| x.stopped).max().unwrap_or(0);
    let threads = s.iter().map(|x| x.threads).max().unwrap_or(0);
    println!(
        "| {label} | {gm} / {gx} | {sm} / {sx} | {om} / {ox} | {wm} / {wx} | {bm} / {bx} | \
         {stopped} of {threads} |"
    );
}

/// Busy loops, one per CPU, in a process of their own.
fn busy() -> Child {
    let n = std::thread::available_parallelism().map_or(2, |n| n.get());
    let script = format!("for i in $(seq {n}); do (while :; do :; done) & done; wait");
    Command::new("sh").args(["-c", &script]).spawn().unwrap()
}

fn main() {
    let rounds: usize = std::env::var("TIMESKEW_STOPS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let bin = build_target();
    println!(
        "rounds {rounds}; µs, median / worst; gap = a spinner's longest pause seen from inside; \
         stop = longest any thread was held (timeskew's view, until it is let run again); \
         others = the same without the worker (the thread that runs timeskew's system calls); \
         window = breakpoint in place"
    );
    println!("| case | gap | stop | others | wall | window | threads stopped |");
    println!("|---|---|---|---|---|---|---|");
    let only = std::env::var("TIMESKEW_STOPS_ONLY").ok();
    let sizes: Vec<(usize, usize, &str)> = [(1, 4, "6 threads"), (2, 997, "1,000 threads")]
        .into_iter()
        .filter(|(s, i, _)| only.as_deref().is_none_or(|o| o == (s + i + 1).to_string()))
        .collect();
    // With ONLY, `TIMESKEW_STOPS_BUSY=1` runs the busy-CPU case instead of the idle one.
    let busy_only = std::env::var("TIMESKEW_STOPS_BUSY").is_ok_and(|v| v == "1");
    let loads: &[bool] = match (only.is_some(), busy_only) {
        (true, false) => &[false],
        (true, true) => &[true],
        _ => &[false, true],
    };
    let paths: &[bool] = if only.is_some() {
        &[false]
    } else {
        &[false, true]
    };
    for &loaded in loads {
        let mut load = loaded.then(busy);
        for &(spin, idle, name) in &sizes {
            for &old in paths {
                let (mut inj, mut rec) = (Vec::new(), Vec::new());
                for _ in 0..rounds {
                    let (i, r) = one(&bin, spin, idle, old);
                    inj.push(i);
                    rec.push(r);
                }
                let how = if old { "all at once" } else { "one at a time" };
                let on = if loaded { ", busy CPUs" } else { "" };
                row(&format!("first inject, {name}{on}, {how}"), &inj);
                row(&format!("recover, {name}{on}, {how}"), &rec);
            }
        }
        if let Some(l) = load.as_mut() {
            // The shell and its loops: the whole process group.
            let _ = Command::new("pkill")
                .args(["-P", &l.id().to_string()])
                .status();
            let _ = l.kill();
            let _ = l.wait();
        }
    }
}
