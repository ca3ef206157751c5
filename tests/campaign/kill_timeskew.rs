//! Attack 1: SIGKILL of timeskew at random moments of a first injection, of a re-injection
//! after recover, and of a recover (1,000 rounds in all: 400 + 300 + 300). Nothing may harm
//! the target: timeskew makes its changes in a helper of its own session, which inherits the
//! command's flock on /proc/PID, so once we hold that lock the change is finished or rolled back.

use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use crate::harness::*;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Op {
    /// The first injection into a fresh target (maps the pages, single-steps syscalls).
    FirstInject,
    /// An injection after a recover (pages reused, entries patched again).
    Reinject,
    Recover,
}

/// 6 workers checking clocks and registers (each sleeps 100 µs per round, so that timeskew
/// gets a CPU on a 2-core machine), the main thread in read(2).
fn crowd() -> Proc {
    Proc::target(
        "crowd",
        &[args(&["-t", "6", "-s", "100"]), offsets(&[-MIN10], &[])].concat(),
    )
}

/// Brings `t` into the state the next round of `op` starts from; a fresh target for a first
/// injection (or when `t` is gone or harmed).
fn prepare(op: Op, t: &mut Option<Proc>) -> Result<(), String> {
    if op == Op::FirstInject || t.as_mut().is_none_or(|p| !p.alive()) {
        *t = Some(crowd());
    }
    let p = t.as_mut().unwrap();
    if op == Op::Recover {
        let r = ts(&inject_args(p.pid, "-600s", None), Duration::from_secs(10));
        if !r.ok() {
            return Err(r.summary());
        }
    }
    Ok(())
}

fn op_args(op: Op, pid: i32) -> Vec<String> {
    match op {
        Op::Recover => recover_args(pid),
        _ => inject_args(pid, "-600s", None),
    }
}

fn attack(op: Op, issue_rounds: usize, seed: u64) {
    let _serial = serial();
    let n = rounds(issue_rounds);
    let budget = Budget::new(Duration::from_secs(60) + Duration::from_millis(400) * n as u32);
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let mut target: Option<Proc> = None;
    let mut failures = Failures::default();

    // Where does the hold land after spawning timeskew?
    let hold = calibrate(12, || {
        if let Err(e) = prepare(op, &mut target) {
            failures.add("setup failed", e);
            return None;
        }
        let t = target.as_mut().unwrap();
        let (seen, run) = watch_hold(t.pid, &op_args(op, t.pid));
        if !run.ok() {
            failures.add("calibration run failed", run.summary());
        }
        if op != Op::Recover {
            let _ = ts(&recover_args(t.pid), Duration::from_secs(10));
        }
        seen
    });

    let (mut killed, mut finished, mut other_exit, mut in_hold, mut left_injected) =
        (0, 0, 0, 0, 0);
    let mut done = 0;
    for round in 0..n {
        if budget.over() {
            failures.add(
                "budget exhausted",
                format!("stopped after {round} of {n} rounds ({:?})", budget.limit),
            );
            break;
        }
        if let Err(e) = prepare(op, &mut target) {
            failures.add("setup failed", format!("round {round}: {e}"));
            target = None;
            continue;
        }
        let t = target.as_mut().unwrap();
        let pid = t.pid;
        let a = op_args(op, pid);
        let delay_ms = hold.pick_delay_ms(&mut rng);
        // Half the rounds kill the pid, half the process group (as a terminal's Ctrl-C or a
        // service manager would): the helper, in its own session, must survive both.
        let group = round % 2 == 1;
        let mut cmd = ts_command(&a);
        cmd.process_group(0);
        let mut p = Proc::start_quiet("timeskew", &mut cmd);
        let t0 = Instant::now();
        spin_until(t0 + Duration::from_secs_f64(delay_ms / 1e3));
        if traced_now(pid) {
            in_hold += 1;
        }
        if group {
            p.signal_group(libc::SIGKILL);
        } else {
            p.signal(libc::SIGKILL);
        }
        match p.wait_until(Instant::now() + Duration::from_secs(5)) {
            Some(st) if libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGKILL => killed += 1,
            Some(st) if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0 => finished += 1,
            Some(st) => {
                other_exit += 1;
                failures.add(
                    "timeskew failed before the kill",
                    format!(
                        "round {round}: {}: {}",
                        describe(st),
                        p.stderr_text().trim()
                    ),
                );
            }
            None => failures.add(
                "timeskew survived SIGKILL",
                format!("round {round}: pid {}", p.pid),
            ),
        }
        drop(p);
        let what = format!(
            "round {round} ({op:?}, kill of the {} {delay_ms:.3} ms after spawn)",
            if group { "process group" } else { "pid" }
        );

        // Wait for the helper's turn to end: then the change is finished or rolled back.
        match lock_target(pid, Duration::from_secs(5)) {
            Ok(lock) => drop(lock),
            Err(e) => {
                // A target that is dying and reaped has no /proc/PID any more: its death is
                // counted below.
                if t.wait_until(Instant::now() + Duration::from_secs(1))
                    .is_none()
                {
                    failures.add("lock never released", format!("{what}: {e}"));
                }
            }
        }
        let harmed = (|| -> Result<(), (String, String)> {
            unharmed(t, Duration::from_millis(500))?;
            let s = status_agrees(t)?;
            if s != Skew::NONE && s != Skew::rt(-MIN10) {
                let kind = if s.injected && s.rt == 0 {
                    "left half-recovered (injected, offsets zeroed)"
                } else {
                    "neither real nor skewed"
                };
                return Err((kind.into(), format!("status and target say {s:?}")));
            }
            if s.injected {
                left_injected += 1;
            }
            recovers(t)
        })();
        if let Err((kind, detail)) = harmed {
            failures.add(&kind, format!("{what}: {detail}"));
            target = None;
        }
        done += 1;
    }
    drop(target);
    report(
        &format!("attack 1: SIGKILL of timeskew during {op:?}"),
        &format!(
            "rounds {done}/{n} in {:.1} s; hold {}; kills landing while the target was traced: \
             {in_hold}; timeskew killed {killed}, finished first {finished}, other exits \
             {other_exit}; left injected (then recovered) {left_injected}\ntargets harmed / \
             failures: {}",
            started.elapsed().as_secs_f64(),
            hold.describe(),
            failures.summary()
        ),
    );
    assert_eq!(
        failures.count,
        0,
        "SIGKILL of timeskew during {op:?}: {}",
        failures.summary()
    );
}

#[test]
fn sigkill_of_timeskew_during_a_first_injection_harms_no_target() {
    attack(Op::FirstInject, 400, 101);
}

#[test]
fn sigkill_of_timeskew_during_a_reinjection_harms_no_target() {
    attack(Op::Reinject, 300, 102);
}

#[test]
fn sigkill_of_timeskew_during_recover_harms_no_target() {
    attack(Op::Recover, 300, 103);
}
