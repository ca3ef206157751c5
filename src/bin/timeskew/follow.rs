//! `timeskew inject --follow`: the experiment is run by a helper process (see `isolate.rs`) in
//! a session of its own: it injects, traces and recovers ([`timeskew::follow`]); this command
//! prints what it reports and tells it when to end.
//!
//! The helper holds the followed processes for the whole experiment and injects each program
//! they exec while it is stopped: were the command killed in the middle of such a change, the
//! program would run on with registers of ours. So the command never traces anything itself.
//! Ctrl-C or SIGTERM to the command ends the experiment (the helper recovers everything, then
//! reports). If the command is killed outright (SIGKILL), the helper sees its end of the pipe
//! close and does the same; if the helper itself is killed, the kernel detaches every followed
//! process and the deadline stored in each ends the fault on time.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork, pipe};
use serde::{Deserialize, Serialize};
use timeskew::follow::{FollowEnd, FollowReport, Latencies, Missed};
use timeskew::{InjectReport, Skew};

use crate::args::InjectArgs;
use crate::backend::Outcome;
use crate::error::CliError;
use crate::inject::Signals;
use crate::isolate::{Answer, become_helper, single_threaded};
use crate::output::{format_inject, report, timer_warning};

/// What the helper tells the command, a JSON line each.
#[derive(Serialize, Deserialize)]
enum Message {
    Started(Vec<(i32, Answer<InjectReport>)>),
    Finished(Box<Answer<FollowReport>>),
}

/// Runs `inject --follow`.
pub fn follow(
    args: &InjectArgs,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<(), CliError> {
    let skew = args.skew();
    let signals = Signals::block()?;
    let deadline = args.duration.map(|d| Instant::now() + d);
    let helper_error = |what: &str, e: nix::Error| {
        CliError::from(timeskew::Error::Helper {
            pid: 0,
            message: format!("cannot start the follower: {what}: {e}"),
        })
    };
    if !single_threaded() {
        // fork() would copy one thread of several: not safe to go on in the child.
        return Err(CliError::from(timeskew::Error::Helper {
            pid: 0,
            message: "cannot start the follower: timeskew has several threads".into(),
        }));
    }
    let (stop_read, stop_write) = pipe().map_err(|e| helper_error("pipe", e))?;
    let (report_read, report_write) = pipe().map_err(|e| helper_error("pipe", e))?;
    let tool = std::process::id();
    // SAFETY: the process is single-threaded (checked above), so the child may run any code.
    let child = match unsafe { fork() } {
        Err(e) => return Err(helper_error("fork", e)),
        Ok(ForkResult::Child) => {
            drop(stop_write);
            drop(report_read);
            run_helper(tool, args, &skew, deadline, stop_read, report_write)
        }
        Ok(ForkResult::Parent { child }) => child,
    };
    drop(stop_read);
    drop(report_write);
    log::debug!("follower helper is pid {child}");
    let result = watch(args, &skew, &signals, stop_write, report_read, out, err);
    let _ = waitpid(child, None);
    result
}

/// The helper: follows, reports, exits. Never returns.
fn run_helper(
    tool: u32,
    args: &InjectArgs,
    skew: &Skew,
    deadline: Option<Instant>,
    stop: OwnedFd,
    report: OwnedFd,
) -> ! {
    become_helper(tool);
    let mut to_command = std::fs::File::from(report);
    let mut send = |message: &Message| {
        if let Ok(mut line) = serde_json::to_vec(message) {
            line.push(b'\n');
            // The command may be gone: the experiment goes on to its end all the same.
            let _ = to_command.write_all(&line);
        }
    };
    let selection = args.targets.selection();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        timeskew::follow(
            &selection,
            skew,
            FollowEnd {
                deadline,
                stop: Some(stop.as_fd()),
            },
            |started| {
                let started = started
                    .into_iter()
                    .map(|(pid, r)| (pid, Answer::from(r)))
                    .collect();
                send(&Message::Started(started));
            },
        )
    }));
    let answer = match result {
        Ok(result) => Answer::from(result),
        Err(_) => Answer::Failed {
            message: "the follower panicked".into(),
        },
    };
    send(&Message::Finished(Box::new(answer)));
    // SAFETY: _exit ends the process at once; nothing of the parent's state is flushed twice.
    unsafe { libc::_exit(0) }
}

/// The command's side: prints the first injections, waits, passes on an end request, prints
/// the summary.
fn watch(
    args: &InjectArgs,
    skew: &Skew,
    signals: &Signals,
    stop: OwnedFd,
    from_helper: OwnedFd,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<(), CliError> {
    let mut stop = Some(stop);
    let mut interrupted = None;
    let mut lines = BufReader::new(std::fs::File::from(from_helper));
    let mut started_outcome: Result<(), CliError> = Ok(());
    let mut started_json = serde_json::Value::Null;
    loop {
        let mut fds = [
            PollFd::new(lines.get_ref().as_fd(), PollFlags::POLLIN),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                return Err(CliError::from(timeskew::Error::Helper {
                    pid: 0,
                    message: format!("cannot wait for the follower: {e}"),
                }));
            }
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty())
            && let Some(sig) = signals.take()?
        {
            // The helper recovers everything, then reports: wait for it.
            interrupted = Some(sig);
            if let Some(stop) = stop.take() {
                let _ = nix::unistd::write(&stop, b"e");
            }
        }
        if fds[0].revents().is_none_or(|r| r.is_empty()) {
            continue;
        }
        let mut line = String::new();
        let read = lines.read_line(&mut line).unwrap_or(0);
        if read == 0 {
            return Err(CliError::from(timeskew::Error::Helper {
                pid: 0,
                message: "the follower ended without a report; check the selection with \
                          `timeskew status`"
                    .into(),
            }));
        }
        match serde_json::from_str::<Message>(&line) {
            Ok(Message::Started(started)) => {
                let outcomes: Vec<Outcome<InjectReport>> = started
                    .into_iter()
                    .map(|(pid, answer)| Outcome {
                        pid,
                        result: answer.into_result(pid),
                    })
                    .collect();
                let any_ok = outcomes.iter().any(|o| o.result.is_ok());
                if any_ok && let Some(warning) = timer_warning(skew) {
                    writeln!(err, "timeskew: warning: {warning}")?;
                }
                if args.targets.json {
                    let mut buffer = Vec::new();
                    started_outcome =
                        report(&args.targets, outcomes, format_inject, &mut buffer, err);
                    started_json = serde_json::from_slice(&buffer).unwrap_or_default();
                } else {
                    started_outcome = report(&args.targets, outcomes, format_inject, out, err);
                    writeln!(out, "{}", following_line(args))?;
                    out.flush()?;
                }
            }
            Ok(Message::Finished(answer)) => {
                let report = (*answer).into_result(0).map_err(CliError::from)?;
                if args.targets.json {
                    let value = serde_json::json!({ "started": started_json, "follow": report });
                    writeln!(out, "{value}")?;
                } else {
                    write_summary(&report, out)?;
                }
                if let Some(sig) = interrupted
                    && args.duration.is_some()
                {
                    return Err(CliError::Interrupted(sig));
                }
                return started_outcome;
            }
            Err(e) => log::warn!("unreadable message from the follower ({e}): {line}"),
        }
    }
}

fn following_line(args: &InjectArgs) -> String {
    let until = match args.duration {
        Some(d) => format!("for {}", show(d)),
        None => "until Ctrl-C, SIGTERM or `timeskew recover`".to_string(),
    };
    format!(
        "following the selection {until}: every program exec'd, child forked and process joining gets the same fault"
    )
}

fn show(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.3} s", d.as_secs_f64())
    }
}

fn latencies(l: &Latencies) -> String {
    if l.count == 0 {
        return "none".into();
    }
    format!(
        "{} (median {:.0} µs, p90 {:.0} µs, p99 {:.0} µs, max {:.0} µs)",
        l.count, l.median_us, l.p90_us, l.p99_us, l.max_us
    )
}

fn write_summary(r: &FollowReport, out: &mut impl Write) -> std::io::Result<()> {
    let why = match r.ended_by {
        timeskew::follow::EndReason::Deadline => "the deadline",
        timeskew::follow::EndReason::Stopped => "a stop request",
        timeskew::follow::EndReason::RecoverRequested => "a recover from another timeskew",
        timeskew::follow::EndReason::SlewBackRequested => {
            "a recover --slew from another timeskew (the processes slew back to real time)"
        }
        timeskew::follow::EndReason::SelectionGone => "nothing left to follow",
        timeskew::follow::EndReason::Failed => "a failure of the follower (see the log)",
    };
    writeln!(
        out,
        "follow ended by {why} (newcomers seen through {})",
        r.watched_with
    )?;
    writeln!(
        out,
        "  processes followed: {} ({} forked, {} joined from outside)",
        r.followed, r.forked, r.joined
    )?;
    writeln!(
        out,
        "  programs exec'd: {}, skewed before their first instruction: {}",
        r.execs,
        latencies(&r.exec_to_skew)
    )?;
    if r.join_to_skew.count > 0 {
        writeln!(
            out,
            "  joined after their exec, skewed: {}",
            latencies(&r.join_to_skew)
        )?;
    }
    if r.exited_first > 0 {
        writeln!(
            out,
            "  exited before they could be skewed: {}",
            r.exited_first
        )?;
    }
    if r.fault_changes > 0 {
        writeln!(
            out,
            "  fault changed by another timeskew inject: {} time(s)",
            r.fault_changes
        )?;
    }
    let list = |out: &mut dyn Write, what: &str, list: &[Missed]| -> std::io::Result<()> {
        for m in list {
            writeln!(out, "  {what}: pid {} ({}): {}", m.pid, m.program, m.reason)?;
        }
        Ok(())
    };
    list(out, "missed", &r.missed)?;
    writeln!(out, "  recovered: {}", r.recovered)?;
    list(out, "real time, hooks left in place", &r.hooks_left)?;
    list(out, "recovery failed", &r.recover_failed)
}
