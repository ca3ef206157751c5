//! Attack 2: SIGKILL of the target at random moments of inject and recover (500 rounds), its
//! parent (this test) reaping it ~100 ms late: timeskew must exit within 1 s of the kill —
//! non-zero with a one-line message, or 0 if it finished first — and never hang. Targets:
//! multi-threaded (where F1 hung), and one whose main thread sits in a vfork wait. Also a target
//! whose non-main thread execs again and again while timeskew works.

use std::time::{Duration, Instant};

use crate::harness::*;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Case {
    /// First injection into a fresh 6-thread target.
    Inject,
    /// Recover of an injected 6-thread target.
    Recover,
    /// First injection into a target whose main thread waits for a vfork child (sleeping 30 s).
    InjectVforkWaiting,
}

fn start(case: Case) -> Result<Proc, String> {
    let t = match case {
        Case::InjectVforkWaiting => Proc::target(
            "vforkwait",
            &[args(&["-s", "30", "-t", "3"]), offsets(&[-MIN10], &[])].concat(),
        ),
        _ => Proc::target(
            "crowd",
            &[args(&["-t", "6", "-s", "100"]), offsets(&[-MIN10], &[])].concat(),
        ),
    };
    if case == Case::Recover {
        let r = ts(&inject_args(t.pid, "-600s", None), Duration::from_secs(10));
        if !r.ok() {
            return Err(r.summary());
        }
    }
    Ok(t)
}

fn case_args(case: Case, pid: i32) -> Vec<String> {
    match case {
        Case::Recover => recover_args(pid),
        _ => inject_args(pid, "-600s", None),
    }
}

fn wchan(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default()
}

#[test]
fn sigkill_of_the_target_never_hangs_timeskew() {
    let _serial = serial();
    let n = rounds(500);
    let budget = Budget::new(Duration::from_secs(60) + Duration::from_millis(500) * n as u32);
    let started = Instant::now();
    let mut rng = Rng::new(201);
    let mut failures = Failures::default();
    let cases = [Case::Inject, Case::Recover, Case::InjectVforkWaiting];
    let mut holds = Vec::new();
    for case in cases {
        holds.push(calibrate(6, || {
            let t = start(case).ok()?;
            watch_hold(t.pid, &case_args(case, t.pid)).0
        }));
    }
    let mut exits_ms: Vec<f64> = Vec::new();
    let (mut finished_first, mut failed_cleanly, mut refused_before) = (0, 0, 0);
    let mut done = 0;
    for round in 0..n {
        if budget.over() {
            failures.add(
                "budget exhausted",
                format!("stopped after {round} of {n} rounds"),
            );
            break;
        }
        // 40 % first injections, 30 % recovers, 30 % vfork-waiting targets.
        let case = match round % 10 {
            0..=3 => Case::Inject,
            4..=6 => Case::Recover,
            _ => Case::InjectVforkWaiting,
        };
        let hold = holds[cases.iter().position(|c| *c == case).unwrap()];
        let mut t = match start(case) {
            Ok(t) => t,
            Err(e) => {
                failures.add("setup failed", format!("round {round}: {e}"));
                continue;
            }
        };
        let a = case_args(case, t.pid);
        let delay_ms = hold.pick_delay_ms(&mut rng);
        let what = format!("round {round} ({case:?}, target killed {delay_ms:.3} ms after spawn)");
        let t0 = Instant::now();
        let mut p = ts_start(&a);
        spin_until(Instant::now() + Duration::from_secs_f64(delay_ms / 1e3));
        t.signal(libc::SIGKILL);
        let killed_at = Instant::now();
        // timeskew must end within 1 s; the parent (we) reaps the target only 100 ms late:
        // timeskew must not depend on it.
        let (mut ts_status, mut ts_ended_at) = (None, None);
        let mut target_status = None;
        let mut hung: Option<String> = None;
        loop {
            let now = Instant::now();
            if ts_status.is_none() && hung.is_none() {
                ts_status = p.try_reap();
                if ts_status.is_some() {
                    ts_ended_at = Some(now);
                }
            }
            if target_status.is_none() && now >= killed_at + Duration::from_millis(100) {
                target_status = t.try_reap();
            }
            let ts_done = ts_status.is_some() || now >= killed_at + Duration::from_secs(1);
            if ts_done && ts_status.is_none() && hung.is_none() {
                // Hung. Note where, then kill it: a traced target may not be reapable until
                // its tracer is gone.
                hung = Some(format!(
                    "timeskew {} still running 1 s after the kill (wchan {}); target {}, \
                     threads {:?}",
                    p.pid,
                    wchan(p.pid),
                    t.state(),
                    tasks(t.pid)
                ));
                p.signal(libc::SIGKILL);
            }
            let t_done = target_status.is_some() || now >= killed_at + Duration::from_secs(2);
            if ts_done && t_done {
                break;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        if let Some(h) = hung {
            failures.add(&format!("timeskew hung ({case:?})"), format!("{what}: {h}"));
            drop(p);
            done += 1;
            continue;
        }
        match ts_status {
            None => unreachable!("neither ended nor hung"),
            Some(st) => {
                let run = ts_finish(p, &a, t0, Instant::now());
                let ended = ts_ended_at.unwrap_or(killed_at);
                // ms after the kill (0: it had already ended, seen at the first poll).
                let ms = if ended > killed_at {
                    (ended - killed_at).as_secs_f64() * 1e3
                } else {
                    0.0
                };
                let before_kill = ms < 0.15;
                exits_ms.push(ms);
                if libc::WIFSIGNALED(st) {
                    failures.add(
                        "timeskew died of a signal",
                        format!("{what}: {}", run.summary()),
                    );
                } else if run.ok() {
                    finished_first += 1;
                } else if !one_line_message(&run) {
                    failures.add(
                        "no one-line message",
                        format!("{what}: {}: {:?}", run.how(), run.stderr),
                    );
                } else if before_kill {
                    refused_before += 1;
                } else {
                    failed_cleanly += 1;
                }
                if target_status.is_none() {
                    failures.add(
                        "target not reapable",
                        format!(
                            "{what}: still {} 2 s after SIGKILL: {:?}",
                            t.state(),
                            tasks(t.pid)
                        ),
                    );
                }
                done += 1;
                continue;
            }
        }
    }
    report(
        "attack 2: SIGKILL of the target during inject and recover",
        &format!(
            "rounds {done}/{n} in {:.1} s; holds: inject {}, recover {}, vfork-waiting {}; \
             timeskew exit after the kill: median {:.1} ms, max {:.1} ms; finished (exit 0) \
             {finished_first}, failed with a one-line message {failed_cleanly}, refused before \
             the kill {refused_before}\nfailures: {}",
            started.elapsed().as_secs_f64(),
            holds[0].describe(),
            holds[1].describe(),
            holds[2].describe(),
            percentile(&exits_ms, 50.0),
            percentile(&exits_ms, 100.0),
            failures.summary()
        ),
    );
    assert_eq!(
        failures.count,
        0,
        "SIGKILL of the target: {}",
        failures.summary()
    );
}

#[test]
fn a_thread_that_execs_during_the_operation_never_hangs_timeskew() {
    let _serial = serial();
    let n = rounds(100);
    let started = Instant::now();
    let mut failures = Failures::default();
    let start = || {
        let mut t = Proc::start_talking(
            "threadexec",
            std::process::Command::new(target_bin("threadexec")).arg("1000000000"),
        );
        if let Err(e) = t.line_starting("ready", Instant::now() + Duration::from_secs(5)) {
            panic!("threadexec did not start: {e}");
        }
        t
    };
    let mut t = start();
    let (mut ok, mut refused) = (0, 0);
    let mut times = Vec::new();
    let mut done = 0;
    for round in 0..n {
        let r = ts(&inject_args(t.pid, "-600s", None), Duration::from_secs(2));
        times.push(r.elapsed.as_secs_f64() * 1e3);
        if r.hung() {
            failures.add(
                "timeskew hung",
                format!(
                    "round {round}: {}; target threads {:?}",
                    r.summary(),
                    tasks(t.pid)
                ),
            );
        } else if r.ok() {
            ok += 1;
        } else if r.signaled() {
            failures.add(
                "timeskew died of a signal",
                format!("round {round}: {}", r.summary()),
            );
        } else if !one_line_message(&r) {
            failures.add(
                "no one-line message",
                format!("round {round}: {:?}", r.stderr),
            );
        } else {
            refused += 1;
        }
        done += 1;
        if !t.alive() {
            failures.add(
                "target died",
                format!("round {round}: {}; {}", t.state(), tail(&t)),
            );
            t = start();
            continue;
        }
        if let Err(held) = released_within(t.pid, Duration::from_millis(500)) {
            failures.add("left stopped or traced", format!("round {round}: {held}"));
        }
    }
    report(
        "attack 2b: a thread execs during inject",
        &format!(
            "rounds {done}/{n} in {:.1} s; injected {ok}, refused with a one-line message \
             {refused}; time per run median {:.1} ms, max {:.1} ms\nfailures: {}",
            started.elapsed().as_secs_f64(),
            percentile(&times, 50.0),
            percentile(&times, 100.0),
            failures.summary()
        ),
    );
    assert_eq!(failures.count, 0, "thread exec: {}", failures.summary());
}
