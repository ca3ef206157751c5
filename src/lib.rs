//! timeskew shifts the clocks of a running Linux process from the outside: no restart, no
//! `LD_PRELOAD`, no effect on any other process.
//!
//! It stops the target's threads for well under a millisecond, maps a code page and a data
//! page into it, and redirects the vDSO's `clock_gettime`, `gettimeofday` and `time` to
//! hand-written fakes that call the genuine vDSO code and add an offset. The state lives in the
//! target, so any later call — from this process or another timeskew — can see, change or undo
//! it. Needs `CAP_SYS_PTRACE` over the target (root, or the target's owner with Yama
//! `ptrace_scope` 0).
//!
//! # The operations
//!
//! **Inject** a [`Skew`] — an [`Offset`] for one or more [`Clock`]s — with [`inject`], and
//! **recover** the real clocks with [`recover`]:
//!
//! ```
//! use timeskew::{Clock, InjectAction, Offset, Skew};
//! # use std::io::BufRead;
//! # let mut child = std::process::Command::new("sh")
//! #     .args(["-c", "echo ready; read _"])
//! #     .stdin(std::process::Stdio::piped())
//! #     .stdout(std::process::Stdio::piped())
//! #     .spawn()?;
//! # // The shell is running (its exec is complete) once it has said so.
//! # std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut String::new())?;
//! # let pid = child.id() as i32;
//! let skew = Skew::new("-600s".parse::<Offset>()?).with_clock(Clock::Realtime);
//! let report = timeskew::inject(pid, &skew)?;
//! assert_eq!(report.action, InjectAction::Injected);
//! // … the process now reads its wall clock ten minutes in the past …
//! let recovered = timeskew::recover(pid)?;
//! assert!(recovered.was_injected);
//! # child.kill()?; child.wait()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! **Update** a skew by injecting again: an injected process gets its new parameters written
//! into its data page, without being stopped at all ([`InjectAction::Updated`]). A skew can
//! **end by itself** after a while ([`Skew::for_duration`]): the deadline is kept in the
//! target, so it ends on time even if the caller dies.
//!
//! ```
//! use std::time::Duration;
//! use timeskew::{InjectAction, Skew};
//! # use std::io::BufRead;
//! # let mut child = std::process::Command::new("sh")
//! #     .args(["-c", "echo ready; read _"])
//! #     .stdin(std::process::Stdio::piped())
//! #     .stdout(std::process::Stdio::piped())
//! #     .spawn()?;
//! # // The shell is running (its exec is complete) once it has said so.
//! # std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut String::new())?;
//! # let pid = child.id() as i32;
//! timeskew::inject(pid, &Skew::new("+1h".parse()?))?;
//! let update = Skew::new("+2h".parse()?).for_duration(Duration::from_secs(30));
//! let report = timeskew::inject(pid, &update)?;
//! assert_eq!(report.action, InjectAction::Updated);
//! assert_eq!(report.stopped_for, Duration::ZERO);
//! # timeskew::recover(pid)?;
//! # child.kill()?; child.wait()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! **Status** reads what a process holds, without stopping it:
//!
//! ```
//! # use std::io::BufRead;
//! # let mut child = std::process::Command::new("sh")
//! #     .args(["-c", "echo ready; read _"])
//! #     .stdin(std::process::Stdio::piped())
//! #     .stdout(std::process::Stdio::piped())
//! #     .spawn()?;
//! # // The shell is running (its exec is complete) once it has said so.
//! # std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut String::new())?;
//! # let pid = child.id() as i32;
//! let before = timeskew::status(pid)?;
//! assert!(!before.injected);
//! timeskew::inject(pid, &timeskew::Skew::new("-1d".parse()?))?;
//! let during = timeskew::status(pid)?;
//! assert!(during.injected);
//! assert_eq!(during.clocks[0].offset.to_string(), "-86400s");
//! # timeskew::recover(pid)?;
//! # child.kill()?; child.wait()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Choosing processes
//!
//! Every operation takes one process id. [`select::Selection`] turns what a chaos experiment
//! names — pids, their descendants, the members of cgroups and of containers (by id, found
//! through the cgroups their runtimes name after it: `selection.containers`) — into the ids to
//! apply it to:
//!
//! ```
//! use timeskew::select::Selection;
//! # use std::io::BufRead;
//! # use std::os::unix::process::CommandExt;
//! # let mut child = std::process::Command::new("sh")
//! #     .args(["-c", "sh -c 'echo ready; read _'; wait"])
//! #     .stdin(std::process::Stdio::piped())
//! #     .stdout(std::process::Stdio::piped())
//! #     .process_group(0)
//! #     .spawn()?;
//! # let mut line = String::new();
//! # std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
//! # let pid = child.id() as i32;
//! let mut selection = Selection::pid(pid);
//! selection.tree = true; // and every descendant
//! let pids = selection.resolve()?;
//! assert_eq!(pids.len(), 2); // the shell and the shell it started
//! for &pid in &pids {
//!     timeskew::inject(pid, &timeskew::Skew::new("+5m".parse()?))?;
//! }
//! # for &pid in &pids { timeskew::recover(pid)?; }
//! # nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL)?;
//! # child.wait()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Starting a program skewed
//!
//! [`run::run`] starts a command under a skew from its first instruction, and skews every
//! program it execs, like `faketime` but for static, Go and every other binary.
//!
//! # A whole experiment: following a selection
//!
//! [`follow()`] injects a selection and keeps it under the fault until a deadline (or a stop
//! descriptor, or a `timeskew recover` from elsewhere): every program a selected process execs
//! is skewed before its first instruction, forked children are followed, processes that enter
//! a selected container (`podman exec`, `kubectl exec`) are caught before their exec; at the
//! end everything touched is recovered ([`follow`](mod@follow) has the details,
//! `examples/follow.rs` a complete program):
//!
//! ```
//! use std::time::{Duration, Instant};
//! use timeskew::select::Selection;
//! use timeskew::{FollowEnd, Skew};
//! # use std::io::BufRead;
//! # let mut child = std::process::Command::new("sh")
//! #     .args(["-c", "echo ready; while true; do date >/dev/null; sleep 0.05; done"])
//! #     .stdout(std::process::Stdio::piped())
//! #     .spawn()?;
//! # std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut String::new())?;
//! # let pid = child.id() as i32;
//! let end = FollowEnd {
//!     deadline: Some(Instant::now() + Duration::from_millis(500)),
//!     stop: None,
//! };
//! let selection = Selection { pids: vec![pid], tree: true, ..Selection::default() };
//! let report = timeskew::follow(&selection, &Skew::new("-1d".parse()?), end, |_started| {})?;
//! assert!(report.execs > 0 && report.execs_skewed == report.execs);
//! assert!(!timeskew::status(pid)?.injected); // recovered at the end
//! # child.kill()?; child.wait()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Taking turns
//!
//! Operations on one target take a per-target lock, so two timeskew processes never interleave
//! their changes. [`TargetLock`] holds it across several operations:
//!
//! ```
//! # use std::io::BufRead;
//! # let mut child = std::process::Command::new("sh")
//! #     .args(["-c", "echo ready; read _"])
//! #     .stdin(std::process::Stdio::piped())
//! #     .stdout(std::process::Stdio::piped())
//! #     .spawn()?;
//! # // The shell is running (its exec is complete) once it has said so.
//! # std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut String::new())?;
//! # let pid = child.id() as i32;
//! let lock = timeskew::TargetLock::acquire(pid)?;
//! timeskew::inject(pid, &timeskew::Skew::new("+1s".parse()?))?;
//! timeskew::recover(pid)?; // no other timeskew changed it in between
//! drop(lock);
//! # child.kill()?; child.wait()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Errors
//!
//! Every [`Error`] names the process, the step and what went wrong, and where there is one, what
//! to do about it. A failed operation has undone whatever it changed; the target is never left
//! stopped, traced, or half-patched. [`TerminationDeferred`] keeps Ctrl-C and SIGTERM from
//! ending a caller half-way through a change (the operations already do this for their own
//! thread).

#![deny(clippy::undocumented_unsafe_blocks)]

mod arch;
mod error;
mod fake_clock;
mod fault;
pub mod follow;
mod helper;
mod ops;
mod patch;
mod ptrace;
mod report;
pub mod run;
pub mod select;
mod signals;
pub mod skew;
mod state;
mod target;
mod vdso;

pub use error::{Error, Result};
pub use follow::{FollowEnd, FollowReport, follow};
pub use helper::prioritize_own_session;
pub use ops::{ManualClock, inject, inject_traced, recover, recover_slewed, status};
pub use report::{
    ClockOffset, InjectAction, InjectReport, LiveStats, RecoverReport, ShapeStatus, Status,
    ThreadStop,
};
pub use signals::{TerminationDeferred, termination_signals};
pub use skew::{
    At, Clock, ClockSet, NegativeClock, Offset, OffsetErrorKind, ParseAtError, ParseClockError,
    ParseOffsetError, ParseRateError, Rate, ShapeError, Skew, SlewRate, Step,
};
pub use target::TargetLock;
