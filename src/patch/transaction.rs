//! A change to a stopped target as a transaction: every step registers how to undo it; an
//! error (or a panic) undoes the steps in reverse order; an undo that fails is reported next to
//! the first error, never instead of it.

use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::ptrace::{RemoteCall, StoppedProcess};
use crate::target::mem::RemoteMemory;

/// How to take one step back.
#[derive(Debug)]
enum Undo {
    /// munmap pages we mapped.
    Unmap { addr: u64, len: u64 },
    /// Write back code bytes we replaced.
    Restore { addr: u64, bytes: Vec<u8> },
}

/// The held process plus the undo log.
pub struct Transaction {
    held: StoppedProcess,
    mem: RemoteMemory,
    syscall_insn: u64,
    undo: Vec<Undo>,
}

impl Transaction {
    pub fn new(held: StoppedProcess, mem: RemoteMemory, syscall_insn: u64) -> Self {
        Transaction {
            held,
            mem,
            syscall_insn,
            undo: Vec::new(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.held.pid()
    }

    pub fn held(&mut self) -> &mut StoppedProcess {
        &mut self.held
    }

    pub fn mem(&self) -> RemoteMemory {
        self.mem
    }

    /// A stopped thread to route ptrace writes through.
    pub fn worker(&self) -> Result<Pid> {
        self.held.worker().ok_or(Error::ProcessGone {
            pid: self.pid(),
            step: "pick a stopped thread",
        })
    }

    /// Runs `call` in the target: its result, or the error it failed with.
    pub fn run(&mut self, call: &RemoteCall) -> Result<u64> {
        self.held.run_call(self.syscall_insn, call)
    }

    /// Fails unless the worker thread's seccomp filters allow each of `calls` — checked up
    /// front for a whole step, including the calls its undo may need later (munmap), before
    /// there is anything to undo.
    pub fn check_allowed(&mut self, calls: &[RemoteCall]) -> Result<()> {
        let tid = self.worker()?;
        self.held.check_calls(tid, self.syscall_insn, calls)
    }

    /// Registers pages mapped at `addr` to be unmapped on rollback.
    pub fn mapped(&mut self, addr: u64, len: u64) {
        self.undo.push(Undo::Unmap { addr, len });
    }

    /// Writes `bytes` over code at `addr`, registering `original` to be written back on rollback.
    pub fn patch_code(&mut self, addr: u64, bytes: &[u8], original: Vec<u8>) -> Result<()> {
        let tid = self.worker()?;
        // Registered first: a write that fails half-way must be undone too.
        self.undo.push(Undo::Restore {
            addr,
            bytes: original,
        });
        self.mem
            .write_code(addr, bytes, tid, "write the jump into the vDSO")
    }

    /// Keeps everything and lets the process go (every thread detached).
    pub fn commit(mut self) {
        self.undo.clear();
    }

    /// Undoes everything and returns `err`, or `err` with the undo failures attached.
    pub fn abort(mut self, err: Error) -> Error {
        let failures = self.rollback();
        if failures.is_empty() {
            err
        } else {
            Error::RollbackFailed {
                pid: self.pid(),
                source: Box::new(err),
                failures,
            }
        }
    }

    /// Runs the undo log in reverse. Never panics; a process that has gone needs no undoing.
    fn rollback(&mut self) -> Vec<String> {
        let mut failures = Vec::new();
        while let Some(step) = self.undo.pop() {
            let outcome = match &step {
                Undo::Unmap { addr, len } => self
                    .run(&RemoteCall::Munmap {
                        addr: *addr,
                        len: *len,
                    })
                    .map(drop),
                Undo::Restore { addr, bytes } => self.worker().and_then(|tid| {
                    self.mem
                        .write_code(*addr, bytes, tid, "restore the original vDSO bytes")
                }),
            };
            match outcome {
                Ok(()) => log::debug!("pid {}: undone {step:?}", self.pid()),
                Err(Error::ProcessGone { .. }) => {
                    log::debug!("pid {}: gone; nothing left to undo", self.pid());
                    self.undo.clear();
                }
                Err(e) => {
                    log::warn!("pid {}: undoing {step:?} failed: {e}", self.pid());
                    failures.push(format!("{step:?}: {e}"));
                }
            }
        }
        failures
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        // Reached with a non-empty log only when unwinding from a panic.
        if !self.undo.is_empty() {
            for f in self.rollback() {
                log::warn!("pid {}: rollback during unwinding: {f}", self.pid());
            }
        }
    }
}
