//! Holding a process still: seize and interrupt every thread, check none is using a hook
//! window, run a syscall inside a stopped thread, and let everything go again — on every path,
//! including errors and panics.

mod detach;
mod events;
pub(crate) mod exec_stop;
pub(crate) mod live;
pub(crate) mod raw;
mod remote_mm;
pub(crate) mod remote_syscall;
pub(crate) mod seccomp;
mod seize;
mod stop;
mod windows;

pub(crate) use remote_mm::RemoteCall;
pub(crate) use stop::StoppedProcess;
