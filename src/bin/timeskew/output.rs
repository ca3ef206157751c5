//! The human and `--json` forms of the reports, written to a `Write`; for a selection of
//! targets, one line or object per target and a summary.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::time::Duration;

use serde::Serialize;
use timeskew::{
    ClockOffset, ClockSet, InjectAction, InjectReport, Offset, RecoverReport, Skew, Status,
};

use crate::args::TargetArgs;
use crate::backend::{Outcome, is_gone};
use crate::error::CliError;

/// Prints the outcomes: for a single `--pid` exactly as before (one line or one JSON object,
/// an error fails the command); for a selection, one line per target plus a summary, or one
/// JSON object `{"targets": [...], "succeeded": n, "failed": m, "gone": g}`; any failure makes
/// the exit status 1. A process found through `--tree`/`--cgroup` that exited before we reached
/// it (or became a zombie, not yet reaped by its parent) is "gone", not a failure: there is
/// nothing left to skew or undo in it.
pub fn report<T: Serialize>(
    args: &TargetArgs,
    mut outcomes: Vec<Outcome<T>>,
    human: fn(&T) -> String,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<(), CliError> {
    if outcomes.len() == 1 && args.is_single() {
        return match outcomes.remove(0).result {
            Ok(v) => emit(out, args.json, &v, human),
            Err(e) => Err(CliError::Timeskew(e)),
        };
    }
    let gone = |o: &Outcome<T>| !args.pids.contains(&o.pid) && is_gone(o.pid, &o.result);
    let gone_count = outcomes.iter().filter(|o| gone(o)).count();
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count() - gone_count;
    let succeeded = outcomes.len() - failed - gone_count;
    if args.json {
        let targets: Vec<serde_json::Value> = outcomes
            .iter()
            .map(|o| match &o.result {
                Ok(v) => serde_json::json!({"pid": o.pid, "ok": true, "report": v}),
                Err(e) => serde_json::json!({
                    "pid": o.pid, "ok": false, "gone": gone(o), "error": e.to_string()
                }),
            })
            .collect();
        let summary = serde_json::json!({
            "targets": targets,
            "succeeded": succeeded,
            "failed": failed,
            "gone": gone_count,
        });
        serde_json::to_writer(&mut *out, &summary).map_err(io::Error::from)?;
        writeln!(out)?;
    } else {
        for o in &outcomes {
            match &o.result {
                Ok(v) => writeln!(out, "{}", human(v))?,
                Err(_) if gone(o) => writeln!(out, "pid {}: exited meanwhile, skipped", o.pid)?,
                Err(e) => writeln!(err, "timeskew: {e}")?,
            }
        }
        let mut summary = format!("{succeeded} of {} targets succeeded", outcomes.len());
        if gone_count > 0 {
            let _ = write!(summary, ", {gone_count} exited meanwhile");
        }
        writeln!(out, "{summary}")?;
    }
    out.flush()?;
    if failed > 0 {
        return Err(CliError::Partial {
            failed,
            total: outcomes.len(),
        });
    }
    Ok(())
}

/// Writes `value` as one line of JSON, or as `human` text.
fn emit<T: Serialize>(
    out: &mut impl Write,
    json: bool,
    value: &T,
    human: fn(&T) -> String,
) -> Result<(), CliError> {
    if json {
        serde_json::to_writer(&mut *out, value).map_err(io::Error::from)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{}", human(value))?;
    }
    out.flush()?;
    Ok(())
}

/// The warning for a skew that moves absolute timers, or `None`.
pub fn timer_warning(skew: &Skew) -> Option<String> {
    let offset = skew.offset();
    let clocks: ClockSet = skew
        .clocks()
        .iter()
        .filter(|c| c.affects_timers())
        .collect();
    if clocks.is_empty() || offset.is_zero() {
        return None;
    }
    let effect = if offset.as_nanos() > 0 {
        format!("fire {offset} late")
    } else {
        let magnitude = Offset::from_nanos(offset.as_nanos().saturating_neg());
        format!("fire up to {magnitude} early (at once if the wait is shorter than that)")
    };
    Some(format!(
        "skewing {clocks} shifts absolute deadlines: a deadline the process computes from the \
         skewed clock and hands to the kernel (clock_nanosleep with TIMER_ABSTIME, timerfd with \
         TFD_TIMER_ABSTIME, pthread_cond_timedwait with CLOCK_MONOTONIC) will {effect}, because \
         the kernel measures it on the real clock; relative sleeps and timeouts (nanosleep, poll, \
         epoll_wait) are unaffected"
    ))
}

/// An offset with an explicit sign: `+3600s`, `-600s`, `0s`.
pub fn signed(offset: Offset) -> String {
    if offset.as_nanos() > 0 {
        format!("+{offset}")
    } else {
        offset.to_string()
    }
}

/// `realtime,monotonic +3600s` — clocks with equal offsets grouped, in report order.
pub fn format_clocks(clocks: &[ClockOffset]) -> String {
    let mut groups: Vec<(Offset, ClockSet)> = Vec::new();
    for c in clocks {
        match groups.iter_mut().find(|(offset, _)| *offset == c.offset) {
            Some((_, set)) => {
                set.insert(c.clock);
            }
            None => groups.push((c.offset, ClockSet::from(c.clock))),
        }
    }
    if groups.is_empty() {
        return "no clock skewed".into();
    }
    let parts: Vec<String> = groups
        .iter()
        .map(|(offset, set)| format!("{set} {}", signed(*offset)))
        .collect();
    parts.join(", ")
}

/// `0.4 ms`, `45 µs`.
pub fn format_duration(d: Duration) -> String {
    let micros = d.as_micros();
    if micros < 100 {
        format!("{micros} µs")
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    }
}

/// `1 thread`, `3 threads`.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// How the process was held: one thread at a time (`one thread at a time: 2 of 7 threads
/// stopped, longest 42 µs`), or all at once and why (`stopped 0.4 ms, 3 threads, all at once:
/// …`).
fn hold_details(
    live: Option<&timeskew::LiveStats>,
    all_stop_reason: Option<&str>,
    stopped_for: Duration,
    threads: usize,
) -> Vec<String> {
    if let Some(l) = live {
        return vec![format!(
            "one thread at a time: {} of {} stopped, longest {} µs",
            l.threads_stopped,
            count(l.threads, "thread", "threads"),
            l.longest_stop_us
        )];
    }
    let mut d = vec![
        format!("stopped {}", format_duration(stopped_for)),
        count(threads, "thread", "threads"),
    ];
    if let Some(why) = all_stop_reason {
        d.push(format!("all at once: {why}"));
    }
    d
}

/// `pid 123: injected, realtime -600s (trampoline 0x7f…, stopped 0.4 ms, 3 threads)`
pub fn format_inject(r: &InjectReport) -> String {
    let verb = match r.action {
        InjectAction::Injected => "injected",
        InjectAction::Updated => "updated",
        InjectAction::Repatched => "injected again",
    };
    let mut details = Vec::new();
    if let Some(addr) = r.status.trampoline {
        details.push(format!("trampoline {addr:#x}"));
    }
    match r.action {
        InjectAction::Updated => details.push("live update, not stopped".into()),
        _ => details.extend(hold_details(
            r.live.as_ref(),
            r.all_stop_reason.as_deref(),
            r.stopped_for,
            r.threads,
        )),
    }
    if r.action == InjectAction::Repatched {
        details.push("reused pages of an earlier injection".into());
    }
    if let Some(d) = r.status.expires_in {
        details.push(format!("ends by itself in {:.1} s", d.as_secs_f64()));
    }
    format!(
        "pid {}: {verb}, {} ({})",
        r.status.pid,
        format_clocks(&r.status.clocks),
        details.join(", ")
    )
}

/// `pid 123: recovered, restored 3 vDSO entries` or `pid 123: not injected, nothing to do`
pub fn format_recover(r: &RecoverReport) -> String {
    if !r.was_injected {
        return format!("pid {}: not injected, nothing to do", r.pid);
    }
    if let Some(why) = &r.hooks_left {
        return format!(
            "pid {}: real time again, but its hooks are left in place, passing it through: {why}",
            r.pid
        );
    }
    let mut line = format!(
        "pid {}: recovered, restored {} ({})",
        r.pid,
        count(r.restored, "vDSO entry", "vDSO entries"),
        hold_details(
            r.live.as_ref(),
            r.all_stop_reason.as_deref(),
            r.stopped_for,
            r.threads
        )
        .join(", ")
    );
    if !r.skipped.is_empty() {
        let _ = write!(
            line,
            "; left {} alone because someone else has patched it since: {}",
            count(r.skipped.len(), "entry", "entries"),
            r.skipped.join(", ")
        );
    }
    line
}

/// `pid 123: injected, realtime -600s (trampoline 0x7f…, layout v1, generation 2)`
pub fn format_status(s: &Status) -> String {
    let mut details = Vec::new();
    if let Some(shape) = &s.shape {
        details.push(shape.describe());
    }
    if let Some(addr) = s.trampoline {
        details.push(format!("trampoline {addr:#x}"));
    }
    if let Some(version) = s.layout_version {
        details.push(format!("layout v{version}"));
    }
    if s.trampoline.is_some() {
        details.push(format!("generation {}", s.generation));
    }
    match s.expires_in {
        Some(d) if d.is_zero() => details.push("deadline passed: real time passes through".into()),
        Some(d) => details.push(format!("ends in {:.1} s", d.as_secs_f64())),
        None => {}
    }
    let details = if details.is_empty() {
        String::new()
    } else {
        format!(" ({})", details.join(", "))
    };
    if s.injected {
        format!(
            "pid {}: injected, {}{details}",
            s.pid,
            format_clocks(&s.clocks)
        )
    } else if s.trampoline.is_some() {
        format!(
            "pid {}: not injected; pages of an earlier injection remain and the next inject \
             reuses them{details}",
            s.pid
        )
    } else {
        format!("pid {}: not injected", s.pid)
    }
}

#[cfg(test)]
mod tests {
    use timeskew::Clock;

    use super::*;
    use crate::testing::{inject_report, secs, status};

    #[test]
    fn a_zombie_found_through_a_tree_is_gone_not_a_failure() {
        // Our own child, exited and not reaped yet: a zombie until the `wait` below.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        // Blocks until the child has exited, without reaping it: a zombie from here on, known
        // independently of the function under test.
        let flags = nix::sys::wait::WaitPidFlag::WEXITED | nix::sys::wait::WaitPidFlag::WNOWAIT;
        nix::sys::wait::waitid(
            nix::sys::wait::Id::Pid(nix::unistd::Pid::from_raw(pid)),
            flags,
        )
        .unwrap();
        let was_zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')));
        let refused = || -> timeskew::Result<RecoverReport> {
            Err(timeskew::Error::Unsupported {
                pid,
                reason: "it is a zombie (it has exited and waits to be reaped)".into(),
            })
        };
        let args = TargetArgs {
            pids: vec![1],
            tree: true,
            cgroups: vec![],
            containers: vec![],
            json: false,
        };
        let outcomes = vec![Outcome {
            pid,
            result: refused(),
        }];
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let reported = report(&args, outcomes, format_recover, &mut out, &mut err);
        let gone_while_zombie = is_gone(pid, &refused());
        child.wait().unwrap();
        assert!(was_zombie, "pid {pid} should have become a zombie");
        assert!(gone_while_zombie);
        assert!(reported.is_ok(), "{reported:?}");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "pid {pid}: exited meanwhile, skipped\n0 of 1 targets succeeded, 1 exited meanwhile\n"
            )
        );
        assert!(err.is_empty());
        // Reaped: gone as well; a live process that fails is not.
        assert!(is_gone(pid, &refused()));
        let me = std::process::id() as i32;
        assert!(!is_gone(me, &refused()));
        assert!(!is_gone(pid, &Ok(())));
    }

    #[test]
    fn selection_report_counts_failures_and_processes_that_exited() {
        let args = TargetArgs {
            pids: vec![1],
            tree: true,
            cgroups: vec![],
            containers: vec![],
            json: true,
        };
        let outcomes = vec![
            Outcome {
                pid: 1,
                result: Ok(status(1, &[(Clock::Realtime, secs(-600))])),
            },
            // Found through --tree, gone before we got there: not a failure.
            Outcome {
                pid: 2,
                result: Err(timeskew::Error::NoSuchProcess { pid: 2 }),
            },
            // A live process that cannot be skewed: a failure.
            Outcome {
                pid: std::process::id() as i32,
                result: Err(timeskew::Error::Unsupported {
                    pid: 3,
                    reason: "it is a 32-bit process".into(),
                }),
            },
        ];
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let e = report(&args, outcomes, format_status, &mut out, &mut err).unwrap_err();
        assert!(
            matches!(
                e,
                CliError::Partial {
                    failed: 1,
                    total: 3
                }
            ),
            "{e}"
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            (
                v["succeeded"].as_u64(),
                v["failed"].as_u64(),
                v["gone"].as_u64()
            ),
            (Some(1), Some(1), Some(1))
        );
        assert_eq!(v["targets"][1]["gone"], true);
        assert_eq!(v["targets"][2]["gone"], false);

        // A pid named with --pid that does not exist is a failure, not "gone".
        let args = TargetArgs {
            json: false,
            pids: vec![1, 2],
            ..args
        };
        let outcomes = vec![Outcome {
            pid: 2,
            result: Err::<Status, _>(timeskew::Error::NoSuchProcess { pid: 2 }),
        }];
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert!(report(&args, outcomes, format_status, &mut out, &mut err).is_err());
        assert!(String::from_utf8(err).unwrap().contains("no such process"));
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("0 of 1 targets succeeded")
        );
    }

    #[test]
    fn formats_inject_reports() {
        let r = inject_report(InjectAction::Injected, &[(Clock::Realtime, secs(-600))]);
        assert_eq!(
            format_inject(&r),
            "pid 123: injected, realtime -600s (trampoline 0x7f1234567000, stopped 0.4 ms, 3 threads)"
        );
        let r = inject_report(
            InjectAction::Updated,
            &[
                (Clock::Realtime, secs(3600)),
                (Clock::Monotonic, secs(3600)),
            ],
        );
        assert_eq!(
            format_inject(&r),
            "pid 123: updated, realtime,monotonic +3600s (trampoline 0x7f1234567000, live update, not stopped)"
        );
        let mut r = inject_report(
            InjectAction::Repatched,
            &[
                (Clock::Realtime, Offset::from_nanos(-1_500_000_000)),
                (Clock::Boottime, secs(5)),
            ],
        );
        r.threads = 1;
        r.stopped_for = Duration::from_micros(45);
        assert_eq!(
            format_inject(&r),
            "pid 123: injected again, realtime -1.5s, boottime +5s (trampoline 0x7f1234567000, \
             stopped 45 µs, 1 thread, reused pages of an earlier injection)"
        );
        let r = inject_report(InjectAction::Injected, &[]);
        assert!(format_inject(&r).contains("injected, no clock skewed"));
    }

    #[test]
    fn formats_recover_reports() {
        let mut r = RecoverReport {
            pid: 77,
            was_injected: false,
            restored: 0,
            skipped: vec![],
            stopped_for: Duration::ZERO,
            threads: 0,
            live: None,
            all_stop_reason: None,
            hooks_left: None,
        };
        assert_eq!(format_recover(&r), "pid 77: not injected, nothing to do");
        r.was_injected = true;
        r.restored = 3;
        r.threads = 2;
        r.stopped_for = Duration::from_micros(420);
        assert_eq!(
            format_recover(&r),
            "pid 77: recovered, restored 3 vDSO entries (stopped 0.4 ms, 2 threads)"
        );
        r.restored = 1;
        r.threads = 1;
        assert_eq!(
            format_recover(&r),
            "pid 77: recovered, restored 1 vDSO entry (stopped 0.4 ms, 1 thread)"
        );
        r.restored = 2;
        r.skipped = vec!["__vdso_time".into()];
        assert_eq!(
            format_recover(&r),
            "pid 77: recovered, restored 2 vDSO entries (stopped 0.4 ms, 1 thread); left 1 entry \
             alone because someone else has patched it since: __vdso_time"
        );
    }

    #[test]
    fn formats_status() {
        let mut s = status(
            9,
            &[(Clock::Realtime, secs(-600)), (Clock::Monotonic, secs(10))],
        );
        s.generation = 2;
        assert_eq!(
            format_status(&s),
            "pid 9: injected, realtime -600s, monotonic +10s (trampoline 0x7f1234567000, layout v1, generation 2)"
        );
        s.injected = false;
        s.clocks.clear();
        assert!(
            format_status(&s)
                .starts_with("pid 9: not injected; pages of an earlier injection remain")
        );
        let s = Status {
            pid: 9,
            injected: false,
            trampoline: None,
            layout_version: None,
            clocks: vec![],
            generation: 0,
            expires_in: None,
            shape: None,
        };
        assert_eq!(format_status(&s), "pid 9: not injected");
    }

    #[test]
    fn json_is_one_line_with_the_report_fields() {
        let r = inject_report(
            InjectAction::Injected,
            &[(Clock::MonotonicRaw, Offset::from_nanos(-1_500_000_000))],
        );
        let mut out = Vec::new();
        emit(&mut out, true, &r, format_inject).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.ends_with('\n') && text.matches('\n').count() == 1,
            "{text}"
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["action"], "injected");
        assert_eq!(v["stopped_for"], 400);
        assert_eq!(v["threads"], 3);
        assert_eq!(v["status"]["pid"], 123);
        assert_eq!(v["status"]["clocks"][0]["clock"], "monotonic-raw");
        assert_eq!(v["status"]["clocks"][0]["offset"], "-1.5s");
    }

    #[test]
    fn timer_warning_names_the_clocks_and_the_direction() {
        let skew = Skew::new(secs(-600)).with_clock(Clock::Boottime);
        let w = timer_warning(&skew).unwrap();
        assert!(w.contains("skewing boottime"), "{w}");
        assert!(w.contains("fire up to 600s early"), "{w}");
        assert_eq!(
            timer_warning(&Skew::new(Offset::ZERO).with_clock(Clock::Monotonic)),
            None
        );
        assert_eq!(
            timer_warning(&Skew::new(secs(1)).with_clock(Clock::Tai)),
            None
        );
    }
}
