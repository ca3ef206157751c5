//! Test targets and helpers: real processes, a handshake line instead of sleeps, and every
//! child killed *and reaped* when the handle drops.
#![allow(dead_code)]

/// Real podman containers of a tiny busybox image, for the container selection suite.
pub mod container;
/// End-to-end helpers: toolchains, targets that answer on stdin/stdout, samples.
pub mod e2e;
/// Real servers (Redis, PostgreSQL, etcd) started on loopback for the server suite.
pub mod servers;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};

pub const SEC: i128 = 1_000_000_000;
/// `time()` reads the kernel's coarse clock, which lags real time by up to one tick (10 ms at
/// HZ=100): just after a second boundary it may still give the second before, natively too.
pub const COARSE_TICK: i128 = 10_000_000;

/// Path of a binary cargo built beside the test binary (examples live in `../examples`).
pub fn example(name: &str) -> PathBuf {
    let mut dir = std::env::current_exe().expect("test exe path");
    dir.pop(); // deps
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} missing: run the tests with `cargo test` (which builds the examples), the benchmark with scripts/bench.sh",
        path.display()
    );
    path
}

/// The `timeskew` CLI built for this test run.
pub fn timeskew_bin() -> &'static str {
    env!("CARGO_BIN_EXE_timeskew")
}

/// Runs the CLI and returns its output.
pub fn timeskew(args: &[&str]) -> Output {
    timeskew_env(args, &[])
}

pub fn timeskew_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(timeskew_bin());
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run timeskew")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs the CLI and asserts success.
pub fn timeskew_ok(args: &[&str]) -> String {
    let o = timeskew(args);
    assert!(
        o.status.success(),
        "timeskew {args:?} failed: {}\n{}",
        o.status,
        stderr(&o)
    );
    stdout(&o)
}

/// A running `probe` example.
pub struct Probe {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pub pid: i32,
}

impl Probe {
    pub fn spawn(args: &[&str]) -> Probe {
        Probe::spawn_with(args, |_| {})
    }

    /// [`spawn`](Probe::spawn), with the command set up further by `setup` first (e.g.
    /// [`in_time_namespace`]).
    pub fn spawn_with(args: &[&str], setup: impl FnOnce(&mut Command)) -> Probe {
        let mut cmd = Command::new(example("probe"));
        setup(&mut cmd);
        let mut child = cmd
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn probe");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let pid = child.id() as i32;
        let mut p = Probe {
            child,
            stdin,
            stdout,
            pid,
        };
        let ready = p.read_line();
        assert!(ready.starts_with("ready "), "probe said {ready:?}");
        p
    }

    pub fn pid_str(&self) -> String {
        self.pid.to_string()
    }

    fn read_line(&mut self) -> String {
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).expect("read from probe");
        assert!(n > 0, "probe {} closed its output (crashed?)", self.pid);
        line.trim_end().to_string()
    }

    /// Sends a command and returns the reply line.
    pub fn ask_line(&mut self, cmd: &str) -> String {
        writeln!(self.stdin, "{cmd}").expect("write to probe");
        self.stdin.flush().unwrap();
        self.read_line()
    }

    /// Sends a command and returns the integer `key=value` fields of the reply.
    pub fn ask(&mut self, cmd: &str) -> HashMap<String, i128> {
        fields(&self.ask_line(cmd))
    }

    /// The probe's clocks, bracketed by our own (unskewed) realtime reads.
    pub fn now(&mut self) -> Reading {
        let before = realtime_ns();
        let fields = self.ask("now");
        let after = realtime_ns();
        Reading {
            before,
            after,
            fields,
        }
    }

    pub fn stats(&mut self) -> HashMap<String, i128> {
        self.ask("stats")
    }

    /// With `--churn`: asserts that threads born from now on read realtime shifted by
    /// `offset_ns` — waits (bounded) for three more to come and go.
    pub fn assert_new_threads_see(&mut self, offset_ns: i128) {
        // `before` first: a thread counted after `start` read its clock after this point.
        let before = realtime_ns();
        let start = self.ask("churn")["threads"];
        let mut fields = self.ask("churn");
        for _ in 0..100_000 {
            if fields["threads"] > start + 2 {
                break;
            }
            fields = self.ask("churn");
        }
        let after = realtime_ns();
        assert!(fields["threads"] > start + 2, "churn stalled: {fields:?}");
        let seen = fields["realtime"];
        assert!(
            (before + offset_ns..=after + offset_ns).contains(&seen),
            "a thread born after the injection saw {seen}, expected within [{}, {}]",
            before + offset_ns,
            after + offset_ns
        );
    }

    /// True while the process runs and answers.
    pub fn alive(&mut self) -> bool {
        if self.child.try_wait().ok().flatten().is_some() || writeln!(self.stdin, "stats").is_err()
        {
            return false;
        }
        let mut line = String::new();
        self.stdin.flush().is_ok()
            && self.stdout.read_line(&mut line).is_ok_and(|n| n > 0)
            && line.starts_with("stats ")
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The integer `key=value` fields of a reply line (after its first word).
pub fn fields(line: &str) -> HashMap<String, i128> {
    line.split_whitespace()
        .skip(1)
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse::<i128>().ok()?))
        })
        .collect()
}

/// One `now` answer.
pub struct Reading {
    pub before: i128,
    pub after: i128,
    pub fields: HashMap<String, i128>,
}

impl Reading {
    pub fn get(&self, key: &str) -> i128 {
        self.fields[key]
    }

    /// Asserts the probe's realtime equals ours shifted by `offset_ns` (bracketed: exact bounds,
    /// plus `slack_ns` for clocks of coarser resolution).
    pub fn assert_realtime_shift(&self, key: &str, unit_ns: i128, offset_ns: i128, slack_ns: i128) {
        let seen = self.get(key) * unit_ns;
        let lo = self.before + offset_ns - slack_ns - unit_ns;
        let hi = self.after + offset_ns + slack_ns;
        assert!(
            (lo..=hi).contains(&seen),
            "{key}: probe saw {seen}, expected real time shifted by {offset_ns} ns, within [{lo}, {hi}] (off by {} ms)",
            (seen - (self.before + offset_ns)) / 1_000_000
        );
    }
}

pub fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: t is a valid timespec.
    unsafe { libc::clock_gettime(clock, &mut t) };
    t.tv_sec as i128 * SEC + t.tv_nsec as i128
}

pub fn realtime_ns() -> i128 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// Asserts a monotonic-family reading of the probe against ours, read around it.
pub fn assert_mono_shift(
    ours_before: i128,
    seen: i128,
    ours_after: i128,
    offset_ns: i128,
    what: &str,
) {
    let (lo, hi) = (
        ours_before + offset_ns - 5_000_000,
        ours_after + offset_ns + 5_000_000,
    );
    assert!(
        (lo..=hi).contains(&seen),
        "{what}: probe saw {seen}, expected within [{lo}, {hi}] (off by {} ms)",
        (seen - ours_before - offset_ns) / 1_000_000
    );
}

/// Bytes of the vDSO of `pid`, to prove recover restores them exactly.
pub fn vdso_bytes(pid: i32) -> Vec<u8> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let line = maps.lines().find(|l| l.ends_with("[vdso]")).unwrap();
    let (range, _) = line.split_once(' ').unwrap();
    let (s, e) = range.split_once('-').unwrap();
    let (s, e) = (
        u64::from_str_radix(s, 16).unwrap(),
        u64::from_str_radix(e, 16).unwrap(),
    );
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut buf = vec![0u8; (e - s) as usize];
    std::os::unix::fs::FileExt::read_exact_at(&mem, &mut buf, s).unwrap();
    buf
}

/// The memory map of `pid`, one line per mapping.
pub fn maps(pid: i32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Mappings that are both writable and executable.
pub fn wx_mappings(pid: i32) -> Vec<String> {
    maps(pid)
        .into_iter()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|p| p.contains('w') && p.contains('x'))
        })
        .collect()
}

/// Start address of the vDSO of `pid`.
pub fn vdso_base(pid: i32) -> u64 {
    let line = maps(pid)
        .into_iter()
        .find(|l| l.ends_with("[vdso]"))
        .unwrap();
    u64::from_str_radix(line.split('-').next().unwrap(), 16).unwrap()
}

/// Writes into another process through /proc/PID/mem (forced, even over read-only code).
pub fn write_mem(pid: i32, addr: u64, bytes: &[u8]) {
    let mem = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/mem"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&mem, bytes, addr).unwrap();
}

/// Makes `cmd` start in a new time namespace where the monotonic and boottime clocks read
/// `uptime_s` seconds (as on a machine that booted `uptime_s` seconds ago), whatever our own
/// uptime. Returns how much less (ns) they read there than here: `(monotonic, boottime)`.
/// Needs root (CAP_SYS_TIME); the exec moves the child into the namespace.
pub fn in_time_namespace(cmd: &mut Command, uptime_s: i64) -> (i128, i128) {
    use std::os::unix::process::CommandExt;
    let back = |clock| (clock_ns(clock) / SEC) as i64 - uptime_s;
    let (mono, boot) = (back(libc::CLOCK_MONOTONIC), back(libc::CLOCK_BOOTTIME));
    // A namespace's offsets count from the initial namespace's clocks, not from ours (when this
    // test runs in a time namespace of its own).
    let own = |name: &str| -> i64 {
        std::fs::read_to_string("/proc/self/timens_offsets")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.first() == Some(&name)).then(|| f.get(1)?.parse().ok())?
            })
            .unwrap_or(0)
    };
    let offsets = format!(
        "monotonic {} 0\nboottime {} 0\n",
        own("monotonic") - mono,
        own("boottime") - boot
    );
    // SAFETY: between fork and exec only async-signal-safe calls, on data prepared before.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWTIME) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let fd = libc::open(c"/proc/self/timens_offsets".as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = libc::write(fd, offsets.as_ptr().cast(), offsets.len());
            let write_error = std::io::Error::last_os_error();
            libc::close(fd);
            if n != offsets.len() as isize {
                return Err(write_error);
            }
            Ok(())
        });
    }
    (mono as i128 * SEC, boot as i128 * SEC)
}

/// Any child process, killed and reaped when dropped.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
