//! Attack 7: a target with SIGTRAP of its own (F8). It has a SIGTRAP handler, keeps SIGTRAP
//! blocked in its main thread, and (multi-threaded variant) runs int3 in a loop in another
//! thread. After inject and after recover every thread's SigBlk, SigIgn and SigCgt are exactly
//! as before, the handler still runs when the main thread raises SIGTRAP, and no int3 went
//! unhandled. 50 rounds, each on fresh targets (a first injection and a re-injection), one
//! single-threaded and one multi-threaded.

use std::time::{Duration, Instant};

use crate::harness::*;

/// The signal fields that must not change (pending ones come and go with int3).
fn dispositions(pid: i32) -> Vec<(i32, String)> {
    signal_masks(pid)
        .into_iter()
        .map(|(tid, s)| {
            let kept: Vec<&str> = s
                .split(' ')
                .filter(|f| !f.starts_with("SigPnd") && !f.starts_with("ShdPnd"))
                .collect();
            (tid, kept.join(" "))
        })
        .collect()
}

fn one_target(single: bool, round: usize, failures: &mut Failures) {
    let mut a = offsets(&[-MIN10], &[]);
    if single {
        a.push("-1".into());
    }
    let mut t = Proc::target("traps", &a);
    let pid = t.pid;
    // Every thread past its start (glibc blocks all signals while a thread starts).
    if let Err(e) = t.ping() {
        failures.add("target does not answer", format!("round {round}: {e}"));
        return;
    }
    let what = |step: &str| {
        format!(
            "round {round} ({}), {step}",
            if single {
                "single-threaded"
            } else {
                "int3 thread"
            }
        )
    };
    let before = dispositions(pid);
    let mut raised = 0;
    for step in ["first inject", "recover", "inject again", "recover again"] {
        let a = if step.starts_with("recover") {
            recover_args(pid)
        } else {
            inject_args(pid, "-600s", None)
        };
        let r = ts(&a, Duration::from_secs(10));
        if !r.ok() {
            failures.add(
                "timeskew failed",
                format!("{}: {}", what(step), r.summary()),
            );
        }
        if !t.alive() {
            failures.add(
                "target died",
                format!("{}: {}; {}", what(step), t.state(), tail(&t)),
            );
            return;
        }
        let after = dispositions(pid);
        if after != before {
            failures.add(
                "signal disposition or mask changed",
                format!("{}: before {before:?}, after {after:?}", what(step)),
            );
        }
        match t.ask("raise", "raised", Duration::from_secs(2)) {
            Ok(l) => {
                raised += 1;
                let h = kv(&l).get("handled").copied().unwrap_or(-1);
                if h != raised {
                    failures.add(
                        "own SIGTRAP handler lost",
                        format!("{}: handled {h} of {raised} raised", what(step)),
                    );
                }
            }
            Err(e) => {
                failures.add(
                    "own SIGTRAP handler lost",
                    format!("{}: raise: {e}; {}", what(step), t.state()),
                );
                return;
            }
        }
    }
    if !single {
        match t.ask("traps", "traps", Duration::from_secs(2)) {
            Ok(l) => {
                let f = kv(&l);
                if f.get("lost") != Some(&0) || f.get("executed").is_none_or(|e| *e < 10) {
                    failures.add("int3 not handled", format!("{}: {l}", what("end")));
                }
            }
            Err(e) => failures.add("target does not answer", format!("{}: {e}", what("end"))),
        }
    }
    if let Err((kind, detail)) = unharmed(&mut t, Duration::from_millis(500)) {
        failures.add(&kind, format!("{}: {detail}", what("end")));
    }
}

#[test]
fn the_targets_own_sigtrap_survives_inject_and_recover() {
    let _serial = serial();
    let n = rounds(50);
    let started = Instant::now();
    let mut failures = Failures::default();
    for round in 0..n {
        one_target(true, round, &mut failures);
        one_target(false, round, &mut failures);
    }
    report(
        "attack 7: the target's own SIGTRAP",
        &format!(
            "rounds {n} (x2 targets) in {:.1} s\nfailures: {}",
            started.elapsed().as_secs_f64(),
            failures.summary()
        ),
    );
    assert_eq!(failures.count, 0, "own SIGTRAP: {}", failures.summary());
}
