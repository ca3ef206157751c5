//! Attack 4: signal storms. A 10 kHz ITIMER_REAL whose SIGALRM handler reads every clock, a
//! thread-directed SIGRTMIN timer whose handler runs ~500 µs on top of a thread that does
//! nothing but call clock_gettime (F5: such a handler interrupted a thread inside a hook window
//! and the thread crashed when it resumed), and 4 threads spinning on the clocks. 3,000
//! inject/recover cycles (every 10th with a live update in between): no crash, no value out of
//! its window, none torn, monotonic never backwards except across an offset change.

use std::time::{Duration, Instant};

use crate::harness::*;

fn storm_target() -> Proc {
    Proc::target(
        "sigstorm",
        &[
            args(&["-t", "4", "-i", "100"]),
            offsets(&[-MIN10, HOUR], &[HOUR]),
        ]
        .concat(),
    )
}

#[test]
fn signal_storm_cycles_never_crash_or_read_a_bad_value() {
    let _serial = serial();
    let n = rounds(3000);
    // 6 threads spinning on 2 CPUs: every ptrace round trip waits for a CPU, and the default
    // one-thread-at-a-time path makes ~20 of them per run (all-stop: a few, with the CPUs
    // free) — measured 60–70 ms per run against 25–50 ms, with tails to 250 ms. The budget
    // bounds a hang, not the speed (benches/stops.rs measures that).
    let budget = Budget::new(Duration::from_secs(60) + Duration::from_millis(250) * n as u32);
    let started = Instant::now();
    let mut failures = Failures::default();
    let mut t = storm_target();
    let (mut runs, mut refusals, mut crashes) = (0usize, 0usize, 0usize);
    let mut refusal_kinds = std::collections::BTreeMap::<String, usize>::new();
    let mut sigreads = 0;
    let mut done = 0;
    for cycle in 0..n {
        if budget.over() {
            failures.add(
                "budget exhausted",
                format!("stopped after {cycle} of {n} cycles"),
            );
            break;
        }
        let pid = t.pid;
        let mut steps = vec![if cycle % 2 == 0 {
            inject_args(pid, "-600s", None)
        } else {
            inject_args(pid, "+1h", Some("realtime,monotonic"))
        }];
        if cycle % 10 == 9 {
            steps.push(inject_args(pid, "-600s", None));
        }
        steps.push(recover_args(pid));
        for a in &steps {
            let r = ts(a, Duration::from_secs(10));
            runs += 1;
            if r.hung() || r.signaled() {
                failures.add(
                    "timeskew hung or died",
                    format!("cycle {cycle}: {}", r.summary()),
                );
            } else if !r.ok() {
                refusals += 1;
                // The message with its numbers blanked, as a kind.
                let mut key = String::new();
                for c in r.message().chars() {
                    if c.is_ascii_digit() {
                        if !key.ends_with('N') {
                            key.push('N');
                        }
                    } else {
                        key.push(c);
                    }
                }
                let key: String = key.chars().take(120).collect();
                *refusal_kinds.entry(key).or_default() += 1;
            }
            if !t.alive() {
                break;
            }
        }
        if !t.alive() {
            crashes += 1;
            failures.add(
                "target died",
                format!("cycle {cycle}: {}; stderr: {}", t.state(), tail(&t)),
            );
            t = storm_target();
            continue;
        }
        if cycle % 100 == 99 || cycle + 1 == n {
            match unharmed(&mut t, Duration::from_millis(500)) {
                Ok(p) => sigreads = p.get("sigreads"),
                Err((kind, detail)) => {
                    failures.add(&kind, format!("after cycle {cycle}: {detail}"));
                    t = storm_target();
                }
            }
        }
        done += 1;
    }
    let rt_signals = t
        .ask("signals", "signals", Duration::from_secs(2))
        .map(|l| kv(&l).get("rt").copied().unwrap_or(-1))
        .unwrap_or(-1);
    report(
        "attack 4: signal storms",
        &format!(
            "cycles {done}/{n} in {:.1} s; timeskew runs {runs}, refused {refusals} {:?}; \
             target crashes {crashes}; clock reads in SIGALRM handlers {sigreads}, SIGRTMIN \
             handler runs {rt_signals} (last target)\nfailures: {}",
            started.elapsed().as_secs_f64(),
            refusal_kinds,
            failures.summary()
        ),
    );
    assert_eq!(failures.count, 0, "signal storms: {}", failures.summary());
    assert!(
        refusals * 10 <= runs,
        "signal storms: timeskew refused {refusals} of {runs} runs: {refusal_kinds:?}"
    );
}
