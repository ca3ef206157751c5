//! Attack 3: 2–3 timeskew processes racing on one target (inject with different offsets, live
//! update, recover), 300 rounds. They take turns through the flock on /proc/PID, so each
//! must exit 0 (F9: spurious "its code changed while timeskew was attaching"), the target stays
//! alive and unharmed, and what it reads and what `status` says is the state left by the
//! command that released the lock last (its debug log line, written while it still holds the
//! lock: a process's exit can come after a later one's, when it is descheduled between
//! releasing the lock and exiting).

use std::time::{Duration, Instant};

use crate::harness::*;

#[derive(Clone, Copy, Debug)]
enum Cmd {
    InjectBack,
    InjectAhead,
    Recover,
}

impl Cmd {
    fn args(self, pid: i32) -> Vec<String> {
        match self {
            Cmd::InjectBack => inject_args(pid, "-600s", None),
            Cmd::InjectAhead => inject_args(pid, "+1h", Some("realtime,monotonic")),
            Cmd::Recover => recover_args(pid),
        }
    }

    fn leaves(self) -> Skew {
        match self {
            Cmd::InjectBack => Skew::rt(-MIN10),
            Cmd::InjectAhead => Skew::rt_mono(HOUR, HOUR),
            Cmd::Recover => Skew::NONE,
        }
    }
}

#[test]
fn racing_timeskew_processes_take_turns_and_the_last_one_wins() {
    let _serial = serial();
    let n = rounds(300);
    let budget = Budget::new(Duration::from_secs(60) + Duration::from_millis(500) * n as u32);
    let started = Instant::now();
    let mut rng = Rng::new(301);
    let mut failures = Failures::default();
    let target = || {
        Proc::target(
            "crowd",
            &[
                args(&["-t", "2", "-s", "100"]),
                offsets(&[-MIN10, HOUR], &[HOUR]),
            ]
            .concat(),
        )
    };
    let mut t = target();
    let mut close_finishes = 0;
    let mut done = 0;
    for round in 0..n {
        if budget.over() {
            failures.add(
                "budget exhausted",
                format!("stopped after {round} of {n} rounds"),
            );
            break;
        }
        if !t.alive() {
            t = target();
        }
        let k = 2 + rng.below(2);
        let cmds: Vec<Cmd> = (0..k)
            .map(|_| [Cmd::InjectBack, Cmd::InjectAhead, Cmd::Recover][rng.below(3)])
            .collect();
        let pid = t.pid;
        // Start them together; each waiter notes when its process ended.
        let procs: Vec<(Cmd, Vec<String>, Proc, Instant)> = cmds
            .iter()
            .map(|c| {
                let a = c.args(pid);
                let t0 = Instant::now();
                let mut cmd = ts_command(&a);
                cmd.env("RUST_LOG", "timeskew::target::lock=debug");
                (*c, a.clone(), Proc::start_quiet("timeskew", &mut cmd), t0)
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        // Each waiter blocks in waitpid (woken by the exit itself); a watchdog kills whatever
        // still runs at the deadline, which ends those waits.
        let pids: Vec<i32> = procs.iter().map(|p| p.2.pid).collect();
        let mut ended: Vec<(Cmd, TsRun, Instant)> = std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::channel();
            let hs: Vec<_> = procs
                .into_iter()
                .map(|(c, a, mut p, t0)| {
                    let tx = tx.clone();
                    s.spawn(move || {
                        p.wait_blocking();
                        let at = Instant::now();
                        let _ = tx.send(p.pid);
                        (c, ts_finish(p, &a, t0, at), at)
                    })
                })
                .collect();
            let mut running = pids.clone();
            while !running.is_empty() {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(pid) => running.retain(|p| *p != pid),
                    Err(_) => {
                        for pid in &running {
                            // SAFETY: our children, whose waiters have not reaped them yet.
                            unsafe { libc::kill(*pid, libc::SIGKILL) };
                        }
                        break;
                    }
                }
            }
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // By when each released the target lock (µs timestamps in UTC, ISO 8601: their text
        // sorts in time order); a command that logged no release sorts first.
        ended.sort_by_key(|e| lock_released_at(&e.1));
        let what = format!(
            "round {round}: {}",
            ended
                .iter()
                .map(|(c, r, _)| format!("{c:?} ({})", r.how()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for (_, r, _) in &ended {
            if !r.ok() {
                failures.add(
                    if r.hung() {
                        "timeskew hung"
                    } else {
                        "timeskew failed"
                    },
                    format!("{what}: {}", r.summary()),
                );
            }
        }
        let result = (|| -> Result<(), (String, String)> {
            let p = unharmed(&mut t, Duration::from_millis(500))?;
            let s = status_of(pid).map_err(|e| ("status failed".to_string(), e))?;
            let last = ended.last().unwrap();
            let Some(last_release) = lock_released_at(&last.1) else {
                return Err((
                    "no lock release logged".into(),
                    format!("{what}: {}", last.1.summary()),
                ));
            };
            let want = last.0.leaves();
            if s == want && want.matches_reading(p.reads()) {
                return Ok(());
            }
            // Two releases in the same microsecond cannot be ordered: accept either state.
            if ended.len() >= 2 {
                let prev = &ended[ended.len() - 2];
                let other = prev.0.leaves();
                if lock_released_at(&prev.1).as_deref() == Some(last_release.as_str())
                    && s == other
                    && other.matches_reading(p.reads())
                {
                    close_finishes += 1;
                    return Ok(());
                }
            }
            Err((
                "final state is not the last command's".into(),
                format!(
                    "{what}: expected {want:?}; status says {s:?}, the target reads {:?}; lock \
                     releases at {:?}",
                    p.reads(),
                    ended
                        .iter()
                        .map(|e| lock_released_at(&e.1))
                        .collect::<Vec<_>>()
                ),
            ))
        })();
        if let Err((kind, detail)) = result {
            failures.add(&kind, detail);
            if !t.alive() {
                continue;
            }
        }
        done += 1;
    }
    report(
        "attack 3: timeskew processes racing on one target",
        &format!(
            "rounds {done}/{n} in {:.1} s; rounds whose last two released the lock in the \
             same µs (either state accepted): {close_finishes}\nfailures: {}",
            started.elapsed().as_secs_f64(),
            failures.summary()
        ),
    );
    assert_eq!(
        failures.count,
        0,
        "racing timeskews: {}",
        failures.summary()
    );
}

/// When a timeskew run released the target lock: the timestamp of its debug line, logged
/// just before (`[2026-12-01T05:30:00.123456Z DEBUG timeskew::target::lock] pid N: releasing
/// the target lock`).
fn lock_released_at(run: &TsRun) -> Option<String> {
    run.stderr
        .lines()
        .filter(|l| l.contains("releasing the target lock"))
        .filter_map(|l| l.strip_prefix('[')?.split_whitespace().next())
        .map(str::to_string)
        .next_back()
}
