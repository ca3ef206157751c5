//! Failure points for tests, set with `TIMESKEW_FAULT=<action>@<step>` (or just `<step>`):
//! - `<step>` / `fail@<step>`: the operation fails there, so tests prove every step is undone;
//! - `kill@<step>`: SIGKILL the target there (a target dying mid-way);
//! - `usr1@<step>`: send the target SIGUSR1 while it is held (the signal must not be lost);
//! - `cont@<step>`: send the target SIGCONT there (a job continued while timeskew handles its
//!   stop);
//! - `stop@<step>`: send the target SIGSTOP there (job control stopping it mid-change);
//! - `sigint-self@<step>`: Ctrl-C the tool itself there (the target must not be left half-done).
//!
//! Compiled only with the `fault-injection` feature, which the test builds turn on (the crate
//! is its own dev-dependency with that feature); in any other build a point is an empty inline
//! function and the release binary ignores the variable.

#[cfg(feature = "fault-injection")]
use nix::sys::signal::{Signal, kill, raise};
#[cfg(feature = "fault-injection")]
use nix::unistd::Pid;

#[cfg(feature = "fault-injection")]
use crate::error::Error;
use crate::error::Result;

/// Without the `fault-injection` feature: nothing.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn point(_pid: i32, _step: &'static str) -> Result<()> {
    Ok(())
}

#[cfg(feature = "fault-injection")]
pub(crate) fn point(pid: i32, step: &'static str) -> Result<()> {
    let Some(spec) = std::env::var_os("TIMESKEW_FAULT") else {
        return Ok(());
    };
    let spec = spec.to_string_lossy();
    let (action, at) = spec.split_once('@').unwrap_or(("fail", &spec));
    if at != step {
        return Ok(());
    }
    log::warn!("TIMESKEW_FAULT: {action} at step {step} (pid {pid})");
    let target = Pid::from_raw(pid);
    match action {
        "fail" => return Err(Error::InjectedFault { step }),
        "kill" => {
            let _ = kill(target, Signal::SIGKILL);
            wait_until_dead(pid);
        }
        "usr1" => {
            let _ = kill(target, Signal::SIGUSR1);
        }
        "cont" => {
            let _ = kill(target, Signal::SIGCONT);
        }
        "stop" => {
            let _ = kill(target, Signal::SIGSTOP);
        }
        "sigint-self" => {
            // The command line makes changes in a helper process; Ctrl-C reaches the command
            // (named by the helper in TIMESKEW_TOOL_PID), not the helper.
            match std::env::var("TIMESKEW_TOOL_PID")
                .ok()
                .and_then(|p| p.parse().ok())
            {
                Some(tool) => {
                    let _ = kill(Pid::from_raw(tool), Signal::SIGINT);
                }
                None => {
                    let _ = raise(Signal::SIGINT);
                }
            }
        }
        other => log::warn!("TIMESKEW_FAULT: unknown action {other:?}"),
    }
    Ok(())
}

/// SIGKILL is asynchronous: wait until the kernel has torn the threads down (the process is a
/// zombie or gone), so the next step sees it dead.
#[cfg(feature = "fault-injection")]
fn wait_until_dead(pid: i32) {
    for _ in 0..5000 {
        match crate::target::procfs::task_info(pid, None) {
            Ok(info) if info.state != 'Z' && info.state != 'X' => std::thread::yield_now(),
            _ => return,
        }
    }
}
