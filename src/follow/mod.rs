//! `inject --follow`: one fault for a whole experiment on a selection (`--pid … --tree`,
//! `--cgroup`, `--container`), including every process that appears in it meanwhile.
//!
//! [`follow`] injects every process selected now, then watches until the experiment ends (its
//! deadline, the caller's stop descriptor becoming readable, or a `recover` of a followed
//! process from another timeskew or thread) and recovers every process it touched. Meanwhile:
//!
//! - **Programs exec'd by a followed process** are skewed before their first instruction: every
//!   followed process is traced (PTRACE_SEIZE, never stopped for it) with exec, fork, vfork and
//!   clone events, as `timeskew run` traces its command; an exec stops the process at the exit
//!   of execve while the fault is injected into the new program.
//! - **Forked children** inherit the fault with their parent's memory; the fork event makes
//!   them followed processes too (traced from their first instruction by the kernel).
//! - **Processes that enter from outside** (`podman exec`, `kubectl exec`, `nsenter`) are seen
//!   by the kernel's process-event connector (netlink, CAP_NET_ADMIN). Container runtimes fork
//!   the process into the container's PID namespace, move it into the container's cgroup and
//!   then let it exec the command: a fork into a selected container's PID namespace is traced
//!   at once (not skewed: it is about to exec), so the command is skewed at its exec stop,
//!   before its first instruction. An exec by a process already in a selected cgroup that is
//!   not ours is injected right after it (that program ran meanwhile: `join_to_skew` in the
//!   report). A rescan of the selection every [`RESCAN`] catches what the events cannot show
//!   (a process moved into a cgroup that neither forks nor execs, events lost in a burst, no
//!   CAP_NET_ADMIN); a process traced at its fork that has not exec'd after half a second is
//!   skewed as it is.
//!
//! The follow is one experiment with one fault, whoever names one of its processes: no other
//! process can stop a followed one (it has one tracer), so other timeskews ask the follower on
//! its control socket. [`update_follower_of`] (`timeskew inject`) gives the whole experiment a
//! new fault — the processes holding the old one, updated in place, and every process skewed
//! afterwards; [`end_follower_of`] (`timeskew recover`, and the library's
//! [`recover`](crate::recover()) and [`recover_slewed`](crate::recover_slewed()) themselves) ends
//! it, recovering or slewing back everything touched; [`follower_of`] (`timeskew status`) names
//! the follower of a process.
//!
//! Each injected process gets the experiment's deadline as its own dead man's switch, so the
//! fault ends on time even if the follower is killed. When the follower ends, its tracer thread
//! exits: the kernel detaches every tracee without stopping it; then each process touched (and
//! any process of the selection still skewed) is recovered.
//!
//! Caveats: followed processes cannot be debugged or straced meanwhile (a process has one
//! tracer), and each fork, clone and exec in them stops for the time it takes to handle it
//! (microseconds; an exec, the injection's ~1 ms). The tracing is done by a thread [`follow`]
//! starts; SIGCHLD should be blocked in the caller's other threads (see `run`'s caveats:
//! otherwise a stop may be noticed up to [`NAP`] late). Killing the caller while an exec is
//! being skewed can leave that program with registers of ours: `timeskew inject --follow`
//! therefore follows from a helper process of its own session, which the command's death does
//! not reach.

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::report::InjectReport;
use crate::select::Selection;
use crate::skew::Skew;

mod control;
mod netlink;
mod recovery;
mod tracer;

pub use crate::ops::follower::end_follower_of;
pub use crate::ops::status::follower_of;
pub use crate::report::Follower;
pub use control::update_follower_of;

/// How often the selection's cgroups are scanned for members the events did not show.
pub const RESCAN: Duration = Duration::from_millis(200);
/// The longest the follower sleeps without a wake-up (a SIGCHLD taken by another thread).
pub const NAP: Duration = Duration::from_millis(20);

/// What ends a follow besides a `recover` from another timeskew.
#[derive(Debug, Default, Clone, Copy)]
pub struct FollowEnd<'a> {
    /// The experiment's end (also each target's own deadline when the skew has no duration of
    /// its own).
    pub deadline: Option<Instant>,
    /// Readable (a byte, or the writer closed) when the caller wants the experiment to end.
    pub stop: Option<BorrowedFd<'a>>,
}

/// Why a follow ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    Deadline,
    Stopped,
    /// Another timeskew asked (a `recover` of a followed process).
    RecoverRequested,
    /// Another timeskew asked to slew back (a `recover --slew` of a followed process): every
    /// process touched returns to real time gradually, keeping the hooks.
    SlewBackRequested,
    /// Nothing left to follow: every followed process exited (a selection without cgroups) or
    /// every selected cgroup was removed.
    SelectionGone,
    /// The follower itself failed (a bug, logged); what it touched was recovered.
    Failed,
}

/// A process the follower could not skew (or follow), and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Missed {
    pub pid: i32,
    pub program: String,
    pub reason: String,
}

/// A latency distribution, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latencies {
    pub count: usize,
    pub median_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

impl Latencies {
    pub(crate) fn of(mut samples: Vec<Duration>) -> Latencies {
        if samples.is_empty() {
            return Latencies::default();
        }
        samples.sort();
        let at = |q: f64| {
            let i = ((samples.len() - 1) as f64 * q).round() as usize;
            samples[i].as_nanos() as f64 / 1000.0
        };
        Latencies {
            count: samples.len(),
            median_us: at(0.5),
            p90_us: at(0.9),
            p99_us: at(0.99),
            max_us: at(1.0),
        }
    }
}

/// What happened during a follow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FollowReport {
    pub ended_by: EndReason,
    /// How newcomers from outside were seen: "proc connector" or why only rescans were used.
    pub watched_with: String,
    /// Distinct processes followed (traced) during the experiment.
    pub followed: usize,
    /// Of those, forked by a followed process (they inherit the fault).
    pub forked: usize,
    /// Of those, found joining the selection from outside after the start.
    pub joined: usize,
    /// Programs exec'd by followed processes, and how many of them were skewed before their
    /// first instruction.
    pub execs: usize,
    pub execs_skewed: usize,
    /// From each exec stop to the fault in place (the program stopped meanwhile).
    pub exec_to_skew: Latencies,
    /// From a joining process's exec (the kernel's event time) to the fault in place: that
    /// program ran with the real clocks meanwhile.
    pub join_to_skew: Latencies,
    /// Processes or programs that could not be skewed or followed, and why.
    pub missed: Vec<Missed>,
    /// Processes that exited before they could be skewed (nothing of them is left to skew).
    pub exited_first: usize,
    /// Times another `timeskew inject` gave the experiment a new fault ([`update_follower_of`]).
    #[serde(default)]
    pub fault_changes: usize,
    /// Processes recovered at the end (slewing back, after a `recover --slew`), and those whose
    /// recovery failed.
    pub recovered: usize,
    pub recover_failed: Vec<Missed>,
    /// Of those recovered, the ones whose hooks stay in place passing real time through, and
    /// why (job control held them stopped at the end; their memory is shared).
    #[serde(default)]
    pub hooks_left: Vec<Missed>,
}

/// What a follower did with a new fault ([`update_follower_of`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowerUpdate {
    /// In JSON, its fields beside the others: `{"tracer", "pid", "updated", "failed"}`.
    #[serde(flatten)]
    pub follower: Follower,
    /// Processes of the experiment given the new fault (besides those the caller changes).
    pub updated: usize,
    /// Processes of the experiment it could not give the new fault, and why.
    pub failed: Vec<Missed>,
}

/// What the follower does with each process selected at the start: the caller learns the
/// outcome before the watch begins (`on_started`).
pub type Started = Vec<(i32, Result<InjectReport>)>;

/// Injects `skew` into every process of `selection`, follows the selection until `end` (see
/// the module docs), then recovers every process touched. `on_started` receives the outcome of
/// the first injections, before the watch begins.
///
/// Errors before anything is changed (an invalid skew, a selection that does not resolve, no
/// way to trace); afterwards, problems with single processes are in the report.
pub fn follow(
    selection: &Selection,
    skew: &Skew,
    end: FollowEnd<'_>,
    on_started: impl FnOnce(Started) + Send,
) -> Result<FollowReport> {
    skew.validate()?;
    let initial = selection.resolve()?;
    // Explicit cgroups and every container's, in every hierarchy: where newcomers appear.
    let cgroups = selection.cgroup_dirs()?;
    let mut traced = tracer::trace(tracer::Setup {
        selection,
        skew,
        cgroups: &cgroups,
        initial,
        end,
        on_started,
    })?;
    recovery::recover_all(selection, &mut traced);
    if let Some(control) = &mut traced.control {
        control.answer(traced.report.recovered, traced.slew_back.is_some());
    }
    Ok(traced.report)
}
