//! Everything here runs the blob for real, in this process: two anonymous pages (code r-x,
//! data rw-), stub slots that jump to this process's genuine vDSO functions (or to scripted
//! stand-ins), and the fakes called through `extern "C"` function pointers. Expected values
//! come from the reference model ([`model`]: the data page's semantics, in i128 nanoseconds),
//! never from the assembly's own arithmetic.
//!
//! - [`harness`]: mapping a code page and its data page here, [`harness::Injected`], calling
//!   the fakes, the genuine vDSO, the scripted stand-ins and the bracketing checks.
//! - [`model`]: what a fake must return for a real reading, and the parameters it reads.
//! - [`blob`]: the header, building the code page, position independence.
//! - [`arithmetic`]: exact offset arithmetic against scripted genuine values, deadlines.
//! - [`vdso`]: against the genuine vDSO of this process.
//! - [`concurrency`]: torn reads, the generation (seqlock) protocol, threads, and a writer
//!   lapping a single-stepped reader at every instruction.
//! - [`abi`]: stack depth and alignment, preserved registers, hostile genuine functions.

mod abi;
mod arithmetic;
mod blob;
mod concurrency;
mod harness;
mod model;
mod program;
mod vdso;
