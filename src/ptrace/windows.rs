//! Is any thread using the instructions we are about to overwrite? Either executing them (its
//! instruction pointer strictly inside a hook window) or interrupted there by a signal whose
//! handler is still running: then the interrupted context, saved in the signal frame on the
//! thread's stack (or alternate signal stack), resumes inside the window once the handler
//! returns. Hook windows hold no calls, so no return address ever points into one: any 8-byte
//! word above a thread's stack pointer that equals an address strictly inside a window is such a
//! saved context (or, rarely, a stale copy of one — then we wait for nothing, never harm).

use crate::arch::{Arch, Native, Registers};
use crate::error::{Error, Result};
use crate::mem::RemoteMemory;
use crate::procfs::Mapping;

use super::StoppedProcess;

/// How far above the stack pointer saved contexts are looked for: far more than a signal frame
/// (a few KiB with the FPU state) plus the frames of a handler that reads the clock.
const STACK_SCAN: u64 = 256 * 1024;

impl StoppedProcess {
    /// Why patching now could crash a thread, if it could: the first thread found executing
    /// inside a window (`inside` says whether an address lies strictly inside one), or with a
    /// saved context pointing inside one. `maps` must have been read while the threads are held.
    pub fn window_in_use(
        &self,
        mem: &RemoteMemory,
        maps: &[Mapping],
        inside: impl Fn(u64) -> bool,
    ) -> Result<Option<String>> {
        let pid = self.pid();
        for t in self.threads() {
            let regs = Native::get_regs(t.tid).map_err(|e| {
                Error::from_errno(
                    pid,
                    t.tid.as_raw(),
                    "read the registers of a held thread",
                    e,
                )
            })?;
            let ip = regs.instruction_pointer();
            if inside(ip) {
                return Ok(Some(format!(
                    "thread {} is executing inside the instructions to be replaced (at {ip:#x})",
                    t.tid
                )));
            }
            let sp = regs.stack_pointer() & !7;
            let Some(stack) = maps.iter().find(|m| m.start <= sp && sp < m.end) else {
                // No memory there, so no saved context either.
                continue;
            };
            let end = stack.end.min(sp.saturating_add(STACK_SCAN));
            let words = mem.read(sp, (end - sp) as usize, "read a held thread's stack")?;
            if let Some((i, addr)) = words
                .chunks_exact(8)
                .map(|w| u64::from_le_bytes(w.try_into().expect("chunks of 8")))
                .enumerate()
                .find(|(_, w)| inside(*w))
            {
                return Ok(Some(format!(
                    "thread {} was interrupted at {addr:#x}, inside the instructions to be \
                     replaced, by a signal handler that is still running (saved context at \
                     {:#x})",
                    t.tid,
                    sp + 8 * i as u64
                )));
            }
        }
        Ok(None)
    }
}
