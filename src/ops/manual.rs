//! `ManualClock`: a child's wall clock frozen at a date and moved only when the test says.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::fake_clock::data_page::RATE_ONE;
use crate::ops::inject::apply;
use crate::report::{InjectReport, RecoverReport};
use crate::skew::Clock;
use crate::target::program::{Spec, Step};

/// The wall clock of process `pid` (`CLOCK_REALTIME`, its coarse variant, `CLOCK_TAI`,
/// `gettimeofday` and `time`) under a test's control: it stands still at a date and moves only
/// by [`advance`](ManualClock::advance) or [`set`](ManualClock::set), each a live update of
/// the target (no stop). The monotonic clocks keep running: timers and sleeps still work.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// # use std::io::BufRead;
/// # let mut child = std::process::Command::new("sh")
/// #     .args(["-c", "echo ready; read _"])
/// #     .stdin(std::process::Stdio::piped())
/// #     .stdout(std::process::Stdio::piped())
/// #     .spawn()?;
/// # std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut String::new())?;
/// # let pid = child.id() as i32;
/// let new_year = UNIX_EPOCH + Duration::from_secs(1_798_761_590); // 2026-12-31T23:59:50Z
/// let mut clock = timeskew::ManualClock::freeze(pid, new_year)?;
/// clock.advance(Duration::from_secs(20))?; // the child now reads 2027-01-01T00:00:10Z
/// assert_eq!(clock.now(), new_year + Duration::from_secs(20));
/// clock.recover()?;
/// # child.kill()?; child.wait()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ManualClock {
    pid: i32,
    /// What the clock reads, ns since the epoch.
    reads_ns: i64,
}

/// `CLOCK_REALTIME`, `CLOCK_REALTIME_COARSE`, `CLOCK_TAI`: the clocks that tell the date.
const WALL_CLOCKS: u32 =
    (1 << Clock::Realtime.id()) | (1 << Clock::RealtimeCoarse.id()) | (1 << Clock::Tai.id());

impl ManualClock {
    /// Freezes the wall clock of `pid` at `at` (injecting if needed).
    pub fn freeze(pid: i32, at: SystemTime) -> Result<ManualClock> {
        let mut clock = ManualClock { pid, reads_ns: 0 };
        clock.set(at)?;
        Ok(clock)
    }

    /// The date the clock stands at.
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.reads_ns.max(0) as u64)
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&mut self, by: Duration) -> Result<()> {
        let by = i64::try_from(by.as_nanos()).unwrap_or(i64::MAX);
        self.move_to(self.reads_ns.saturating_add(by))
    }

    /// Moves the clock to `at`, forwards or backwards (as an administrator's `date -s` would).
    pub fn set(&mut self, at: SystemTime) -> Result<()> {
        let ns = at
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_nanos()).ok())
            .ok_or_else(|| Error::BadSelection(format!("{at:?} is not a date after 1970")))?;
        self.move_to(ns)
    }

    /// Lets the clock run on at real speed from where it stands.
    pub fn resume(self) -> Result<InjectReport> {
        let spec = Spec {
            step: Some(Step::At(self.reads_ns)),
            rate: Some(RATE_ONE),
            ..Spec::default()
        };
        apply(self.pid, WALL_CLOCKS, &spec, None)
    }

    /// Puts the real clock back.
    pub fn recover(self) -> Result<RecoverReport> {
        crate::ops::recover(self.pid)
    }

    fn move_to(&mut self, ns: i64) -> Result<()> {
        let spec = Spec {
            step: Some(Step::At(ns)),
            rate: Some(0),
            ..Spec::default()
        };
        apply(self.pid, WALL_CLOCKS, &spec, None)?;
        self.reads_ns = ns;
        Ok(())
    }
}
