//! End-to-end: real throwaway processes, the real mechanism (ptrace, vDSO patch), through the
//! CLI and the library.

mod common;

use common::*;

const OFF: i128 = -600 * SEC;

#[test]
fn library_skews_a_child_in_three_lines() {
    let mut probe = Probe::spawn(&[]);
    let skew = timeskew::Skew::new("-600s".parse().unwrap());
    let report = timeskew::inject(probe.pid, &skew).expect("inject");
    assert_eq!(report.action, timeskew::InjectAction::Injected);
    assert!(report.status.injected);
    let r = probe.now();
    r.assert_realtime_shift("realtime", 1, OFF, 0);
    timeskew::recover(probe.pid).expect("recover");
    probe.now().assert_realtime_shift("realtime", 1, 0, 0);
}

#[test]
fn inject_shifts_realtime_gettimeofday_and_time_only() {
    let mut probe = Probe::spawn(&[]);
    let pid = probe.pid_str();
    let vdso_before = vdso_bytes(probe.pid);
    let mono_before = clock_ns(libc::CLOCK_MONOTONIC);
    timeskew_ok(&["inject", "--pid", &pid, "--offset", "-600s"]);
    let r = probe.now();
    let mono_after = clock_ns(libc::CLOCK_MONOTONIC);
    r.assert_realtime_shift("realtime", 1, OFF, 0);
    r.assert_realtime_shift("gtod", 1_000, OFF, 0);
    r.assert_realtime_shift("time", SEC, OFF, COARSE_TICK);
    // Unselected clocks are untouched.
    r.assert_realtime_shift("tai", 1, 37 * SEC, 40 * SEC); // TAI = UTC + leap seconds
    assert_mono_shift(mono_before, r.get("monotonic"), mono_after, 0, "monotonic");
    assert!(
        wx_mappings(probe.pid).is_empty(),
        "W+X mapping: {:?}",
        wx_mappings(probe.pid)
    );

    let out = timeskew_ok(&["recover", "--pid", &pid]);
    assert!(out.contains("recover"), "{out}");
    probe.now().assert_realtime_shift("realtime", 1, 0, 0);
    probe
        .now()
        .assert_realtime_shift("time", SEC, 0, COARSE_TICK);
    assert_eq!(
        vdso_bytes(probe.pid),
        vdso_before,
        "recover must restore the vDSO exactly"
    );
}

#[test]
fn selected_clocks_are_shifted_and_the_rest_are_not() {
    let mut probe = Probe::spawn(&[]);
    let pid = probe.pid_str();
    timeskew_ok(&[
        "inject",
        "--pid",
        &pid,
        "--offset",
        "+2h",
        "--clock",
        "monotonic,boottime",
        "--clock",
        "CLOCK_TAI",
    ]);
    let off = 7200 * SEC;
    let (m0, b0, r0) = (
        clock_ns(libc::CLOCK_MONOTONIC),
        clock_ns(libc::CLOCK_BOOTTIME),
        clock_ns(libc::CLOCK_MONOTONIC_RAW),
    );
    let r = probe.now();
    let (m1, b1, r1) = (
        clock_ns(libc::CLOCK_MONOTONIC),
        clock_ns(libc::CLOCK_BOOTTIME),
        clock_ns(libc::CLOCK_MONOTONIC_RAW),
    );
    assert_mono_shift(m0, r.get("monotonic"), m1, off, "monotonic");
    assert_mono_shift(b0, r.get("boottime"), b1, off, "boottime");
    assert_mono_shift(r0, r.get("raw"), r1, 0, "monotonic-raw");
    r.assert_realtime_shift("realtime", 1, 0, 0);
    r.assert_realtime_shift("gtod", 1_000, 0, 0);
    r.assert_realtime_shift("tai", 1, off + 37 * SEC, 40 * SEC);
    timeskew_ok(&["recover", "--pid", &pid]);
}

#[test]
fn fractional_offsets_and_coarse_clocks() {
    let mut probe = Probe::spawn(&[]);
    let pid = probe.pid_str();
    timeskew_ok(&[
        "inject",
        "--pid",
        &pid,
        "--offset=-1.5s",
        "--clock",
        "realtime,realtime-coarse",
    ]);
    let off = -1_500_000_000;
    let r = probe.now();
    r.assert_realtime_shift("realtime", 1, off, 0);
    r.assert_realtime_shift("gtod", 1_000, off, 0);
    // Coarse clocks tick at the timer interrupt: allow 20 ms.
    r.assert_realtime_shift("rcoarse", 1, off, 20_000_000);
    // time() = floor(coarse realtime + offset).
    r.assert_realtime_shift("time", SEC, off, 20_000_000);
    timeskew_ok(&["recover", "--pid", &pid]);
}

#[test]
fn live_update_changes_offsets_without_new_pages_or_patches() {
    let mut probe = Probe::spawn(&[]);
    let pid = probe.pid_str();
    timeskew_ok(&["inject", "--pid", &pid, "--offset", "-600s"]);
    let maps_after_inject = maps(probe.pid);
    let vdso_after_inject = vdso_bytes(probe.pid);
    let out = timeskew_ok(&["inject", "--pid", &pid, "--offset", "+1h", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["action"], "updated", "{out}");
    assert_eq!(
        v["threads"], 0,
        "a live update must not stop the process: {out}"
    );
    probe
        .now()
        .assert_realtime_shift("realtime", 1, 3600 * SEC, 0);
    assert_eq!(maps(probe.pid), maps_after_inject, "no new pages");
    assert_eq!(vdso_bytes(probe.pid), vdso_after_inject, "no second patch");
    timeskew_ok(&["recover", "--pid", &pid]);
}

#[test]
fn separate_timeskew_processes_see_update_and_undo_each_other() {
    let mut probe = Probe::spawn(&[]);
    let pid = probe.pid_str();
    timeskew_ok(&["inject", "--pid", &pid, "--offset", "-10m"]);
    let st: serde_json::Value =
        serde_json::from_str(&timeskew_ok(&["status", "--pid", &pid, "--json"])).unwrap();
    assert_eq!(st["injected"], true);
    assert_eq!(st["layout_version"], 3);
    // Near the vDSO (within jump reach), wherever ASLR put it.
    let tramp = st["trampoline"].as_str().unwrap();
    let addr = u64::from_str_radix(tramp.trim_start_matches("0x"), 16).unwrap();
    assert!(addr.abs_diff(vdso_base(probe.pid)) < 2 << 30, "{st}");
    assert_eq!(st["clocks"][0]["clock"], "realtime");
    assert_eq!(st["clocks"][0]["offset"], "-600s");
    timeskew_ok(&["inject", "--pid", &pid, "--offset", "5s"]);
    let st: serde_json::Value =
        serde_json::from_str(&timeskew_ok(&["status", "--pid", &pid, "--json"])).unwrap();
    assert_eq!(st["clocks"][0]["offset"], "5s");
    probe.now().assert_realtime_shift("realtime", 1, 5 * SEC, 0);
    timeskew_ok(&["recover", "--pid", &pid]);
    let st: serde_json::Value =
        serde_json::from_str(&timeskew_ok(&["status", "--pid", &pid, "--json"])).unwrap();
    assert_eq!(st["injected"], false);
    probe.now().assert_realtime_shift("realtime", 1, 0, 0);
}

#[test]
fn recover_on_a_clean_process_says_so_and_succeeds() {
    let probe = Probe::spawn(&[]);
    let o = timeskew(&["recover", "--pid", &probe.pid_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("not injected"), "{}", stdout(&o));
}

#[test]
fn reinject_after_recover_reuses_the_pages() {
    let mut probe = Probe::spawn(&[]);
    let pid = probe.pid_str();
    timeskew_ok(&["inject", "--pid", &pid, "--offset", "-600s"]);
    timeskew_ok(&["recover", "--pid", &pid]);
    let maps_between = maps(probe.pid);
    let out = timeskew_ok(&["inject", "--pid", &pid, "--offset", "-30s", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["action"], "repatched", "{out}");
    assert_eq!(maps(probe.pid), maps_between, "pages reused, none leaked");
    probe
        .now()
        .assert_realtime_shift("realtime", 1, -30 * SEC, 0);
    timeskew_ok(&["recover", "--pid", &pid]);
    probe.now().assert_realtime_shift("realtime", 1, 0, 0);
}

#[test]
fn many_cycles_under_spinning_threads_never_tear_or_crash() {
    let mut probe = Probe::spawn(&["--threads", "4", "--sleeper"]);
    let pid = probe.pid_str();
    let vdso_before = vdso_bytes(probe.pid);
    // A big step back, but never below zero: monotonic counts from boot, and the machine may
    // have booted less than ten minutes ago (such an offset is refused).
    let back_ns = (clock_ns(libc::CLOCK_MONOTONIC) / 2).min(600 * SEC);
    let back = format!("-{back_ns}ns");
    for i in 0..15 {
        let off = if i % 2 == 0 {
            back.as_str()
        } else {
            "+1.999999999s"
        };
        timeskew_ok(&[
            "inject",
            "--pid",
            &pid,
            "--offset",
            off,
            "--clock",
            "realtime,monotonic",
        ]);
        timeskew_ok(&[
            "inject", "--pid", &pid, "--offset", "-1ns", "--clock", "realtime",
        ]);
        probe.now().assert_realtime_shift("realtime", 1, -1, 0);
        timeskew_ok(&["recover", "--pid", &pid]);
    }
    let stats = probe.stats();
    assert_eq!(stats["anomalies"], 0, "{stats:?}");
    assert_eq!(stats["sleep_errors"], 0, "{stats:?}");
    assert!(stats["sleeps"] > 0 && stats["calls"] > 0, "{stats:?}");
    assert!(probe.alive());
    probe.now().assert_realtime_shift("realtime", 1, 0, 0);
    assert_eq!(vdso_bytes(probe.pid), vdso_before);
}

#[test]
fn threads_created_and_ended_while_attaching_all_see_the_skew() {
    let mut probe = Probe::spawn(&["--churn", "--threads", "1"]);
    let pid = probe.pid_str();
    for round in 0..10 {
        let off = if round % 2 == 0 {
            -600 * SEC
        } else {
            3600 * SEC
        };
        let off_text = if round % 2 == 0 { "-600s" } else { "1h" };
        timeskew_ok(&["inject", "--pid", &pid, "--offset", off_text]);
        probe.assert_new_threads_see(off);
        probe.now().assert_realtime_shift("realtime", 1, off, 0);
        timeskew_ok(&["recover", "--pid", &pid]);
    }
    assert_eq!(probe.stats()["anomalies"], 0);
    assert!(probe.alive());
}

#[test]
fn live_update_works_through_proc_pid_mem_too() {
    let mut probe = Probe::spawn(&[]);
    let pid = probe.pid_str();
    timeskew_ok(&["inject", "--pid", &pid, "--offset", "-600s"]);
    let o = timeskew_env(
        &["inject", "--pid", &pid, "--offset", "42s", "--json"],
        &[("TIMESKEW_FORCE_PROC_MEM", "1")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("\"updated\""), "{}", stdout(&o));
    probe
        .now()
        .assert_realtime_shift("realtime", 1, 42 * SEC, 0);
    timeskew_ok(&["recover", "--pid", &pid]);
}

#[test]
fn recover_leaves_entries_that_someone_else_changed() {
    let mut probe = Probe::spawn(&[]);
    let pid = probe.pid_str();
    let original = vdso_bytes(probe.pid);
    timeskew_ok(&["inject", "--pid", &pid, "--offset", "-600s"]);
    let patched = vdso_bytes(probe.pid);
    let first_change = (0..original.len())
        .find(|&i| original[i] != patched[i])
        .expect("inject changed the vDSO");
    // Another tool rewrites that entry: here, with a different jump target.
    let base = vdso_base(probe.pid);
    let other = [0xe9u8, 0, 0, 0, 0];
    write_mem(probe.pid, base + first_change as u64, &other);
    let o = timeskew_ok(&["recover", "--pid", &pid, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(v["restored"], 2, "{o}");
    assert_eq!(v["skipped"].as_array().unwrap().len(), 1, "{o}");
    let after = vdso_bytes(probe.pid);
    assert_eq!(
        &after[first_change..first_change + 5],
        &other,
        "left as the other tool wrote it"
    );
    // Put the genuine bytes back so the probe can use its clock again.
    write_mem(
        probe.pid,
        base + first_change as u64,
        &original[first_change..first_change + 5],
    );
    assert_eq!(vdso_bytes(probe.pid), original);
    probe.now().assert_realtime_shift("realtime", 1, 0, 0);
}

#[test]
fn concurrent_timeskew_runs_on_one_target_take_turns() {
    let mut probe = Probe::spawn(&[]);
    let pid = probe.pid_str();
    timeskew_ok(&["inject", "--pid", &pid, "--offset", "-600s"]);
    // Another timeskew holds the target's lock (an flock on its /proc/PID directory)…
    let dir = std::fs::File::open(format!("/proc/{pid}")).unwrap();
    let held = nix::fcntl::Flock::lock(dir, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let mut tool = Reaped(
        std::process::Command::new(timeskew_bin())
            .args(["inject", "--pid", &pid, "--offset", "5s"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // … so this one waits in the kernel's flock until it is released (bounded poll).
    let wchan = format!("/proc/{}/wchan", tool.0.id());
    let mut waiting = false;
    for _ in 0..100_000 {
        if std::fs::read_to_string(&wchan).is_ok_and(|w| w.contains("lock")) {
            waiting = true;
            break;
        }
        assert!(
            tool.0.try_wait().unwrap().is_none(),
            "finished despite the lock"
        );
        std::thread::yield_now();
    }
    assert!(waiting, "timeskew never waited for the target lock");
    probe
        .now()
        .assert_realtime_shift("realtime", 1, -600 * SEC, 0);
    drop(held);
    assert!(tool.0.wait().unwrap().success());
    probe.now().assert_realtime_shift("realtime", 1, 5 * SEC, 0);
    timeskew_ok(&["recover", "--pid", &pid]);
}

/// A process whose main thread has exited (a zombie leader, while another thread runs on) is
/// injected and recovered one thread at a time: its mappings are read through a thread that
/// can show them (the leader shows none, which was once taken for an exec and refused).
#[test]
fn a_process_whose_main_thread_has_exited_is_injected_and_recovered() {
    leaderless_injected_and_recovered(&[]);
}

/// The same while no thread's `/proc/…/syscall` can be read (failure point): a thread whose
/// file cannot be read is stopped and looked at, never taken for gone — the CI once saw this
/// process's only live thread go missing from the worker's pick.
#[test]
fn a_thread_whose_syscall_file_cannot_be_read_is_still_looked_at() {
    leaderless_injected_and_recovered(&[("TIMESKEW_FAULT", "syscall-file")]);
}

fn leaderless_injected_and_recovered(env: &[(&str, &str)]) {
    let mut t = common::e2e::Clocks::spawn(&["leaderless", "true"]);
    assert_eq!(t.next(), "ready");
    let pid = t.pid();
    // A zombie beside it (a sibling: our child too): an exited leader and a zombie both have
    // no memory, which the kernel's comparison once took for shared memory.
    let mut zombie = Reaped(std::process::Command::new("true").spawn().expect("true"));
    let zombie_pid = zombie.0.id() as i32;
    common::servers::wait_until("true to exit", std::time::Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{zombie_pid}/stat"))
            .is_ok_and(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            })
            .then_some(())
    });
    let mut logged = env.to_vec();
    logged.push(("RUST_LOG", "timeskew=debug"));
    let o = common::timeskew_env(&["inject", "--pid", &pid, "--offset", "-600s"], &logged);
    let log = common::stderr(&o);
    assert!(o.status.success(), "{log}");
    // The registration helper's exit is not the process going (its exited leader once made
    // every thread's exit look so: the worker was dropped and picked again, and the CI saw
    // the change fail with "the process exited").
    assert!(!log.contains("picking another"), "{log}");
    let out = common::stdout(&o);
    assert!(out.contains("one thread at a time"), "{out}");
    let _ = zombie.0.wait();
    assert_realtime_s(&t.now(), -600);
    let out = timeskew_env_ok(&["recover", "--pid", &pid], env);
    assert!(out.contains("one thread at a time"), "{out}");
    assert_realtime_s(&t.now(), 0);
    t.finish();
}

/// A thread waiting in `ppoll` runs with the call's temporary signal mask while the kernel
/// keeps its own mask aside, to put back when the call returns; PTRACE_SETSIGMASK makes the
/// kernel forget the mask kept aside. Such a thread is the one timeskew works through (blocked
/// in a system call, so picked), and its mask is set for the registration helper's clone. On
/// this kernel the kept mask is already back when the thread reaches our interrupt stop
/// (checked by hand: PTRACE_GETSIGMASK there reads the thread's own mask), so no step of ours
/// meets the temporary one; this guards that, on both paths: after inject and recover, the
/// thread's own mask is still its own, and the temporary one is still used while it waits.
#[test]
fn a_worker_waiting_in_ppoll_keeps_its_own_signal_mask() {
    for live in ["1", "0"] {
        let mut t = common::e2e::Clocks::spawn(&["ppoll"]);
        let ready = t.next();
        let pid = ready.strip_prefix("ready pid=").expect("ready").to_string();
        // SIGUSR1 blocked as its own mask; SIGUSR2 only while it waits in ppoll.
        let (own, during) = ("200", "800");
        // Once it waits in ppoll again (after an answer): the temporary mask.
        let waiting = || {
            common::servers::wait_until("ppoll", std::time::Duration::from_secs(10), || {
                std::fs::read_to_string(format!("/proc/{pid}/syscall"))
                    .is_ok_and(|s| s.starts_with(&format!("{} ", libc::SYS_ppoll)))
                    .then_some(())
            });
            let blocked = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("SigBlk:"))
                .map(|v| v.trim().trim_start_matches('0').to_string())
                .unwrap();
            assert_eq!(blocked, during, "live={live}: the mask while in ppoll");
        };
        let mut ask = |offset_s: i128| {
            assert_realtime_s(&t.now(), offset_s);
            assert_eq!(t.next(), format!("mask={own}"), "live={live}: its own mask");
        };
        let env = [("TIMESKEW_LIVE", live)];
        waiting();
        let out = timeskew_env_ok(&["inject", "--pid", &pid, "--offset", "-600s"], &env);
        if live == "1" {
            assert!(out.contains("one thread at a time"), "{out}");
        }
        ask(-600);
        waiting();
        timeskew_env_ok(&["recover", "--pid", &pid], &env);
        ask(0);
        waiting();
        t.finish();
    }
}

/// A process caught inside execve shows its new memory without a vDSO for a moment (the
/// kernel maps it after the program and its interpreter): the mappings are read again before
/// the process is refused. CI once had `--follow --container` refuse a program exec'd just as
/// the container's processes were selected ("it has no vDSO"). `TIMESKEW_HIDE_VDSO_ONCE=1`
/// (test builds) hides the vDSO from the first read only: without a second read, both
/// commands are refused.
#[test]
fn a_process_seen_without_its_vdso_for_a_moment_is_read_again_and_injected() {
    let mut t = common::e2e::Clocks::spawn(&["ppoll"]);
    let ready = t.next();
    let pid = ready.strip_prefix("ready pid=").expect("ready").to_string();
    let env = [("TIMESKEW_HIDE_VDSO_ONCE", "1")];
    timeskew_env_ok(&["inject", "--pid", &pid, "--offset", "-600s"], &env);
    assert_realtime_s(&t.now(), -600);
    assert!(t.next().starts_with("mask="));
    timeskew_env_ok(&["recover", "--pid", &pid], &env);
    assert_realtime_s(&t.now(), 0);
    assert!(t.next().starts_with("mask="));
    t.finish();
}

/// A process seen without a vDSO while a thread of it runs — an exec under way that waits for
/// a CPU (seen in CI: over 200 ms on busy CPUs) — is read again for up to 2 s before it is
/// refused; one whose threads all sleep, after 200 ms as before. `TIMESKEW_HIDE_VDSO_MS=400`
/// (test builds) hides the vDSO from every read of the first 400 ms.
#[test]
fn a_process_seen_without_its_vdso_is_waited_for_longer_while_a_thread_runs() {
    let env = [("TIMESKEW_HIDE_VDSO_MS", "400")];
    // A spinner thread: running.
    let mut busy = Probe::spawn(&["--threads", "1"]);
    let started = std::time::Instant::now();
    timeskew_env_ok(
        &[
            "inject",
            "--pid",
            &busy.pid.to_string(),
            "--offset",
            "-600s",
        ],
        &env,
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(400));
    assert!(timeskew::status(busy.pid).unwrap().injected);
    timeskew_ok(&["recover", "--pid", &busy.pid.to_string()]);
    assert!(busy.alive());
    // Every thread asleep: refused once the 200 ms are over, before the vDSO shows again.
    let mut idle = Probe::spawn(&[]);
    let o = common::timeskew_env(
        &[
            "inject",
            "--pid",
            &idle.pid.to_string(),
            "--offset",
            "-600s",
        ],
        &env,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("no vDSO"), "{err}");
    assert!(!timeskew::status(idle.pid).unwrap().injected);
    assert!(idle.alive());
}

/// A `clocks` line's `realtime=` (whole seconds) is real time shifted by `offset_s`.
fn assert_realtime_s(line: &str, offset_s: i128) {
    let seconds: i128 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("realtime="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{line:?}"));
    let real = clock_ns(libc::CLOCK_REALTIME) / SEC;
    assert!(
        (seconds - real - offset_s).abs() <= 2,
        "{line:?}: real {real}, offset {offset_s} s"
    );
}

/// The command line with `env`; it must succeed.
fn timeskew_env_ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let o = common::timeskew_env(args, env);
    assert!(o.status.success(), "{args:?}: {}", common::stderr(&o));
    common::stdout(&o)
}
