//! Issue 10: `inject --follow` — one fault for the whole experiment on a selection, with every
//! program exec'd meanwhile, every forked child and every process entering the container from
//! outside (`podman exec`) skewed; everything recovered at the end; the deadline in each target
//! ending the fault when timeskew is SIGKILLed. Real podman containers (runc, cgroupfs) of a
//! tiny busybox image with static test programs, and real host processes.
//!
//! Needs root, podman, runc, busybox-static, cc and go (`sudo scripts/install-test-deps.sh`;
//! the test command `sudo scripts/test.sh` runs it). Nothing here skips itself.

mod common;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::container::{Container, image};
use common::e2e::{clocks_go, clocks_static_glibc};
use common::*;

/// The fault: a bit over a day back, unmistakable in whole seconds.
const OFFSET_S: i64 = -100_000;

fn now_s() -> i64 {
    (realtime_ns() / SEC) as i64
}

/// The image with `/bin/clocks` (static glibc: prints "self realtime=S gtod=S time=S" and
/// exits) and `/bin/clocks-go` (prints "go realtime=S" from its first `time.Now()`).
fn test_image() -> String {
    image(&[
        ("clocks", clocks_static_glibc()),
        ("clocks-go", clocks_go()),
    ])
}

/// The first whole-second reading on a line of `clocks` or `clocks-go` output.
fn reading(line: &str) -> Option<i64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("realtime="))
        .and_then(|v| v.parse().ok())
}

/// Whether `value` reads real time shifted by `offset_s` now (± 2 s: whole seconds, printed
/// and read a moment apart).
fn shifted_by(value: i64, offset_s: i64) -> bool {
    (value - (now_s() + offset_s)).abs() <= 2
}

/// Real time (whole seconds) just before and just after something ran.
#[derive(Debug, Clone, Copy)]
struct Span(i64, i64);

impl Span {
    /// Whether `value`, read while it ran, is real time shifted by `offset_s` (1 s of slack
    /// for whole seconds read on either side of a tick).
    fn holds(self, value: i64, offset_s: i64) -> bool {
        (self.0 + offset_s - 1..=self.1 + offset_s + 1).contains(&value)
    }
}

/// Runs `f`, with the real time around it.
fn bracketed<T>(f: impl FnOnce() -> T) -> (T, Span) {
    let before = now_s();
    let out = f();
    (out, Span(before, now_s()))
}

/// Whether a whole-second reading printed some time ago (seconds, under load) was skewed: far
/// behind real time rather than within seconds of a shifted now.
fn far_behind(value: i64) -> bool {
    value < now_s() + OFFSET_S / 2
}

/// An in-memory file for a child's stderr: never blocks the child, nothing left behind.
fn memfd(name: &str) -> std::fs::File {
    use std::os::fd::FromRawFd;
    let name = std::ffi::CString::new(name).unwrap();
    // SAFETY: a valid C string; the descriptor returned is owned by the File.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor we own.
    unsafe { std::fs::File::from_raw_fd(fd) }
}

/// `timeskew inject … --follow`, running in the background.
struct Follow {
    child: Option<Child>,
    /// Its human output (see [`Follow::start_adopted`]).
    lines: Option<std::sync::mpsc::Receiver<String>>,
    /// Its stderr, in memory (see [`Follow::start_adopted`]).
    stderr: Option<std::fs::File>,
}

impl Follow {
    fn start(args: &[&str]) -> Follow {
        Follow::start_env(args, &[])
    }

    fn start_env(args: &[&str], env: &[(&str, &str)]) -> Follow {
        let child = Command::new(timeskew_bin())
            .envs(env.iter().copied())
            .args(["inject"])
            .args(args)
            .args(["--follow", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start timeskew inject --follow");
        Follow {
            child: Some(child),
            lines: None,
            stderr: None,
        }
    }

    /// With its human output, once it says it follows: every process selected has been adopted
    /// (injected, then traced). A busy shell must not exec while it is injected (the injection
    /// gives up on a thread that keeps waiting for children); from then on it execs freely.
    fn start_adopted(args: &[&str]) -> Follow {
        let stderr = memfd("follow-stderr");
        let mut child = Command::new(timeskew_bin())
            .args(["inject"])
            .args(args)
            .arg("--follow")
            .stdout(Stdio::piped())
            .stderr(stderr.try_clone().unwrap())
            .spawn()
            .expect("start timeskew inject --follow");
        let lines = common::e2e::line_channel(child.stdout.take().unwrap());
        let follow = Follow {
            child: Some(child),
            lines: Some(lines),
            stderr: Some(stderr),
        };
        loop {
            let line = follow.next_line();
            assert!(!line.starts_with("timeskew:"), "{line}");
            if line.starts_with("following the selection") {
                // The selection's report goes to stderr before this line to stdout: a selected
                // process it could not inject is named there (a warning is not a failure).
                let err = follow.stderr_text();
                assert!(
                    !err.lines().any(|l| l.starts_with("timeskew: pid")),
                    "the follow did not inject every selected process:\n{err}"
                );
                return follow;
            }
        }
    }

    /// What it wrote to stderr so far (a follow started by [`start_adopted`](Follow::start_adopted)).
    fn stderr_text(&self) -> String {
        self.stderr.as_ref().map_or_else(String::new, |f| {
            let mut text = String::new();
            let _ = std::fs::File::open(format!("/proc/self/fd/{}", f.as_raw_fd()))
                .and_then(|mut f| f.read_to_string(&mut text));
            text
        })
    }

    fn next_line(&self) -> String {
        self.lines
            .as_ref()
            .unwrap()
            .recv_timeout(Duration::from_secs(20))
            .expect("a line from timeskew inject --follow")
    }

    /// [`finish`](Follow::finish) of a follow started by [`start_adopted`](Follow::start_adopted):
    /// the summary's lines.
    fn finish_text(mut self, within: Duration) -> String {
        let status = self.wait(within);
        let lines = self.lines.take().unwrap();
        let summary: Vec<String> = std::iter::from_fn(|| lines.recv().ok()).collect();
        let summary = summary.join("\n");
        assert!(
            status.success(),
            "timeskew failed ({status}):\n{summary}\n{}",
            self.stderr_text()
        );
        eprintln!("follow summary:\n{summary}");
        summary
    }

    /// Waits for the end (bounded).
    fn wait(&mut self, within: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("timeskew inject --follow did not end within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Ends the follow as Ctrl-C would.
    fn interrupt(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
    }

    /// Waits for the end (bounded) and returns the `follow` summary of its JSON output.
    fn finish(mut self, within: Duration) -> serde_json::Value {
        self.wait(within);
        let mut child = self.child.take().unwrap();
        // Reaped by `wait`: this returns the status it kept.
        let status = child.wait().unwrap();
        let (mut out, mut err) = (String::new(), String::new());
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(
            status.success(),
            "timeskew failed ({status}):\n{out}\n{err}"
        );
        let value: serde_json::Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("not one JSON object ({e}):\n{out}\n{err}"));
        eprintln!("follow summary: {}", value["follow"]);
        value["follow"].clone()
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The follower helper: the process that traces the followed processes (the `TracerPid` of
/// `member`), waited for (bounded).
fn follower_of(member: i32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tracer = std::fs::read_to_string(format!("/proc/{member}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("TracerPid:"))
                    .and_then(|v| v.trim().parse::<i32>().ok())
            })
            .unwrap_or(0);
        if tracer != 0 {
            // The tracer is a thread of the helper: its process.
            let tgid = std::fs::read_to_string(format!("/proc/{tracer}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("Tgid:"))
                        .and_then(|v| v.trim().parse().ok())
                });
            if let Some(tgid) = tgid {
                return tgid;
            }
        }
        assert!(Instant::now() < deadline, "pid {member} is not followed");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// No thread of any of `pids` is traced or stopped.
fn assert_untraced(pids: &[i32]) {
    for &pid in pids {
        for tid in std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
            .unwrap_or_default()
        {
            let tid = tid.to_string_lossy();
            let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
            else {
                continue;
            };
            assert!(
                status.contains("TracerPid:\t0\n"),
                "thread {tid} of pid {pid} is still traced:\n{status}"
            );
            assert!(
                !status.contains("State:\tt") && !status.contains("State:\tT"),
                "thread {tid} of pid {pid} is left stopped:\n{status}"
            );
        }
    }
}

/// `podman exec C CMD…`: its output.
fn exec_out(c: &Container, args: &[&str]) -> String {
    let out = c.exec(args);
    assert!(
        out.status.success(),
        "podman exec {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A container whose one process only sleeps: newcomers come through `podman exec`.
fn idle_container(test: &str) -> Container {
    Container::run(test, &test_image(), "echo ready; exec sleep 1000000")
}

/// `podman exec` of a shell that execs `/bin/clocks` 200 times in a tight loop: how many of the
/// 200 read the skewed clock, and the output.
fn exec_loop_of_200(c: &Container) -> (usize, String) {
    let out = exec_out(
        c,
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 200 ]; do /bin/clocks; i=$((i+1)); done",
        ],
    );
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("self ")).collect();
    assert_eq!(lines.len(), 200, "{out}");
    let skewed = lines
        .iter()
        .filter(|l| reading(l).is_some_and(far_behind))
        .count();
    (skewed, out)
}

/// A shell loop that execs `/bin/clocks` every 50 ms: every program it starts is a fresh exec.
const EXEC_LOOP: &str = r#"mkfifo /tmp/f; exec 3<>/tmp/f; rm /tmp/f
echo ready
while true; do /bin/clocks; read -t 0.05 x <&3; done"#;

#[test]
fn every_program_a_container_execs_is_skewed_and_everything_recovered_at_the_end() {
    let mut c = Container::run("follow-execs", &test_image(), EXEC_LOOP);
    let offset = format!("{OFFSET_S}s");
    let follow = Follow::start(&[
        "--container",
        &c.id,
        "--offset",
        &offset,
        "--duration",
        "4s",
    ]);
    // From the first skewed program on, every program exec'd is skewed until shortly before
    // the deadline (lines read then may already be real).
    c.wait_for_line(
        "a skewed `self realtime=…`",
        Duration::from_secs(20),
        |l| reading(l).is_some_and(|v| shifted_by(v, OFFSET_S)),
    );
    let started = Instant::now();
    let mut skewed = 1;
    while started.elapsed() < Duration::from_millis(2500) {
        let line = c.wait_for_line("a `self realtime=…` line", Duration::from_secs(10), |l| {
            l.starts_with("self ")
        });
        let v = reading(&line).unwrap();
        assert!(
            shifted_by(v, OFFSET_S),
            "a program exec'd during the follow read real time: {line:?}"
        );
        skewed += 1;
    }
    let summary = follow.finish(Duration::from_secs(20));
    assert_eq!(summary["ended_by"], "deadline");
    assert_eq!(summary["watched_with"], "proc connector");
    let execs = summary["execs"].as_u64().unwrap();
    assert!(
        execs >= skewed,
        "{execs} execs counted, {skewed} skewed lines seen"
    );
    assert_eq!(summary["execs_skewed"], summary["execs"], "{summary}");
    assert_eq!(summary["missed"], serde_json::json!([]));
    assert!(summary["recovered"].as_u64().unwrap() >= 1, "{summary}");
    assert_eq!(summary["exec_to_skew"]["count"], summary["execs_skewed"]);
    // After the end: real time again, nothing traced or stopped.
    c.wait_for_line("a real `self realtime=…`", Duration::from_secs(10), |l| {
        reading(l).is_some_and(|v| shifted_by(v, 0))
    });
    for _ in 0..5 {
        let line = c.wait_for_line("a line", Duration::from_secs(10), |l| {
            l.starts_with("self ")
        });
        assert!(shifted_by(reading(&line).unwrap(), 0), "{line:?}");
    }
    assert_untraced(&c.host_pids());
}

#[test]
fn podman_exec_is_skewed_during_the_follow_and_real_after_a_recover_from_another_shell() {
    let c = idle_container("follow-exec-in");
    let offset = format!("{OFFSET_S}s");
    let follow = Follow::start(&["--container", &c.id, "--offset", &offset]);
    let follower = follower_of(c.main_pid());
    // It races runc's init from its fork to its exec: its session weighs the most on busy CPUs
    // (follow::prioritize_own_session), and so does its tracer thread inside it.
    let autogroup = std::fs::read_to_string(format!("/proc/{follower}/autogroup")).unwrap();
    assert!(autogroup.trim_end().ends_with("nice -20"), "{autogroup}");
    let tracer = tracer_pid(c.main_pid());
    let nice = std::fs::read_to_string(format!("/proc/{follower}/task/{tracer}/stat")).unwrap();
    let nice: i32 = nice
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(16)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(nice, -20, "the tracer thread's nice value");
    // `date +%s` (busybox) and the static glibc and Go programs, each entering the container
    // from outside through `podman exec` (runc's init joins the cgroup, then execs).
    let mut go_skewed = 0;
    const GO_RUNS: usize = 10;
    for round in 0..GO_RUNS {
        // Each reading against real time read before and after its `podman exec` (which takes
        // seconds on a loaded machine), not against a "now" taken after it.
        let (date, span) = bracketed(|| exec_out(&c, &["date", "+%s"]));
        let date: i64 = date.trim().parse().unwrap();
        assert!(
            span.holds(date, OFFSET_S),
            "round {round}: date read {date}, real time was {span:?}"
        );
        let (line, span) = bracketed(|| exec_out(&c, &["/bin/clocks"]));
        let v = reading(&line).unwrap_or_else(|| panic!("{line:?}"));
        assert!(
            span.holds(v, OFFSET_S),
            "round {round}: {line:?}, real time was {span:?}"
        );
        let (line, span) = bracketed(|| exec_out(&c, &["/bin/clocks-go"]));
        if reading(&line).is_some_and(|v| span.holds(v, OFFSET_S)) {
            go_skewed += 1;
        } else {
            eprintln!("round {round}: {line:?}, real time was {span:?}");
        }
    }
    eprintln!(
        "Go programs started by podman exec with a skewed first time.Now(): {go_skewed}/{GO_RUNS}"
    );
    assert_eq!(
        go_skewed, GO_RUNS,
        "a Go program's first time.Now() read real time"
    );
    // A recover of the container from another shell ends the follow.
    let recovered = timeskew(&["recover", "--container", c.short_id()]);
    assert!(recovered.status.success(), "{}", stderr(&recovered));
    let summary = follow.finish(Duration::from_secs(20));
    assert_eq!(summary["ended_by"], "recover_requested");
    assert!(
        summary["joined"].as_u64().unwrap() >= 3 * GO_RUNS as u64,
        "{summary}"
    );
    assert_eq!(summary["missed"], serde_json::json!([]));
    let (date, span) = bracketed(|| exec_out(&c, &["date", "+%s"]));
    let date: i64 = date.trim().parse().unwrap();
    assert!(
        span.holds(date, 0),
        "after recover, date read {date}, real time was {span:?}"
    );
    let status = timeskew_ok(&["status", "--container", &c.id]);
    assert!(
        status
            .lines()
            .filter(|l| l.starts_with("pid "))
            .all(|l| l.contains(": not injected")),
        "{status}"
    );
    assert_untraced(&c.host_pids());
}

#[test]
fn two_hundred_execs_in_a_tight_loop_are_all_skewed() {
    let c = idle_container("follow-burst");
    let offset = format!("{OFFSET_S}s");
    let follow = Follow::start(&["--container", &c.id, "--offset", &offset]);
    follower_of(c.main_pid());
    let (skewed, out) = exec_loop_of_200(&c);
    follow.interrupt();
    let summary = follow.finish(Duration::from_secs(20));
    eprintln!(
        "200 execs: {skewed} skewed; exec to skew: {}",
        summary["exec_to_skew"]
    );
    assert_eq!(skewed, 200, "{out}");
    assert_eq!(summary["ended_by"], "stopped");
    assert!(
        summary["execs_skewed"].as_u64().unwrap() >= 200,
        "{summary}"
    );
    assert_untraced(&c.host_pids());
}

/// The same 200 execs followed by the process events alone (a test-build switch: nothing
/// traced, each program injected after its exec, as a follower without ptrace would) and by
/// tracing, side by side: what tracing buys.
#[test]
fn tracing_skews_programs_that_the_process_events_alone_cannot_reach_in_time() {
    let c = idle_container("follow-buys");
    let offset = format!("{OFFSET_S}s");
    let mut skewed = Vec::new();
    for env in [
        &[("TIMESKEW_FORCE_FOLLOW_WITHOUT_PTRACE", "1")][..],
        &[][..],
    ] {
        let follow = Follow::start_env(&["--container", &c.id, "--offset", &offset], env);
        // Ready once the container's process is skewed (traced or not).
        let main = c.main_pid().to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !timeskew_ok(&["status", "--pid", &main]).contains("realtime") {
            assert!(Instant::now() < deadline, "the follower did not inject");
            std::thread::sleep(Duration::from_millis(10));
        }
        skewed.push(exec_loop_of_200(&c).0);
        follow.interrupt();
        let summary = follow.finish(Duration::from_secs(20));
        eprintln!(
            "{env:?}: {} of 200 skewed; {summary}",
            skewed.last().unwrap()
        );
    }
    eprintln!(
        "200 static programs exec'd in a loop: {} skewed by the process events alone, {} by tracing",
        skewed[0], skewed[1]
    );
    assert_eq!(skewed[1], 200);
    assert!(
        skewed[0] < 200,
        "the events alone skewed every program: tracing buys nothing?"
    );
    assert_untraced(&c.host_pids());
}

/// Ticks from a forked subshell (`$(date +%s)`: the applet in a fork, no exec): they read the
/// clock of the shell itself.
const TICKS: &str = r#"mkfifo /tmp/f; exec 3<>/tmp/f; rm /tmp/f
echo ready
while true; do echo "tick $(date +%s)"; read -t 0.1 x <&3; done"#;

fn tick(line: &str) -> Option<i64> {
    line.strip_prefix("tick ")?.trim().parse().ok()
}

#[test]
fn the_deadline_ends_the_fault_when_timeskew_and_its_follower_are_sigkilled() {
    let mut c = Container::run("follow-killed", &test_image(), TICKS);
    let offset = format!("{OFFSET_S}s");
    let started = Instant::now();
    let follow = Follow::start(&[
        "--container",
        &c.id,
        "--offset",
        &offset,
        "--duration",
        "3s",
    ]);
    c.wait_for_line("a skewed tick", Duration::from_secs(20), |l| {
        tick(l).is_some_and(|v| shifted_by(v, OFFSET_S))
    });
    let helper = follower_of(c.main_pid());
    // The helper first: killed after the command, it may already be recovering (it does when
    // the command dies) and die with a breakpoint in place — the SIGKILL-mid-change risk of
    // the Limitations, not what this test is about.
    for pid in [helper, follow.pid()] {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    drop(follow); // reaps the command; the helper is reaped by init
    // The kernel lets the followed processes go: none is left traced or stopped.
    let members = c.host_pids();
    let deadline = Instant::now() + Duration::from_secs(5);
    while members.iter().any(|p| {
        std::fs::read_to_string(format!("/proc/{p}/status"))
            .is_ok_and(|s| !s.contains("TracerPid:\t0\n"))
    }) {
        assert!(
            Instant::now() < deadline,
            "still traced after the follower died"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_untraced(&members);
    // Skewed until the deadline (3 s after the start, stored in the target), real after it.
    while started.elapsed() < Duration::from_millis(2500) {
        let line = c.wait_for_line("a tick", Duration::from_secs(10), |l| {
            l.starts_with("tick ")
        });
        assert!(
            shifted_by(tick(&line).unwrap(), OFFSET_S),
            "real time before the deadline: {line:?}"
        );
    }
    let line = c.wait_for_line("a real tick", Duration::from_secs(10), |l| {
        tick(l).is_some_and(|v| shifted_by(v, 0))
    });
    assert!(
        started.elapsed() >= Duration::from_millis(2900),
        "real time {:?} after the start, before the 3 s deadline: {line:?}",
        started.elapsed()
    );
}

#[test]
fn a_sigkilled_command_leaves_its_follower_to_recover_everything() {
    let mut c = Container::run("follow-cmd-killed", &test_image(), TICKS);
    let offset = format!("{OFFSET_S}s");
    let follow = Follow::start(&[
        "--container",
        &c.id,
        "--offset",
        &offset,
        "--duration",
        "60s",
    ]);
    c.wait_for_line("a skewed tick", Duration::from_secs(20), |l| {
        tick(l).is_some_and(|v| shifted_by(v, OFFSET_S))
    });
    let helper = follower_of(c.main_pid());
    let killed = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(follow.pid()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    drop(follow);
    // The helper sees the command gone, recovers the container and exits, long before 60 s.
    c.wait_for_line("a real tick", Duration::from_secs(10), |l| {
        tick(l).is_some_and(|v| shifted_by(v, 0))
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{helper}/exe")).exists()
        && std::fs::read_to_string(format!("/proc/{helper}/stat"))
            .is_ok_and(|s| !s.contains(") Z "))
    {
        assert!(Instant::now() < deadline, "the follower is still running");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "recovered {:?} after the command was killed",
        killed.elapsed()
    );
    assert_untraced(&c.host_pids());
}

#[test]
fn a_tree_is_followed_on_the_host_too() {
    // A host shell that execs the static `clocks` every 50 ms, followed with --pid --tree.
    let clocks = clocks_static_glibc();
    let script = format!(
        "echo ready; while true; do {}; sleep 0.05; done",
        clocks.display()
    );
    let mut shell = Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = shell.id() as i32;
    let lines = common::e2e::line_channel(shell.stdout.take().unwrap());
    let next = |what: &str| {
        lines
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("no {what}"))
    };
    assert_eq!(next("ready"), "ready");
    let offset = format!("{OFFSET_S}s");
    let pid_s = pid.to_string();
    let follow = Follow::start(&[
        "--pid",
        &pid_s,
        "--tree",
        "--offset",
        &offset,
        "--duration",
        "2s",
    ]);
    let started = Instant::now();
    let mut seen_skewed = false;
    let mut after_first = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        let line = next("a clocks line");
        let skewed = reading(&line).is_some_and(|v| shifted_by(v, OFFSET_S));
        if seen_skewed {
            assert!(skewed, "real time during the follow: {line:?}");
            after_first += 1;
        }
        seen_skewed |= skewed;
    }
    let summary = follow.finish(Duration::from_secs(20));
    let _ = shell.kill();
    let _ = shell.wait();
    assert!(
        seen_skewed && after_first >= 5,
        "{after_first} skewed lines"
    );
    assert_eq!(summary["ended_by"], "deadline");
    assert_eq!(summary["execs_skewed"], summary["execs"]);
    assert!(summary["forked"].as_u64().unwrap() >= 5, "{summary}");
}

/// Without the process events (no CAP_NET_ADMIN: forced in test builds), the rescans find a
/// process that entered the container, and the programs it execs from then on are skewed.
#[test]
fn without_process_events_the_rescans_find_newcomers() {
    let c = idle_container("follow-rescan");
    let offset = format!("{OFFSET_S}s");
    let follow = Follow::start_env(
        &["--container", &c.id, "--offset", &offset],
        &[("TIMESKEW_FORCE_FOLLOW_NO_EVENTS", "1")],
    );
    follower_of(c.main_pid());
    // A shell entering from outside that runs `clocks` every 100 ms for 3 s.
    let out = exec_out(
        &c,
        &[
            "sh",
            "-c",
            "mkfifo /tmp/g; exec 3<>/tmp/g; rm /tmp/g; i=0; \
             while [ $i -lt 30 ]; do /bin/clocks; read -t 0.1 x <&3; i=$((i+1)); done",
        ],
    );
    follow.interrupt();
    let summary = follow.finish(Duration::from_secs(20));
    assert!(
        summary["watched_with"]
            .as_str()
            .unwrap()
            .starts_with("rescans every 200 ms only")
    );
    let readings: Vec<i64> = out.lines().filter_map(reading).collect();
    assert_eq!(readings.len(), 30, "{out}");
    // Read after the loop (3 s or more): a reading is skewed when it is far behind real time,
    // not within seconds of a shifted now.
    let first = readings
        .iter()
        .position(|&v| far_behind(v))
        .unwrap_or_else(|| panic!("never skewed: {out}"));
    // Found within a rescan or two (the lines are 0.1 s apart), skewed from then on.
    assert!(first <= 8, "first skewed program: #{first}\n{out}");
    assert!(readings[first..].iter().all(|&v| far_behind(v)), "{out}");
    assert!(summary["joined"].as_u64().unwrap() >= 1, "{summary}");
    assert_untraced(&c.host_pids());
}

#[test]
fn a_failing_follower_still_recovers_everything_and_lets_go() {
    let mut shell = Command::new("sh")
        .args(["-c", "echo ready; exec sleep 1000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(shell.stdout.take().unwrap()),
        &mut ready,
    )
    .unwrap();
    let pid = shell.id().to_string();
    let follow = Follow::start_env(
        &["--pid", &pid, "--offset", "-100000s", "--duration", "30s"],
        &[("TIMESKEW_FAULT", "follow-watch")],
    );
    let summary = follow.finish(Duration::from_secs(20));
    let status = timeskew_ok(&["status", "--pid", &pid]);
    let untraced = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let _ = shell.kill();
    let _ = shell.wait();
    assert_eq!(summary["ended_by"], "failed");
    assert_eq!(summary["recovered"], 1, "{summary}");
    assert!(status.contains("not injected"), "{status}");
    assert!(untraced.contains("TracerPid:\t0\n"), "{untraced}");
}

#[test]
fn the_library_example_follows_a_tree() {
    // The follower's log says why a program was not skewed, should one not be.
    let out = Command::new(example("follow"))
        .env("RUST_LOG", "timeskew::follow=info")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn follow_with_detach_or_every_is_a_usage_error() {
    for extra in [
        &["--duration", "1s", "--detach"][..],
        &["--duration", "1s", "--every", "2s"][..],
    ] {
        let mut args = vec!["inject", "--pid", "1", "--offset", "1s", "--follow"];
        args.extend_from_slice(extra);
        let out = timeskew(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("--follow"), "{}", stderr(&out));
    }
}

/// A host shell that execs the static `clocks` once for each line it reads: every reading is a
/// new program. Killed and reaped when dropped.
struct ExecOnDemand {
    shell: Reaped,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl ExecOnDemand {
    fn spawn() -> ExecOnDemand {
        let script = format!(
            "echo ready; while read x; do {}; done",
            clocks_static_glibc().display()
        );
        let mut sh = Command::new("sh");
        sh.args(["-c", &script]);
        ExecOnDemand::spawn_command(sh)
    }

    /// `command`, which says "ready" and then runs a program for each line it reads.
    fn spawn_command(mut command: Command) -> ExecOnDemand {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let lines = common::e2e::line_channel(child.stdout.take().unwrap());
        let mut shell = ExecOnDemand {
            shell: Reaped(child),
            stdin,
            lines,
        };
        assert_eq!(shell.next_line(), "ready");
        shell
    }

    fn pid(&self) -> i32 {
        self.shell.0.id() as i32
    }

    fn next_line(&mut self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("pid {}: no line", self.pid()))
    }

    /// The realtime reading (whole seconds) of a program it execs now.
    fn exec_clocks(&mut self) -> i64 {
        use std::io::Write;
        writeln!(self.stdin, "go").unwrap();
        let line = self.next_line();
        reading(&line).unwrap_or_else(|| panic!("{line:?}"))
    }
}

/// `TracerPid` of `pid` (0: not traced).
fn tracer_pid(pid: i32) -> i32 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

fn status_json(pid: i32) -> serde_json::Value {
    let out = timeskew_ok(&["status", "--pid", &pid.to_string(), "--json"]);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The realtime offset `status --json` shows for `pid`, in whole seconds.
fn realtime_offset_s(status: &serde_json::Value) -> i64 {
    let clocks = status["clocks"].as_array().unwrap();
    let realtime = clocks
        .iter()
        .find(|c| c["clock"] == "realtime")
        .unwrap_or_else(|| panic!("no realtime offset: {status}"));
    let text = realtime["offset"].as_str().unwrap();
    text.strip_suffix('s')
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("offset {text:?}"))
}

/// A line of a human follow summary that starts with `prefix` (trimmed).
fn summary_line<'a>(summary: &'a str, prefix: &str) -> &'a str {
    summary
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in:\n{summary}"))
}

/// `programs exec'd: N, skewed before their first instruction: M (…)`: every one skewed.
fn assert_every_exec_skewed(summary: &str) {
    let line = summary_line(summary, "programs exec'd: ");
    let numbers: Vec<&str> = line
        .split([' ', ','])
        .filter(|w| w.parse::<u64>().is_ok())
        .take(2)
        .collect();
    assert!(
        numbers.len() == 2 && numbers[0] == numbers[1] && numbers[0] != "0",
        "{line}"
    );
}

/// Issue: an `inject` on a followed process changed the processes running, but the follower kept
/// giving newcomers the fault it started with. Now the whole follow takes the new fault: the
/// targeted process (by the inject), the other followed processes (by the follower) and every
/// program exec'd afterwards, in either.
#[test]
fn another_inject_gives_the_whole_follow_its_fault() {
    let mut a = ExecOnDemand::spawn();
    let mut b = ExecOnDemand::spawn();
    let (a_pid, b_pid) = (a.pid().to_string(), b.pid().to_string());
    let offset = format!("{OFFSET_S}s");
    let follow = Follow::start_adopted(&["--pid", &a_pid, "--pid", &b_pid, "--offset", &offset]);
    let helper = follower_of(b.pid());
    for shell in [&mut a, &mut b] {
        let v = shell.exec_clocks();
        assert!(shifted_by(v, OFFSET_S), "followed, yet a program read {v}");
    }

    // From another shell: a new offset for one of the followed processes.
    const NEW_S: i64 = 2 * OFFSET_S;
    let new = format!("{NEW_S}s");
    let out = timeskew_ok(&["inject", "--pid", &a_pid, "--offset", &new, "--json"]);
    let injected: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(injected["action"], "updated", "{injected}");
    assert_eq!(
        injected["follower"]["tracer"],
        tracer_pid(a.pid()),
        "{injected}"
    );
    assert_eq!(injected["follower"]["pid"], helper, "{injected}");
    assert_eq!(injected["follower"]["updated"], 1, "b updated: {injected}");
    assert_eq!(injected["follower"]["failed"], serde_json::json!([]));
    // The human form says it too.
    let text = timeskew_ok(&["inject", "--pid", &a_pid, "--offset", &new]);
    assert!(
        text.contains(&format!("followed (tracer thread {}", tracer_pid(a.pid()))),
        "{text}"
    );

    // Newcomers in both, and the process the inject did not name, read the new offset.
    for (name, shell) in [("a", &mut a), ("b", &mut b)] {
        let v = shell.exec_clocks();
        assert!(shifted_by(v, NEW_S), "a program {name} exec'd read {v}");
    }
    assert_eq!(realtime_offset_s(&status_json(b.pid())), NEW_S);
    assert_eq!(realtime_offset_s(&status_json(a.pid())), NEW_S);

    let tracer = tracer_pid(b.pid());
    let recovered = timeskew_ok(&["recover", "--pid", &b_pid, "--json"]);
    let recovered: serde_json::Value = serde_json::from_str(recovered.trim()).unwrap();
    assert_eq!(
        recovered["ended_follow"],
        serde_json::json!({"tracer": tracer, "pid": helper}),
        "{recovered}"
    );
    let summary = follow.finish_text(Duration::from_secs(20));
    assert!(
        summary.starts_with("follow ended by a recover from another timeskew"),
        "{summary}"
    );
    assert_eq!(
        summary_line(&summary, "fault changed"),
        "fault changed by another timeskew inject: 2 time(s)"
    );
    assert_every_exec_skewed(&summary);
    assert!(shifted_by(a.exec_clocks(), 0), "real time after the end");
    assert_untraced(&[a.pid(), b.pid()]);
}

/// A process whose main thread has exited (a zombie leader, listed until the process ends) is
/// followed: its leader cannot be traced (PTRACE_SEIZE answers EPERM, as for any thread that
/// has exited) and is passed over, not reported missed — as a thread that exits during the
/// follower's seize once was (CI, `podman exec`).
#[test]
fn a_process_whose_main_thread_has_exited_is_followed() {
    let clocks = clocks_static_glibc();
    let mut command = Command::new(clocks);
    command.arg("leaderless").arg(clocks);
    let mut p = ExecOnDemand::spawn_command(command);
    let pid = p.pid().to_string();
    let offset = format!("{OFFSET_S}s");
    let follow = Follow::start_adopted(&["--pid", &pid, "--offset", &offset]);
    for _ in 0..3 {
        // Its own reading ("thread …"), then the program it runs ("self …").
        let own = p.exec_clocks();
        assert!(
            shifted_by(own, OFFSET_S),
            "the process itself read {own}, at {}; the follow's stderr:\n{}",
            now_s(),
            follow.stderr_text()
        );
        let line = p.next_line();
        let v = reading(&line).unwrap_or_else(|| panic!("{line:?}"));
        assert!(shifted_by(v, OFFSET_S), "a program it ran read {v}");
    }
    follow.interrupt();
    let summary = follow.finish_text(Duration::from_secs(20));
    assert!(!summary.contains("missed:"), "{summary}");
    assert_every_exec_skewed(&summary);
    assert_untraced(&[p.pid()]);
}

/// A followed process that job control holds stopped when the follow ends (a pause nemesis
/// beside the clock fault) is put back to real time without being made to run: its hooks stay,
/// passing real time through, and the summary says so; a recover once it resumes takes them
/// out.
#[test]
fn a_followed_process_stopped_at_the_end_gets_real_time_and_keeps_its_hooks_said() {
    let mut p = ExecOnDemand::spawn();
    let pid = p.pid().to_string();
    let offset = format!("{OFFSET_S}s");
    let follow = Follow::start_adopted(&["--pid", &pid, "--offset", &offset]);
    assert!(
        shifted_by(p.exec_clocks(), OFFSET_S),
        "skewed during the follow"
    );
    let stop = |sig| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid()), sig).unwrap();
    stop(nix::sys::signal::Signal::SIGSTOP);
    follow.interrupt();
    let summary = follow.finish_text(Duration::from_secs(20));
    let left = summary_line(&summary, "real time, hooks left in place");
    assert!(
        left.contains(&format!("pid {pid}")) && left.contains("stopped by job control"),
        "{summary}"
    );
    assert!(!summary.contains("recovery failed"), "{summary}");
    // Still stopped, by job control alone.
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    assert!(state.contains(") T "), "{state}");
    assert_eq!(tracer_pid(p.pid()), 0);
    // The hooks in place, no clock skewed.
    let status = status_json(p.pid());
    let zero = |c: &serde_json::Value| {
        c["offset"]
            .as_str()
            .and_then(|t| t.strip_suffix('s')?.parse::<f64>().ok())
            == Some(0.0)
    };
    assert!(
        status["injected"] == true && status["clocks"].as_array().unwrap().iter().all(zero),
        "{status}"
    );
    stop(nix::sys::signal::Signal::SIGCONT);
    assert!(shifted_by(p.exec_clocks(), 0), "real time after the follow");
    let out = timeskew_ok(&["recover", "--pid", &pid]);
    assert!(out.contains("restored"), "{out}");
}

/// `status` says which process is followed, and by which follower.
#[test]
fn status_names_the_follower_of_a_followed_process() {
    let a = ExecOnDemand::spawn();
    let pid = a.pid().to_string();
    let unfollowed = status_json(a.pid());
    assert!(unfollowed.get("followed_by").is_none(), "{unfollowed}");
    let follow = Follow::start_adopted(&["--pid", &pid, "--offset", "-100000s"]);
    let helper = follower_of(a.pid());
    let status = status_json(a.pid());
    assert_eq!(status["injected"], true, "{status}");
    assert_eq!(
        status["followed_by"],
        serde_json::json!({"tracer": tracer_pid(a.pid()), "pid": helper})
    );
    let text = timeskew_ok(&["status", "--pid", &pid]);
    assert!(
        text.contains(&format!(
            "followed by timeskew (tracer thread {}, pid {helper})",
            tracer_pid(a.pid())
        )),
        "{text}"
    );
    follow.interrupt();
    follow.finish_text(Duration::from_secs(20));
    let after = status_json(a.pid());
    assert!(after.get("followed_by").is_none(), "{after}");
    assert_eq!(after["injected"], false, "{after}");
}

/// `recover --slew` of a followed process ends the follow, every process it touched slewing
/// back to real time (not stepping back: that is what `--slew` is for).
#[test]
fn recover_slew_of_a_followed_process_ends_the_follow_slewing_back() {
    let mut a = ExecOnDemand::spawn();
    let pid = a.pid().to_string();
    let follow = Follow::start_adopted(&["--pid", &pid, "--offset", "-100000s"]);
    assert!(shifted_by(a.exec_clocks(), OFFSET_S));
    let out = timeskew_ok(&["recover", "--pid", &pid, "--slew", "10%"]);
    assert!(
        out.contains("returning to real time") && out.contains("; its follow (tracer thread"),
        "{out}"
    );
    let summary = follow.finish_text(Duration::from_secs(20));
    assert!(
        summary.starts_with("follow ended by a recover --slew from another timeskew"),
        "{summary}"
    );
    assert_eq!(summary_line(&summary, "recovered:"), "recovered: 1");
    assert_untraced(&[a.pid()]);
    // Still skewed (100000 s at 10% take 11 days), returning gradually.
    let status = status_json(a.pid());
    assert_eq!(status["injected"], true, "{status}");
    let state = status["shape"]["state"].as_str().unwrap_or_default();
    assert!(state.starts_with("returning to real time"), "{status}");
    // Not followed any more: a program exec'd now reads real time.
    assert!(shifted_by(a.exec_clocks(), 0));
    timeskew_ok(&["recover", "--pid", &pid]);
}

/// The library's `recover` of a followed process ends the follow (the follower recovers what
/// it touched) instead of failing on the tracer.
#[test]
fn the_library_recover_of_a_followed_process_ends_the_follow() {
    let mut a = ExecOnDemand::spawn();
    let follow = Follow::start_adopted(&["--pid", &a.pid().to_string(), "--offset", "-100000s"]);
    let helper = follower_of(a.pid());
    assert_eq!(
        timeskew::follow::follower_of(a.pid()),
        Some(timeskew::follow::Follower {
            tracer: tracer_pid(a.pid()),
            pid: helper
        })
    );
    let report = timeskew::recover(a.pid()).expect("recover of a followed process");
    // The follower recovered it before `recover` looked.
    assert!(!report.was_injected, "{report:?}");
    assert!(!timeskew::status(a.pid()).unwrap().injected);
    assert_eq!(timeskew::follow::follower_of(a.pid()), None);
    let summary = follow.finish_text(Duration::from_secs(20));
    assert!(
        summary.starts_with("follow ended by a recover from another timeskew"),
        "{summary}"
    );
    assert_eq!(summary_line(&summary, "recovered:"), "recovered: 1");
    assert!(shifted_by(a.exec_clocks(), 0));
    assert_untraced(&[a.pid()]);
}
