//! `timeskew run`: a command and everything it starts, skewed from the first instruction —
//! shells, subshells, pipelines, fork without exec, vfork, posix_spawn, exec from a second
//! thread, static glibc and musl binaries and a static Go binary (which LD_PRELOAD tools such as
//! libfaketime cannot reach); exit codes and terminating signals propagated; stdin/stdout, signals
//! and job control passed through. Handshakes on output lines (waits poll for a condition, with a
//! deadline); every process of every tree is killed and reaped.

mod common;

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use common::*;

const DAY: i64 = 86_400;
/// Longest wait for a line of output before the test fails (instead of hanging).
const PATIENCE: Duration = Duration::from_secs(30);

fn now_s() -> i64 {
    (realtime_ns() / SEC) as i64
}

/// `timeskew run ARGS…`
fn run_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(timeskew_bin());
    cmd.arg("run").args(args);
    cmd
}

/// Runs `timeskew run ARGS…` to the end with stdin closed; returns the output and the real time
/// (seconds) just before and after.
fn run_to_end(args: &[&str]) -> (std::process::Output, i64, i64) {
    let before = now_s();
    let out = run_cmd(args)
        .stdin(Stdio::null())
        .output()
        .expect("run timeskew");
    (out, before, now_s())
}

/// Asserts `seen` (seconds) is real time shifted by `offset`, bracketed by our own clock read
/// before and after (1 s of slack below: `time()` reads the coarse clock, a tick behind).
fn assert_shifted(seen: i64, before: i64, after: i64, offset: i64, what: &str) {
    let (lo, hi) = (before + offset - 1, after + offset);
    assert!(
        (lo..=hi).contains(&seen),
        "{what}: saw {seen}, expected real time {offset:+} s, within [{lo}, {hi}] (off by {} s)",
        seen - before - offset
    );
}

/// Every integer `key=N` field and every bare integer line of `text`.
fn numbers(text: &str) -> Vec<(String, i64)> {
    let mut found = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Ok(n) = line.parse() {
            found.push((line.to_string(), n));
            continue;
        }
        let who = line.split_whitespace().next().unwrap_or("");
        for kv in line.split_whitespace() {
            if let Some((k, v)) = kv.split_once('=')
                && let Ok(n) = v.parse()
            {
                found.push((format!("{who} {k}"), n));
            }
        }
    }
    found
}

/// Asserts that the output holds exactly `count` clock readings, each shifted by `offset`.
fn assert_all_shifted(
    out: &std::process::Output,
    before: i64,
    after: i64,
    offset: i64,
    count: usize,
) {
    let text = stdout(out);
    let readings = numbers(&text);
    assert_eq!(
        readings.len(),
        count,
        "expected {count} clock readings in:\n{text}\nstderr:\n{}",
        stderr(out)
    );
    for (what, seen) in readings {
        assert_shifted(seen, before, after, offset, &what);
    }
}

/// Lines of a child's output (a pipe or a pty master), waiting at most `PATIENCE` for each.
struct Lines {
    fd: OwnedFd,
    buf: Vec<u8>,
    seen: String,
}

impl Lines {
    fn new(fd: impl Into<OwnedFd>) -> Lines {
        Lines {
            fd: fd.into(),
            buf: Vec::new(),
            seen: String::new(),
        }
    }

    /// The next line, without its line ending; `None` at the end of the output.
    fn next_line(&mut self) -> Option<String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let line = String::from_utf8_lossy(&line).trim_end().to_string();
                self.seen.push_str(&line);
                self.seen.push('\n');
                return Some(line);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no complete line within {PATIENCE:?}; output so far:\n{}{}",
                self.seen,
                String::from_utf8_lossy(&self.buf)
            );
            if !wait_readable(self.fd.as_fd(), left) {
                continue;
            }
            let mut chunk = [0u8; 4096];
            // EIO: a pty whose slave side is closed everywhere — the end, like EOF.
            match nix::unistd::read(&self.fd, &mut chunk) {
                Ok(0) | Err(_) => {
                    if self.buf.is_empty() {
                        return None;
                    }
                    self.buf.push(b'\n');
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads until a line containing `needle`; fails the test at the end of the output.
    fn expect(&mut self, needle: &str) -> String {
        loop {
            match self.next_line() {
                Some(line) if line.contains(needle) => return line,
                Some(_) => {}
                None => panic!("output ended without {needle:?}:\n{}", self.seen),
            }
        }
    }

    /// Everything read so far plus what can be read now, without waiting for the end (a pty
    /// has no end while another process holds its slave side).
    fn so_far(&mut self) -> String {
        let mut chunk = [0u8; 4096];
        while wait_readable(self.fd.as_fd(), Duration::ZERO) {
            match nix::unistd::read(&self.fd, &mut chunk) {
                Ok(n) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => break,
            }
        }
        format!("{}{}", self.seen, String::from_utf8_lossy(&self.buf))
    }
}

fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    rc > 0
}

/// A `timeskew run` child. timeskew dying alone leaves the command running (by design), so
/// dropping this kills the whole tree first, then timeskew is killed and reaped.
struct Tree(Reaped);

impl Tree {
    fn spawn(cmd: &mut Command) -> Tree {
        Tree(Reaped(cmd.spawn().expect("spawn timeskew run")))
    }

    fn pid(&self) -> i32 {
        self.0.0.id() as i32
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let mut stack = vec![self.pid()];
        while let Some(pid) = stack.pop() {
            let kids = children_of(pid);
            for &kid in &kids {
                let _ = kill(Pid::from_raw(kid), Signal::SIGKILL);
            }
            stack.extend(kids);
        }
    }
}

/// Waits for timeskew to exit and returns its status; fails after `PATIENCE`.
fn wait_exit(child: &mut Tree) -> std::process::ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.0.0.try_wait().expect("wait for timeskew") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "timeskew run did not exit within {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

// --- test programs of tests/targets/run/, built once per test run -----------------------------

fn sources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/targets/run")
}

fn build_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("run-targets");
    std::fs::create_dir_all(&dir).expect("create the build directory");
    dir
}

/// Builds the static program `name` with the command `build` returns for a temporary output
/// path, then renames it into place so that a half-written program is never run.
fn build(name: &str, what: &str, build: impl FnOnce(&Path) -> Command) -> PathBuf {
    let out = build_dir().join(name);
    let tmp = build_dir().join(format!(".{name}.{}", std::process::id()));
    let mut cmd = build(&tmp);
    let result = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("building {what}: cannot run {cmd:?}: {e}"));
    assert!(
        result.status.success(),
        "building {what} failed: {cmd:?}\n{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    std::fs::rename(&tmp, &out).expect("move the built program into place");
    assert_static(&out, what);
    out
}

/// Fails unless the program has no ELF interpreter: nothing LD_PRELOAD could hook.
fn assert_static(path: &Path, what: &str) {
    let bytes = std::fs::read(path).expect("read the built program");
    let elf = goblin::elf::Elf::parse(&bytes).expect("parse the built program");
    assert!(
        elf.interpreter.is_none(),
        "{what} should be static but asks for {:?}",
        elf.interpreter
    );
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

fn static_glibc() -> &'static Path {
    common::e2e::clocks_static_glibc()
}

fn static_musl() -> &'static Path {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    CELL.get_or_init(|| {
        assert!(
            on_path("musl-gcc"),
            "musl-gcc not found: apt-get install musl-tools (`sudo scripts/test.sh` installs what the suites need)"
        );
        build("clocks-static-musl", "clocks.c (musl-gcc -static)", |out| {
            let mut cmd = Command::new("musl-gcc");
            cmd.args(["-static", "-O2", "-Wall", "-o"])
                .arg(out)
                .arg(sources().join("clocks.c"));
            cmd
        })
    })
}

fn static_go() -> &'static Path {
    common::e2e::clocks_go()
}

// --- shells and scripts ----------------------------------------------------------------------

#[test]
fn every_date_of_a_shell_script_is_skewed_and_its_exit_status_kept() {
    let (out, before, after) = run_to_end(&[
        "--offset",
        "-1d",
        "--",
        "sh",
        "-c",
        "date +%s; date +%s; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "stderr: {}", stderr(&out));
    assert_all_shifted(&out, before, after, -DAY, 2);
    assert_eq!(stderr(&out), "", "no warning expected");
}

#[test]
fn subshells_pipelines_and_nested_shells_are_skewed_too() {
    let script = "(date +%s); bash -c 'date +%s'; date +%s | cat; x=$(date +%s); echo \"$x\"; \
                  sh -c 'exec date +%s'; env date +%s";
    let (out, before, after) = run_to_end(&["--offset=+36h", "--", "sh", "-c", script]);
    assert!(out.status.success(), "{}: {}", out.status, stderr(&out));
    assert_all_shifted(&out, before, after, 36 * 3600, 6);
}

#[test]
fn a_command_run_without_a_shell_and_a_zero_default_offset() {
    let (out, before, after) = run_to_end(&["date", "+%s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_all_shifted(&out, before, after, 0, 1);
}

#[test]
fn termination_by_a_signal_is_propagated() {
    let (out, _, _) = run_to_end(&["--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGTERM),
        "{}: {}",
        out.status,
        stderr(&out)
    );
    assert!(!out.status.core_dumped());
    let (out, _, _) = run_to_end(&["--", "sh", "-c", "kill -KILL $$"]);
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{}", out.status);
}

#[test]
fn exit_codes_for_commands_that_cannot_run() {
    let (out, _, _) = run_to_end(&["--", "/nonexistent/program"]);
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot run /nonexistent/program: No such file or directory"),
        "{}",
        stderr(&out)
    );
    let not_executable = sources().join("clocks.c");
    let (out, _, _) = run_to_end(&["--", not_executable.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    let (out, _, _) = run_to_end(&["--offset", "1x", "--", "true"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a usage error: {}",
        stderr(&out)
    );
}

/// A 32-bit program, built with binutils alone (`as --32`, `ld -m elf_i386`).
fn program_32bit() -> &'static Path {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    CELL.get_or_init(|| {
        assert!(
            on_path("as") && on_path("ld"),
            "as/ld not found: apt-get install binutils (`sudo scripts/test.sh` installs what the suites need)"
        );
        let object = build_dir().join(format!("exit32.{}.o", std::process::id()));
        let status = Command::new("as")
            .arg("--32")
            .arg("-o")
            .arg(&object)
            .arg(sources().join("exit32.s"))
            .status()
            .expect("run as");
        assert!(status.success(), "as --32 exit32.s failed");
        let out = build("exit32", "exit32.s (as --32, ld -m elf_i386)", |out| {
            let mut cmd = Command::new("ld");
            cmd.args(["-m", "elf_i386", "-o"]).arg(out).arg(&object);
            cmd
        });
        let _ = std::fs::remove_file(&object);
        out
    })
}

#[test]
fn a_program_that_cannot_be_skewed_runs_unskewed_with_a_warning() {
    let bin = program_32bit().to_str().unwrap();
    let script = format!("{bin}; echo \"32-bit: $?\"; date +%s");
    let (out, before, after) = run_to_end(&["--offset", "-1d", "--", "sh", "-c", &script]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("32-bit: 0\n"), "it ran to its end: {text}");
    assert_shifted(
        text.lines().nth(1).unwrap().parse().unwrap(),
        before,
        after,
        -DAY,
        "date after it",
    );
    let err = stderr(&out);
    assert!(
        err.starts_with("timeskew: warning: pid ")
            && err.contains(&format!("({bin}) runs with the real clocks: "))
            && err.contains("32-bit")
            && err.lines().count() == 1,
        "{err}"
    );
}

// --- static and Go binaries: where libfaketime cannot go --------------------------------------

/// Every way a static binary can start another program: its own clocks, a forked child without
/// exec (inherits the skew), vfork, posix_spawn and exec from a second thread.
fn assert_static_binary_followed(bin: &Path) {
    let bin = bin.to_str().unwrap();
    let (out, before, after) = run_to_end(&["--offset", "-1d", "--", bin]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_all_shifted(&out, before, after, -DAY, 3);

    let (out, before, after) = run_to_end(&["--offset", "-1d", "--", bin, "fork"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("child "), "{}", stdout(&out));
    assert_all_shifted(&out, before, after, -DAY, 6);

    for mode in ["vfork", "spawn", "thread-exec"] {
        let (out, before, after) = run_to_end(&["--offset", "-1d", "--", bin, mode, "date", "+%s"]);
        assert!(out.status.success(), "{mode}: {}", stderr(&out));
        assert_all_shifted(&out, before, after, -DAY, 4);
    }
    // The started program's exit status comes back through both.
    let (out, _, _) = run_to_end(&["--", bin, "spawn", "sh", "-c", "exit 9"]);
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
}

#[test]
fn static_glibc_binary_and_everything_it_starts() {
    assert_static_binary_followed(static_glibc());
}

#[test]
fn static_musl_binary_and_everything_it_starts() {
    assert_static_binary_followed(static_musl());
}

#[test]
fn static_go_binary_and_the_program_it_runs() {
    let bin = static_go().to_str().unwrap();
    let (out, before, after) = run_to_end(&["--offset", "-1d", "--", bin, "date", "+%s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("go realtime="), "{}", stdout(&out));
    assert_all_shifted(&out, before, after, -DAY, 2);
    // Go calls the vDSO on its own small stacks: a monotonic skew must not upset its runtime.
    let (out, before, after) = run_to_end(&[
        "--offset",
        "+1h",
        "--clock",
        "realtime,monotonic",
        "--",
        bin,
        bin,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_all_shifted(&out, before, after, 3600, 2);
}

// --- stdin/stdout, signals, job control -------------------------------------------------------

#[test]
fn stdin_and_stdout_pass_through() {
    let mut child = Tree::spawn(
        run_cmd(&[
            "--offset",
            "-1d",
            "--",
            "sh",
            "-c",
            "read x; echo \"got $x\"; date +%s",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped()),
    );
    let before = now_s();
    let mut stdin = child.0.0.stdin.take().unwrap();
    let mut lines = Lines::new(child.0.0.stdout.take().unwrap());
    writeln!(stdin, "hello").unwrap();
    drop(stdin);
    assert_eq!(lines.next_line().as_deref(), Some("got hello"));
    let date: i64 = lines.next_line().unwrap().parse().unwrap();
    assert_eq!(lines.next_line(), None);
    assert!(wait_exit(&mut child).success());
    assert_shifted(date, before, now_s(), -DAY, "date");
}

/// A script that reports the TERM it receives and then exits with status 3.
const TERM_TRAP: &str = "trap 'echo got-term; exit 3' TERM; echo ready; \
                         while :; do sleep 0.05; done";

#[test]
fn sigterm_sent_to_timeskew_reaches_the_command() {
    let mut child = Tree::spawn(
        run_cmd(&["--", "sh", "-c", TERM_TRAP])
            .stdin(Stdio::null())
            .stdout(Stdio::piped()),
    );
    let pid = Pid::from_raw(child.pid());
    let mut lines = Lines::new(child.0.0.stdout.take().unwrap());
    lines.expect("ready");
    kill(pid, Signal::SIGTERM).unwrap();
    lines.expect("got-term");
    assert_eq!(wait_exit(&mut child).code(), Some(3));
}

/// `timeskew run` (logging its relay decisions to stderr) of the static C target in `signals`
/// mode: it prints `got-int` for each SIGINT its handler runs for, and exits 3 on SIGTERM.
fn signal_counter() -> Command {
    let mut cmd = run_cmd(&["--", static_glibc().to_str().unwrap(), "signals"]);
    cmd.env("RUST_LOG", "timeskew::run=debug")
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Reads what timeskew logged, once it has exited.
fn logged(child: &mut Tree) -> String {
    let mut text = String::new();
    std::io::Read::read_to_string(child.0.0.stderr.as_mut().unwrap(), &mut text).unwrap();
    text
}

/// After a SIGINT that reached the command directly, sends SIGTERM to timeskew alone; a
/// (wrongly) relayed copy of the SIGINT would be delivered before it. Checks the command saw
/// one SIGINT and that timeskew decided not to relay its own.
fn assert_int_delivered_once(child: &mut Tree, lines: &mut Lines, why: &str) {
    lines.expect("got-int");
    kill(Pid::from_raw(child.pid()), Signal::SIGTERM).unwrap();
    lines.expect("got-term");
    assert_eq!(wait_exit(child).code(), Some(3));
    let output = lines.so_far();
    let log = logged(child);
    assert_eq!(output.matches("got-int").count(), 1, "{output}\n{log}");
    assert!(
        log.contains("SIGINT from pid") && log.contains(why) && !log.contains("relaying SIGINT"),
        "timeskew should not relay the SIGINT ({why}):\n{log}"
    );
    assert!(log.contains("relaying SIGTERM"), "{log}");
}

#[test]
fn a_signal_to_the_whole_process_group_reaches_the_command_once() {
    // timeskew and the command share a process group, as under a shell's `kill %1`.
    let mut child = Tree::spawn(signal_counter().process_group(0).stdout(Stdio::piped()));
    let pid = child.pid();
    let mut lines = Lines::new(child.0.0.stdout.take().unwrap());
    lines.expect("ready");
    kill(Pid::from_raw(-pid), Signal::SIGINT).unwrap();
    assert_int_delivered_once(&mut child, &mut lines, "the command received it too");
}

/// A pseudo-terminal pair.
fn openpty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: two valid out-pointers; no name, termios or window size.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    for fd in [master, slave] {
        // Not inherited by the programs other tests start meanwhile.
        // SAFETY: F_SETFD on a descriptor we own.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // SAFETY: openpty returned two fresh descriptors that nothing else owns.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

#[test]
fn ctrl_c_on_a_terminal_reaches_the_command_once() {
    let (master, slave) = openpty();
    let mut cmd = signal_counter();
    cmd.stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap());
    // SAFETY: setsid and ioctl are async-signal-safe: timeskew leads a new session whose
    // controlling terminal is the pty, its process group in the foreground.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = Tree::spawn(&mut cmd);
    drop(slave);
    let mut lines = Lines::new(master.try_clone().unwrap());
    lines.expect("ready");
    // Ctrl-C: the terminal sends SIGINT to the foreground process group, timeskew included.
    std::fs::File::from(master.try_clone().unwrap())
        .write_all(b"\x03")
        .unwrap();
    assert_int_delivered_once(&mut child, &mut lines, "the kernel sent it");
}

/// The processes whose parent is `pid` (any of its threads).
fn children_of(pid: i32) -> Vec<i32> {
    let mut kids = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return kids;
    };
    for task in tasks {
        let path = task.unwrap().path().join("children");
        if let Ok(text) = std::fs::read_to_string(path) {
            kids.extend(
                text.split_whitespace()
                    .filter_map(|s| s.parse::<i32>().ok()),
            );
        }
    }
    kids
}

fn state_of(pid: i32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    after_comm.chars().next().unwrap()
}

/// Waits until `pid` is stopped (by job control, 'T', or in a ptrace-stop, 't'); a stop signal
/// takes effect once the process next runs, which the scheduler decides.
fn wait_until_stopped(pid: i32) {
    let deadline = Instant::now() + PATIENCE;
    while !matches!(state_of(pid), 't' | 'T') {
        assert!(
            Instant::now() < deadline,
            "pid {pid} did not stop (state {})",
            state_of(pid)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits (without reaping) until `pid`, our child, stops; returns the stop signal.
fn wait_stopped(pid: Pid) -> Signal {
    match waitpid(pid, Some(WaitPidFlag::WUNTRACED)).expect("waitpid WUNTRACED") {
        WaitStatus::Stopped(_, sig) => sig,
        other => panic!("expected timeskew to stop, got {other:?}"),
    }
}

#[test]
fn a_command_that_stops_itself_stops_timeskew_and_continues_with_it() {
    let mut child = Tree::spawn(
        run_cmd(&[
            "--",
            "sh",
            "-c",
            "echo before; kill -STOP $$; echo after; exit 4",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped()),
    );
    let pid = Pid::from_raw(child.pid());
    let mut lines = Lines::new(child.0.0.stdout.take().unwrap());
    lines.expect("before");
    // The shell that started timeskew sees the job stopped, as it would see the command.
    assert_eq!(wait_stopped(pid), Signal::SIGSTOP);
    let kids = children_of(pid.as_raw());
    assert_eq!(kids.len(), 1, "{kids:?}");
    wait_until_stopped(kids[0]);
    // `kill -CONT` of timeskew alone (as `fg` would send to both) continues the command.
    kill(pid, Signal::SIGCONT).unwrap();
    lines.expect("after");
    assert_eq!(wait_exit(&mut child).code(), Some(4));
}

/// `timeskew run` of a shell that says `ready`, reads one line and echoes it as `got …`, in a
/// process group of its own (as a shell's job is), once it is ready: the run, its stdin, its
/// output, and the shell's pid.
fn job(env: &[(&str, &str)]) -> (Tree, std::process::ChildStdin, Lines, i32) {
    job_running("echo ready; read x; echo \"got $x\"", env)
}

/// [`job`] of another shell script.
fn job_running(script: &str, env: &[(&str, &str)]) -> (Tree, std::process::ChildStdin, Lines, i32) {
    let mut child = Tree::spawn(
        run_cmd(&["--", "sh", "-c", script])
            .envs(env.iter().copied())
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    let stdin = child.0.0.stdin.take().unwrap();
    let mut lines = Lines::new(child.0.0.stdout.take().unwrap());
    lines.expect("ready");
    let kids = children_of(child.pid());
    assert_eq!(kids.len(), 1, "{kids:?}");
    (child, stdin, lines, kids[0])
}

#[test]
fn ctrl_z_and_fg_stop_and_continue_timeskew_and_the_command() {
    let (mut child, mut stdin, mut lines, shell) = job(&[]);
    let pid = child.pid();
    let group = Pid::from_raw(-pid);
    // What the terminal does on Ctrl-Z, and the shell on `fg`: signal the whole group.
    kill(group, Signal::SIGTSTP).unwrap();
    assert_eq!(wait_stopped(Pid::from_raw(pid)), Signal::SIGTSTP);
    wait_until_stopped(shell);
    kill(group, Signal::SIGCONT).unwrap();
    writeln!(stdin, "hello").unwrap();
    lines.expect("got hello");
    assert!(wait_exit(&mut child).success());
}

/// A SIGCONT that comes while timeskew handles the command's stop (`fg` right behind Ctrl-Z,
/// or timeskew itself stopped by the same Ctrl-Z before it got to the command's report) has
/// ended that stop already: timeskew must not stop itself waiting for it. The test build's
/// failure point sends the SIGCONT exactly there.
#[test]
fn a_sigcont_while_timeskew_handles_the_stop_continues_the_command() {
    stop_the_command_with_a_sigcont_at("cont@run-group-stop");
}

/// The command stops itself (SIGTSTP: a stop from inside the job, which timeskew mirrors)
/// while the failure point `fault` sends the job a SIGCONT; the job must go on to its end.
fn stop_the_command_with_a_sigcont_at(fault: &str) {
    let (mut child, mut stdin, mut lines, _) = job_running(
        "echo ready; read x; kill -TSTP $$; echo \"got $x\"",
        &[("TIMESKEW_FAULT", fault)],
    );
    writeln!(stdin, "hello").unwrap();
    lines.expect("got hello");
    assert!(wait_exit(&mut child).success());
}

/// A pause nemesis on the command alone (SIGSTOP and SIGCONT to its pid, every 0–3 ms, as a
/// chaos tool pauses a process): a stop from outside the job is the command's only — timeskew,
/// which that SIGCONT never reaches, must not stop itself, or the command hangs at its next
/// exec waiting for its stopped tracer (it did, every time, before). Every program it runs is
/// skewed, and the run ends with the command's status.
#[test]
fn a_pause_nemesis_on_the_command_never_wedges_it() {
    use std::sync::atomic::{AtomicBool, Ordering};
    /// Ends the nemesis however the test ends (a panic included: the scope would wait for it).
    struct Ends<'a>(&'a AtomicBool);
    impl Drop for Ends<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let script = format!(
        "echo ready; i=0; while [ $i -lt 100 ]; do {} || exit 9; i=$((i+1)); done; exit 7",
        static_glibc().display()
    );
    let mut child = Tree::spawn(
        run_cmd(&["--offset", "-1d", "--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped()),
    );
    let mut lines = Lines::new(child.0.0.stdout.take().unwrap());
    lines.expect("ready");
    let kids = children_of(child.pid());
    assert_eq!(kids.len(), 1, "{kids:?}");
    let shell = Pid::from_raw(kids[0]);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            // A fixed sequence of pauses (an LCG): a failure repeats.
            let mut x = 0x9e37_79b9u64;
            let mut pause = || {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                Duration::from_micros((x >> 33) % 3_000)
            };
            while !stop.load(Ordering::Relaxed) {
                let _ = kill(shell, Signal::SIGSTOP);
                std::thread::sleep(pause());
                let _ = kill(shell, Signal::SIGCONT);
                std::thread::sleep(pause());
            }
        });
        let _ends = Ends(&stop);
        let before = now_s();
        for n in 0..100 {
            // Each within PATIENCE, or the test fails saying what came so far.
            let line = lines
                .next_line()
                .unwrap_or_else(|| panic!("the output ended after {n} programs"));
            let seen: i64 = line
                .split_whitespace()
                .find_map(|f| f.strip_prefix("realtime="))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{line:?}"));
            assert_shifted(
                seen,
                before,
                now_s(),
                -DAY,
                "a program run under the nemesis",
            );
        }
    });
    let _ = kill(shell, Signal::SIGCONT);
    assert_eq!(wait_exit(&mut child).code(), Some(7));
}

/// A SIGCONT to the job right after timeskew looked for one and found none (`fg` an instant
/// after Ctrl-Z) must not leave timeskew stopped: its own stop signal, queued blocked before
/// the look, is flushed by that SIGCONT. The failure point sends it exactly there; without
/// the queued stop, timeskew stopped for good and the job never ended.
#[test]
fn a_sigcont_right_after_timeskew_looked_for_one_does_not_leave_it_stopped() {
    stop_the_command_with_a_sigcont_at("cont@run-self-stop");
}

// --- the library ------------------------------------------------------------------------------

#[test]
fn library_run_reports_the_outcome_and_counts_the_programs() {
    let file = build_dir().join(format!("library-run.{}", std::process::id()));
    let script = format!("date +%s > {}; exit 4", file.display());
    let skew = timeskew::Skew::new("-1d".parse().unwrap());
    let before = now_s();
    let mut unskewed = Vec::new();
    let report = timeskew::run::run_with("sh", ["-c", script.as_str()], &skew, |n| {
        unskewed.push(format!("{} {}: {}", n.pid, n.program, n.error))
    })
    .expect("run");
    let after = now_s();
    assert_eq!(report.outcome, timeskew::run::ExitOutcome::Exited(4));
    assert_eq!((report.skewed, report.not_skewed), (2, 0), "sh and date");
    assert!(unskewed.is_empty(), "{unskewed:?}");
    let seen: i64 = std::fs::read_to_string(&file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert_shifted(seen, before, after, -DAY, "date");

    let e = timeskew::run::run("/nonexistent/x", [""; 0], &skew).unwrap_err();
    assert_eq!(e.exit_code(), 127, "{e}");
}

#[test]
fn library_run_returns_when_the_command_ends_and_lets_go_of_what_it_left_running() {
    let file = build_dir().join(format!("library-background.{}", std::process::id()));
    let script = format!("sleep 60 & echo $! > {}", file.display());
    let skew = timeskew::Skew::new("1h".parse().unwrap());
    let report = timeskew::run::run("sh", ["-c", script.as_str()], &skew).expect("run");
    assert_eq!(report.outcome, timeskew::run::ExitOutcome::Exited(0));
    let pid: i32 = std::fs::read_to_string(&file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"));
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    let status = status.expect("the background sleep still runs");
    assert!(
        status.lines().any(|l| l == "TracerPid:\t0"),
        "no longer traced once run returned:\n{status}"
    );
}

/// An offset that would make a clock read negative is refused before the command starts: here
/// timeskew (and so the command) runs in a time namespace that looks booted 30 s ago, whatever
/// this machine's uptime. Realtime cannot go before 1970 either.
#[test]
fn an_offset_that_would_make_a_clock_negative_is_refused_before_the_command_starts() {
    let run_in_namespace = |offset: &str| {
        let mut cmd = run_cmd(&[
            "--clock",
            "realtime,monotonic",
            "--offset",
            offset,
            "--",
            "sh",
            "-c",
            "echo started",
        ]);
        in_time_namespace(&mut cmd, 30);
        cmd.stdin(Stdio::null()).output().expect("run timeskew")
    };
    let out = run_in_namespace("-600s");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert_eq!(stdout(&out), "", "the command must not start");
    assert!(
        err.starts_with("timeskew: refusing --offset -600s for clock monotonic: it reads 3")
            && err.contains(
                "s in this process (time since boot), so the most negative offset allowed is -3"
            )
            && err.ends_with("s; sh was not started\n"),
        "{err}"
    );
    let out = run_in_namespace("-10s");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "started\n");

    let (out, _, _) = run_to_end(&["--offset", "-36500d", "--", "sh", "-c", "echo started"]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    assert!(
        stderr(&out).contains("for clock realtime: it reads 17"),
        "{}",
        stderr(&out)
    );
}

/// Prints what the kernel gave it: its effective uid and its permitted capabilities.
const PRIVILEGE_PROBE: &str = r#"#include <stdio.h>
#include <unistd.h>
int main(void) {
    char line[256], prm[64] = "?";
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "CapPrm: %63s", prm) == 1)
            break;
    printf("euid=%d capprm=%s\n", (int)geteuid(), prm);
    return 0;
}
"#;

/// A directory removed with what it holds when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// F13: run by a non-root user, a setuid-root program and a program with a file capability start
/// without those privileges — the kernel's rule for programs exec'd under a tracer without
/// CAP_SYS_PTRACE. timeskew cannot change that rule; it says so, naming each program. As root
/// nothing is lost and nothing is said.
#[test]
fn privileges_a_traced_program_goes_without_are_reported() {
    use std::os::unix::fs::PermissionsExt;
    assert!(
        on_path("cc"),
        "cc not found: apt-get install build-essential"
    );
    let dir = TempDir(std::env::temp_dir().join(format!("timeskew-privs-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let source = dir.0.join("probe.c");
    std::fs::write(&source, PRIVILEGE_PROBE).unwrap();
    let (suid, caps) = (dir.0.join("suid"), dir.0.join("caps"));
    let built = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&suid)
        .arg(&source)
        .status()
        .unwrap();
    assert!(built.success(), "cc probe.c failed");
    std::fs::copy(&suid, &caps).unwrap();
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    // `setcap cap_net_raw+ep caps`: vfs_cap_data revision 2, effective, permitted bit 13.
    let mut cap_data: Vec<u8> = vec![0x01, 0, 0, 0x02, 0x00, 0x20, 0, 0];
    cap_data.resize(20, 0);
    let path = std::ffi::CString::new(caps.to_str().unwrap()).unwrap();
    // SAFETY: valid NUL-terminated strings and a buffer of the length given.
    let set = unsafe {
        libc::setxattr(
            path.as_ptr(),
            c"security.capability".as_ptr(),
            cap_data.as_ptr().cast(),
            cap_data.len(),
            0,
        )
    };
    assert_eq!(set, 0, "setxattr: {}", std::io::Error::last_os_error());
    let script = format!("{}; {}", suid.display(), caps.display());
    let as_nobody = |cmd: &mut Command| -> std::process::Output {
        cmd.uid(65534)
            .gid(65534)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };

    // Natively, as nobody: the setuid bit and the capability work.
    let native = as_nobody(Command::new("sh").args(["-c", &script]));
    let text = stdout(&native);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.len() == 2
            && lines[0].starts_with("euid=0 capprm=")
            && lines[1] == "euid=65534 capprm=0000000000002000",
        "{text}{}",
        stderr(&native)
    );

    // Under `timeskew run`, as nobody: neither, and a warning for each.
    let out = as_nobody(run_cmd(&["--offset", "-1d", "--", "sh", "-c", &script]).current_dir("/"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "euid=65534 capprm=0000000000000000\neuid=65534 capprm=0000000000000000\n"
    );
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    let tail = ": the kernel does not grant them to a program started under a tracer without \
                CAP_SYS_PTRACE (timeskew run by a non-root user); run timeskew as root, or give \
                it CAP_SYS_PTRACE, if the program needs them";
    for (line, program, lost) in [
        (lines[0], &suid, "its setuid bit (owner uid 0)"),
        (lines[1], &caps, "its file capabilities (cap_net_raw)"),
    ] {
        assert!(
            line.starts_with("timeskew: warning: pid ")
                && line.ends_with(&format!(
                    "({}) runs without {lost}{tail}",
                    program.display()
                )),
            "{line}"
        );
    }

    // As root: nothing lost, nothing said.
    let (out, _, _) = run_to_end(&["--offset", "-1d", "--", "sh", "-c", &script]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
}

/// Real-time signals (SIGRTMIN+n) reach the command and its handlers, and one that ends the
/// command ends `run` with 128 + its number, as the shell would show it (nix cannot name these
/// signals; they used to make `run` lose track of the command).
#[test]
fn real_time_signals_are_passed_on() {
    let (out, _, _) = run_to_end(&[
        "--offset",
        "1s",
        "--",
        "bash",
        "-c",
        "trap 'echo got' RTMIN; kill -s RTMIN $$; echo done",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "got\ndone\n",
        "{out:?}"
    );
    let (out, _, _) = run_to_end(&["--", "bash", "-c", "kill -s RTMIN+2 $$"]);
    let rtmin2 = libc::SIGRTMIN() + 2;
    assert_eq!(out.status.code(), Some(128 + rtmin2), "{out:?}");
}
