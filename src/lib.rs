//! timeskew shifts the clocks of a running Linux process from the outside.
//!
//! It attaches to every thread with ptrace, maps a code page and a data page into the target,
//! and redirects the vDSO's `clock_gettime`, `gettimeofday` and `time` to hand-written fakes that
//! call the genuine vDSO code and add an offset. The state lives in the target, so any later
//! call can see, update or undo it.
//!
//! ```no_run
//! use timeskew::{Skew, Offset, Clock};
//! let child = std::process::Command::new("sleep").arg("60").spawn()?;
//! let skew = Skew::new("-600s".parse::<Offset>()?).with_clock(Clock::Realtime);
//! timeskew::inject(child.id() as i32, &skew)?;
//! // … the child now reads its wall clock ten minutes in the past …
//! timeskew::recover(child.id() as i32)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod arch;
pub mod error;
pub mod fake_clock;
mod fault;
pub mod ops;
mod patch;
pub mod ptrace;
pub mod report;
pub mod run;
mod seccomp;
pub mod select;
pub mod signals;
pub mod skew;
pub mod state;
pub mod target;
pub mod vdso;

pub use error::{Error, Result};
pub use ops::{inject, inject_traced, recover, status};
pub use report::{ClockOffset, InjectAction, InjectReport, RecoverReport, Status};
pub use signals::{TerminationDeferred, termination_signals};
pub use skew::{Clock, ClockSet, Offset, OffsetErrorKind, ParseClockError, ParseOffsetError, Skew};
pub use target::TargetLock;
