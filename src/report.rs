//! What the operations return: plain data, serialisable for `--json`.

use std::time::Duration;

use serde::Serialize;

use crate::skew::{Clock, Offset};

/// The skew a process currently has for one clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClockOffset {
    pub clock: Clock,
    pub offset: Offset,
}

/// What `status` finds in a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub pid: i32,
    /// The vDSO entries currently jump to our fakes.
    pub injected: bool,
    /// Address of the code page, if timeskew pages exist in the process (also after recover);
    /// in JSON a hex string such as `"0x7f3ca2c30000"`.
    #[serde(serialize_with = "as_hex")]
    pub trampoline: Option<u64>,
    /// Layout version of the data page, if present.
    pub layout_version: Option<u32>,
    /// Clocks with a non-zero skew.
    pub clocks: Vec<ClockOffset>,
    /// Number of parameter updates so far.
    pub generation: u64,
    /// With `--duration`: time left until the skew ends by itself (zero once it has ended and
    /// real time passes through). `None`: no deadline. In JSON, `expires_in_ms`.
    #[serde(rename = "expires_in_ms", serialize_with = "as_millis")]
    pub expires_in: Option<Duration>,
}

/// How `inject` reached its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InjectReport {
    pub action: InjectAction,
    /// How long the process was held stopped (zero for a live update).
    #[serde(serialize_with = "as_micros")]
    pub stopped_for: Duration,
    /// Threads held while patching (zero for a live update).
    pub threads: usize,
    pub status: Status,
}

/// What `recover` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecoverReport {
    pub pid: i32,
    /// False when the process was not injected: nothing to do.
    pub was_injected: bool,
    /// Entries whose original bytes were written back.
    pub restored: usize,
    /// Entries left alone because their bytes were no longer our jump (someone else patched them).
    pub skipped: Vec<String>,
    /// How long the process was held stopped (zero when there was nothing to do).
    #[serde(serialize_with = "as_micros")]
    pub stopped_for: Duration,
    /// Threads held.
    pub threads: usize,
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
