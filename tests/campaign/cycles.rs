//! Attack 6: 1,000 inject / live update / recover cycles on one target. Nothing may grow:
//! the number of mappings, Rss (VmRSS in /proc/PID/status and smaps_rollup) and the time per
//! cycle of the first 100 cycles and the last 100 are compared.

use std::time::{Duration, Instant};

use crate::harness::*;

#[test]
fn a_thousand_cycles_leave_mappings_rss_and_time_flat() {
    let _serial = serial();
    let n = rounds(1000).max(20);
    let window = (n / 10).clamp(5, 100);
    let budget = Budget::new(Duration::from_secs(60) + Duration::from_millis(300) * n as u32);
    let started = Instant::now();
    let mut failures = Failures::default();
    let mut t = Proc::target(
        "crowd",
        &[args(&["-t", "1"]), offsets(&[-MIN10, HOUR], &[HOUR])].concat(),
    );
    let pid = t.pid;
    let maps_before = map_count(pid);
    let (mut maps, mut rss, mut rollup, mut secs) = (vec![], vec![], vec![], vec![]);
    for cycle in 0..n {
        if budget.over() {
            failures.add(
                "budget exhausted",
                format!("stopped after {cycle} of {n} cycles"),
            );
            break;
        }
        let t0 = Instant::now();
        for a in [
            inject_args(pid, "-600s", None),
            inject_args(pid, "+1h", Some("realtime,monotonic")),
            recover_args(pid),
        ] {
            let r = ts(&a, Duration::from_secs(10));
            if !r.ok() {
                failures.add("timeskew failed", format!("cycle {cycle}: {}", r.summary()));
            }
        }
        secs.push(t0.elapsed().as_secs_f64());
        if !t.alive() {
            failures.add(
                "target died",
                format!("cycle {cycle}: {}; {}", t.state(), tail(&t)),
            );
            break;
        }
        maps.push(map_count(pid) as f64);
        rss.push(vm_rss_kb(pid) as f64);
        rollup.push(rollup_rss_kb(pid) as f64);
        if cycle % 100 == 99
            && let Err((kind, detail)) = unharmed(&mut t, Duration::from_millis(500))
        {
            failures.add(&kind, format!("after cycle {cycle}: {detail}"));
        }
    }
    let done = secs.len();
    let first = |v: &Vec<f64>| v[..window.min(v.len())].to_vec();
    let last = |v: &Vec<f64>| v[v.len().saturating_sub(window)..].to_vec();
    let med = |v: Vec<f64>| percentile(&v, 50.0);
    let max = |v: Vec<f64>| percentile(&v, 100.0);
    let text = if done >= 2 * window {
        let (m0, m1) = (max(first(&maps)), max(last(&maps)));
        let (r0, r1) = (med(first(&rss)), med(last(&rss)));
        let (s0, s1) = (med(first(&rollup)), med(last(&rollup)));
        let (c0, c1) = (med(first(&secs)) * 1e3, med(last(&secs)) * 1e3);
        if m1 != m0 {
            failures.add(
                "mappings grew",
                format!("{m0} mappings in the first {window} cycles, {m1} in the last"),
            );
        }
        // "within a few pages": 4 pages of 4 KiB.
        for (what, a, b) in [("VmRSS", r0, r1), ("smaps_rollup Rss", s0, s1)] {
            if (b - a).abs() > 16.0 {
                failures.add(
                    "Rss grew",
                    format!(
                        "{what}: median {a} kB in the first {window} cycles, {b} kB in the last"
                    ),
                );
            }
        }
        if c1 > 2.0 * c0 {
            failures.add(
                "cycles got slower",
                format!(
                    "median {c0:.1} ms per cycle in the first {window}, {c1:.1} ms in the last"
                ),
            );
        }
        format!(
            "mappings {maps_before} before, {m0} → {m1}; VmRSS {r0} → {r1} kB; smaps_rollup Rss \
             {s0} → {s1} kB; ms per cycle (3 runs) {c0:.1} → {c1:.1} (medians, first vs last \
             {window} cycles)"
        )
    } else {
        "too few cycles to compare".to_string()
    };
    report(
        "attack 6: inject/update/recover cycles",
        &format!(
            "cycles {done}/{n} in {:.1} s; {text}\nfailures: {}",
            started.elapsed().as_secs_f64(),
            failures.summary()
        ),
    );
    assert_eq!(failures.count, 0, "cycles: {}", failures.summary());
}
