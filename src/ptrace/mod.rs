//! Holding a process still: seize and interrupt every thread, single-step, run a syscall inside
//! a stopped thread, and let everything go again — on every path, including errors and panics.

mod hold;
mod syscall;

pub use hold::{HeldThread, StoppedProcess};
