//! The code that changes under running threads: the target's memory bound to one address
//! space, and each [`Swap`] taken through breakpoint, tail, head (and back on undo).

use super::*;

/// One piece of code changing from `before` to `after` (the same length, at most the jump).
#[derive(Debug, Clone)]
pub(crate) struct Swap {
    pub addr: u64,
    pub before: Vec<u8>,
    pub after: Vec<u8>,
    /// Where a thread that meets the breakpoint goes: where the jump (old or new) leads.
    pub detour: u64,
    /// Threads may be inside these instructions (`window`, at `addr`) before the change; a
    /// thread found there is moved to the same instruction of `stub` (bytes, address).
    pub window: Option<(Vec<u8>, Vec<u8>, u64)>,
    pub state: SwapState,
}

/// How far a [`Swap`] has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SwapState {
    Before,
    /// Breakpoint on the first byte, the rest as before.
    Armed,
    /// Breakpoint on the first byte, the rest as after.
    Tail,
    After,
}

/// The target's memory through one `/proc/PID/mem` opened at the start: the file stays bound
/// to that address space, so once a thread execs (threads run meanwhile) a write goes nowhere
/// instead of into the new program. Code is written through it too (forced, as the vDSO is).
#[derive(Debug)]
pub(crate) struct BoundMem {
    pid: i32,
    file: std::fs::File,
}

impl BoundMem {
    pub(super) fn open(pid: i32, tid: i32) -> Result<BoundMem> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(procfs::mem_path(pid, tid))
            .map_err(|e| procfs::io_error(pid, "open the target's memory", e))?;
        Ok(BoundMem { pid, file })
    }

    fn fail(&self, step: &'static str, e: std::io::Error) -> Error {
        if !procfs::exists(self.pid) || procfs::is_zombie(self.pid) || killed(self.pid) {
            Error::ProcessGone {
                pid: self.pid,
                step,
            }
        } else {
            procfs::io_error(self.pid, step, e)
        }
    }

    pub(crate) fn read(&self, addr: u64, len: usize, step: &'static str) -> Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, addr)
            .map_err(|e| self.fail(step, e))?;
        Ok(buf)
    }

    pub(crate) fn write(&self, addr: u64, bytes: &[u8], step: &'static str) -> Result<()> {
        use std::os::unix::fs::FileExt;
        self.file
            .write_all_at(bytes, addr)
            .map_err(|e| self.fail(step, e))
    }
}

impl LiveSession {
    /// Writes bytes of code through `/proc/PID/mem` (forced: the pages are not writable).
    pub(super) fn write(&mut self, addr: u64, bytes: &[u8], step: &'static str) -> Result<()> {
        let out = self.mem.write(addr, bytes, step);
        if out.is_err() {
            // An exec or an exit explains it better: say that.
            let _ = self.drain(None);
            if let Some(e) = self.abandoned.take() {
                return Err(e);
            }
        }
        out
    }

    /// Step 1: the breakpoint over the first byte of every swap still `Before`, then a barrier.
    pub(crate) fn arm(&mut self) -> Result<()> {
        for i in 0..self.swaps.len() {
            if self.swaps[i].state != SwapState::Before {
                continue;
            }
            let addr = self.swaps[i].addr;
            // Marked first: a trap may report before the write returns.
            self.swaps[i].state = SwapState::Armed;
            if self.first_breakpoint.is_none() {
                self.first_breakpoint = Some(Instant::now());
            }
            // On failure nothing (or the breakpoint) was written: the undo puts the byte back.
            self.write(addr, &[Native::BREAKPOINT], "write a breakpoint")?;
        }
        self.barrier()
    }

    /// Step 3: the rest of each new instruction behind its breakpoint, then a barrier.
    pub(crate) fn write_tails(&mut self) -> Result<()> {
        for i in 0..self.swaps.len() {
            if self.swaps[i].state != SwapState::Armed {
                continue;
            }
            let (addr, tail) = (self.swaps[i].addr, self.swaps[i].after[1..].to_vec());
            self.swaps[i].state = SwapState::Tail;
            self.write(addr + 1, &tail, "write the rest of an instruction")?;
        }
        self.barrier()
    }

    /// Step 4: the first byte of each new instruction over its breakpoint, then a barrier;
    /// every swap read back.
    pub(crate) fn write_heads(&mut self) -> Result<()> {
        for i in 0..self.swaps.len() {
            if self.swaps[i].state != SwapState::Tail {
                continue;
            }
            let (addr, head) = (self.swaps[i].addr, self.swaps[i].after[0]);
            self.reached_after = true;
            self.write(addr, &[head], "write the first byte of an instruction")?;
            self.swaps[i].state = SwapState::After;
        }
        self.breakpoints_gone();
        self.barrier()?;
        for s in &self.swaps {
            let back = self
                .mem
                .read(s.addr, s.after.len(), "verify the written code")?;
            if back != s.after {
                return Err(Error::UnsafeToPatch {
                    pid: self.pid,
                    symbol: "vDSO entry",
                    reason: format!(
                        "the code at {:#x} did not stick (read back {back:02x?})",
                        s.addr
                    ),
                });
            }
        }
        Ok(())
    }

    pub(super) fn breakpoints_gone(&mut self) {
        if self.first_breakpoint.is_some()
            && self
                .swaps
                .iter()
                .all(|s| matches!(s.state, SwapState::Before | SwapState::After))
        {
            self.last_breakpoint_gone = Some(Instant::now());
        }
    }

    /// Takes every swap back to `Before` (undo), with the same steps in reverse; a swap whose
    /// tail was never written needs only its first byte back. Barriers that fail do not stop
    /// the writes: a breakpoint must never be left behind. Returns what failed.
    pub(crate) fn unwind(&mut self) -> Vec<String> {
        let mut failures = Vec::new();
        let mut note = |r: Result<()>, what: &str| {
            if let Err(e) = r {
                failures.push(format!("{what}: {e}"));
            }
        };
        let any = |s: &Self, st: SwapState| s.swaps.iter().any(|x| x.state == st);
        if any(self, SwapState::After) {
            for i in 0..self.swaps.len() {
                if self.swaps[i].state == SwapState::After {
                    let addr = self.swaps[i].addr;
                    self.swaps[i].state = SwapState::Tail;
                    note(
                        self.write(addr, &[Native::BREAKPOINT], "write a breakpoint"),
                        "re-arm",
                    );
                }
            }
            note(self.barrier(), "barrier");
        }
        if any(self, SwapState::Tail) {
            for i in 0..self.swaps.len() {
                if self.swaps[i].state == SwapState::Tail {
                    let (addr, tail) = (self.swaps[i].addr, self.swaps[i].before[1..].to_vec());
                    note(
                        self.write(addr + 1, &tail, "restore the rest of an instruction"),
                        "restore tail",
                    );
                    self.swaps[i].state = SwapState::Armed;
                }
            }
            note(self.barrier(), "barrier");
        }
        if any(self, SwapState::Armed) {
            for i in 0..self.swaps.len() {
                if self.swaps[i].state == SwapState::Armed {
                    let (addr, head) = (self.swaps[i].addr, self.swaps[i].before[0]);
                    note(
                        self.write(addr, &[head], "restore the first byte"),
                        "restore head",
                    );
                    self.swaps[i].state = SwapState::Before;
                }
            }
            self.breakpoints_gone();
            note(self.barrier(), "barrier");
        }
        failures
    }

    /// Takes every armed swap to whichever side its tail is on (a recover that fails half-way:
    /// entries already restored stay restored, the others keep the jump).
    pub(crate) fn settle_swaps(&mut self) -> Vec<String> {
        let mut failures = Vec::new();
        let mut wrote = false;
        for i in 0..self.swaps.len() {
            let s = &self.swaps[i];
            let head = match s.state {
                SwapState::Armed => s.before[0],
                SwapState::Tail => s.after[0],
                _ => continue,
            };
            let addr = s.addr;
            if let Err(e) = self.write(addr, &[head], "write the first byte") {
                failures.push(format!("{addr:#x}: {e}"));
            }
            self.swaps[i].state = if head == self.swaps[i].after[0] {
                SwapState::After
            } else {
                SwapState::Before
            };
            wrote = true;
        }
        self.breakpoints_gone();
        if wrote && let Err(e) = self.barrier() {
            failures.push(format!("barrier: {e}"));
        }
        failures
    }
}

/// Whether `pid` is being killed: a SIGKILL shared-pending (it shows in ShdPnd until every
/// thread has seen it), or its status unreadable.
pub(super) fn killed(pid: i32) -> bool {
    crate::target::procfs::pending_signals(pid)
        .is_none_or(|(_, process)| process & (1 << (libc::SIGKILL - 1)) != 0)
}
