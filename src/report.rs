//! What the operations return: plain data, serialisable for `--json`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::skew::{Clock, Offset};

/// The skew a process currently has for one clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockOffset {
    pub clock: Clock,
    pub offset: Offset,
}

/// What `status` finds in a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub pid: i32,
    /// The vDSO entries currently jump to our fakes.
    pub injected: bool,
    /// Address of the code page, if timeskew pages exist in the process (also after recover);
    /// in JSON a hex string such as `"0x7f3ca2c30000"`.
    #[serde(serialize_with = "as_hex", deserialize_with = "from_hex")]
    pub trampoline: Option<u64>,
    /// Layout version of the data page, if present.
    pub layout_version: Option<u32>,
    /// Clocks with a non-zero skew.
    pub clocks: Vec<ClockOffset>,
    /// Number of parameter updates so far.
    pub generation: u64,
    /// With `--duration`: time left until the skew ends by itself (zero once it has ended and
    /// real time passes through). `None`: no deadline. In JSON, `expires_in_ms`.
    #[serde(
        rename = "expires_in_ms",
        serialize_with = "as_millis",
        deserialize_with = "from_millis"
    )]
    pub expires_in: Option<Duration>,
    /// What the clocks do beyond a constant offset (rate, freeze, suspend, slew, strobe,
    /// resolution, slow reads); `None` for a plain offset. Absent from JSON then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<ShapeStatus>,
}

/// The shape a target's clocks follow now, and what comes next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShapeStatus {
    /// What the clocks do, in words: `frozen`, `suspended`, `running at 2×`, `slewing at
    /// +500ppm`, `returning to real time at -500ppm`, `real speed`.
    pub state: String,
    /// The speed the clocks run at now (1: real speed, 0: standing still).
    pub rate: f64,
    /// Until the state ends (the next piece of the program starts), if it does.
    #[serde(
        rename = "left_ms",
        serialize_with = "as_millis",
        deserialize_with = "from_millis"
    )]
    pub left: Option<Duration>,
    /// How long the current state lasts in all, if it ends.
    #[serde(
        rename = "of_ms",
        serialize_with = "as_millis",
        deserialize_with = "from_millis"
    )]
    pub of: Option<Duration>,
    /// With a strobe: the offset added every other period, and the period.
    pub strobe: Option<(Offset, Duration)>,
    /// Readings rounded down to a multiple of this.
    pub resolution: Option<Duration>,
    /// Real readings taken with the system call instead of the vDSO.
    pub slow_reads: bool,
}

// The rate is never NaN (it is computed from a fixed-point integer), so equality is total.
impl Eq for ShapeStatus {}

impl ShapeStatus {
    /// `frozen, 4.2 s left of 10.0 s, resolution 15 ms, slow reads`.
    pub fn describe(&self) -> String {
        let mut parts = vec![self.state.clone()];
        if let (Some(left), Some(of)) = (self.left, self.of) {
            parts[0] = format!(
                "{}, {:.1} s left of {:.1} s",
                self.state,
                left.as_secs_f64(),
                of.as_secs_f64()
            );
        }
        if let Some((delta, period)) = self.strobe {
            parts.push(format!("strobing {delta} every {period:?}"));
        }
        if let Some(r) = self.resolution {
            parts.push(format!("resolution {r:?}"));
        }
        if self.slow_reads {
            parts.push("slow reads".into());
        }
        parts.retain(|p| !p.is_empty());
        parts.join(", ")
    }
}

/// The timeskew follower (`inject --follow`) tracing a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Follower {
    /// The follower's tracer thread: the `TracerPid` of every process it follows, and the name
    /// of its control socket (`@timeskew-follow.<tracer>`).
    pub tracer: i32,
    /// The process that runs the follower (`timeskew inject --follow`'s helper).
    pub pid: i32,
}

/// How `inject` reached its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InjectAction {
    /// Fresh pages mapped and the vDSO patched.
    Injected,
    /// Already injected: only the data page was rewritten, without stopping the process.
    Updated,
    /// Pages from an earlier injection were reused and the vDSO patched again.
    Repatched,
}

/// What `inject` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InjectReport {
    pub action: InjectAction,
    /// How long the process was held stopped (zero for a live update).
    #[serde(serialize_with = "as_micros", deserialize_with = "from_micros")]
    pub stopped_for: Duration,
    /// Threads held while patching (zero for a live update).
    pub threads: usize,
    pub status: Status,
    /// A first injection made one thread at a time (never the whole process): what it took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<LiveStats>,
    /// Why every thread was stopped at once instead (the live path could not run here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_stop_reason: Option<String>,
}

/// What a change made one thread at a time cost the target's threads (issue 11): no moment at
/// which the whole process stands still, only short stops of single threads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveStats {
    /// Threads (and processes sharing the memory, such as a vfork child) traced meanwhile.
    pub threads: usize,
    /// How many of them were stopped at all (the others never were).
    pub threads_stopped: usize,
    /// Stops in all: window checks, releases, the worker's holds, breakpoint hits.
    pub stops: usize,
    /// The longest any thread was held, as timeskew saw it (from the stop's report to the call
    /// that lets it run again), in microseconds. The wait for a CPU after that call is the
    /// scheduler's, not a stop: a thread woken then may take timeskew's own CPU at once.
    pub longest_stop_us: u64,
    /// The thread that ran timeskew's system calls (mmap, membarrier).
    pub worker: i32,
    /// Its longest hold (one system call each), in microseconds.
    pub worker_longest_hold_us: u64,
    /// From the first breakpoint written to the last one gone, in microseconds: while it lasts,
    /// killing timeskew itself would leave a breakpoint that traps (see README, Limitations).
    pub breakpoint_window_us: u64,
    /// Threads that hit a breakpoint and were sent where the code leads.
    pub traps: usize,
    /// Threads found inside an instruction window and moved to its relocated copy.
    pub moved: usize,
    /// Core-serializing barriers issued in the target (membarrier SYNC_CORE).
    pub barriers: usize,
    /// Threads the window check passed over because they had not run since they were seen
    /// blocked outside every window, just before the breakpoints (their scheduler counters
    /// did not move).
    pub unmoved: usize,
    /// Threads blocked in the kernel that were stopped once after a recover moved a monotonic
    /// clock forward, so that waits whose timeouts were computed on the skewed clock end and
    /// are computed again (what stopping every thread does as a side effect).
    pub woken: usize,
    /// From the first seize to the last thread let go, in microseconds.
    pub wall_us: u64,
    /// How the target came to be registered for the barriers: `earlier` (by a change before
    /// this one), `helper` (by a thread timeskew made in the target for it, which then
    /// exited), `worker` (in the worker thread, held through the registration's RCU grace
    /// period), or empty when no barrier was needed.
    #[serde(default)]
    pub registration: String,
    /// How long that registration took, in microseconds (0 when `earlier`).
    #[serde(default)]
    pub registration_us: u64,
    /// Every stop, for tests and benchmarks (not in JSON).
    #[serde(skip)]
    pub stop_log: Vec<ThreadStop>,
}

/// One stop of one thread during a live change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadStop {
    pub tid: i32,
    /// CLOCK_MONOTONIC of timeskew's own process when the stop was seen, in nanoseconds.
    pub seen_ns: u64,
    /// Until the thread was let run again, in nanoseconds.
    pub held_ns: u64,
    /// Why: `check`, `release`, `worker`, `trap`, `signal`, `new`.
    pub why: &'static str,
}

/// What `recover` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoverReport {
    pub pid: i32,
    /// False when the process was not injected: nothing to do.
    pub was_injected: bool,
    /// Entries whose original bytes were written back.
    pub restored: usize,
    /// Entries left alone because their bytes were no longer our jump (someone else patched them).
    pub skipped: Vec<String>,
    /// How long the process was held stopped (zero when there was nothing to do).
    #[serde(serialize_with = "as_micros", deserialize_with = "from_micros")]
    pub stopped_for: Duration,
    /// Threads held.
    pub threads: usize,
    /// Restored one thread at a time (never the whole process): what it took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<LiveStats>,
    /// Why every thread was stopped at once instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_stop_reason: Option<String>,
    /// Why the hooks were left in place, passing real time through, instead of taken out (the
    /// memory is shared with another process: no code may be written; job control holds the
    /// process stopped), and when to recover again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks_left: Option<String>,
}

impl RecoverReport {
    /// The report of a recover that found nothing to do (or has done nothing yet).
    pub(crate) fn nothing(pid: i32) -> RecoverReport {
        RecoverReport {
            pid,
            was_injected: false,
            restored: 0,
            skipped: Vec::new(),
            stopped_for: Duration::ZERO,
            threads: 0,
            live: None,
            all_stop_reason: None,
            hooks_left: None,
        }
    }
}

fn as_micros<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_micros() as u64)
}

fn as_hex<S: serde::Serializer>(addr: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match addr {
        Some(a) => s.serialize_str(&format!("{a:#x}")),
        None => s.serialize_none(),
    }
}

fn as_millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_u64(d.as_millis() as u64),
        None => s.serialize_none(),
    }
}

// The inverses, so a report can travel as JSON from the helper process that made the change
// (see the binary's `isolate.rs`) and come out equal.

fn from_micros<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_micros)
}

fn from_hex<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    let digits = text.strip_prefix("0x").unwrap_or(&text);
    u64::from_str_radix(digits, 16)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn from_millis<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
}
