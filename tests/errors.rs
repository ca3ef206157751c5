//! Bad input and hostile situations: a clear error, a non-zero exit, and a target that still
//! runs with its clock and memory exactly as before.

mod common;

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Command;

use common::*;

/// Asserts the probe is untouched: running, real time, same maps and vDSO as `before`.
fn assert_untouched(probe: &mut Probe, maps_before: &[String], vdso_before: &[u8]) {
    assert!(probe.alive(), "target must keep running");
    probe.now().assert_realtime_shift("realtime", 1, 0, 0);
    assert_eq!(maps(probe.pid), maps_before, "memory map changed");
    assert_eq!(vdso_bytes(probe.pid), vdso_before, "vDSO changed");
    let st = timeskew_ok(&["status", "--pid", &probe.pid_str(), "--json"]);
    assert!(st.contains("\"injected\":false"), "{st}");
}

fn fails_with(args: &[&str], env: &[(&str, &str)], needles: &[&str]) -> String {
    let o = timeskew_env(args, env);
    let err = stderr(&o);
    assert!(
        !o.status.success(),
        "timeskew {args:?} should fail; stdout: {}",
        stdout(&o)
    );
    for n in needles {
        assert!(err.contains(n), "stderr of {args:?} lacks {n:?}: {err}");
    }
    err
}

#[test]
fn nonexistent_pid() {
    fails_with(
        &["inject", "--pid", "999999999", "--offset", "1s"],
        &[],
        &["pid 999999999", "no such process"],
    );
    fails_with(&["status", "--pid", "999999999"], &[], &["no such process"]);
}

#[test]
fn kernel_thread_is_refused() {
    fails_with(
        &["inject", "--pid", "2", "--offset", "1s"],
        &[],
        &["pid 2", "kernel thread"],
    );
}

#[test]
fn zombie_is_refused() {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // Wait for the exit without reaping: the child is now a zombie.
    nix::sys::wait::waitid(
        nix::sys::wait::Id::Pid(pid),
        nix::sys::wait::WaitPidFlag::WEXITED | nix::sys::wait::WaitPidFlag::WNOWAIT,
    )
    .unwrap();
    fails_with(
        &["inject", "--pid", &child.id().to_string(), "--offset", "1s"],
        &[],
        &["zombie"],
    );
    child.wait().unwrap();
}

#[test]
fn without_privileges_explains_what_to_do() {
    let mut probe = Probe::spawn(&[]);
    let (m, v) = (maps(probe.pid), vdso_bytes(probe.pid));
    let o = Command::new(timeskew_bin())
        .args(["inject", "--pid", &probe.pid_str(), "--offset", "1s"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    for n in [
        "permission denied",
        "CAP_SYS_PTRACE",
        "root",
        "ptrace_scope",
        "SYS_PTRACE",
    ] {
        assert!(err.contains(n), "missing {n:?}: {err}");
    }
    assert_untouched(&mut probe, &m, &v);
}

#[test]
fn already_traced_names_the_tracer() {
    use nix::sys::ptrace;
    let mut probe = Probe::spawn(&[]);
    let (m, v) = (maps(probe.pid), vdso_bytes(probe.pid));
    let pid = nix::unistd::Pid::from_raw(probe.pid);
    ptrace::seize(pid, ptrace::Options::empty()).unwrap();
    let err = fails_with(
        &["inject", "--pid", &probe.pid_str(), "--offset", "1s"],
        &[],
        &["already traced by pid", &nix::unistd::gettid().to_string()],
    );
    assert!(err.contains("detach"), "{err}");
    ptrace::interrupt(pid).unwrap();
    nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::__WALL)).unwrap();
    ptrace::detach(pid, None).unwrap();
    assert_untouched(&mut probe, &m, &v);
}

/// A tracer on one thread only (`strace -p TID`) is named too, not "run as root" (F12).
#[test]
fn a_tracer_of_one_thread_is_named() {
    use nix::sys::ptrace;
    let mut probe = Probe::spawn(&["--threads", "2"]);
    let (m, v) = (maps(probe.pid), vdso_bytes(probe.pid));
    let worker: i32 = std::fs::read_dir(format!("/proc/{}/task", probe.pid))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .find(|&t| t != probe.pid)
        .expect("the probe has worker threads");
    let tid = nix::unistd::Pid::from_raw(worker);
    ptrace::seize(tid, ptrace::Options::empty()).unwrap();
    let err = fails_with(
        &["inject", "--pid", &probe.pid_str(), "--offset", "1s"],
        &[],
        &["already traced by pid", &nix::unistd::gettid().to_string()],
    );
    assert!(!err.contains("Run timeskew as root"), "{err}");
    ptrace::interrupt(tid).unwrap();
    nix::sys::wait::waitpid(tid, Some(nix::sys::wait::WaitPidFlag::__WALL)).unwrap();
    ptrace::detach(tid, None).unwrap();
    assert_untouched(&mut probe, &m, &v);
}

#[test]
fn seccomp_denied_mmap_is_reported_and_nothing_changes() {
    let mut probe = Probe::spawn(&["--seccomp-deny-mmap", "--threads", "2"]);
    let (m, v) = (maps(probe.pid), vdso_bytes(probe.pid));
    fails_with(
        &["inject", "--pid", &probe.pid_str(), "--offset", "1s"],
        &[],
        &[
            "mmap",
            // Refused from the filter itself, before anything runs in the target.
            "seccomp filter would fail mmap() with errno EPERM",
            "seccomp",
            "nothing was changed",
        ],
    );
    assert_untouched(&mut probe, &m, &v);
    assert_eq!(probe.stats()["anomalies"], 0);
}

#[test]
fn a_failure_at_any_step_undoes_everything() {
    for step in ["after-mmap", "before-patch", "patch", "before-commit"] {
        let mut probe = Probe::spawn(&["--threads", "2"]);
        let (m, v) = (maps(probe.pid), vdso_bytes(probe.pid));
        fails_with(
            &["inject", "--pid", &probe.pid_str(), "--offset", "-600s"],
            &[("TIMESKEW_FAULT", step)],
            &[step],
        );
        assert_untouched(&mut probe, &m, &v);
    }
}

#[test]
fn failure_while_repatching_recovered_pages_leaves_them_recovered() {
    let mut probe = Probe::spawn(&[]);
    let pid = probe.pid_str();
    timeskew_ok(&["inject", "--pid", &pid, "--offset", "-600s"]);
    timeskew_ok(&["recover", "--pid", &pid]);
    let (m, v) = (maps(probe.pid), vdso_bytes(probe.pid));
    fails_with(
        &["inject", "--pid", &pid, "--offset", "-600s"],
        &[("TIMESKEW_FAULT", "before-commit")],
        &["before-commit"],
    );
    assert_untouched(&mut probe, &m, &v);
}

#[test]
fn target_dying_mid_injection_is_reported() {
    let mut probe = Probe::spawn(&["--threads", "2"]);
    fails_with(
        &["inject", "--pid", &probe.pid_str(), "--offset", "1s"],
        &[("TIMESKEW_FAULT", "kill@after-mmap")],
        &["exited"],
    );
    assert!(!probe.alive());
}

#[test]
fn a_signal_arriving_while_held_is_delivered_once() {
    let mut probe = Probe::spawn(&["--threads", "2"]);
    let o = timeskew_env(
        &["inject", "--pid", &probe.pid_str(), "--offset", "1s"],
        &[("TIMESKEW_FAULT", "usr1@after-mmap")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // The handler may run just after we let go: ask until it has (bounded).
    let mut usr1 = 0;
    for _ in 0..1000 {
        usr1 = probe.stats()["usr1"];
        if usr1 > 0 {
            break;
        }
    }
    assert_eq!(usr1, 1, "SIGUSR1 must be delivered exactly once");
    probe.now().assert_realtime_shift("realtime", 1, SEC, 0);
}

#[test]
fn ctrl_c_during_injection_leaves_a_consistent_target() {
    let mut probe = Probe::spawn(&["--threads", "2"]);
    let o = timeskew_env(
        &["inject", "--pid", &probe.pid_str(), "--offset", "-600s"],
        &[("TIMESKEW_FAULT", "sigint-self@before-patch")],
    );
    // The signal waits until the target is consistent, then ends the tool as Ctrl-C does.
    assert_eq!(o.status.signal(), Some(libc::SIGINT), "{o:?}");
    assert!(probe.alive());
    probe.now().assert_realtime_shift("realtime", 1, OFF, 0);
    timeskew_ok(&["recover", "--pid", &probe.pid_str()]);
}

const OFF: i128 = -600 * SEC;

#[test]
fn bad_offsets_and_clocks_are_usage_errors() {
    let probe = Probe::spawn(&[]);
    let pid = probe.pid_str();
    for (offset, needle) in [("600", "600s"), ("5x", "x"), ("", "empty"), ("101y", "y")] {
        let o = timeskew(&["inject", "--pid", &pid, "--offset", offset]);
        assert_eq!(o.status.code(), Some(2), "{offset:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{offset:?}: {}", stderr(&o));
    }
    let o = timeskew(&["inject", "--pid", &pid, "--offset", "-36600000000s"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("100 years"), "{}", stderr(&o));
    let o = timeskew(&[
        "inject", "--pid", &pid, "--offset", "1s", "--clock", "sundial",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("sundial"), "{}", stderr(&o));
}

#[test]
fn process_without_a_vdso_is_refused() {
    let mut probe = Probe::spawn(&["--unmap-vdso"]);
    fails_with(
        &["inject", "--pid", &probe.pid_str(), "--offset", "1s"],
        &[],
        &["no vDSO"],
    );
    assert!(probe.alive());
}

#[test]
fn a_32_bit_process_is_refused() {
    use std::io::BufRead;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/targets/i386_pause.s");
    let (obj, exe) = (dir.join("i386_pause.o"), dir.join("i386_pause"));
    let ok = |c: &mut Command| c.status().is_ok_and(|s| s.success());
    assert!(
        ok(Command::new("as").args(["--32", src, "-o"]).arg(&obj)),
        "as --32 failed"
    );
    assert!(
        ok(Command::new("ld")
            .args(["-m", "elf_i386", "-static"])
            .arg(&obj)
            .arg("-o")
            .arg(&exe)),
        "ld -m elf_i386 failed"
    );
    let mut child = Reaped(
        Command::new(&exe)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    fails_with(
        &[
            "inject",
            "--pid",
            &child.0.id().to_string(),
            "--offset",
            "1s",
        ],
        &[],
        &["32-bit"],
    );
}

/// The text between `start` and `end` in `s`, as seconds.
fn secs_between(s: &str, start: &str, end: &str) -> f64 {
    let from = s
        .find(start)
        .unwrap_or_else(|| panic!("{start:?} not in {s}"))
        + start.len();
    let len = s[from..]
        .find(end)
        .unwrap_or_else(|| panic!("{end:?} not in {s}"));
    s[from..from + len]
        .parse()
        .unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// No clock may read negative (a monotonic clock is the time since boot: CPython's sleep fails,
/// Node wraps around). The target runs in a time namespace that makes it look booted 30 s ago,
/// whatever this machine's uptime: -600s on its monotonic clock is refused, with the reading
/// *it* sees, before anything changes — as a fresh injection and as a live update — and -10s
/// works.
#[test]
fn an_offset_that_would_make_a_clock_negative_is_refused_in_the_targets_view() {
    let mut shift = (0, 0);
    let mut probe = Probe::spawn_with(&[], |cmd| shift = in_time_namespace(cmd, 30));
    let pid = probe.pid_str();
    let maps_before = maps(probe.pid);
    let vdso_before = vdso_bytes(probe.pid);
    let seen = probe.now().get("monotonic");
    assert!(
        (29 * SEC..600 * SEC).contains(&seen),
        "the probe should see a freshly booted machine: {seen}"
    );

    let refused = |args: &[&str], clock: &str, meaning: &str| {
        let o = timeskew(args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        let head =
            format!("timeskew: pid {pid}: refusing --offset -600s for clock {clock}: it reads ");
        assert!(err.starts_with(&head), "{err}");
        assert!(err.ends_with("s; nothing was changed\n"), "{err}");
        let reading = secs_between(&err, "it reads ", &format!("s in this process ({meaning})"));
        let bound = secs_between(&err, "the most negative offset allowed is -", "s; nothing");
        assert_eq!(reading, bound, "{err}");
        // The target's view (about 30 s), not ours.
        assert!((29.0..600.0).contains(&reading), "{err}");
        err
    };
    refused(
        &[
            "inject",
            "--pid",
            &pid,
            "--clock",
            "monotonic",
            "--offset",
            "-600s",
        ],
        "monotonic",
        "time since boot",
    );
    refused(
        &[
            "inject",
            "--pid",
            &pid,
            "--clock",
            "realtime,boottime",
            "--offset",
            "-600s",
        ],
        "boottime",
        "time since boot, including suspend",
    );
    assert_untouched(&mut probe, &maps_before, &vdso_before);

    timeskew_ok(&[
        "inject",
        "--pid",
        &pid,
        "--clock",
        "monotonic",
        "--offset",
        "-10s",
    ]);
    let check = |probe: &mut Probe, offset: i128| {
        let m0 = clock_ns(libc::CLOCK_MONOTONIC) - shift.0;
        let r = probe.now();
        let m1 = clock_ns(libc::CLOCK_MONOTONIC) - shift.0;
        assert_mono_shift(m0, r.get("monotonic"), m1, offset, "monotonic");
        r.assert_realtime_shift("realtime", 1, 0, 0);
    };
    check(&mut probe, -10 * SEC);
    // A live update to -600s is refused too, and the -10s skew stays.
    refused(
        &[
            "inject",
            "--pid",
            &pid,
            "--clock",
            "monotonic",
            "--offset",
            "-600s",
        ],
        "monotonic",
        "time since boot",
    );
    check(&mut probe, -10 * SEC);
    timeskew_ok(&["recover", "--pid", &pid]);
    check(&mut probe, 0);
}

/// Realtime too: the parser takes up to 100 years, but the wall clock cannot go before 1970.
#[test]
fn a_realtime_offset_before_1970_is_refused() {
    let mut probe = Probe::spawn(&[]);
    let pid = probe.pid_str();
    let maps_before = maps(probe.pid);
    let vdso_before = vdso_bytes(probe.pid);
    let err = fails_with(
        &["inject", "--pid", &pid, "--offset", "-36500d"],
        &[],
        &[&format!(
            "timeskew: pid {pid}: refusing --offset -3153600000s for clock realtime: it reads "
        )],
    );
    assert!(
        err.contains("s in this process (wall-clock time since 1970-01-01 UTC), so the most negative offset allowed is -17"),
        "{err}"
    );
    assert_untouched(&mut probe, &maps_before, &vdso_before);
}

/// A process that execs itself without pause (`clocks reexec`): every injection meets an
/// exec — inside execve its new memory has no vDSO yet; between the mappings and the read of
/// the vDSO, the vDSO moves. Each attempt must end skewed or refused with the exec said, never
/// "it has no vDSO" nor a failed read of the vDSO (by hand before the fix: 30 of 300 attempts).
#[test]
fn a_process_that_execs_without_pause_is_refused_saying_so() {
    let (_c, _stdin, lines) = clocks("reexec");
    let ready = lines
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("ready");
    let pid = ready
        .strip_prefix("ready pid=")
        .expect("ready pid=")
        .to_string();
    for _ in 0..60 {
        let o = common::timeskew(&["inject", "--pid", &pid, "--offset", "-1s"]);
        let err = stderr(&o);
        assert!(
            o.status.success() || err.contains("started a new program (execve)"),
            "{err}"
        );
    }
}

/// `clocks MODE` (tests/targets/run/clocks.c) with its stdin and its lines.
fn clocks(
    mode: &str,
) -> (
    Reaped,
    Option<std::process::ChildStdin>,
    std::sync::mpsc::Receiver<String>,
) {
    let c = common::e2e::Clocks::spawn(&[mode]);
    (c.child, c.stdin, c.lines)
}

/// `clocks shared-vm`: a process that on "share" makes a second process sharing its memory
/// (`clone(CLONE_VM)`, not a thread) that reads the clock in a loop.
struct SharedVm {
    process: Reaped,
    stdin: Option<std::process::ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
    pid: i32,
    /// The sharing process: not a child of ours, killed when this drops (its parent, killed
    /// too, or init reaps it).
    child: Option<i32>,
}

impl Drop for SharedVm {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl SharedVm {
    fn spawn() -> SharedVm {
        let (process, stdin, lines) = clocks("shared-vm");
        let mut t = SharedVm {
            process,
            stdin,
            lines,
            pid: 0,
            child: None,
        };
        t.pid = Self::field(&t.ask(None), "pid=") as i32;
        t
    }

    fn field(line: &str, key: &str) -> i64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{key} in {line:?}"))
    }

    /// Sends `line` (if any) and returns the answer.
    fn ask(&mut self, line: Option<&str>) -> String {
        use std::io::Write;
        if let Some(line) = line {
            writeln!(self.stdin.as_mut().unwrap(), "{line}").unwrap();
        }
        self.lines
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("a line")
    }

    /// The sharing process's pid.
    fn share(&mut self) -> i32 {
        let child = Self::field(&self.ask(Some("share")), "child=") as i32;
        self.child = Some(child);
        child
    }

    fn unshare(&mut self) {
        assert_eq!(self.ask(Some("unshare")), "unshared");
        self.child = None;
    }

    /// Both read real time now (the child 0 when there is none).
    fn assert_real(&mut self, sharing: bool) {
        let readings = self.ask(Some("now"));
        let real = clock_ns(libc::CLOCK_REALTIME) / SEC;
        for key in ["parent=", "child="] {
            let v = Self::field(&readings, key) as i128;
            if key == "child=" && !sharing {
                assert_eq!(v, 0, "{readings:?}");
                continue;
            }
            assert!((v - real).abs() <= 2, "{key}: {readings:?}, real {real}");
        }
    }

    /// Ends it: the sharing process must have lived until its parent killed it.
    fn finish(mut self) {
        self.child = None;
        drop(self.stdin.take());
        assert!(
            self.process.0.wait().unwrap().success(),
            "the sharing process died before its parent killed it"
        );
    }
}

/// A process whose memory another process shares (`clone(CLONE_VM)`, not a thread) is refused,
/// named from either side: a patch would reach the other process too, untraced — before this
/// refusal that process died of our breakpoint's SIGTRAP (3 of 3 tries). Nothing changes: both
/// read real time and live on.
#[test]
fn a_process_sharing_its_memory_with_another_is_refused() {
    let mut t = SharedVm::spawn();
    let child = t.share();
    let vdso_before = vdso_bytes(t.pid);
    for (named, other) in [(t.pid, child), (child, t.pid)] {
        fails_with(
            &["inject", "--pid", &named.to_string(), "--offset", "-600s"],
            &[],
            &[
                &format!("pid {named}"),
                &format!("shares its memory with pid {other}"),
            ],
        );
    }
    assert_eq!(vdso_bytes(t.pid), vdso_before, "vDSO changed");
    let st = timeskew_ok(&["status", "--pid", &t.pid.to_string(), "--json"]);
    assert!(st.contains("\"injected\":false"), "{st}");
    t.assert_real(true);
    t.finish();
}

/// Injected while alone, then sharing its memory: a recover writes no code but publishes real
/// time, which both processes read, and says the hooks stay; once it is alone again, a recover
/// takes them out.
#[test]
fn a_recover_of_a_process_that_came_to_share_its_memory_leaves_the_hooks_passing_real_time() {
    let mut t = SharedVm::spawn();
    let pid = t.pid.to_string();
    timeskew_ok(&["inject", "--pid", &pid, "--offset", "-600s"]);
    let skewed = t.ask(Some("now"));
    let real = clock_ns(libc::CLOCK_REALTIME) / SEC;
    assert!(
        (SharedVm::field(&skewed, "parent=") as i128 - (real - 600)).abs() <= 2,
        "{skewed:?}"
    );
    let child = t.share();
    let out = timeskew_ok(&["recover", "--pid", &pid, "--json"]);
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["was_injected"], true, "{report}");
    assert_eq!(report["restored"], 0, "{report}");
    assert!(
        report["hooks_left"]
            .as_str()
            .is_some_and(|h| h.contains(&format!("shares its memory with pid {child}"))),
        "{report}"
    );
    t.assert_real(true);
    t.unshare();
    let out = timeskew_ok(&["recover", "--pid", &pid]);
    assert!(out.contains("restored 3 vDSO entries"), "{out}");
    t.assert_real(false);
    t.finish();
}

/// A vfork child that has not exec'd yet shares its waiting parent's memory: a change of its
/// code would stay in the parent after the exec. Refused, saying so.
#[test]
fn a_vfork_child_before_its_exec_is_refused() {
    let (mut parent, stdin, lines) = clocks("vfork-child");
    let ready = lines
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("ready");
    let child = SharedVm::field(&ready, "child=");
    let pid = SharedVm::field(&ready, "pid=");
    fails_with(
        &["inject", "--pid", &child.to_string(), "--offset", "-600s"],
        &[],
        &[
            &format!("pid {child}"),
            "vfork child that has not exec'd yet",
            &format!("memory of pid {pid}"),
        ],
    );
    drop(stdin);
    assert!(parent.0.wait().unwrap().success());
}
