//! Attack 5: targets in awkward states. Fork / vfork / posix_spawn / thread-creation storms
//! while injecting; a target stopped by SIGSTOP; frozen in a cgroup v1 freezer and a cgroup v2
//! `cgroup.freeze`; traced by strace and by gdb; itself a tracer; a thread in an uninterruptible
//! wait; a pause nemesis (SIGSTOP/SIGCONT every few ms) during injections. Refusals must be
//! clear and come within 1 s; nothing may hang; the target must come out unharmed; the cgroups
//! are removed afterwards.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::harness::*;

fn small_target() -> Proc {
    Proc::target(
        "crowd",
        &[args(&["-t", "2", "-s", "50"]), offsets(&[-MIN10], &[])].concat(),
    )
}

/// `ts` timed for a refusal: the binary is run once first (`--version`) so that its pages are
/// in memory — the first start of the 65 MB test build after the page cache was pressed (CI
/// builds) took 0.3–1.1 s before timeskew's first line ran, which is not the refusal's time.
fn ts_refusing(args: &[String], within: Duration) -> TsRun {
    let warm = ts(&self::args(&["--version"]), Duration::from_secs(30));
    assert!(warm.ok(), "{}", warm.summary());
    ts(args, within)
}

/// Asserts a refusal: non-zero exit within 1 s, one line, mentioning `needle` (any of them).
fn refused_within_a_second(r: &TsRun, needles: &[&str]) -> Result<(), (String, String)> {
    if r.hung() || r.elapsed > Duration::from_secs(1) {
        return Err((
            "no refusal within 1 s".into(),
            format!("{} ({} ms)", r.summary(), r.elapsed.as_millis()),
        ));
    }
    if r.ok() {
        return Err(("not refused".into(), r.summary()));
    }
    if r.signaled() {
        return Err(("timeskew died of a signal".into(), r.summary()));
    }
    let m = r.message();
    if !one_line_message(r) || !needles.iter().any(|n| m.contains(n)) {
        return Err((
            "unclear refusal".into(),
            format!("expected one line mentioning {needles:?}: {}", r.summary()),
        ));
    }
    Ok(())
}

fn all_threads_in(pid: i32, states: &str, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        let t = tasks(pid);
        if !t.is_empty() && t.iter().all(|&(_, s, _)| states.contains(s)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("threads {t:?}, expected states {states:?}"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn process_and_thread_storms_while_injecting() {
    let _serial = serial();
    let n = rounds(100);
    let started = Instant::now();
    let mut failures = Failures::default();
    let mut t = Proc::target(
        "spawner",
        &[
            args(&[
                "-f", "300", "-v", "200", "-S", "200", "-T", "500", "-t", "1",
            ]),
            offsets(&[-MIN10, HOUR], &[HOUR]),
        ]
        .concat(),
    );
    let pid = t.pid;
    let mut done = 0;
    for cycle in 0..n {
        for a in [
            inject_args(pid, "-600s", None),
            inject_args(pid, "+1h", Some("realtime,monotonic")),
            recover_args(pid),
        ] {
            let r = ts(&a, Duration::from_secs(10));
            if !r.ok() {
                failures.add(
                    if r.hung() {
                        "timeskew hung"
                    } else {
                        "timeskew failed"
                    },
                    format!("cycle {cycle}: {}", r.summary()),
                );
            }
        }
        if !t.alive() {
            failures.add(
                "target died",
                format!("cycle {cycle}: {}; {}", t.state(), tail(&t)),
            );
            break;
        }
        if cycle % 10 == 9
            && let Err((kind, detail)) = unharmed(&mut t, Duration::from_millis(500))
        {
            failures.add(&kind, format!("after cycle {cycle}: {detail}"));
        }
        done += 1;
    }
    let storms = t.ask("storms", "storms", Duration::from_secs(2));
    match &storms {
        Ok(l) => {
            let f = kv(l);
            if f.get("child_errors") != Some(&0) || f.get("child_crashes") != Some(&0) {
                // Their CRASH lines (signal, address, rip) went to the shared stderr.
                failures.add("children harmed", format!("{l}; {}", tail(&t)));
            }
            for k in ["forks", "vforks", "spawns", "threads"] {
                if f.get(k).is_none_or(|v| *v < 10) {
                    failures.add("storm did not run", l.clone());
                }
            }
        }
        Err(e) => failures.add("target does not answer", e.clone()),
    }
    report(
        "attack 5a: fork/vfork/posix_spawn/thread storms",
        &format!(
            "cycles {done}/{n} (inject, update, recover) in {:.1} s; {}\nfailures: {}",
            started.elapsed().as_secs_f64(),
            storms.unwrap_or_default(),
            failures.summary()
        ),
    );
    assert_eq!(failures.count, 0, "storms: {}", failures.summary());
}

#[test]
fn a_target_stopped_by_sigstop_is_refused_within_a_second() {
    let _serial = serial();
    let n = rounds(10).max(3);
    let mut failures = Failures::default();
    let mut times = Vec::new();
    for round in 0..n {
        let mut t = small_target();
        t.signal(libc::SIGSTOP);
        if let Err(e) = all_threads_in(t.pid, "T", Duration::from_secs(2)) {
            failures.add("SIGSTOP did not stop it", format!("round {round}: {e}"));
            continue;
        }
        let r = ts_refusing(&inject_args(t.pid, "-600s", None), Duration::from_secs(5));
        times.push(r.elapsed.as_secs_f64() * 1e3);
        if let Err((kind, detail)) = refused_within_a_second(&r, &["stopped by job control"]) {
            failures.add(&kind, format!("round {round}: {detail}"));
        }
        // Still stopped, as its owner left it, and not traced (a thread detached from a
        // ptrace stop shows 'R' for a moment on its way back into the group stop).
        let deadline = Instant::now() + Duration::from_millis(200);
        loop {
            let still: Vec<_> = tasks(t.pid)
                .into_iter()
                .filter(|&(_, s, tr)| s != 'T' || tr != 0)
                .collect();
            if still.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                failures.add(
                    "job-control stop disturbed",
                    format!("round {round}: 200 ms after timeskew: {still:?}"),
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        t.signal(libc::SIGCONT);
        let result =
            unharmed(&mut t, Duration::from_secs(1)).and_then(|_| match status_of(t.pid) {
                Ok(Skew::NONE) => Ok(()),
                Ok(s) => Err(("changed although refused".into(), format!("{s:?}"))),
                Err(e) => Err(("status failed".into(), e)),
            });
        if let Err((kind, detail)) = result {
            failures.add(&kind, format!("round {round}, after SIGCONT: {detail}"));
        }
    }
    report(
        "attack 5b: target stopped by SIGSTOP",
        &format!(
            "rounds {n}; refusal after median {:.1} ms, max {:.1} ms\nfailures: {}",
            percentile(&times, 50.0),
            percentile(&times, 100.0),
            failures.summary()
        ),
    );
    assert_eq!(failures.count, 0, "SIGSTOP: {}", failures.summary());
}

/// A pause nemesis (Jepsen's `pause`, a chaos tool's process pause): SIGSTOP and SIGCONT every
/// 0–3 ms while inject and recover run back to back. Each run ends — done, or refused saying
/// job control stopped the target — and never leaves a breakpoint trap owed (the target died
/// of SIGTRAP at the next SIGCONT) or the worker thread's registers ours (it died of SIGSEGV
/// returning from our call): both happened before the change that added this attack.
#[test]
fn a_pause_nemesis_during_injections_never_harms_the_target() {
    use std::sync::atomic::AtomicBool;
    let _serial = serial();
    let n = rounds(150).max(20);
    let mut failures = Failures::default();
    let mut t = small_target();
    let pid = t.pid;
    let stop = AtomicBool::new(false);
    let (mut done, mut refused) = (0usize, 0usize);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            // A fixed sequence of pauses (an LCG): a failure repeats.
            let mut x = 0x2545_f491u64;
            let mut pause = || {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                Duration::from_micros((x >> 33) % 3_000)
            };
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: kill with a valid signal.
                unsafe { libc::kill(pid, libc::SIGSTOP) };
                std::thread::sleep(pause());
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGCONT) };
                std::thread::sleep(pause());
            }
        });
        for cycle in 0..n {
            for a in [inject_args(pid, "-600s", None), recover_args(pid)] {
                let r = ts(&a, Duration::from_secs(10));
                let msg = r.message();
                if r.hung() || r.signaled() {
                    failures.add(
                        "timeskew hung or died",
                        format!("cycle {cycle}: {}", r.summary()),
                    );
                } else if r.ok() {
                    done += 1;
                } else if msg.contains("job control")
                    && !msg.contains("undoing")
                    && !msg.contains("left modified")
                {
                    refused += 1;
                } else {
                    failures.add("not ended whole", format!("cycle {cycle}: {msg}"));
                }
            }
            if t.try_reap().is_some() {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    t.signal(libc::SIGCONT);
    let result = unharmed(&mut t, Duration::from_secs(1)).and_then(|_| {
        let r = ts(&recover_args(pid), Duration::from_secs(10));
        if !r.ok() {
            return Err(("final recover failed".into(), r.summary()));
        }
        match status_of(pid) {
            Ok(Skew::NONE) => Ok(()),
            Ok(s) => Err(("still skewed after recover".into(), format!("{s:?}"))),
            Err(e) => Err(("status failed".into(), e)),
        }
    });
    if let Err((kind, detail)) = result {
        failures.add(&kind, detail);
    }
    report(
        "attack 5h: a pause nemesis (SIGSTOP/SIGCONT every 0–3 ms) during injections",
        &format!(
            "cycles {n}; runs done {done}, refused (job control) {refused}\nfailures: {}",
            failures.summary()
        ),
    );
    assert_eq!(failures.count, 0, "pause nemesis: {}", failures.summary());
}

/// A cgroup of our own, frozen on demand; thawed, emptied and removed when dropped.
struct Cgroup {
    path: PathBuf,
    root: PathBuf,
    v2: bool,
}

impl Cgroup {
    fn new(v2: bool) -> Cgroup {
        static N: AtomicUsize = AtomicUsize::new(0);
        // v2: the `unified` mount of a hybrid machine, or /sys/fs/cgroup itself on a pure v2
        // one; v1: the freezer hierarchy.
        let root = if v2 {
            ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.join("cgroup.controllers").exists())
                .expect("no cgroup v2 hierarchy at /sys/fs/cgroup/unified or /sys/fs/cgroup")
        } else {
            let p = PathBuf::from("/sys/fs/cgroup/freezer");
            assert!(
                p.join("freezer.state").exists() || p.join("cgroup.procs").exists(),
                "no cgroup v1 freezer at {} (mount -t cgroup -o freezer freezer {})",
                p.display(),
                p.display()
            );
            p
        };
        let path = root.join(format!(
            "timeskew-campaign-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("mkdir {}: {e} (run as root)", path.display()));
        Cgroup { path, root, v2 }
    }

    fn write(&self, file: &str, what: &str) -> Result<(), String> {
        std::fs::write(self.path.join(file), what)
            .map_err(|e| format!("write {what:?} to {}/{file}: {e}", self.path.display()))
    }

    fn add(&self, pid: i32) -> Result<(), String> {
        self.write("cgroup.procs", &pid.to_string())
    }

    fn frozen(&self) -> bool {
        if self.v2 {
            std::fs::read_to_string(self.path.join("cgroup.events"))
                .is_ok_and(|s| s.lines().any(|l| l == "frozen 1"))
        } else {
            std::fs::read_to_string(self.path.join("freezer.state"))
                .is_ok_and(|s| s.trim() == "FROZEN")
        }
    }

    fn freeze(&self) -> Result<(), String> {
        if self.v2 {
            self.write("cgroup.freeze", "1")?;
        } else {
            self.write("freezer.state", "FROZEN")?;
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while !self.frozen() {
            if Instant::now() >= deadline {
                return Err(format!("{} not frozen within 3 s", self.path.display()));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    fn thaw(&self) -> Result<(), String> {
        if self.v2 {
            self.write("cgroup.freeze", "0")
        } else {
            self.write("freezer.state", "THAWED")
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = self.thaw();
        if let Ok(procs) = std::fs::read_to_string(self.path.join("cgroup.procs")) {
            for p in procs.lines() {
                let _ = std::fs::write(self.root.join("cgroup.procs"), p);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while std::fs::remove_dir(&self.path).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn frozen_cgroup(v2: bool) {
    let _serial = serial();
    let n = rounds(5).max(2);
    let mut failures = Failures::default();
    let mut times = Vec::new();
    let mut paths = Vec::new();
    for round in 0..n {
        let mut t = small_target();
        let cg = Cgroup::new(v2);
        paths.push(cg.path().to_path_buf());
        if let Err(e) = cg.add(t.pid).and_then(|_| cg.freeze()) {
            failures.add("could not freeze", format!("round {round}: {e}"));
            continue;
        }
        for a in [inject_args(t.pid, "-600s", None), recover_args(t.pid)] {
            let r = ts_refusing(&a, Duration::from_secs(5));
            times.push(r.elapsed.as_secs_f64() * 1e3);
            // A recover of a target that is not injected may say so (exit 0) without touching it.
            if a[0] == "recover" && r.ok() {
                continue;
            }
            if let Err((kind, detail)) = refused_within_a_second(&r, &["frozen"]) {
                failures.add(&kind, format!("round {round}, {}: {detail}", a[0]));
            }
        }
        if let Err(e) = cg.thaw() {
            failures.add("could not thaw", format!("round {round}: {e}"));
        }
        let result =
            unharmed(&mut t, Duration::from_secs(1)).and_then(|_| match status_of(t.pid) {
                Ok(Skew::NONE) => Ok(()),
                Ok(s) => Err(("changed although refused".into(), format!("{s:?}"))),
                Err(e) => Err(("status failed".into(), e)),
            });
        if let Err((kind, detail)) = result {
            failures.add(&kind, format!("round {round}, after thawing: {detail}"));
        }
        drop(t);
        drop(cg);
    }
    for p in &paths {
        if p.exists() {
            failures.add("cgroup left behind", p.display().to_string());
        }
    }
    report(
        &format!("attack 5c: frozen cgroup {}", if v2 { "v2" } else { "v1" }),
        &format!(
            "rounds {n}; timeskew ended after median {:.1} ms, max {:.1} ms\nfailures: {}",
            percentile(&times, 50.0),
            percentile(&times, 100.0),
            failures.summary()
        ),
    );
    assert_eq!(failures.count, 0, "frozen cgroup: {}", failures.summary());
}

#[test]
fn a_target_in_a_frozen_cgroup_v1_is_refused_within_a_second() {
    frozen_cgroup(false);
}

#[test]
fn a_target_in_a_frozen_cgroup_v2_is_refused_within_a_second() {
    frozen_cgroup(true);
}

/// A tracer attached to the target: strace (running) or gdb (batch mode, holding it stopped).
fn traced_by(tool: &str) {
    let _serial = serial();
    let n = rounds(5).max(2);
    let mut failures = Failures::default();
    let mut times = Vec::new();
    for round in 0..n {
        let mut t = small_target();
        let pid = t.pid.to_string();
        let mut tracer = if tool == "strace" {
            let mut p = Proc::start_stderr_lines(
                "strace",
                Command::new("strace").args(["-f", "-o", "/dev/null", "-p", &pid]),
            );
            let l = p.line_where("attached", Instant::now() + Duration::from_secs(10), |l| {
                l.contains("attached")
            });
            if let Err(e) = l {
                failures.add("strace did not attach", format!("round {round}: {e}"));
                continue;
            }
            p
        } else {
            // `shell cat` keeps gdb attached until we close its stdin.
            let mut p = Proc::start_talking(
                "gdb",
                Command::new("gdb").args([
                    "-q",
                    "-nx",
                    "-batch",
                    "-p",
                    &pid,
                    "-ex",
                    "echo gdb-attached\\n",
                    "-ex",
                    "shell cat",
                ]),
            );
            if let Err(e) =
                p.line_starting("gdb-attached", Instant::now() + Duration::from_secs(20))
            {
                failures.add("gdb did not attach", format!("round {round}: {e}"));
                continue;
            }
            p
        };
        let tracer_pid = tracer.pid.to_string();
        let r = ts_refusing(&inject_args(t.pid, "-600s", None), Duration::from_secs(5));
        times.push(r.elapsed.as_secs_f64() * 1e3);
        if let Err((kind, detail)) = refused_within_a_second(&r, &[tool, &tracer_pid]) {
            failures.add(&kind, format!("round {round}: {detail}"));
        }
        if tool == "strace" {
            tracer.signal(libc::SIGTERM);
        } else {
            tracer.close_stdin();
        }
        if tracer
            .wait_until(Instant::now() + Duration::from_secs(10))
            .is_none()
        {
            failures.add("tracer did not detach", format!("round {round}"));
        }
        drop(tracer);
        let result =
            unharmed(&mut t, Duration::from_secs(1)).and_then(|_| match status_of(t.pid) {
                Ok(Skew::NONE) => Ok(()),
                Ok(s) => Err(("changed although refused".into(), format!("{s:?}"))),
                Err(e) => Err(("status failed".into(), e)),
            });
        if let Err((kind, detail)) = result {
            failures.add(
                &kind,
                format!("round {round}, after the tracer left: {detail}"),
            );
        }
    }
    report(
        &format!("attack 5d: target traced by {tool}"),
        &format!(
            "rounds {n}; refusal after median {:.1} ms, max {:.1} ms\nfailures: {}",
            percentile(&times, 50.0),
            percentile(&times, 100.0),
            failures.summary()
        ),
    );
    assert_eq!(
        failures.count,
        0,
        "traced by {tool}: {}",
        failures.summary()
    );
}

#[test]
fn a_target_traced_by_strace_is_refused_naming_it() {
    traced_by("strace");
}

#[test]
fn a_target_held_by_gdb_is_refused_naming_it() {
    traced_by("gdb");
}

#[test]
fn a_target_that_is_itself_a_tracer_is_injected_and_recovered() {
    let _serial = serial();
    let n = rounds(10).max(3);
    let mut failures = Failures::default();
    let mut t = Proc::target("tracer", &offsets(&[-MIN10], &[]));
    let stops = |t: &mut Proc| -> Result<(i64, i64), String> {
        let l = t.ask("tracer", "tracer", Duration::from_secs(2))?;
        let f = kv(&l);
        Ok((
            f.get("stops").copied().unwrap_or(-1),
            f.get("ended").copied().unwrap_or(-1),
        ))
    };
    for round in 0..n {
        for (a, want) in [
            (inject_args(t.pid, "-600s", None), Skew::rt(-MIN10)),
            (recover_args(t.pid), Skew::NONE),
        ] {
            let before = stops(&mut t);
            let r = ts(&a, Duration::from_secs(10));
            if !r.ok() {
                failures.add("timeskew failed", format!("round {round}: {}", r.summary()));
            }
            let result = unharmed(&mut t, Duration::from_millis(500)).and_then(|p| {
                if want.matches_reading(p.reads()) {
                    Ok(())
                } else {
                    Err((
                        "wrong clock".into(),
                        format!("{}: reads {:?}, want {want:?}", a[0], p.reads()),
                    ))
                }
            });
            if let Err((kind, detail)) = result {
                failures.add(&kind, format!("round {round}: {detail}"));
                break;
            }
            // Its own tracee is still followed.
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match (&before, stops(&mut t)) {
                    (Ok((b, _)), Ok((s, 0))) if s > *b => break,
                    (_, Ok((_, 1))) | (Err(_), _) | (_, Err(_)) => {
                        failures.add(
                            "its tracee was lost",
                            format!("round {round}: {before:?} → {:?}", stops(&mut t)),
                        );
                        break;
                    }
                    _ if Instant::now() >= deadline => {
                        failures.add("its tracing stalled", format!("round {round}"));
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        }
    }
    report(
        "attack 5e: target that is itself a tracer",
        &format!(
            "rounds {n} (inject + recover)\nfailures: {}",
            failures.summary()
        ),
    );
    assert_eq!(failures.count, 0, "tracer target: {}", failures.summary());
}

#[test]
fn a_thread_in_an_uninterruptible_wait_does_not_stall_the_others() {
    let _serial = serial();
    let n = rounds(3).max(2);
    let mut failures = Failures::default();
    let mut t = Proc::target(
        "vforkwait",
        &[args(&["-s", "3", "-t", "1"]), offsets(&[-MIN10], &[])].concat(),
    );
    let pid = t.pid;
    let (mut succeeded, mut refused) = (0, 0);
    let mut gaps = Vec::new();
    for round in 0..n {
        if let Err(e) = all_threads_in_main(pid, 'D', Duration::from_secs(5)) {
            failures.add("main thread never in D", format!("round {round}: {e}"));
            continue;
        }
        for a in [inject_args(pid, "-600s", None), recover_args(pid)] {
            if let Err(e) = t.ask("gap", "gap", Duration::from_secs(2)) {
                failures.add("target does not answer", format!("round {round}: {e}"));
                break;
            }
            let r = ts(&a, Duration::from_secs(8));
            let gap_ms = t
                .ask("gap", "gap", Duration::from_secs(2))
                .map(|l| kv(&l).get("max_us").copied().unwrap_or(-1) as f64 / 1e3)
                .unwrap_or(f64::NAN);
            gaps.push(gap_ms);
            if r.ok() {
                succeeded += 1;
            } else if !r.hung()
                && !r.signaled()
                && one_line_message(&r)
                && r.message().contains("uninterruptible")
            {
                refused += 1;
            } else {
                failures.add(
                    "neither success nor a clear refusal",
                    format!("round {round}: {}", r.summary()),
                );
            }
            if gap_ms.is_nan() || gap_ms > 200.0 {
                failures.add(
                    "other threads stalled",
                    format!(
                        "round {round}, {}: the ticker thread stalled {gap_ms:.1} ms; {}",
                        a[0],
                        r.summary()
                    ),
                );
            }
        }
        // Whatever happened, the target ends this round unharmed and recoverable.
        if let Err((kind, detail)) = unharmed(&mut t, Duration::from_secs(1)) {
            failures.add(&kind, format!("round {round}: {detail}"));
            break;
        }
    }
    let clean = (|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = ts(&recover_args(pid), Duration::from_secs(8));
            if r.ok() && status_of(pid) == Ok(Skew::NONE) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(r.summary());
            }
        }
    })();
    if let Err(e) = clean {
        failures.add("could not recover at the end", e);
    }
    report(
        "attack 5f: a thread in an uninterruptible wait",
        &format!(
            "rounds {n}; runs succeeded {succeeded}, refused (uninterruptible) {refused}; \
             longest stall of another thread: median {:.1} ms, max {:.1} ms\nfailures: {}",
            percentile(&gaps, 50.0),
            percentile(&gaps, 100.0),
            failures.summary()
        ),
    );
    assert_eq!(failures.count, 0, "D-state: {}", failures.summary());
}

/// Waits until the main thread of `pid` is in `state`.
fn all_threads_in_main(pid: i32, state: char, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        let t = tasks(pid);
        if t.iter().any(|&(tid, s, _)| tid == pid && s == state) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("threads {t:?}"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Ctrl-C and SIGTERM end timeskew within a second even while its change cannot finish (the
/// target's main thread sits in an uninterruptible vfork wait for 3 s), and the target is left
/// unharmed: the helper that makes the change goes on alone and refuses or finishes.
#[test]
fn termination_signals_end_timeskew_within_a_second_while_the_target_is_stuck() {
    let _serial = serial();
    let mut failures = Failures::default();
    let mut t = Proc::target(
        "vforkwait",
        &[args(&["-s", "3", "-t", "1"]), offsets(&[-MIN10], &[])].concat(),
    );
    let pid = t.pid;
    let mut ends = Vec::new();
    for (round, sig) in [libc::SIGTERM, libc::SIGINT].into_iter().enumerate() {
        if let Err(e) = all_threads_in_main(pid, 'D', Duration::from_secs(5)) {
            failures.add("main thread never in D", format!("round {round}: {e}"));
            continue;
        }
        let a = inject_args(pid, "-600s", None);
        let p = ts_start(&a);
        // Let it get into the wait for the stuck thread, then interrupt it.
        std::thread::sleep(Duration::from_millis(100));
        p.signal(sig);
        let sent = Instant::now();
        let r = ts_finish(p, &a, sent, sent + Duration::from_secs(3));
        let took = sent.elapsed();
        ends.push(took.as_secs_f64() * 1e3);
        if r.hung() || took > Duration::from_secs(1) {
            failures.add(
                "not ended within 1 s",
                format!(
                    "{}: {:.0} ms; {}",
                    signame(sig),
                    took.as_secs_f64() * 1e3,
                    r.summary()
                ),
            );
        }
        // The helper finishes on its own; then the target must be as it was or skewed, unharmed.
        if let Err(e) = lock_target(pid, Duration::from_secs(6)) {
            failures.add("lock never released", e);
        }
        if let Err((kind, detail)) = unharmed(&mut t, Duration::from_secs(1)) {
            failures.add(&kind, format!("round {round}: {detail}"));
        }
    }
    let r = ts(&recover_args(pid), Duration::from_secs(8));
    if !r.ok() || status_of(pid) != Ok(Skew::NONE) {
        failures.add("could not recover at the end", r.summary());
    }
    report(
        "attack 5g: Ctrl-C / SIGTERM while the target is stuck",
        &format!(
            "signals 2; ended after the signal: {ends:.0?} ms\nfailures: {}",
            failures.summary()
        ),
    );
    assert_eq!(failures.count, 0, "termination: {}", failures.summary());
}
