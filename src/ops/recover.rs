//! `recover`: the original vDSO bytes back wherever our jump remains, the offsets zeroed.

use crate::arch::{Arch, Native};
use crate::error::{Error, Result};
use crate::fake_clock::data_page::{OFF_PATCHED, Params};
use crate::ops::follower::end_follower_of;
use crate::patch::live;
use crate::ptrace::StoppedProcess;
use crate::ptrace::live::Fallback;
use crate::report::{RecoverReport, Status};
use crate::signals::TerminationDeferred;
use crate::skew::SlewRate;
use crate::state::publish::write_slot;
use crate::state::{self, Existing};
use crate::target::{Target, procfs};

/// Puts the original vDSO code back and zeroes the offsets. The pages stay mapped: a thread
/// may be executing in them, or about to return through them, at any moment.
///
/// **A followed process** (one traced by a [`follow`](crate::follow()) — `timeskew inject
/// --follow` — here or in another process) cannot be stopped by anyone but its follower. So
/// `recover` first asks that follower to end its experiment
/// ([`end_follower_of`](crate::follow::end_follower_of)): the follower recovers every process
/// it touched (not only `pid`: the follow is one experiment) and lets them go, then `recover`
/// finds `pid` clean and reports `was_injected: false`. Do not hold
/// `pid`'s [`TargetLock`](crate::TargetLock) meanwhile: the follower needs it, and `recover`
/// gives up waiting for the follower after a minute.
///
/// ```no_run
/// # fn main() -> timeskew::Result<()> {
/// // A process some `timeskew inject --follow` (or a `timeskew::follow` thread) follows:
/// // its whole follow ends, and every process it touched reads real time again.
/// timeskew::recover(1234)?;
/// assert!(!timeskew::status(1234)?.injected);
/// # Ok(())
/// # }
/// ```
pub fn recover(pid: i32) -> Result<RecoverReport> {
    end_follower_of(pid, None)?;
    recover_here(pid)
}

/// [`recover`] without asking a follower: what a follower does itself at its end (asking would
/// end *another* follower tracing a process of an overlapping selection).
pub(crate) fn recover_here(pid: i32) -> Result<RecoverReport> {
    let _lock = Target::lock(pid)?;
    let target = Target::open(pid)?;
    let not_injected = RecoverReport::nothing(pid);
    let found = match state::find(&target)? {
        Some(existing) if existing.hooks_live || any_jump_left(&target, &existing) => existing,
        _ => return Ok(not_injected),
    };
    // Code is written from here on: not into memory another process shares. There real time
    // is published instead, which every process sharing the memory reads from then on; the
    // hooks stay, passing it through, until a recover finds the process alone.
    if let Some(sharer) = target.memory_sharer()? {
        write_slot(
            &target.mem,
            found.data_addr(),
            found.data.generation,
            &Params::default(),
        )?;
        return Ok(RecoverReport {
            was_injected: true,
            hooks_left: Some(format!(
                "{sharer}; recover again once that process has gone"
            )),
            ..not_injected
        });
    }
    // Job control holds the process stopped (a pause nemesis, a debugger's SIGSTOP): taking
    // our code out needs its threads to run for a moment (a barrier, a thread moved out of a
    // window), which is not ours to do to a stopped process. Real time is published instead,
    // as a live update would (the data page only); the hooks stay, passing it through, until a
    // recover after it resumes. The same if job control stops it while the code is taken out
    // (that is undone first).
    if procfs::job_control_stopped(pid) {
        return real_time_with_hooks_left(pid, None);
    }
    let _deferred = TerminationDeferred::new();
    // One thread at a time (patch/live.rs); where that cannot run, every thread at once.
    let mut reason = None;
    if live::requested() {
        match live::recover(&target, &found) {
            Ok(Ok(report)) => return Ok(report),
            Ok(Err(Fallback(why))) => {
                log::info!("pid {pid}: stopping every thread at once: {why}");
                reason = Some(why);
            }
            Err(e @ Error::StoppedByJobControl { .. }) => {
                return real_time_with_hooks_left(pid, Some(e));
            }
            Err(e) => return Err(e),
        }
    }
    let mut held = match StoppedProcess::stop(pid) {
        Err(e @ Error::StoppedByJobControl { .. }) => {
            return real_time_with_hooks_left(pid, Some(e));
        }
        held => held?,
    };
    let started = held.held_since();
    // Look again now that nothing moves.
    let target = Target::open(pid)?;
    let Some(existing) = state::find(&target)? else {
        return Ok(not_injected);
    };
    let tid = held.worker().ok_or(Error::ProcessGone {
        pid,
        step: "pick a stopped thread",
    })?;
    let mut report = RecoverReport {
        was_injected: true,
        threads: held.threads().len(),
        all_stop_reason: reason,
        ..RecoverReport::nothing(pid)
    };
    // Offsets first: a hook that cannot be restored then passes the real time through.
    let data_addr = existing.data_addr();
    write_slot(
        &target.mem,
        data_addr,
        existing.data.generation,
        &Params::default(),
    )?;
    let code_page = existing.code_addr;
    for p in &existing.data.patches {
        let current = target
            .mem
            .read(p.addr, Native::JUMP_LEN, "read a patched vDSO entry")?;
        if state::is_our_jump(&current, p.addr, code_page) {
            target
                .mem
                .write_code(p.addr, &p.original, tid, "restore the original vDSO bytes")?;
            report.restored += 1;
        } else {
            report.skipped.push(format!(
                "{:#x}: no longer our jump (bytes {current:02x?}), left as it is",
                p.addr
            ));
        }
    }
    target.mem.write_data(
        data_addr + OFF_PATCHED as u64,
        &0u32.to_le_bytes(),
        "mark as recovered",
    )?;
    held.check_alive("finish the recovery")?;
    drop(held);
    report.stopped_for = started.elapsed();
    Ok(report)
}

/// Real time published in `pid`'s data page, its hooks left in place: job control stopped it
/// (before the recover, or during it: `during`, already undone).
fn real_time_with_hooks_left(pid: i32, during: Option<Error>) -> Result<RecoverReport> {
    if let Some(e) = &during {
        log::info!("pid {pid}: {e}; publishing real time instead");
    }
    let target = Target::open(pid)?;
    let mut report = RecoverReport::nothing(pid);
    let Some(existing) = state::find(&target)? else {
        return Ok(report);
    };
    write_slot(
        &target.mem,
        existing.data_addr(),
        existing.data.generation,
        &Params::default(),
    )?;
    report.was_injected = true;
    report.hooks_left = Some(format!(
        "it {} stopped by job control, and taking the hooks out needs its threads to run for a \
         moment; recover again once it has resumed (kill -CONT {pid})",
        if during.is_some() { "was" } else { "is" }
    ));
    Ok(report)
}

fn any_jump_left(target: &Target, existing: &Existing) -> bool {
    existing
        .data
        .patches
        .iter()
        .any(|p| state::jump_in_image(target, p, existing.code_addr))
}

/// Returns `pid`'s clocks to real time gradually: each selected clock runs at 1 ± `slew` until
/// its offset is gone, then at real speed (as ntpd or chrony would correct it). A live update,
/// without a stop; the hooks stay (passing real time through once the slew is over) until a
/// plain [`recover`]. Returns the status after the change; a process that is not injected is
/// left alone.
///
/// A followed process: as with [`recover`], its follower is asked to end its experiment, but
/// gradually — every process it touched slews back at `slew` (and keeps the hooks, as here);
/// newcomers are not followed any more (they start at real time, where the slew ends).
pub fn recover_slewed(pid: i32, slew: SlewRate) -> Result<Status> {
    end_follower_of(pid, Some(slew))?;
    slew_back_here(pid, slew)
}

/// [`recover_slewed`] without asking a follower (see [`recover_here`]).
pub(crate) fn slew_back_here(pid: i32, slew: SlewRate) -> Result<Status> {
    let status = crate::ops::status(pid)?;
    if !status.injected {
        return Ok(status);
    }
    let mask = status
        .clocks
        .iter()
        .fold(0u32, |m, c| m | 1 << c.clock.id());
    let skew = crate::skew::Skew::new(crate::skew::Offset::ZERO).with_slew(slew);
    let report = crate::ops::inject::apply(pid, mask, &skew.spec(), None)?;
    Ok(report.status)
}
