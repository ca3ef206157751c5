//! Issue 4: several targets, trees, cgroups, deadlines stored in the target, rounds.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use common::*;

/// A bash whose wall clock we can read: `printf '%(%s)T'` is a builtin, so the answer comes
/// from this very process. After `fork()` the answers come from a subshell forked *after* the
/// moment we choose (a child that inherits whatever its parent had).
struct Bash {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Bash {
    fn spawn() -> Bash {
        // Until "fork" arrives, the parent answers; then a subshell (fork, no exec) does.
        let script = r#"echo ready
while read cmd; do
  if [ "$cmd" = fork ]; then
    ( echo "child $BASHPID"; while read c; do printf '%(%s)T\n' -1; done )
    exit 0
  fi
  printf '%(%s)T\n' -1
done"#;
        let mut child = Command::new("bash")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        Bash {
            child,
            stdin,
            stdout,
        }
    }

    fn line(&mut self, cmd: &str) -> String {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    /// Seconds behind (positive) or ahead of real time, as this bash sees it.
    fn lag(&mut self) -> i64 {
        let before = realtime_ns() / SEC;
        let seen: i64 = self.line("t").parse().unwrap();
        let after = realtime_ns() / SEC;
        assert!(after - before <= 1);
        before as i64 - seen
    }

    /// Makes the bash fork a subshell that answers from now on; returns its pid.
    fn fork(&mut self) -> i32 {
        let reply = self.line("fork");
        reply.strip_prefix("child ").unwrap().parse().unwrap()
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Bash {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn near(lag: i64, expected: i64) -> bool {
    (lag - expected).abs() <= 1
}

#[test]
fn several_pids_with_one_failure_report_each_and_exit_nonzero() {
    let mut a = Probe::spawn(&[]);
    let mut b = Probe::spawn(&[]);
    let o = timeskew(&[
        "inject",
        "--pid",
        &a.pid_str(),
        "--pid",
        "999999999",
        "--pid",
        &b.pid_str(),
        "--offset",
        "-600s",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["succeeded"], 2);
    assert_eq!(v["failed"], 1);
    let bad = v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["ok"] == false)
        .unwrap();
    assert_eq!(bad["pid"], 999999999);
    assert!(
        bad["error"].as_str().unwrap().contains("no such process"),
        "{bad}"
    );
    a.now().assert_realtime_shift("realtime", 1, -600 * SEC, 0);
    b.now().assert_realtime_shift("realtime", 1, -600 * SEC, 0);
    // Human form: a line per target and a summary.
    let o = timeskew(&["recover", "--pid", &a.pid_str(), "--pid", &b.pid_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("2 of 2 targets succeeded"),
        "{}",
        stdout(&o)
    );
    a.now().assert_realtime_shift("realtime", 1, 0, 0);
    b.now().assert_realtime_shift("realtime", 1, 0, 0);
}

#[test]
fn a_child_forked_after_injection_inherits_and_recover_tree_restores_it() {
    let mut bash = Bash::spawn();
    let parent = bash.pid().to_string();
    timeskew_ok(&["inject", "--pid", &parent, "--offset", "-1h"]);
    assert!(near(bash.lag(), 3600));
    let child = bash.fork();
    assert!(
        near(bash.lag(), 3600),
        "the forked subshell inherits the skew"
    );
    let st = timeskew_ok(&["status", "--pid", &child.to_string(), "--json"]);
    assert!(
        st.contains("\"injected\":true"),
        "state lives in the child too: {st}"
    );
    // Recovering the parent alone leaves the child skewed; --tree reaches it.
    let out = timeskew_ok(&["recover", "--pid", &parent, "--tree", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let pids: Vec<i64> = v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["pid"].as_i64().unwrap())
        .collect();
    assert!(pids.contains(&(child as i64)), "{out}");
    assert!(near(bash.lag(), 0), "the child reads real time again");
}

#[test]
fn inject_tree_reaches_existing_children() {
    let mut bash = Bash::spawn();
    let child = bash.fork();
    let out = timeskew_ok(&[
        "inject",
        "--pid",
        &bash.pid().to_string(),
        "--tree",
        "--offset",
        "2h",
    ]);
    assert!(out.contains(&format!("pid {child}: injected")), "{out}");
    assert!(near(bash.lag(), -7200));
    timeskew_ok(&["recover", "--pid", &bash.pid().to_string(), "--tree"]);
    assert!(near(bash.lag(), 0));
}

/// A fresh cgroup directory, removed (after its processes are gone) on drop.
struct Cgroup(std::path::PathBuf);

impl Cgroup {
    fn create(root: &str, name: &str) -> Option<Cgroup> {
        let root = std::path::Path::new(root);
        if !root.join("cgroup.procs").exists() {
            return None;
        }
        let dir = root.join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        Some(Cgroup(dir))
    }

    fn add(&self, pid: i32) {
        std::fs::write(self.0.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn cgroup_round_trip(cg: &Cgroup) {
    let mut probes: Vec<Probe> = (0..3).map(|_| Probe::spawn(&[])).collect();
    for p in &probes {
        cg.add(p.pid);
    }
    let path = cg.0.to_str().unwrap();
    let out = timeskew_ok(&["inject", "--cgroup", path, "--offset", "-600s", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["succeeded"], 3, "{out}");
    for p in probes.iter_mut() {
        p.now().assert_realtime_shift("realtime", 1, -600 * SEC, 0);
    }
    let st = timeskew_ok(&["status", "--cgroup", path, "--json"]);
    assert_eq!(st.matches("\"injected\":true").count(), 3, "{st}");
    timeskew_ok(&["recover", "--cgroup", path]);
    for p in probes.iter_mut() {
        p.now().assert_realtime_shift("realtime", 1, 0, 0);
    }
    drop(probes); // killed and reaped: the cgroup is empty and can be removed
}

#[test]
fn every_process_of_a_fresh_cgroup_v2() {
    let cg = Cgroup::create("/sys/fs/cgroup/unified", "timeskew-test")
        .or_else(|| Cgroup::create("/sys/fs/cgroup", "timeskew-test"))
        .expect("no cgroup v2 hierarchy mounted");
    cgroup_round_trip(&cg);
}

#[test]
fn every_process_of_a_fresh_cgroup_v1_when_mounted() {
    // Hybrid hosts (like ours) mount v1 controllers; a pure v2 host has none, and then the v2
    // test above covers the mechanism.
    let Some(cg) = Cgroup::create("/sys/fs/cgroup/pids", "timeskew-test-v1") else {
        assert!(
            std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
            "neither a v1 pids hierarchy nor a pure v2 host"
        );
        return;
    };
    cgroup_round_trip(&cg);
}

#[test]
fn an_empty_or_bogus_cgroup_is_an_error() {
    let o = timeskew(&["inject", "--cgroup", "/tmp", "--offset", "1s"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not a cgroup"), "{}", stderr(&o));
}

/// Polls the probe until it reads real time again (bounded), returning our realtime bracket
/// of the first unskewed reading.
fn wait_until_unskewed(probe: &mut Probe, limit_ns: i128) -> (i128, i128) {
    let start = realtime_ns();
    loop {
        let r = probe.now();
        if (r.get("realtime") - r.before).abs() < SEC {
            return (r.before, r.after);
        }
        assert!(
            realtime_ns() - start < limit_ns,
            "the skew did not end in time"
        );
    }
}

/// Starts `timeskew inject --pid P --offset -600s --duration D` and returns once it has printed
/// its first line (the injection happened), with the rest of its output to read.
fn inject_in_background(probe: &Probe, duration: &str) -> (Reaped, BufReader<ChildStdout>) {
    let mut tool = Reaped(
        Command::new(timeskew_bin())
            .args([
                "inject",
                "--pid",
                &probe.pid_str(),
                "--offset",
                "-600s",
                "--duration",
                duration,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut out = BufReader::new(tool.0.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.contains("injected"), "{line}");
    (tool, out)
}

#[test]
fn duration_ends_on_time_even_when_timeskew_is_killed() {
    let mut probe = Probe::spawn(&[]);
    let t0 = realtime_ns();
    let (mut tool, _) = inject_in_background(&probe, "1500ms");
    let t1 = realtime_ns();
    tool.0.kill().unwrap(); // SIGKILL: no chance to recover
    tool.0.wait().unwrap();
    probe
        .now()
        .assert_realtime_shift("realtime", 1, -600 * SEC, 0);
    let st = timeskew_ok(&["status", "--pid", &probe.pid_str(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(st.trim()).unwrap();
    let left = v["expires_in_ms"].as_u64().unwrap();
    assert!(left > 0 && left <= 1500, "{st}");
    let (_, after) = wait_until_unskewed(&mut probe, 5 * SEC);
    let deadline_lo = t0 + 1_500_000_000;
    let deadline_hi = t1 + 1_500_000_000;
    assert!(
        after >= deadline_lo,
        "ended {} ms early",
        (deadline_lo - after) / 1_000_000
    );
    assert!(
        after <= deadline_hi + 200_000_000,
        "ended {} ms late",
        (after - deadline_hi) / 1_000_000
    );
    // The hooks are still there (nobody recovered) but pass real time; status says so.
    let st = timeskew_ok(&["status", "--pid", &probe.pid_str(), "--json"]);
    assert!(
        st.contains("\"injected\":true") && st.contains("\"expires_in_ms\":0"),
        "{st}"
    );
    timeskew_ok(&["recover", "--pid", &probe.pid_str()]);
}

#[test]
fn duration_waits_then_recovers() {
    let mut probe = Probe::spawn(&[]);
    let start = std::time::Instant::now();
    let out = timeskew_ok(&[
        "inject",
        "--pid",
        &probe.pid_str(),
        "--offset",
        "-600s",
        "--duration",
        "300ms",
    ]);
    assert!(start.elapsed() >= std::time::Duration::from_millis(300));
    assert!(
        out.contains("injected") && out.contains("recovered"),
        "{out}"
    );
    probe.now().assert_realtime_shift("realtime", 1, 0, 0);
    assert!(timeskew_ok(&["status", "--pid", &probe.pid_str()]).contains("not injected"));
}

#[test]
fn sigterm_during_duration_recovers_at_once() {
    let mut probe = Probe::spawn(&[]);
    let (mut tool, mut out) = inject_in_background(&probe, "1h");
    probe
        .now()
        .assert_realtime_shift("realtime", 1, -600 * SEC, 0);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tool.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tool.0.wait().unwrap();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.contains("recovered"), "{line}");
    assert_eq!(status.code(), Some(1));
    probe.now().assert_realtime_shift("realtime", 1, 0, 0);
}

#[test]
fn detach_returns_at_once_and_the_target_ends_the_skew() {
    let mut probe = Probe::spawn(&[]);
    let t0 = realtime_ns();
    timeskew_ok(&[
        "inject",
        "--pid",
        &probe.pid_str(),
        "--offset",
        "1h",
        "--duration",
        "700ms",
        "--detach",
    ]);
    probe
        .now()
        .assert_realtime_shift("realtime", 1, 3600 * SEC, 0);
    let (_, after) = wait_until_unskewed(&mut probe, 5 * SEC);
    assert!(after >= t0 + 700_000_000);
    timeskew_ok(&["recover", "--pid", &probe.pid_str()]);
}

#[test]
fn every_repeats_rounds_and_count_stops() {
    let mut probe = Probe::spawn(&[]);
    let start = std::time::Instant::now();
    let out = timeskew_ok(&[
        "inject",
        "--pid",
        &probe.pid_str(),
        "--offset",
        "-600s",
        "--duration",
        "200ms",
        "--every",
        "400ms",
        "--count",
        "3",
    ]);
    let elapsed = start.elapsed();
    assert_eq!(out.matches(": injected").count(), 3, "{out}");
    assert_eq!(out.matches(": recovered").count(), 3, "{out}");
    assert!(
        elapsed >= std::time::Duration::from_millis(2 * 400 + 200),
        "{elapsed:?}"
    );
    probe.now().assert_realtime_shift("realtime", 1, 0, 0);
}

/// `--every` must be longer than `--duration` (each round skews for the duration, then
/// recovers): an equal or shorter period is a usage error naming both, and nothing is injected.
#[test]
fn every_not_longer_than_duration_is_a_usage_error() {
    let mut probe = Probe::spawn(&[]);
    for every in ["1s", "2s"] {
        let o = timeskew(&[
            "inject",
            "--pid",
            &probe.pid_str(),
            "--offset",
            "-600s",
            "--duration",
            "2s",
            "--every",
            every,
            "--count",
            "2",
        ]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "--every {every}: {err}");
        assert!(
            err.starts_with(&format!(
                "error: --every {every} must be longer than --duration 2s: "
            )),
            "{err}"
        );
        assert_eq!(stdout(&o), "");
    }
    let st = timeskew_ok(&["status", "--pid", &probe.pid_str(), "--json"]);
    assert!(st.contains("\"injected\":false"), "{st}");
    probe.now().assert_realtime_shift("realtime", 1, 0, 0);
}

/// A parent whose child we know, alive until we close the parent's stdin, then a zombie: bash
/// starts a child that waits for stdin to close, prints its pid and becomes `sleep`, which
/// never reaps it.
fn parent_of_a_child_that_ends_with_stdin() -> (Reaped, i32) {
    let script = "exec 3<&0; head -c1 <&3 >/dev/null & echo $!; exec sleep 60 3<&-";
    let mut parent = Reaped(
        Command::new("bash")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(parent.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let child: i32 = line.trim().parse().unwrap();
    // `$!` is printed as soon as the child is forked: both may still be on their way into
    // `head` and `sleep` (the CI once injected the child in the middle of its execve, which
    // is refused as it should be). Ready once each runs its program.
    let pid = parent.0.id() as i32;
    let comm = |p: i32| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
    let ten = std::time::Duration::from_secs(10);
    common::servers::wait_until("head and sleep running", ten, || {
        (comm(child).trim() == "head" && comm(pid).trim() == "sleep").then_some(())
    });
    (parent, child)
}

fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// F10: a child that has exited but is not reaped yet has nothing to recover: `recover --tree`
/// leaves it out and succeeds.
#[test]
fn recover_tree_with_an_unreaped_zombie_child_succeeds() {
    let (mut parent, child) = parent_of_a_child_that_ends_with_stdin();
    let root = parent.0.id().to_string();
    let out = timeskew_ok(&["inject", "--pid", &root, "--tree", "--offset", "-600s"]);
    assert!(out.contains(&format!("pid {child}: injected")), "{out}");
    drop(parent.0.stdin.take());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while state(child) != Some('Z') && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!(state(child), Some('Z'), "pid {child} should be a zombie");
    for command in ["recover", "status"] {
        let o = timeskew(&[command, "--pid", &root, "--tree"]);
        assert!(
            o.status.success(),
            "{command} --tree: {}\n{}",
            stdout(&o),
            stderr(&o)
        );
        assert!(
            stdout(&o).ends_with("1 of 1 targets succeeded\n"),
            "{}",
            stdout(&o)
        );
    }
}

/// F12: `--pid $$ --tree` from a shell includes the timeskew it runs: timeskew leaves itself
/// out (instead of failing to trace itself with a misleading "permission denied"); naming its
/// own pid is a clear error.
#[test]
fn a_selection_never_includes_timeskew_itself() {
    let script = format!(
        "{ts} inject --pid $$ --tree --offset 1h; echo \"rc=$?\"; \
         {ts} recover --pid $$ --tree; echo \"rc=$?\"",
        ts = timeskew_bin()
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (text, err) = (stdout(&out), stderr(&out));
    assert_eq!(err, "", "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(lines[0].contains(": injected, realtime +3600s"), "{text}");
    assert_eq!(lines[1..3], ["1 of 1 targets succeeded", "rc=0"], "{text}");
    assert!(lines[3].contains(": recovered"), "{text}");
    assert_eq!(lines[4..], ["1 of 1 targets succeeded", "rc=0"], "{text}");

    // `exec` gives timeskew the shell's pid: `--pid $$` is timeskew itself.
    let script = format!("exec {} inject --pid $$ --offset 1h", timeskew_bin());
    let out = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is this timeskew process itself: timeskew changes other processes"),
        "{}",
        stderr(&out)
    );
}
