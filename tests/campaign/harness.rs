//! What every attack needs: the round counts (scaled by `TIMESKEW_CAMPAIGN_SCALE`), one attack
//! at a time, the C targets built once, processes that are always killed and reaped, waits
//! that always end, and what `/proc` says about a target.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

pub const SEC: i64 = 1_000_000_000;
pub const MIN10: i64 = 600 * SEC;
pub const HOUR: i64 = 3600 * SEC;

/// `TIMESKEW_CAMPAIGN_SCALE` (default 1.0: the round counts).
pub fn scale() -> f64 {
    match std::env::var("TIMESKEW_CAMPAIGN_SCALE") {
        Ok(s) => {
            let v: f64 = s
                .parse()
                .unwrap_or_else(|_| panic!("TIMESKEW_CAMPAIGN_SCALE={s:?} is not a number"));
            assert!(
                v > 0.0 && v <= 100.0,
                "TIMESKEW_CAMPAIGN_SCALE={s} out of range"
            );
            v
        }
        Err(_) => 1.0,
    }
}

/// The round count `n`, scaled (at least 1).
pub fn rounds(n: usize) -> usize {
    ((n as f64 * scale()).round() as usize).max(1)
}

/// The attacks measure stop times and gaps on a 2-core machine: they run one at a time, also
/// under cargo's parallel test threads.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Targets

fn sources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/targets/campaign")
}

/// Builds every `tests/targets/campaign/*.c` once per test run; returns the directory.
fn built() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("campaign-targets");
        std::fs::create_dir_all(&dir).expect("create the targets' build directory");
        let mut n = 0;
        for entry in std::fs::read_dir(sources()).expect("read tests/targets/campaign") {
            let src = entry.unwrap().path();
            if src.extension().is_none_or(|e| e != "c") {
                continue;
            }
            let name = src.file_stem().unwrap().to_str().unwrap().to_string();
            // Built beside its final name and renamed: another test run may be using it.
            let tmp = dir.join(format!("{name}.building-{}", std::process::id()));
            let out = Command::new("cc")
                .args(["-O2", "-g", "-pthread", "-Wall", "-Wextra", "-Werror", "-o"])
                .arg(&tmp)
                .arg(&src)
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("cannot run cc (apt-get install build-essential): {e}"));
            assert!(
                out.status.success(),
                "building {} failed:\n{}",
                src.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::rename(&tmp, dir.join(&name)).expect("rename a built target");
            n += 1;
        }
        assert!(n > 0, "no C targets in {}", sources().display());
        dir
    })
}

pub fn target_bin(name: &str) -> PathBuf {
    let p = built().join(name);
    assert!(p.exists(), "no campaign target named {name}");
    p
}

/// An in-memory file for a child's output: never blocks the child, no cleanup.
fn memfd(name: &str) -> File {
    let cname = std::ffi::CString::new(name).unwrap();
    // SAFETY: a valid C string; the returned descriptor is owned by the File.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a fresh descriptor we own.
    unsafe { File::from_raw_fd(fd) }
}

fn memfd_text(f: &File) -> String {
    std::fs::read(format!("/proc/self/fd/{}", f.as_raw_fd()))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// A child process we started: killed (SIGKILL) and reaped when dropped. All waiting goes
/// through `waitpid` here (never std's `Child::wait`), so a pid is never reused under us.
pub struct Proc {
    pub pid: i32,
    pub name: String,
    status: Option<i32>,
    stdin: Option<ChildStdin>,
    lines: Option<Receiver<String>>,
    out: Option<File>,
    err: File,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr in memory files (for timeskew and other tools).
    #[allow(clippy::zombie_processes)] // reaped by our own waitpid, in Drop at the latest
    pub fn start_quiet(name: &str, cmd: &mut Command) -> Proc {
        let out = memfd("out");
        let err = memfd("err");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(err.try_clone().unwrap()));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            pid: child.id() as i32,
            name: name.to_string(),
            status: None,
            stdin: None,
            lines: None,
            out: Some(out),
            err,
        }
    }

    /// Starts `cmd` with a command pipe on stdin and its stdout read line by line.
    pub fn start_talking(name: &str, cmd: &mut Command) -> Proc {
        Proc::start_lines(name, cmd, false)
    }

    /// Like `start_talking`, but the lines come from its stderr (strace says "attached" there).
    pub fn start_stderr_lines(name: &str, cmd: &mut Command) -> Proc {
        Proc::start_lines(name, cmd, true)
    }

    #[allow(clippy::zombie_processes)] // reaped by our own waitpid, in Drop at the latest
    fn start_lines(name: &str, cmd: &mut Command, from_stderr: bool) -> Proc {
        let err = memfd("err");
        cmd.stdin(Stdio::piped());
        if from_stderr {
            cmd.stdout(Stdio::from(err.try_clone().unwrap()))
                .stderr(Stdio::piped());
        } else {
            cmd.stdout(Stdio::piped())
                .stderr(Stdio::from(err.try_clone().unwrap()));
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdout: Box<dyn std::io::Read + Send> = if from_stderr {
            Box::new(child.stderr.take().unwrap())
        } else {
            Box::new(child.stdout.take().unwrap())
        };
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            pid: child.id() as i32,
            name: name.to_string(),
            status: None,
            stdin: child.stdin.take(),
            lines: Some(rx),
            out: None,
            err,
        }
    }

    /// A campaign target (tests/targets/campaign/NAME.c) that said "ready" within 5 s.
    pub fn target(name: &str, args: &[String]) -> Proc {
        let mut p = Proc::start_talking(name, Command::new(target_bin(name)).args(args));
        match p.line_starting("ready", Instant::now() + Duration::from_secs(5)) {
            Ok(_) => p,
            Err(e) => panic!(
                "target {name} {args:?} did not get ready: {e}; stderr: {}",
                p.stderr_text()
            ),
        }
    }

    /// The next stdout line that starts with `word`, before `deadline`.
    pub fn line_starting(&mut self, word: &str, deadline: Instant) -> Result<String, String> {
        self.line_where(word, deadline, |l| {
            l.split_whitespace().next() == Some(word)
        })
    }

    /// The next line for which `pred` holds, before `deadline` (`what` names it in errors).
    pub fn line_where(
        &mut self,
        what: &str,
        deadline: Instant,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        let rx = self.lines.as_ref().expect("not started with start_talking");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if pred(&l) => return Ok(l),
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "{} (pid {}) gave no '{what}' line in time",
                        self.name, self.pid
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!(
                        "{} (pid {}) closed its output ({})",
                        self.name,
                        self.pid,
                        self.state()
                    ));
                }
            }
        }
    }

    /// Sends `cmd` and returns the reply line starting with `word` (within `within`).
    pub fn ask(&mut self, cmd: &str, word: &str, within: Duration) -> Result<String, String> {
        let deadline = Instant::now() + within;
        let stdin = self.stdin.as_mut().expect("no stdin pipe");
        if let Err(e) = writeln!(stdin, "{cmd}").and_then(|_| stdin.flush()) {
            return Err(format!(
                "{} (pid {}) does not take commands: {e} ({})",
                self.name,
                self.pid,
                self.state()
            ));
        }
        self.line_starting(word, deadline)
    }

    /// `ping`: every worker made progress; the counters and what the target reads.
    pub fn ping(&mut self) -> Result<Pong, String> {
        let line = self.ask("ping", "pong", Duration::from_secs(4))?;
        Pong::parse(&line)
    }

    /// `stats`: the counters without waiting for progress.
    pub fn stats(&mut self) -> Result<Pong, String> {
        let line = self.ask("stats", "stats", Duration::from_secs(4))?;
        Pong::parse(&line)
    }

    pub fn stderr_text(&self) -> String {
        memfd_text(&self.err)
    }

    pub fn stdout_text(&self) -> String {
        self.out.as_ref().map(memfd_text).unwrap_or_default()
    }

    /// Reaps the process if it has ended; its wait status.
    pub fn try_reap(&mut self) -> Option<i32> {
        if self.status.is_none() {
            let mut st = 0;
            // SAFETY: plain waitpid on our own child.
            let r = unsafe { libc::waitpid(self.pid, &mut st, libc::WNOHANG) };
            if r == self.pid {
                self.status = Some(st);
            }
        }
        self.status
    }

    /// Waits (polling waitpid) until the process ended or `deadline`; its wait status.
    pub fn wait_until(&mut self, deadline: Instant) -> Option<i32> {
        loop {
            if let Some(st) = self.try_reap() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// Blocks in waitpid until the process ends (someone must make sure it does).
    pub fn wait_blocking(&mut self) -> Option<i32> {
        if self.status.is_none() {
            let mut st = 0;
            // SAFETY: plain waitpid on our own child.
            let r = unsafe { libc::waitpid(self.pid, &mut st, 0) };
            if r == self.pid {
                self.status = Some(st);
            }
        }
        self.status
    }

    pub fn signal(&self, sig: i32) {
        if self.status.is_none() {
            // SAFETY: our child, not yet reaped: the pid is still ours.
            unsafe { libc::kill(self.pid, sig) };
        }
    }

    /// SIGKILL to the whole process group (started with `process_group(0)`).
    pub fn signal_group(&self, sig: i32) {
        if self.status.is_none() {
            // SAFETY: the group our child leads; not yet reaped, so the id is still ours.
            unsafe { libc::kill(-self.pid, sig) };
        }
    }

    /// Kills and reaps (bounded); the wait status.
    pub fn kill_and_reap(&mut self) -> Option<i32> {
        self.signal(libc::SIGKILL);
        self.wait_until(Instant::now() + Duration::from_secs(10))
    }

    pub fn status(&self) -> Option<i32> {
        self.status
    }

    pub fn alive(&mut self) -> bool {
        self.try_reap().is_none()
    }

    /// "running", or how it ended.
    pub fn state(&self) -> String {
        match self.status {
            None => "running".into(),
            Some(st) => describe(st),
        }
    }

    /// Closes the command pipe (the target's read(2) sees end of file).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.signal(libc::SIGKILL);
            if self
                .wait_until(Instant::now() + Duration::from_secs(10))
                .is_none()
            {
                eprintln!(
                    "campaign: could not reap {} (pid {}) within 10 s of SIGKILL",
                    self.name, self.pid
                );
            }
        }
    }
}

/// A wait status in words.
pub fn describe(st: i32) -> String {
    if libc::WIFEXITED(st) {
        format!("exit {}", libc::WEXITSTATUS(st))
    } else if libc::WIFSIGNALED(st) {
        format!("killed by {}", signame(libc::WTERMSIG(st)))
    } else {
        format!("wait status {st:#x}")
    }
}

pub fn signame(sig: i32) -> String {
    match sig {
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGTRAP => "SIGTRAP".into(),
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGILL => "SIGILL".into(),
        libc::SIGBUS => "SIGBUS".into(),
        libc::SIGABRT => "SIGABRT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGSYS => "SIGSYS".into(),
        libc::SIGALRM => "SIGALRM".into(),
        s => format!("signal {s}"),
    }
}

/// One `pong`/`stats` reply.
#[derive(Debug, Clone)]
pub struct Pong {
    pub workers: (i64, i64),
    pub f: HashMap<String, i64>,
}

impl Pong {
    fn parse(line: &str) -> Result<Pong, String> {
        let mut f = HashMap::new();
        let mut workers = (0, 0);
        for kv in line.split_whitespace().skip(1) {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            if k == "workers" {
                let (a, b) = v.split_once('/').ok_or(format!("bad reply {line:?}"))?;
                workers = (a.parse().unwrap_or(-1), b.parse().unwrap_or(-1));
            } else if let Ok(n) = v.parse() {
                f.insert(k.to_string(), n);
            }
        }
        Ok(Pong { workers, f })
    }

    pub fn get(&self, k: &str) -> i64 {
        self.f.get(k).copied().unwrap_or(-1)
    }

    /// Violations the target counted: clock errors, register corruptions, torn values, steps back.
    pub fn violations(&self) -> i64 {
        self.get("errors") + self.get("regbad") + self.get("torn") + self.get("backwards")
    }

    pub fn all_workers_alive(&self) -> bool {
        self.workers.0 == self.workers.1
    }

    /// What the target reads now: (realtime offset, monotonic offset), ns.
    pub fn reads(&self) -> (i64, i64) {
        (self.get("rt_off"), self.get("mono_off"))
    }
}

/// A small-integer key=value line parser for other replies ("gap max_us=3").
pub fn kv(line: &str) -> HashMap<String, i64> {
    line.split_whitespace()
        .skip(1)
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// timeskew

/// How one timeskew run ended.
#[derive(Debug)]
pub struct TsRun {
    pub args: Vec<String>,
    /// Wait status; None: still running at the deadline (then killed).
    pub status: Option<i32>,
    pub elapsed: Duration,
    pub stdout: String,
    pub stderr: String,
}

impl TsRun {
    pub fn ok(&self) -> bool {
        self.status
            .is_some_and(|s| libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == 0)
    }

    pub fn signaled(&self) -> bool {
        self.status.is_some_and(|s| libc::WIFSIGNALED(s))
    }

    pub fn hung(&self) -> bool {
        self.status.is_none()
    }

    pub fn how(&self) -> String {
        match self.status {
            None => format!("still running after {:?} (killed)", self.elapsed),
            Some(st) => describe(st),
        }
    }

    /// The error lines (warnings left out).
    pub fn message(&self) -> String {
        self.stderr
            .lines()
            .filter(|l| !l.contains("warning:"))
            .collect::<Vec<_>>()
            .join(" | ")
    }

    pub fn summary(&self) -> String {
        format!(
            "`timeskew {}`: {} after {:.1} ms: {}",
            self.args.join(" "),
            self.how(),
            self.elapsed.as_secs_f64() * 1e3,
            self.message()
        )
    }
}

pub fn ts_command(args: &[String]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_timeskew"));
    c.args(args);
    c
}

pub fn ts_start(args: &[String]) -> Proc {
    Proc::start_quiet("timeskew", &mut ts_command(args))
}

/// Waits for a started timeskew until `deadline`, killing it if it is still running.
pub fn ts_finish(mut p: Proc, args: &[String], started: Instant, deadline: Instant) -> TsRun {
    let status = p.wait_until(deadline);
    let elapsed = started.elapsed();
    if status.is_none() {
        p.kill_and_reap();
    }
    TsRun {
        args: args.to_vec(),
        status,
        elapsed,
        stdout: p.stdout_text(),
        stderr: p.stderr_text(),
    }
}

/// Runs timeskew with these arguments; killed if it runs longer than `within`.
pub fn ts(args: &[String], within: Duration) -> TsRun {
    let t0 = Instant::now();
    let p = ts_start(args);
    ts_finish(p, args, t0, t0 + within)
}

pub fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

pub fn inject_args(pid: i32, offset: &str, clocks: Option<&str>) -> Vec<String> {
    let mut v = args(&["inject", "--pid", &pid.to_string(), "--offset", offset]);
    if let Some(c) = clocks {
        v.extend(args(&["--clock", c]));
    }
    v
}

pub fn recover_args(pid: i32) -> Vec<String> {
    args(&["recover", "--pid", &pid.to_string()])
}

/// The skew `timeskew status --json` reports: (injected, realtime offset, monotonic offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skew {
    pub injected: bool,
    pub rt: i64,
    pub mono: i64,
}

impl Skew {
    pub const NONE: Skew = Skew {
        injected: false,
        rt: 0,
        mono: 0,
    };

    pub fn rt(rt: i64) -> Skew {
        Skew {
            injected: true,
            rt,
            mono: 0,
        }
    }

    pub fn rt_mono(rt: i64, mono: i64) -> Skew {
        Skew {
            injected: true,
            rt,
            mono,
        }
    }

    /// Whether a target reading (rt_off, mono_off) matches this skew (±50 ms).
    pub fn matches_reading(&self, (rt, mono): (i64, i64)) -> bool {
        (rt - self.rt).abs() < 50_000_000 && (mono - self.mono).abs() < 50_000_000
    }
}

/// Parses "-600s", "3600s", "1h30m", "-1.5s", "250ms" into ns.
pub fn parse_offset(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let mult = match unit {
            "d" => 86400e9,
            "h" => 3600e9,
            "m" => 60e9,
            "s" => 1e9,
            "ms" => 1e6,
            "us" | "µs" => 1e3,
            "ns" => 1.0,
            _ => return None,
        };
        total += num * mult;
    }
    let v = total.round() as i64;
    Some(if neg { -v } else { v })
}

/// `timeskew status --pid P --json`, as a Skew.
pub fn status_of(pid: i32) -> Result<Skew, String> {
    let r = ts(
        &args(&["status", "--pid", &pid.to_string(), "--json"]),
        Duration::from_secs(5),
    );
    if !r.ok() {
        return Err(r.summary());
    }
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim())
        .map_err(|e| format!("status --json printed {:?}: {e}", r.stdout))?;
    let injected = v["injected"]
        .as_bool()
        .ok_or(format!("status --json without 'injected': {v}"))?;
    let mut skew = Skew {
        injected,
        rt: 0,
        mono: 0,
    };
    if injected {
        for c in v["clocks"].as_array().cloned().unwrap_or_default() {
            let off = c["offset"]
                .as_str()
                .and_then(parse_offset)
                .ok_or(format!("status --json: bad offset in {c}"))?;
            match c["clock"].as_str() {
                Some("realtime") => skew.rt = off,
                Some("monotonic") => skew.mono = off,
                _ => {}
            }
        }
    }
    Ok(skew)
}

// ---------------------------------------------------------------------------------------------
// /proc

/// (tid, state letter, TracerPid) of every thread.
pub fn tasks(pid: i32) -> Vec<(i32, char, i32)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(tid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")) else {
            continue;
        };
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next())
            .unwrap_or('?');
        let tracer = status_field(&format!("/proc/{pid}/task/{tid}/status"), "TracerPid")
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1);
        out.push((tid, state, tracer));
    }
    out
}

pub fn status_field(path: &str, key: &str) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    s.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == key).then(|| v.trim().to_string())
    })
}

/// Threads stopped (t/T) or traced; empty when neither.
pub fn held_threads(pid: i32) -> Vec<String> {
    tasks(pid)
        .into_iter()
        .filter(|&(_, st, tr)| st == 't' || st == 'T' || tr != 0)
        .map(|(tid, st, tr)| format!("thread {tid} state {st} tracer {tr}"))
        .collect()
}

/// Waits (≤ `within`) until no thread of `pid` is stopped or traced; the leftovers otherwise.
pub fn released_within(pid: i32, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        let held = held_threads(pid);
        if held.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(held.join(", "));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Takes timeskew's per-target lock (flock LOCK_EX on the /proc/PID directory) within `within`:
/// once we hold it, no timeskew (or its helper, which inherits the command's lock) is changing
/// the target. Dropping the File unlocks.
pub fn lock_target(pid: i32, within: Duration) -> Result<File, String> {
    let f = File::open(format!("/proc/{pid}")).map_err(|e| format!("open /proc/{pid}: {e}"))?;
    let deadline = Instant::now() + within;
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(f);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(format!("flock /proc/{pid}: {e}"));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the lock on /proc/{pid} was still held {within:?} later"
            ));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

pub fn map_count(pid: i32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

pub fn vm_rss_kb(pid: i32) -> i64 {
    status_field(&format!("/proc/{pid}/status"), "VmRSS")
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(-1)
}

pub fn rollup_rss_kb(pid: i32) -> i64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let v = l.strip_prefix("Rss:")?;
                v.split_whitespace().next()?.parse().ok()
            })
        })
        .unwrap_or(-1)
}

/// The signal fields of every thread: tid → "SigBlk=… SigIgn=… SigCgt=… SigPnd=… ShdPnd=…".
pub fn signal_masks(pid: i32) -> Vec<(i32, String)> {
    let mut v: Vec<(i32, String)> = tasks(pid)
        .into_iter()
        .map(|(tid, _, _)| {
            let path = format!("/proc/{pid}/task/{tid}/status");
            let s = ["SigBlk", "SigIgn", "SigCgt", "SigPnd", "ShdPnd"]
                .iter()
                .map(|k| format!("{k}={}", status_field(&path, k).unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(" ");
            (tid, s)
        })
        .collect();
    v.sort();
    v
}

/// Busy-waits until `t` (sub-millisecond precision for kill delays).
pub fn spin_until(t: Instant) {
    while Instant::now() < t {
        std::hint::spin_loop();
    }
}

// ---------------------------------------------------------------------------------------------
// Bookkeeping

/// A small deterministic PRNG (xorshift), seeded per attack so a failing run can be repeated.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let seed = std::env::var("TIMESKEW_CAMPAIGN_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(seed);
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (self.next() >> 11) as f64 / (1u64 << 53) as f64 * (hi - lo)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Failures of one attack: counted per kind, the first few described.
#[derive(Default)]
pub struct Failures {
    pub count: usize,
    pub kinds: std::collections::BTreeMap<String, usize>,
    examples: Vec<String>,
}

impl Failures {
    /// Counts a failure; the first 3 of each kind (15 in all) are kept as examples.
    pub fn add(&mut self, kind: &str, detail: String) {
        self.count += 1;
        let seen = self.kinds.entry(kind.to_string()).or_default();
        *seen += 1;
        if *seen <= 3 && self.examples.len() < 15 {
            self.examples.push(format!("[{kind}] {detail}"));
        }
    }

    pub fn summary(&self) -> String {
        if self.count == 0 {
            return "none".into();
        }
        let kinds = self
            .kinds
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "{} ({kinds})\nfirst ones:\n  {}",
            self.count,
            self.examples.join("\n  ")
        )
    }
}

/// A wall-clock budget: an attack that keeps failing slowly stops early instead of taking
/// hours (and fails, saying so).
pub struct Budget {
    end: Instant,
    pub limit: Duration,
}

impl Budget {
    pub fn new(limit: Duration) -> Budget {
        Budget {
            end: Instant::now() + limit,
            limit,
        }
    }

    pub fn over(&self) -> bool {
        Instant::now() >= self.end
    }
}

/// Prints an attack's result and appends it to `<target tmp>/campaign-report.txt`.
pub fn report(attack: &str, text: &str) {
    let line = format!("== {attack}\n{text}\n");
    eprint!("{line}");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("campaign-report.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Percentile (0..=100) of a sample, by sorting.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s[((s.len() - 1) as f64 * p / 100.0).round() as usize]
}

// ---------------------------------------------------------------------------------------------
// The checks shared by the attacks

/// Target arguments: the realtime offsets (-o) and monotonic offsets (-m) it accepts besides 0.
pub fn offsets(rt: &[i64], mono: &[i64]) -> Vec<String> {
    let mut v = Vec::new();
    for o in rt {
        v.push("-o".to_string());
        v.push(o.to_string());
    }
    for o in mono {
        v.push("-m".to_string());
        v.push(o.to_string());
    }
    v
}

/// The last lines of a target's stderr (its CRASH / ERROR lines).
pub fn tail(p: &Proc) -> String {
    let e = p.stderr_text();
    let lines: Vec<&str> = e.lines().collect();
    lines[lines.len().saturating_sub(4)..].join(" | ")
}

/// The target is alive, none of its threads is stopped or traced (within `grace`), every worker
/// answers, and it counted no violation. Returns its `pong`.
pub fn unharmed(t: &mut Proc, grace: Duration) -> Result<Pong, (String, String)> {
    if let Some(st) = t.try_reap() {
        return Err((
            "target died".into(),
            format!("{}; stderr: {}", describe(st), tail(t)),
        ));
    }
    if let Err(held) = released_within(t.pid, grace) {
        return Err(("left stopped or traced".into(), held));
    }
    let p = match t.ping() {
        Ok(p) => p,
        Err(e) => {
            // A target that closed its output is usually dying: give the kernel a moment.
            if let Some(st) = t.wait_until(Instant::now() + Duration::from_secs(1)) {
                return Err((
                    "target died".into(),
                    format!("{}; stderr: {}", describe(st), tail(t)),
                ));
            }
            return Err(("target does not answer".into(), e));
        }
    };
    if !p.all_workers_alive() {
        return Err((
            "threads stuck".into(),
            format!("workers {}/{} made progress", p.workers.0, p.workers.1),
        ));
    }
    if p.violations() != 0 {
        return Err((
            "clock or register violation".into(),
            format!("{:?}; stderr: {}", p.f, tail(t)),
        ));
    }
    Ok(p)
}

/// `status --json` and what the target reads agree (retried for up to 1 s, in case a change is
/// still landing); returns that skew.
pub fn status_agrees(t: &mut Proc) -> Result<Skew, (String, String)> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let s1 = status_of(t.pid).map_err(|e| ("status failed".to_string(), e))?;
        let p = t
            .ping()
            .map_err(|e| ("target does not answer".to_string(), e))?;
        let s2 = status_of(t.pid).map_err(|e| ("status failed".to_string(), e))?;
        if s1 == s2 && s1.matches_reading(p.reads()) {
            return Ok(s1);
        }
        if Instant::now() >= deadline {
            return Err((
                "status disagrees with the target".into(),
                format!(
                    "status said {s1:?} then {s2:?}; the target reads {:?}",
                    p.reads()
                ),
            ));
        }
    }
}

/// A later `recover` returns the target to real time and `status` says not injected.
pub fn recovers(t: &mut Proc) -> Result<(), (String, String)> {
    let r = ts(&recover_args(t.pid), Duration::from_secs(5));
    if !r.ok() {
        return Err(("recover failed".into(), r.summary()));
    }
    let p = unharmed(t, Duration::from_secs(1))?;
    let s = status_of(t.pid).map_err(|e| ("status failed".to_string(), e))?;
    if s != Skew::NONE || !Skew::NONE.matches_reading(p.reads()) {
        return Err((
            "not real time after recover".into(),
            format!("status {s:?}, the target reads {:?}", p.reads()),
        ));
    }
    Ok(())
}

/// A timeskew that failed says why in one line (warnings aside).
pub fn one_line_message(r: &TsRun) -> bool {
    let lines: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("warning:"))
        .collect();
    lines.len() == 1
}

// ---------------------------------------------------------------------------------------------
// Kill timing

/// Where timeskew holds a target, in ms after `spawn` returned: medians of the first and last
/// moments its main thread was seen traced, over the calibration runs.
#[derive(Debug, Clone, Copy)]
pub struct Hold {
    pub start_ms: f64,
    pub end_ms: f64,
    pub seen: usize,
    pub runs: usize,
}

impl Hold {
    /// Half the delays uniform over 0–3 ms (or to the end of the hold, if later), half over the
    /// measured hold ±0.25 ms; never beyond 50 ms (a timeskew that hangs would otherwise
    /// stretch the window to the calibration's deadline).
    pub fn pick_delay_ms(&self, rng: &mut Rng) -> f64 {
        let end = self.end_ms.min(50.0);
        let start = self.start_ms.min(end);
        if self.seen == 0 || rng.below(2) == 0 {
            rng.range(0.0, (end + 0.5).max(3.0))
        } else {
            rng.range((start - 0.25).max(0.0), end + 0.25)
        }
    }

    pub fn describe(&self) -> String {
        if self.seen == 0 {
            format!("never seen traced in {} runs", self.runs)
        } else {
            format!(
                "traced from {:.2} ms to {:.2} ms after spawn (medians, seen in {}/{} runs)",
                self.start_ms, self.end_ms, self.seen, self.runs
            )
        }
    }
}

/// Runs `timeskew args` to the end, polling whether `pid`'s main thread is traced; the first
/// and last moment it was (ms after spawn), and the run.
pub fn watch_hold(pid: i32, args: &[String]) -> (Option<(f64, f64)>, TsRun) {
    use std::os::unix::fs::FileExt;
    let status = File::open(format!("/proc/{pid}/task/{pid}/status")).ok();
    let mut buf = vec![0u8; 4096];
    let mut first = None;
    let mut last = None;
    let p = ts_start(args);
    let t0 = Instant::now();
    let mut p = p;
    loop {
        if let Some(f) = &status
            && let Ok(n) = f.read_at(&mut buf, 0)
        {
            let s = String::from_utf8_lossy(&buf[..n]);
            let traced = s
                .lines()
                .find_map(|l| l.strip_prefix("TracerPid:"))
                .and_then(|v| v.trim().parse::<i32>().ok())
                .is_some_and(|v| v != 0);
            if traced {
                let ms = t0.elapsed().as_secs_f64() * 1e3;
                first.get_or_insert(ms);
                last = Some(ms);
            }
        }
        // 10 s, as `ts` allows: on a loaded 2-core machine this sampling loop itself competes
        // with timeskew for a CPU (2 s was once exceeded with builds running beside it).
        if p.try_reap().is_some() || t0.elapsed() > Duration::from_secs(10) {
            break;
        }
        std::thread::yield_now();
    }
    let run = ts_finish(p, args, t0, Instant::now());
    (first.zip(last), run)
}

/// Medians of `watch_hold` over calibration runs made by `one_run` (which prepares the target
/// and returns the observation).
pub fn calibrate(runs: usize, mut one_run: impl FnMut() -> Option<(f64, f64)>) -> Hold {
    let mut starts = Vec::new();
    let mut ends = Vec::new();
    for _ in 0..runs {
        if let Some((s, e)) = one_run() {
            starts.push(s);
            ends.push(e);
        }
    }
    Hold {
        start_ms: percentile(&starts, 50.0),
        end_ms: percentile(&ends, 50.0),
        seen: starts.len(),
        runs,
    }
}

/// Whether `pid`'s main thread is traced right now.
pub fn traced_now(pid: i32) -> bool {
    status_field(&format!("/proc/{pid}/task/{pid}/status"), "TracerPid")
        .and_then(|v| v.parse::<i32>().ok())
        .is_some_and(|v| v != 0)
}
