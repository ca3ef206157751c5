//! End-to-end helpers shared by tests/runtimes.rs and tests/servers.rs: the toolchains and the
//! test programs of `tests/targets/` (built once per test binary into `target/e2e/`), a handle
//! on any program that speaks examples/probe.rs's line protocol, clock brackets, and the CLI
//! with `--json`.
//!
//! A missing toolchain or server fails the test with the package to install: on our machines
//! tests run as root after scripts/install-test-deps.sh, so a skip would hide a broken setup.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::{SEC, clock_ns, fields, realtime_ns, timeskew_ok};

/// The lines `output` produces, read by a thread of their own, so that readers can wait with a
/// timeout (a stuck target then fails the test instead of hanging it).
pub fn line_channel(output: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// How to get the tools the suites need.
pub const INSTALL_HINT: &str = "`sudo scripts/test.sh` installs what the suites need and runs \
     them all; or run `sudo scripts/install-test-deps.sh`, or apt-get install";

/// `tests/targets/` in the source tree.
pub fn sources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/targets")
}

/// `target/e2e/`: where the test programs are built (beside cargo's own output).
pub fn build_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.parent().unwrap_or(tmp).join("e2e");
    std::fs::create_dir_all(&dir).expect("create target/e2e");
    dir
}

/// The full path of `program` on PATH, or a failure naming the Debian package that has it.
pub fn require(program: &str, package: &str) -> PathBuf {
    find_program(program).unwrap_or_else(|| {
        panic!("{program} not found on PATH: {INSTALL_HINT} {package}");
    })
}

pub fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Path::new(program).is_file().then(|| PathBuf::from(program));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Runs a build command; fails the test with its output if it does not succeed.
fn run_build(what: &str, cmd: &mut Command) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("building {what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "building {what} failed ({}): {cmd:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds `out` (a file or directory name in target/e2e/) with `build`, which writes to the
/// temporary path it is given; the result is renamed into place so that test binaries building
/// at the same time never see a half-written program.
fn build_into(name: &str, build: impl FnOnce(&Path)) -> PathBuf {
    let dir = build_dir();
    let out = dir.join(name);
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let _ = std::fs::remove_file(&tmp);
    build(&tmp);
    let _ = std::fs::remove_dir_all(&out);
    std::fs::rename(&tmp, &out).unwrap_or_else(|e| panic!("rename {}: {e}", tmp.display()));
    out
}

macro_rules! once {
    ($name:ident, $body:expr) => {
        pub fn $name() -> &'static Path {
            static CELL: OnceLock<PathBuf> = OnceLock::new();
            CELL.get_or_init(|| $body).as_path()
        }
    };
}

once!(static_glibc_probe, {
    let cc = require("cc", "build-essential");
    // A static glibc needs libc.a (libc6-dev); the compiler says so if it is missing.
    build_into("probe-static-glibc", |out| {
        run_build(
            "the static glibc probe",
            Command::new(cc)
                .args(["-O2", "-static", "-Wall", "-o"])
                .arg(out)
                .arg(sources().join("probe.c")),
        )
    })
});

once!(static_musl_probe, {
    let cc = require("musl-gcc", "musl-tools");
    build_into("probe-static-musl", |out| {
        run_build(
            "the static musl probe",
            Command::new(cc)
                .args(["-O2", "-static", "-Wall", "-o"])
                .arg(out)
                .arg(sources().join("probe.c")),
        )
    })
});

fn go_build(name: &str, cgo: bool) -> PathBuf {
    let go = require("go", "golang-go");
    if cgo {
        require("cc", "build-essential");
    }
    let cache = build_dir().join("go-cache");
    build_into(name, |out| {
        run_build(
            name,
            Command::new(go)
                .args(["build", "-o"])
                .arg(out)
                .arg(".")
                .current_dir(sources().join("go"))
                .env("CGO_ENABLED", if cgo { "1" } else { "0" })
                .env("GOCACHE", &cache)
                .env("GOPATH", build_dir().join("gopath"))
                .env("GOFLAGS", "")
                .env("GOPROXY", "off")
                .env("GO111MODULE", "on"),
        )
    })
}

once!(go_cgo_probe, go_build("probe-go-cgo", true));

// `run/clocks.c` and `run/clocks.go`: print their clocks once (and start programs), for the
// suites that follow execs (`timeskew run`, `inject --follow`).
once!(clocks_static_glibc, {
    let cc = require("cc", "build-essential");
    build_into("clocks-static-glibc", |out| {
        run_build(
            "clocks.c (cc -static)",
            Command::new(cc)
                .args(["-static", "-O2", "-Wall", "-pthread", "-o"])
                .arg(out)
                .arg(sources().join("run/clocks.c")),
        )
    })
});

once!(clocks_go, {
    let go = require("go", "golang-go");
    let cache = build_dir().join("go-cache");
    build_into("clocks-go", |out| {
        run_build(
            "clocks.go (CGO_ENABLED=0)",
            Command::new(go)
                .args(["build", "-o"])
                .arg(out)
                .arg(sources().join("run/clocks.go"))
                .env("CGO_ENABLED", "0")
                .env("GOCACHE", &cache)
                .env("GOPATH", build_dir().join("gopath"))
                .env("GOFLAGS", "")
                .env("GOPROXY", "off")
                .env("GO111MODULE", "off"),
        )
    })
});
once!(go_static_probe, go_build("probe-go-nocgo", false));

once!(java_classes, {
    let javac = require("javac", "openjdk-17-jdk-headless");
    build_into("java", |out| {
        run_build(
            "Probe.java",
            Command::new(javac)
                .arg("-d")
                .arg(out)
                .arg(sources().join("Probe.java")),
        )
    })
});

/// `<program> --version`-style output for the reports: its first line with a digit and the
/// word "version" in it, else its first line with a digit.
pub fn version_of(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(o) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            let numbered = |l: &&str| l.chars().any(|c| c.is_ascii_digit());
            text.lines()
                .filter(numbered)
                .find(|l| l.to_lowercase().contains("version"))
                .or_else(|| text.lines().find(numbered))
                .unwrap_or("")
                .trim()
                .to_string()
        }
        Err(e) => format!("{program}: {e}"),
    }
}

/// How long we wait for any one answer from a target before failing the test.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// A running program that speaks the probe line protocol: `ready pid=<pid>` once it runs, then
/// one answer line per command line. Killed and reaped when dropped; every read is bounded.
pub struct LineTarget {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    errors: Arc<Mutex<String>>,
    /// The pid the program reported (a launcher may exec, never fork, so this is the process
    /// that reads the clock).
    pub pid: i32,
}

impl LineTarget {
    pub fn spawn(name: &str, mut cmd: Command) -> LineTarget {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {cmd:?}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let mut err_pipe = child.stderr.take().unwrap();
        let lines = line_channel(stdout);
        let errors = Arc::new(Mutex::new(String::new()));
        let sink = errors.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut t = LineTarget {
            name: name.to_string(),
            child,
            stdin,
            lines,
            errors,
            pid: 0,
        };
        let ready = t.read_line(Duration::from_secs(60));
        let pid = ready
            .strip_prefix("ready pid=")
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("{name} said {ready:?} instead of `ready pid=N`"));
        t.pid = pid;
        t
    }

    pub fn pid_str(&self) -> String {
        self.pid.to_string()
    }

    /// What the program wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        self.errors.lock().unwrap().clone()
    }

    fn read_line(&mut self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => panic!(
                "{} (pid {}) gave no answer within {timeout:?}; its threads (state, tracer, \
                 wait channel): {}; stderr:\n{}",
                self.name,
                self.pid,
                thread_states(self.pid),
                self.stderr_text()
            ),
            Err(RecvTimeoutError::Disconnected) => {
                // Give stderr's reader a moment to collect the last words.
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "{} (pid {}) closed its output (exit: {:?}); stderr:\n{}",
                    self.name,
                    self.pid,
                    self.child.try_wait().ok().flatten(),
                    self.stderr_text()
                )
            }
        }
    }

    /// Sends a command and returns the answer line.
    pub fn ask_line(&mut self, cmd: &str) -> String {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{cmd}")
            .and_then(|_| stdin.flush())
            .unwrap_or_else(|e| panic!("{}: write {cmd:?}: {e}", self.name));
        self.read_line(ANSWER_TIMEOUT)
    }

    /// Sends a command and returns the integer `key=value` fields of the answer.
    pub fn ask(&mut self, cmd: &str) -> HashMap<String, i128> {
        let line = self.ask_line(cmd);
        assert!(
            line.starts_with(cmd.split_whitespace().next().unwrap_or("")),
            "{}: asked {cmd:?}, got {line:?}",
            self.name
        );
        fields(&line)
    }

    /// The program's clocks, bracketed by our own realtime and monotonic reads.
    pub fn now(&mut self) -> Sample {
        let before = realtime_ns();
        let mono_before = clock_ns(libc::CLOCK_MONOTONIC);
        let fields = self.ask("now");
        let mono_after = clock_ns(libc::CLOCK_MONOTONIC);
        let after = realtime_ns();
        Sample {
            what: self.name.clone(),
            before,
            after,
            mono_before,
            mono_after,
            fields,
        }
    }

    /// Answers a `now` right away: the process is alive and serving.
    pub fn assert_alive(&mut self) {
        assert!(
            self.child.try_wait().ok().flatten().is_none(),
            "{} exited",
            self.name
        );
        let _ = self.now();
    }

    /// Sends `quit` and waits (bounded) for a clean exit.
    pub fn quit(mut self) -> ExitStatus {
        let stdin = self.stdin.as_mut().expect("stdin open");
        let _ = writeln!(stdin, "quit").and_then(|_| stdin.flush());
        self.stdin = None; // EOF too
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {ANSWER_TIMEOUT:?} of `quit`; stderr:\n{}",
                self.name,
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LineTarget {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `now` answer with our clock reads around it.
#[derive(Debug, Clone)]
pub struct Sample {
    pub what: String,
    pub before: i128,
    pub after: i128,
    pub mono_before: i128,
    pub mono_after: i128,
    pub fields: HashMap<String, i128>,
}

impl Sample {
    pub fn get(&self, key: &str) -> i128 {
        *self
            .fields
            .get(key)
            .unwrap_or_else(|| panic!("{}: no field {key} in {:?}", self.what, self.fields))
    }

    /// Asserts the realtime field `key` (in units of `unit_ns`, truncated) equals our real time
    /// shifted by `offset_ns`: between our reads before and after the request, plus `slack_ns`
    /// for clocks that are not exact. Returns how far from the bracket's start it was (ns).
    pub fn assert_realtime_shift(
        &self,
        key: &str,
        unit_ns: i128,
        offset_ns: i128,
        slack_ns: i128,
    ) -> i128 {
        let seen = self.get(key) * unit_ns;
        let lo = self.before + offset_ns - unit_ns - slack_ns;
        let hi = self.after + offset_ns + slack_ns;
        assert!(
            (lo..=hi).contains(&seen),
            "{}: {key} = {seen} ns, expected real time shifted by {} within [{lo}, {hi}] \
             (it is off by {:.3} s from that)",
            self.what,
            show_offset(offset_ns),
            (seen - self.before - offset_ns) as f64 / 1e9
        );
        seen - self.before - offset_ns
    }

    /// Asserts that the monotonic-family field `key` moved, since `earlier`, by the real
    /// elapsed time plus `offset_ns` (compared as deltas: the runtime's origin is its own).
    /// The real elapsed time is bracketed by our CLOCK_MONOTONIC reads around both requests.
    pub fn assert_mono_advance(
        &self,
        earlier: &Sample,
        key: &str,
        offset_ns: i128,
        slack_ns: i128,
    ) {
        let delta = self.get(key) - earlier.get(key);
        let lo = self.mono_before - earlier.mono_after + offset_ns - slack_ns;
        let hi = self.mono_after - earlier.mono_before + offset_ns + slack_ns;
        assert!(
            (lo..=hi).contains(&delta),
            "{}: {key} advanced {delta} ns since the earlier reading, expected the real elapsed \
             time plus {} within [{lo}, {hi}] (off by {:.3} s)",
            self.what,
            show_offset(offset_ns),
            (delta - (self.mono_before - earlier.mono_after) - offset_ns) as f64 / 1e9
        );
    }
}

pub fn show_offset(ns: i128) -> String {
    format!("{:+}s", ns as f64 / SEC as f64)
}

/// `timeskew inject --pid P --offset O [--clock C] --json`, asserting success; the JSON report.
pub fn inject_json(pid: i32, offset: &str, clocks: &str) -> serde_json::Value {
    let pid = pid.to_string();
    let mut args = vec!["inject", "--pid", &pid, "--offset", offset, "--json"];
    if !clocks.is_empty() {
        args.extend(["--clock", clocks]);
    }
    cli_json(&args)
}

/// `timeskew recover --pid P --json`, asserting success; the JSON report.
pub fn recover_json(pid: i32) -> serde_json::Value {
    cli_json(&["recover", "--pid", &pid.to_string(), "--json"])
}

/// `timeskew status --pid P --json`.
pub fn status_json(pid: i32) -> serde_json::Value {
    cli_json(&["status", "--pid", &pid.to_string(), "--json"])
}

pub fn cli_json(args: &[&str]) -> serde_json::Value {
    let text = timeskew_ok(args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("timeskew {args:?}: {e}: {text}"))
}

/// Threads of `pid` that are stopped (state `t`/`T`) or still have a tracer.
pub fn held_threads(pid: i32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return vec![];
    };
    let mut held = vec![];
    for entry in dir.flatten() {
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue; // exited meanwhile
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let state = field("State:");
        let tracer = field("TracerPid:");
        if state.starts_with('t') || state.starts_with('T') || tracer != "0" {
            held.push(format!(
                "tid {}: State {state}, TracerPid {tracer}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    held
}

/// Number of threads of `pid`.
pub fn thread_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Each thread of `pid`: its state, tracer and wait channel — what a target that stopped
/// answering is doing (stopped, traced, blocked where).
pub fn thread_states(pid: i32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return "gone".into();
    };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        let tid = task.file_name().to_string_lossy().into_owned();
        let dir = format!("/proc/{pid}/task/{tid}");
        let status = std::fs::read_to_string(format!("{dir}/status")).unwrap_or_default();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .unwrap_or("?")
                .trim()
                .to_string()
        };
        let wchan = std::fs::read_to_string(format!("{dir}/wchan")).unwrap_or_default();
        out.push(format!(
            "{tid} {} tracer {} in {wchan}",
            field("State:"),
            field("TracerPid:")
        ));
    }
    out.join(", ")
}

/// `clocks MODE …` (tests/targets/run/clocks.c, static glibc), driven line by line.
pub struct Clocks {
    pub child: super::Reaped,
    pub stdin: Option<ChildStdin>,
    pub lines: Receiver<String>,
}

impl Clocks {
    pub fn spawn(args: &[&str]) -> Clocks {
        let mut child = super::Reaped(
            Command::new(clocks_static_glibc())
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("clocks {args:?}: {e}")),
        );
        let stdin = child.0.stdin.take();
        let lines = line_channel(child.0.stdout.take().unwrap());
        Clocks {
            child,
            stdin,
            lines,
        }
    }

    pub fn pid(&self) -> String {
        self.child.0.id().to_string()
    }

    pub fn next(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(10))
            .expect("a line from clocks")
    }

    /// Asks for its clocks: the line it answers with.
    pub fn now(&mut self) -> String {
        writeln!(self.stdin.as_mut().unwrap(), "now").unwrap();
        self.next()
    }

    /// Ends its input; it must exit 0.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        assert!(self.child.0.wait().unwrap().success());
    }
}
