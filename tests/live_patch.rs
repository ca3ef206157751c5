//! Issue 11: the hooks go in and out one thread at a time, never with the whole process
//! stopped — on tests/targets/live/stress.c, whose threads read the clocks without pause and
//! check every value against raw system calls.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use timeskew::{Skew, inject, recover};

const OFFSET_NS: i64 = -600_000_000_000;

/// One test at a time: they measure stops on a 2-core machine. The live path is the default;
/// `TIMESKEW_LIVE=0` (test builds) forces the all-stop fallback, and a test that sets it puts
/// `1` back before it lets go of this lock.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: set while holding the lock every test of this file takes first; no other thread
    // of this process reads the environment at that moment.
    unsafe { std::env::set_var("TIMESKEW_LIVE", "1") };
    guard
}

/// `tests/targets/live/NAME.c`, compiled once per test run.
fn live_target(name: &'static str) -> PathBuf {
    static BINS: Mutex<BTreeMap<&'static str, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut bins = BINS.lock().unwrap_or_else(|e| e.into_inner());
    let bin = bins.entry(name).or_insert_with(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("live-targets");
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join(name);
        let tmp = dir.join(format!("{name}.{}", std::process::id()));
        let src =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/targets/live/{name}.c"));
        let o = Command::new("cc")
            .args(["-O2", "-pthread", "-Wall", "-Wextra", "-Werror", "-o"])
            .arg(&tmp)
            .arg(&src)
            .output()
            .expect("cc (apt-get install build-essential)");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::rename(&tmp, &out).unwrap();
        out
    });
    bin.clone()
}

/// The stress target, always killed and reaped.
struct Target {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    pid: i32,
}

impl Target {
    fn start(args: &[&str]) -> Target {
        let mut child = Command::new(live_target("stress"))
            .args(args)
            .args(["-o", &OFFSET_NS.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let pid = child.id() as i32;
        let mut t = Target {
            child,
            stdin,
            lines,
            pid,
        };
        let ready = t.line();
        assert!(ready.starts_with("ready"), "{ready}");
        t
    }

    fn line(&mut self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .expect("the target answers")
    }

    fn ask(&mut self, cmd: &str) -> String {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.line()
    }

    fn stats(&mut self) -> std::collections::HashMap<String, i64> {
        let l = self.ask("stats");
        l.split_whitespace()
            .skip(1)
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
            .collect()
    }

    fn tids(&mut self, kind: &str) -> Vec<i32> {
        let l = self.ask("tids");
        l.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{kind}=")))
            .unwrap_or("")
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect()
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn skew() -> Skew {
    Skew::new(format!("{OFFSET_NS}ns").parse().unwrap())
}

/// Every thread of `pid`: none traced, none stopped.
/// A field of every thread's `status` (e.g. "State:"), trimmed.
fn task_fields(pid: i32, key: &str) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| {
            let tid = task.ok()?.file_name();
            let status = std::fs::read_to_string(format!(
                "/proc/{pid}/task/{}/status",
                tid.to_string_lossy()
            ))
            .ok()?;
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_string())
        })
        .collect()
}

/// Each thread's blocked-signal mask (`SigBlk`), by thread id.
fn masks(pid: i32) -> std::collections::BTreeMap<String, String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| {
            let tid = task.ok()?.file_name().to_string_lossy().into_owned();
            let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
            let mask = status.lines().find_map(|l| l.strip_prefix("SigBlk:"))?;
            Some((tid, mask.trim().to_string()))
        })
        .collect()
}

fn assert_free(pid: i32) {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let tid = task.unwrap().file_name();
        // Gone since the listing (the registration helper ends on its own, a moment after a
        // change that gave up while it registered): neither traced nor stopped.
        let Ok(status) =
            std::fs::read_to_string(format!("/proc/{pid}/task/{}/status", tid.to_string_lossy()))
        else {
            continue;
        };
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .unwrap_or("")
                .trim()
                .to_string()
        };
        assert_eq!(field("TracerPid:"), "0", "thread {tid:?} left traced");
        assert!(
            !field("State:").starts_with('t') && !field("State:").starts_with('T'),
            "thread {tid:?} left stopped: {}",
            field("State:")
        );
    }
}

fn cycles() -> usize {
    std::env::var("TIMESKEW_LIVE_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

#[test]
fn a_thousand_cycles_under_clock_readers_and_a_10khz_timer_never_crash_tear_or_strand() {
    let _s = serial();
    let mut t = Target::start(&["-s", "8", "-t", "-i", "2"]);
    let n = cycles();
    let (mut traps, mut moved, mut fallbacks) = (0, 0, 0);
    for i in 0..n {
        let r = inject(t.pid, &skew()).unwrap_or_else(|e| panic!("cycle {i}: inject: {e}"));
        match &r.live {
            Some(l) => {
                traps += l.traps;
                moved += l.moved;
            }
            None => fallbacks += 1,
        }
        let r = recover(t.pid).unwrap_or_else(|e| panic!("cycle {i}: recover: {e}"));
        assert_eq!(r.restored, 3, "cycle {i}");
        if r.live.is_none() {
            fallbacks += 1;
        }
        assert!(t.alive(), "cycle {i}: the target died");
        if i % 100 == 0 {
            assert_free(t.pid);
        }
    }
    let st = t.stats();
    eprintln!("{n} cycles: {st:?}, traps answered {traps}, threads moved {moved}");
    assert_eq!(fallbacks, 0, "the live path must run here");
    assert_eq!(st["bad"], 0, "{st:?}");
    assert_eq!(st["timer_bad"], 0, "{st:?}");
    assert!(st["iters"] > 0 && st["timer"] > 0, "{st:?}");
    assert!(t.alive());
    assert_free(t.pid);
}

#[test]
fn a_blocked_thread_is_never_stopped_while_running_ones_are_looked_at() {
    let _s = serial();
    let mut t = Target::start(&["-s", "2", "-i", "4"]);
    let idle = t.tids("idle");
    let spin = t.tids("spin");
    let r = inject(t.pid, &skew()).unwrap();
    let live = r.live.expect("the live path ran");
    let stopped: std::collections::HashSet<i32> = live.stop_log.iter().map(|s| s.tid).collect();
    let never: Vec<i32> = idle
        .iter()
        .copied()
        .filter(|tid| !stopped.contains(tid) && *tid != live.worker)
        .collect();
    eprintln!(
        "worker {}, stops {:?}",
        live.worker,
        live.stop_log
            .iter()
            .map(|s| (s.tid, s.why, s.held_ns / 1000))
            .collect::<Vec<_>>()
    );
    // At least three of the four idle threads (one may serve as the worker) were never stopped
    // at all — not while the spinners were looked at, not to be let go.
    assert!(never.len() >= 3, "idle {idle:?}, stopped {stopped:?}");
    // The spinners were running, so each was stopped (to look at it, or to let it go) while
    // the idle threads kept sleeping.
    assert!(spin.iter().all(|s| stopped.contains(s)), "{stopped:?}");
    assert!(live.threads_stopped < live.threads, "{live:?}");
    // And the idle ones were passed over in the window on their scheduler counters alone
    // (seen blocked outside just before the breakpoints, not run since).
    assert!(live.unmoved >= 3, "{live:?}");
    recover(t.pid).unwrap();
    assert_eq!(t.stats()["bad"], 0);
    assert_free(t.pid);
}

/// Hundreds of threads: the first look, and the look in the window, are shared out between
/// threads of timeskew (one per CPU, 128 target threads each at least). Every idle thread is
/// still seen outside by the first and passed over by the second on its scheduler counters
/// alone — a part lost in either would show here — and none is ever stopped.
#[test]
fn hundreds_of_threads_are_looked_at_in_parts_and_none_is_missed() {
    let _s = serial();
    let mut t = Target::start(&["-s", "2", "-i", "400"]);
    let idle = t.tids("idle");
    assert_eq!(idle.len(), 400);
    let r = inject(t.pid, &skew()).unwrap();
    let live = r.live.expect("the live path ran");
    let stopped: std::collections::HashSet<i32> = live.stop_log.iter().map(|s| s.tid).collect();
    let idle_stopped = idle.iter().filter(|tid| stopped.contains(tid)).count();
    assert!(
        idle_stopped <= 1,
        "only the worker may be: {idle_stopped} ({live:?})"
    );
    // A part of the look lost, or its counters dropped, would leave its threads to be read
    // again in the window rather than passed over.
    assert!(live.unmoved >= 399, "{} unmoved of 400 idle", live.unmoved);
    assert_eq!(live.threads, 403, "main, 2 spinners, 400 idle");
    assert_free(t.pid);
    let st = t.stats();
    assert_eq!(st["bad"], 0, "{st:?}");
    recover(t.pid).unwrap();
    assert_eq!(t.stats()["bad"], 0);
    assert!(t.alive());
    assert_free(t.pid);
}

/// The first injection registers the process for membarrier from a thread timeskew makes in
/// it (the registration waits out an RCU grace period, milliseconds, which a thread of the
/// program used to sit out); that thread takes none of the program's signals, runs at the
/// lowest real-time priority (so that it gets a CPU at once, twice) and is gone afterwards.
/// Later changes find the process registered.
#[test]
fn membarrier_is_registered_by_a_thread_of_its_own_that_blocks_every_signal() {
    let _s = serial();
    // A watcher sees the helper only if it gets a CPU during the helper's few milliseconds:
    // up to three fresh targets (one is enough on an idle machine).
    let mut seen_any = false;
    for _ in 0..3 {
        let mut t = Target::start(&["-s", "2", "-i", "2", "-t"]);
        let mut ours: std::collections::HashSet<i32> = ["idle", "spin", "timer"]
            .iter()
            .flat_map(|k| t.tids(k))
            .collect();
        ours.insert(t.pid);
        let (live, seen) = inject_watching_others(t.pid, &ours);
        assert_eq!(live.registration, "helper", "{live:?}");
        assert!(live.registration_us > 0, "{live:?}");
        // Its exit status says it registered — and that the kernel offers the barrier: no
        // membarrier is asked of the worker for either. The worker is held for the two pages,
        // the clone and the three barriers of the protocol — 6 (8 with a check before and a
        // barrier after the helper).
        let holds = live.stop_log.iter().filter(|s| s.why == "worker").count();
        assert_eq!(holds, 6, "{:?}", live.stop_log);
        // SIGKILL and SIGSTOP cannot be blocked: every other bit is set.
        for (tid, blk) in &seen {
            assert_eq!(
                blk, "fffffffffffbfeff",
                "helper {tid} took signals ({seen:?})"
            );
        }
        seen_any |= !seen.is_empty();
        assert_eq!(
            live.threads,
            ours.len(),
            "the helper is not counted: {live:?}"
        );
        assert!(
            live.stop_log.iter().all(|s| ours.contains(&s.tid)),
            "{:?}",
            live.stop_log
        );
        let now = std::fs::read_dir(format!("/proc/{}/task", t.pid))
            .unwrap()
            .count();
        assert_eq!(now, ours.len(), "the helper thread is gone");
        recover(t.pid).unwrap();
        let again = inject(t.pid, &skew())
            .unwrap()
            .live
            .expect("the live path ran");
        assert_eq!(again.registration, "earlier", "{again:?}");
        recover(t.pid).unwrap();
        let st = t.stats();
        assert_eq!((st["bad"], st["timer_bad"]), (0, 0), "{st:?}");
        assert!(t.alive());
        assert_free(t.pid);
        if seen_any {
            break;
        }
    }
    assert!(seen_any, "the helper thread was never seen");
}

/// Injects into `pid` while another thread lists its threads: the live figures, and the
/// blocked-signal mask (`SigBlk`) of every thread seen that is not in `ours`.
fn inject_watching_others(
    pid: i32,
    ours: &std::collections::HashSet<i32>,
) -> (timeskew::LiveStats, std::collections::HashMap<i32, String>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let mut seen = std::collections::HashMap::new();
            let mut policies = std::collections::HashMap::<i32, (usize, usize)>::new();
            while !stop.load(Ordering::Relaxed) {
                for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
                    let tid: i32 = task.unwrap().file_name().to_string_lossy().parse().unwrap();
                    if ours.contains(&tid) {
                        continue;
                    }
                    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
                        .unwrap_or_default();
                    // An exited thread (a zombie until timeskew reaps it) shows an empty mask.
                    let state = status.lines().find_map(|l| l.strip_prefix("State:"));
                    if state.is_some_and(|s| s.trim().starts_with(['Z', 'X'])) {
                        continue;
                    }
                    if let Some(blk) = status.lines().find_map(|l| l.strip_prefix("SigBlk:")) {
                        seen.insert(tid, blk.trim().to_string());
                    }
                    // Its scheduling policy (`stat` field 41): counted while it is SCHED_FIFO.
                    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat"))
                        .unwrap_or_default();
                    let policy = stat
                        .rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().nth(38)?.parse::<i32>().ok());
                    let looks = policies.entry(tid).or_insert((0, 0));
                    looks.0 += 1;
                    looks.1 += usize::from(policy == Some(libc::SCHED_FIFO));
                }
            }
            // A helper seen several times was seen running at the lowest real-time priority
            // (set a few µs after it is made).
            for (tid, (looks, fifo)) in policies {
                assert!(
                    looks < 4 || fifo > 0,
                    "helper {tid}: never SCHED_FIFO in {looks} looks"
                );
            }
            seen
        });
        let r = inject(pid, &skew());
        stop.store(true, Ordering::Relaxed);
        let seen = watcher.join().unwrap();
        (r.unwrap().live.expect("the live path ran"), seen)
    })
}

#[test]
fn membarrier_refused_by_seccomp_falls_back_to_stopping_every_thread_and_says_so() {
    let _s = serial();
    let mut t = Target::start(&["-s", "2", "-m"]);
    let r = inject(t.pid, &skew()).unwrap();
    assert!(r.live.is_none());
    let why = r
        .all_stop_reason
        .expect("the reason for stopping every thread");
    assert!(why.contains("membarrier"), "{why}");
    let st = timeskew::status(t.pid).unwrap();
    assert!(st.injected);
    let r = recover(t.pid).unwrap();
    assert!(r.all_stop_reason.is_some_and(|w| w.contains("membarrier")));
    assert_eq!(r.restored, 3);
    // The command line says it too.
    let bin = env!("CARGO_BIN_EXE_timeskew");
    let o = Command::new(bin)
        .args(["inject", "--pid", &t.pid.to_string(), "--offset", "-600s"])
        .env("TIMESKEW_LIVE", "1")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    assert!(
        out.contains("all at once") && out.contains("membarrier"),
        "{out}"
    );
    recover(t.pid).unwrap();
    assert_eq!(t.stats()["bad"], 0);
    assert_free(t.pid);
}

/// A breakpoint trap is a forced SIGTRAP: for a thread that blocks it, or a process that
/// ignores it, the kernel would unblock it and reset its disposition. Seen in the first look
/// (each thread's `stat` is read there, after the pages are mapped, no longer while
/// attaching): the live injection is undone and the all-stop path, which writes no
/// breakpoint, injects instead and says why; every mask and the disposition stay as they were.
#[test]
fn a_thread_blocking_sigtrap_or_a_process_ignoring_it_sends_the_change_to_the_all_stop_path() {
    let _s = serial();
    let ignored = |pid: i32| task_fields(pid, "SigIgn:");
    for (flag, why) in [("-b", "blocks SIGTRAP"), ("-g", "ignores SIGTRAP")] {
        let mut t = Target::start(&["-s", "1", "-i", "3", flag]);
        let (masks_before, ignored_before) = (masks(t.pid), ignored(t.pid));
        let trap = 1u64 << (libc::SIGTRAP - 1);
        let has_trap = |m: &String| u64::from_str_radix(m, 16).unwrap() & trap != 0;
        match flag {
            "-b" => assert_eq!(masks_before.values().filter(|m| has_trap(m)).count(), 1),
            _ => assert!(ignored_before.iter().all(has_trap), "{ignored_before:?}"),
        }
        let r = inject(t.pid, &skew()).unwrap();
        assert!(r.live.is_none(), "{r:?}");
        let reason = r
            .all_stop_reason
            .expect("the reason for stopping every thread");
        assert!(reason.contains(why), "{reason}");
        assert!(timeskew::status(t.pid).unwrap().injected);
        assert_eq!(masks(t.pid), masks_before, "{flag}");
        assert_eq!(ignored(t.pid), ignored_before, "{flag}");
        let r = recover(t.pid).unwrap();
        assert!(r.all_stop_reason.is_some_and(|w| w.contains(why)));
        assert_eq!(masks(t.pid), masks_before, "{flag}");
        assert_eq!(ignored(t.pid), ignored_before, "{flag}");
        assert_eq!(t.stats()["bad"], 0);
        assert!(t.alive());
        assert_free(t.pid);
    }
}

/// Each new step fails on demand (TIMESKEW_FAULT, through the command line: the variable is
/// read by the helper process): everything is undone and the target runs on unharmed.
/// Waits (bounded) until every thread of `pid` is in the job-control stop.
fn wait_all_stopped(pid: i32) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let states = task_fields(pid, "State:");
        if states.iter().all(|s| s.starts_with('T')) || std::time::Instant::now() >= deadline {
            return states;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A process that job control holds stopped (a pause nemesis, a debugger's SIGSTOP) is
/// recovered to real time through its data page alone — none of its threads made to run —
/// and the report says that the hooks stay, and when to recover again; after it resumes, a
/// plain recover takes them out.
#[test]
fn recover_of_a_stopped_process_puts_real_time_back_and_leaves_the_hooks() {
    let _s = serial();
    let mut t = Target::start(&["-s", "2", "-i", "2", "-t"]);
    inject(t.pid, &skew()).unwrap();
    // SAFETY: kill with a valid signal.
    assert_eq!(unsafe { libc::kill(t.pid, libc::SIGSTOP) }, 0);
    let states = wait_all_stopped(t.pid);
    assert!(states.iter().all(|s| s.starts_with('T')), "{states:?}");
    let report = recover(t.pid).unwrap();
    assert!(report.was_injected, "{report:?}");
    assert_eq!(report.restored, 0, "{report:?}");
    let why = report
        .hooks_left
        .clone()
        .expect("the hooks are said to be left");
    assert!(
        why.contains("stopped by job control") && why.contains(&format!("kill -CONT {}", t.pid)),
        "{why}"
    );
    // Nothing ran: every thread still in the job-control stop, none traced.
    let states = task_fields(t.pid, "State:");
    assert!(states.iter().all(|s| s.starts_with('T')), "{states:?}");
    let tracers = task_fields(t.pid, "TracerPid:");
    assert!(tracers.iter().all(|s| s == "0"), "{tracers:?}");
    let status = timeskew::status(t.pid).unwrap();
    // The hooks in place, no clock skewed.
    assert!(
        status.injected && status.clocks.iter().all(|c| c.offset.is_zero()),
        "real time through the hooks: {status:?}"
    );
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(t.pid, libc::SIGCONT) }, 0);
    assert_eq!(t.stats()["bad"], 0);
    let report = recover(t.pid).unwrap();
    assert_eq!(report.restored, 3, "{report:?}");
    assert!(report.hooks_left.is_none(), "{report:?}");
    assert!(!timeskew::status(t.pid).unwrap().injected);
    assert!(t.alive());
    assert_free(t.pid);
}

#[test]
fn a_failure_at_each_step_of_the_live_protocol_is_undone() {
    let _s = serial();
    let bin = env!("CARGO_BIN_EXE_timeskew");
    let vdso = |pid: i32| -> Vec<u8> {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
        let line = maps.lines().find(|l| l.ends_with("[vdso]")).unwrap();
        let (range, _) = line.split_once(' ').unwrap();
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        let mut buf = vec![0u8; (b - a) as usize];
        use std::os::unix::fs::FileExt;
        std::fs::File::open(format!("/proc/{pid}/mem"))
            .unwrap()
            .read_exact_at(&mut buf, a)
            .unwrap();
        buf
    };
    for step in [
        "live-armed",
        "live-checked",
        "live-tails",
        "patch",
        "before-commit",
    ] {
        let mut t = Target::start(&["-s", "4", "-t"]);
        let before = vdso(t.pid);
        let o = Command::new(bin)
            .args(["inject", "--pid", &t.pid.to_string(), "--offset", "-600s"])
            .env("TIMESKEW_FAULT", step)
            .env("TIMESKEW_LIVE", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(step), "{step}: {err}");
        assert!(t.alive(), "{step}: the target died");
        assert_eq!(vdso(t.pid), before, "{step}: the vDSO must be as before");
        assert!(!timeskew::status(t.pid).unwrap().injected, "{step}");
        assert_eq!(t.stats()["bad"], 0, "{step}");
        assert_free(t.pid);
    }
    // Job control stopping the target at each step (SIGSTOP, as a pause nemesis sends it): the
    // change is finished or undone whole — never a breakpoint trap owed (the target died of
    // it at SIGCONT), never the worker's registers left ours (a SIGSEGV) — and the target is
    // left stopped, as job control wants; after SIGCONT it runs on unharmed.
    for (op, step) in [
        ("inject", "after-mmap"),
        // In the registration helper's clone: the worker's signal mask is ours until the
        // call's exit, and the thread it made runs in the code page (the undo must keep it).
        ("inject", "helper-cloned"),
        ("inject", "live-armed"),
        ("inject", "live-checked"),
        ("inject", "live-tails"),
        ("inject", "patch"),
        ("inject", "before-commit"),
        ("recover", "recover-armed"),
        ("recover", "recover-tails"),
    ] {
        let mut t = Target::start(&["-s", "4", "-t"]);
        let before = vdso(t.pid);
        let masks_before = masks(t.pid);
        if op == "recover" {
            inject(t.pid, &skew()).unwrap();
        }
        let mut args = vec![op, "--pid"];
        let pid = t.pid.to_string();
        args.push(&pid);
        if op == "inject" {
            args.extend(["--offset", "-600s"]);
        }
        let o = Command::new(bin)
            .args(&args)
            .env("TIMESKEW_FAULT", format!("stop@{step}"))
            .env("TIMESKEW_LIVE", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        // A recover always ends in real time: done, or (job control's stop seen first) real
        // time published and the hooks left, said.
        assert!(
            o.status.success()
                || (op == "inject" && err.contains("job control") && !err.contains("undoing")),
            "{op} stop@{step}: {err}"
        );
        // Every thread in the job-control stop (the last ones may still be on their way),
        // none traced.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while task_fields(t.pid, "State:")
            .iter()
            .any(|s| !s.starts_with('T'))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let states = task_fields(t.pid, "State:");
        assert!(
            states.iter().all(|s| s.starts_with('T')),
            "{op} stop@{step}: every thread stays stopped: {states:?} ({err})"
        );
        let tracers = task_fields(t.pid, "TracerPid:");
        assert!(
            tracers.iter().all(|s| s == "0"),
            "{op} stop@{step}: {tracers:?}"
        );
        // Every thread's signal mask its own (the worker's was ours, all blocked, during a
        // clone) — but for the timer's signal, which its handler blocks while it runs.
        let timer_bit = 1u64 << (libc::SIGRTMIN() + 1 - 1);
        let masks_after = masks(t.pid);
        for (tid, mask) in &masks_before {
            if let Some(after) = masks_after.get(tid) {
                let bits = |m: &str| u64::from_str_radix(m, 16).unwrap() & !timer_bit;
                assert_eq!(
                    bits(after),
                    bits(mask),
                    "{op} stop@{step}: thread {tid}'s signal mask: {after}, was {mask}"
                );
            }
        }
        // SAFETY: kill with a valid signal.
        assert_eq!(unsafe { libc::kill(t.pid, libc::SIGCONT) }, 0);
        assert_free(t.pid);
        let injected = timeskew::status(t.pid).unwrap().injected;
        if !injected {
            assert_eq!(vdso(t.pid), before, "{op} stop@{step}: the vDSO as before");
        }
        assert_eq!(t.stats()["bad"], 0, "{op} stop@{step}");
        assert!(t.alive(), "{op} stop@{step}: the target died ({err})");
        if injected {
            recover(t.pid).unwrap();
            assert_eq!(vdso(t.pid), before, "{op} stop@{step}");
        }
    }
    // Recover failing half-way: each entry is left whole (restored, or still our jump), never
    // a breakpoint; a plain recover then finishes.
    for step in ["recover-armed", "recover-tails"] {
        let mut t = Target::start(&["-s", "4", "-t"]);
        let before = vdso(t.pid);
        inject(t.pid, &skew()).unwrap();
        let o = Command::new(bin)
            .args(["recover", "--pid", &t.pid.to_string()])
            .env("TIMESKEW_FAULT", step)
            .env("TIMESKEW_LIVE", "1")
            .output()
            .unwrap();
        assert!(!o.status.success(), "{step}");
        assert!(t.alive(), "{step}");
        recover(t.pid).unwrap();
        assert_eq!(vdso(t.pid), before, "{step}");
        assert_eq!(t.stats()["bad"], 0, "{step}");
        assert_free(t.pid);
    }
    // The target killed with the breakpoints in place.
    let mut t = Target::start(&["-s", "2"]);
    let o = Command::new(bin)
        .args(["inject", "--pid", &t.pid.to_string(), "--offset", "-600s"])
        .env("TIMESKEW_FAULT", "kill@live-armed")
        .env("TIMESKEW_LIVE", "1")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("exited"));
    // Its exit reaches us once every traced thread's has reached the tracer, which may be a
    // moment after timeskew is gone: wait for the status (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while t.alive() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!t.alive(), "the killed target is still running");
}

/// How many mappings `pid` has.
fn mappings(pid: i32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .count()
}

/// After a live attempt that fell back: `pid` injected, with one code page and one data page
/// more than the `before` mappings — those of the live attempt unmapped, or kept and reused,
/// never a second pair beside them — and nothing left traced.
fn assert_injected_with_one_pair_of_pages(pid: i32, before: usize) {
    assert!(timeskew::status(pid).unwrap().injected);
    assert!(mappings(pid) <= before + 2, "{before} → {}", mappings(pid));
    assert_free(pid);
}

/// The command `args` on `pid` with failure point `fault`, the live path asked for, debug
/// logging on: its output and its log, once it succeeded.
fn run_with_fault(pid: i32, args: &[&str], fault: &str) -> (String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_timeskew"))
        .args(args)
        .args(["--pid", &pid.to_string(), "--json"])
        .env("TIMESKEW_FAULT", fault)
        .env("TIMESKEW_LIVE", "1")
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    );
    assert!(o.status.success(), "{out}{err}");
    (out, err)
}

/// The first look at every thread runs while the registration helper waits out its grace
/// period, after the pages are mapped. When that look finds the live path cannot run (a thread
/// appearing with SIGTRAP blocked, threads appearing faster than they can be traced — here a
/// failure point), what was done is undone first and every thread is stopped instead: the
/// injection succeeds, says why, and leaves one pair of pages, not two.
#[test]
fn a_first_look_that_falls_back_after_the_pages_are_mapped_undoes_them_first() {
    let _s = serial();
    let mut t = Target::start(&["-s", "2", "-i", "2", "-t"]);
    let before = mappings(t.pid);
    let (out, _) = run_with_fault(
        t.pid,
        &["inject", "--offset", "-600s"],
        "first-look-fallback",
    );
    assert!(
        out.contains("a failure point asked for the fallback"),
        "{out}"
    );
    assert_injected_with_one_pair_of_pages(t.pid, before);
    recover(t.pid).unwrap();
    let st = t.stats();
    assert_eq!(st["bad"], 0, "{st:?}");
    assert!(t.alive());
    assert_free(t.pid);
}

/// A kernel without the core-serializing membarrier (simulated: the failure point makes both
/// the registration helper's status and the worker's check read EINVAL). A first injection no
/// longer checks before mapping its pages — the helper's exit status tells — so it learns it
/// after them: the pages are undone, every thread is stopped instead, and the report says why,
/// with one pair of pages left. A recover asks first, as before, and falls back before
/// anything is written.
#[test]
fn a_kernel_without_the_core_serializing_barrier_is_found_by_the_helper_and_the_change_falls_back()
{
    let _s = serial();
    let mut t = Target::start(&["-s", "2", "-i", "2"]);
    let before = mappings(t.pid);
    let run = |args: &[&str]| run_with_fault(t.pid, args, "membarrier-unoffered");
    let (out, err) = run(&["inject", "--offset", "-600s"]);
    assert!(
        out.contains("offers no core-serializing membarrier") && out.contains("EINVAL"),
        "{out}"
    );
    // Learnt from the helper, after the pages were mapped: the worker made no check before.
    let mapped = err.find("mmap in worker").expect("pages mapped first");
    let cloned = err.find("clone in worker").expect("the helper was made");
    let checked = err
        .find("membarrier in worker")
        .expect("the check made after the helper");
    assert!(mapped < cloned && cloned < checked, "{err}");
    assert_injected_with_one_pair_of_pages(t.pid, before);
    let (out, err) = run(&["recover"]);
    assert!(out.contains("\"restored\":3"), "{out}");
    // Asked first: nothing written in the live attempt, no helper made.
    assert!(!err.contains("clone in worker"), "{err}");
    assert!(!timeskew::status(t.pid).unwrap().injected);
    assert_free(t.pid);
    let st = t.stats();
    assert_eq!(st["bad"], 0, "{st:?}");
    assert!(t.alive());
}

/// A thread interrupted inside a window by a signal whose handler then blocks for good
/// (tests/targets/live/handler.c): the live path reads it from `/proc` without stopping it,
/// finds the interrupted address in the signal frame on its stack, and refuses — nothing
/// mapped, nothing traced, the handler still waiting. The all-stop fallback refuses the same.
#[test]
fn a_handler_blocked_on_top_of_a_window_is_seen_and_the_injection_refuses() {
    use nix::sys::ptrace;
    use nix::sys::signal::{Signal, kill};
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    use nix::unistd::Pid;

    let _serial = serial();
    let mut child = Command::new(live_target("handler"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(child.id() as i32);
    struct Reap(Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let reap = Reap(child);
    let ready = lines.next().unwrap().unwrap();
    let entry = ready
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("entry=0x"))
        .map(|h| u64::from_str_radix(h, 16).unwrap())
        .unwrap_or_else(|| panic!("{ready}"));

    // Single-step the clock-reading loop until it sits strictly inside the entry's first five
    // bytes: inside any window a jump to the fake is written over.
    ptrace::seize(pid, ptrace::Options::empty()).unwrap();
    ptrace::interrupt(pid).unwrap();
    waitpid(pid, Some(WaitPidFlag::__WALL)).unwrap();
    let mut at = 0;
    for _ in 0..1_000_000 {
        at = ptrace::getregs(pid).unwrap().rip;
        if at > entry && at < entry + 5 {
            break;
        }
        ptrace::step(pid, None).unwrap();
        waitpid(pid, Some(WaitPidFlag::__WALL)).unwrap();
    }
    assert!(at > entry && at < entry + 5, "never inside: at {at:#x}");
    kill(pid, Signal::SIGUSR1).unwrap();
    ptrace::cont(pid, None).unwrap();
    let stop = waitpid(pid, Some(WaitPidFlag::__WALL)).unwrap();
    assert!(
        matches!(stop, WaitStatus::Stopped(_, Signal::SIGUSR1)),
        "{stop:?}"
    );
    ptrace::detach(pid, Some(Signal::SIGUSR1)).unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "handler");
    let syscall = || {
        let path = format!("/proc/{pid}/syscall");
        std::fs::read_to_string(path).unwrap_or_default()
    };
    let pausing = format!("{} ", libc::SYS_pause);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !syscall().starts_with(&pausing) {
        assert!(
            std::time::Instant::now() < deadline,
            "never paused: {}",
            syscall()
        );
        std::thread::sleep(Duration::from_millis(1));
    }

    let maps = || std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let before = maps();
    for live in ["1", "0"] {
        // SAFETY: under the lock every test of this file takes; put back to "1" below.
        unsafe { std::env::set_var("TIMESKEW_LIVE", live) };
        let e = inject(pid.as_raw(), &skew());
        // SAFETY: as above.
        unsafe { std::env::set_var("TIMESKEW_LIVE", "1") };
        let e = e.expect_err("a window in use must refuse").to_string();
        assert!(
            e.contains("signal handler that is still running") && e.contains(&format!("{at:#x}")),
            "TIMESKEW_LIVE={live}: {e}"
        );
        assert_eq!(
            maps(),
            before,
            "TIMESKEW_LIVE={live}: something left mapped"
        );
        assert!(syscall().starts_with(&pausing), "{}", syscall());
        assert_free(pid.as_raw());
    }
    drop(reap);
}
