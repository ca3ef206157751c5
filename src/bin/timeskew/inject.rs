//! `timeskew inject`: once, for a `--duration` (waiting, then recovering; Ctrl-C or SIGTERM
//! recovers at once), or in rounds `--every` period. The deadline itself lives in each target,
//! so the skew ends on time even if this process is killed.

use std::io::Write;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use serde::Serialize;
use timeskew::InjectReport;
use timeskew::follow::FollowerUpdate;

use crate::args::{InjectArgs, TargetArgs};
use crate::backend::{Backend, Outcome, for_each, is_gone, resolve};
use crate::error::CliError;
use crate::output::{count, format_inject, format_recover, report, timer_warning};

/// Runs `timeskew inject` as its arguments say.
pub fn inject(
    args: &InjectArgs,
    backend: &impl Backend,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<(), CliError> {
    if args.follow {
        // Not through the backend: the follower is one long-lived helper, not one per change.
        return crate::follow::follow(args, out, err);
    }
    let skew = args.skew();
    let waits = args.duration.is_some() && !args.detach;
    // Termination signals become events to wait for, not a death half-way through a round.
    let signals = if waits { Some(Signals::block()?) } else { None };
    let rounds = match (args.every, args.count) {
        (None, _) => Some(1),
        (Some(_), count) => count,
    };
    let mut round = 0u64;
    // Over all rounds: injections that failed, out of all attempted.
    let (mut failed, mut attempted) = (0usize, 0usize);
    loop {
        let started = Instant::now();
        let pids = resolve(&args.targets)?;
        // A follow is one experiment: its follower takes the new fault too, for the processes it
        // follows and every newcomer (before any lock is taken: it takes them).
        let updates = backend.update_followers(&pids, &skew);
        let injected: Vec<Outcome<Injected>> = for_each(&pids, |pid| {
            backend.inject(pid, &skew).map(|report| Injected {
                report,
                follower: updates
                    .iter()
                    .find(|(p, _)| *p == pid)
                    .map(|(_, u)| u.clone()),
            })
        });
        let ok: Vec<i32> = injected
            .iter()
            .filter(|o| o.result.is_ok())
            .map(|o| o.pid)
            .collect();
        if round == 0 && !ok.is_empty() {
            // After the fact, so that a failed inject prints only its error.
            if let Some(warning) = timer_warning(&skew) {
                writeln!(err, "timeskew: warning: {warning}")?;
            }
        }
        let outcome = report(&args.targets, injected, format_injected, out, err);
        attempted += pids.len();
        failed += match &outcome {
            Err(CliError::Partial { failed, .. }) => *failed,
            Err(_) => 1,
            Ok(()) => 0,
        };
        let (Some(duration), Some(signals)) = (args.duration, &signals) else {
            return outcome;
        };
        if let Err(e) = &outcome
            && !matches!(e, CliError::Partial { .. })
            && ok.is_empty()
        {
            // Nothing was injected (one target that failed): nothing to wait for.
            return outcome;
        }
        // Others may change the targets while we wait (a `recover` from another shell).
        backend.release_locks();
        let interrupted = signals.wait(duration)?;
        recover_all(&args.targets, &ok, backend, out, err)?;
        backend.release_locks();
        if let Some(sig) = interrupted {
            return Err(CliError::Interrupted(sig));
        }
        round += 1;
        if rounds.is_some_and(|n| round >= n) {
            break;
        }
        let period = args.every.expect("rounds are unbounded only with --every");
        if let Some(sig) = signals.wait(period.saturating_sub(started.elapsed()))? {
            return Err(CliError::Interrupted(sig));
        }
    }
    if failed > 0 {
        return Err(CliError::Partial {
            failed,
            total: attempted,
        });
    }
    Ok(())
}

/// What `inject` did to one target, and to the follow it belongs to.
#[derive(Serialize)]
struct Injected {
    #[serde(flatten)]
    report: InjectReport,
    /// The target is followed (`inject --follow`): what its follower did with the new fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    follower: Option<FollowerUpdate>,
}

/// The inject line, and what the target's follower did.
fn format_injected(i: &Injected) -> String {
    let line = format_inject(&i.report);
    let Some(u) = &i.follower else {
        return line;
    };
    let mut note = format!(
        "{line}; followed (tracer thread {}, pid {}): its follow takes this fault too, for {} it \
         follows and every process it skews from now on",
        u.follower.tracer,
        u.follower.pid,
        count(u.updated, "other process", "other processes")
    );
    for m in &u.failed {
        note.push_str(&format!(
            "; pid {} ({}) kept the old fault: {}",
            m.pid, m.program, m.reason
        ));
    }
    note
}

/// Recovers the targets this round injected; a target that has exited meanwhile (a zombie
/// included) is not an error (there is nothing left to undo). A followed target's follow ends
/// (a follow is one experiment).
fn recover_all(
    targets: &TargetArgs,
    pids: &[i32],
    backend: &impl Backend,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<(), CliError> {
    backend.end_followers(pids, None);
    let outcomes: Vec<Outcome<_>> = for_each(pids, |pid| backend.recover(pid))
        .into_iter()
        .filter(|o| !is_gone(o.pid, &o.result))
        .collect();
    if outcomes.is_empty() {
        return Ok(());
    }
    report(targets, outcomes, format_recover, out, err)
}

/// SIGINT, SIGTERM, SIGHUP and SIGQUIT, blocked and read from a signalfd while we wait.
pub struct Signals {
    fd: SignalFd,
    old: SigSet,
}

impl Signals {
    pub fn block() -> Result<Signals, CliError> {
        let set = timeskew::termination_signals();
        let old = set
            .thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)
            .map_err(|e| CliError::io("block termination signals", e.into()))?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC)
            .map_err(|e| CliError::io("create a signalfd", e.into()))?;
        Ok(Signals { fd, old })
    }

    /// Waits `timeout`, or until a termination signal arrives (returned).
    pub fn wait(&self, timeout: Duration) -> Result<Option<Signal>, CliError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            match poll(
                &mut fds,
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
            ) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => {
                    if let Ok(Some(info)) = self.fd.read_signal() {
                        let sig =
                            Signal::try_from(info.ssi_signo as i32).unwrap_or(Signal::SIGTERM);
                        return Ok(Some(sig));
                    }
                }
                Err(e) => return Err(CliError::io("wait for the deadline", e.into())),
            }
        }
    }
}

impl Signals {
    /// A termination signal that arrived (the descriptor polled readable), if any.
    pub fn take(&self) -> Result<Option<Signal>, CliError> {
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        if !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0) {
            return Ok(None);
        }
        match self.fd.read_signal() {
            Ok(Some(info)) => Ok(Some(
                Signal::try_from(info.ssi_signo as i32).unwrap_or(Signal::SIGTERM),
            )),
            Ok(None) => Ok(None),
            Err(e) => Err(CliError::io("read a signal", e.into())),
        }
    }
}

impl AsFd for Signals {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        let _ = self.old.thread_set_mask();
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use timeskew::{InjectReport, RecoverReport, Skew, Status};

    use super::*;
    use crate::error::error_report;
    use crate::testing::{Fake, inject_args};

    fn run_inject(backend: &Fake, args: &[&str]) -> (Result<(), CliError>, String, String) {
        let args = inject_args(args);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let result = inject(&args, backend, &mut out, &mut err);
        (
            result,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn inject_runs_with_the_parsed_skew() {
        let fake = Fake::default();
        let (result, out, err) = run_inject(&fake, &["inject", "--pid", "123", "--offset=-10m"]);
        result.unwrap();
        assert_eq!(*fake.calls.borrow(), ["inject 123 realtime -600s"]);
        assert_eq!(
            out,
            "pid 123: injected, realtime -600s (trampoline 0x7f1234567000, stopped 0.4 ms, 3 threads)\n"
        );
        assert_eq!(err, "", "no warning for realtime");
    }

    #[test]
    fn inject_warns_when_timers_are_affected() {
        let fake = Fake::default();
        let (result, out, err) = run_inject(
            &fake,
            &[
                "inject",
                "--pid",
                "5",
                "--offset",
                "+1h",
                "--clock",
                "realtime,monotonic",
                "--json",
            ],
        );
        result.unwrap();
        assert!(
            err.starts_with("timeskew: warning: skewing monotonic shifts absolute deadlines"),
            "{err}"
        );
        for needle in [
            "TIMER_ABSTIME",
            "timerfd",
            "pthread_cond_timedwait",
            "fire 3600s late",
            "relative sleeps",
        ] {
            assert!(err.contains(needle), "{needle}: {err}");
        }
        assert_eq!(err.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["status"]["pid"], 5);
    }

    #[test]
    fn failed_inject_prints_no_warning() {
        struct Gone;
        impl Backend for Gone {
            fn inject(&self, pid: i32, _: &Skew) -> timeskew::Result<InjectReport> {
                Err(timeskew::Error::NoSuchProcess { pid })
            }
            fn recover(&self, pid: i32) -> timeskew::Result<RecoverReport> {
                Err(timeskew::Error::NoSuchProcess { pid })
            }
            fn recover_slewed(&self, pid: i32, _: timeskew::SlewRate) -> timeskew::Result<Status> {
                Err(timeskew::Error::NoSuchProcess { pid })
            }
            fn status(&self, pid: i32) -> timeskew::Result<Status> {
                Err(timeskew::Error::NoSuchProcess { pid })
            }
        }
        let args = inject_args(&[
            "inject",
            "--pid",
            "3",
            "--offset",
            "1h",
            "--clock",
            "monotonic",
        ]);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let e = inject(&args, &Gone, &mut out, &mut err).unwrap_err();
        assert_eq!(error_report(&e, true), "timeskew: pid 3: no such process");
        assert!(out.is_empty() && err.is_empty());
    }

    /// Over several rounds the summary counts the failures out of every injection attempted
    /// (it said "2 of 2" for 2 failures out of 6).
    #[test]
    fn rounds_count_failures_out_of_all_attempts() {
        struct OneRefuses(Fake);
        impl Backend for OneRefuses {
            fn inject(&self, pid: i32, skew: &Skew) -> timeskew::Result<InjectReport> {
                if pid == 2 {
                    return Err(timeskew::Error::Unsupported {
                        pid,
                        reason: "test".into(),
                    });
                }
                self.0.inject(pid, skew)
            }
            fn recover(&self, pid: i32) -> timeskew::Result<RecoverReport> {
                self.0.recover(pid)
            }
            fn recover_slewed(&self, pid: i32, _: timeskew::SlewRate) -> timeskew::Result<Status> {
                Err(timeskew::Error::NoSuchProcess { pid })
            }
            fn status(&self, pid: i32) -> timeskew::Result<Status> {
                self.0.status(pid)
            }
        }
        let backend = OneRefuses(Fake {
            calls: RefCell::new(Vec::new()),
            injected: true,
        });
        let args = inject_args(&[
            "inject",
            "--pid",
            "1",
            "--pid",
            "2",
            "--pid",
            "3",
            "--offset",
            "1s",
            "--duration",
            "1ms",
            "--every",
            "2ms",
            "--count",
            "2",
        ]);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let e = inject(&args, &backend, &mut out, &mut err).unwrap_err();
        assert_eq!(e.to_string(), "2 of 6 targets failed (see above)");
    }
}
