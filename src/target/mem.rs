//! Reading and writing another process's memory.
//!
//! Data goes through `process_vm_readv`/`process_vm_writev` (one syscall, no ptrace stop
//! needed), falling back to `/proc/PID/mem` on kernels built without CROSS_MEMORY_ATTACH.
//! Code (the vDSO, our r-x page) is not writable, so it goes through `/proc/PID/mem`, which
//! forces the write for a tracer, and falls back to PTRACE_POKEDATA word by word.

use std::fs::OpenOptions;
use std::io::IoSlice;
use std::os::unix::fs::FileExt;

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::uio::{RemoteIoVec, process_vm_readv, process_vm_writev};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::target::procfs;

/// Handle on the address space of `pid`.
#[derive(Debug, Clone, Copy)]
pub struct RemoteMemory {
    pid: i32,
    /// A live thread of `pid` to reach the address space through: a leader that has exited
    /// (`pthread_exit` in `main`) keeps no memory map of its own.
    via: i32,
}

impl RemoteMemory {
    #[cfg(test)]
    pub fn new(pid: i32) -> Self {
        RemoteMemory { pid, via: pid }
    }

    /// The address space of `pid`, reached through its thread `tid`.
    pub fn through(pid: i32, tid: i32) -> Self {
        RemoteMemory { pid, via: tid }
    }

    /// The thread the address space is reached through.
    pub fn via(&self) -> i32 {
        self.via
    }

    /// Reads exactly `len` bytes at `addr`.
    pub fn read(&self, addr: u64, len: usize, step: &'static str) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let remote = [RemoteIoVec {
            base: addr as usize,
            len,
        }];
        match process_vm_readv(
            Pid::from_raw(self.via),
            &mut [std::io::IoSliceMut::new(&mut buf)],
            &remote,
        ) {
            Ok(n) if n == len => return Ok(buf),
            Ok(n) => return Err(self.short(step, n, len)),
            Err(Errno::ENOSYS) => {}
            Err(e) => return Err(procfs::errno_error(self.pid, self.pid, step, e)),
        }
        let file = self.proc_mem(false, step)?;
        file.read_exact_at(&mut buf, addr)
            .map_err(|e| procfs::io_error(self.pid, step, e))?;
        Ok(buf)
    }

    /// Writes `bytes` at `addr` into writable memory of the target.
    pub fn write_data(&self, addr: u64, bytes: &[u8], step: &'static str) -> Result<()> {
        if !force_proc_mem() {
            let remote = [RemoteIoVec {
                base: addr as usize,
                len: bytes.len(),
            }];
            match process_vm_writev(Pid::from_raw(self.via), &[IoSlice::new(bytes)], &remote) {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(n) => return Err(self.short(step, n, bytes.len())),
                Err(Errno::ENOSYS) => log::debug!("process_vm_writev: ENOSYS, using /proc/PID/mem"),
                Err(e) => return Err(procfs::errno_error(self.pid, self.pid, step, e)),
            }
        }
        self.write_proc_mem(addr, bytes, step)
    }

    /// Writes `bytes` over code (read-only mappings) of a process we trace; `tid` is a stopped
    /// thread for the PTRACE_POKEDATA fallback.
    pub fn write_code(&self, addr: u64, bytes: &[u8], tid: Pid, step: &'static str) -> Result<()> {
        match self.write_proc_mem(addr, bytes, step) {
            Ok(()) => Ok(()),
            Err(e @ Error::ProcessGone { .. }) => Err(e),
            Err(e) => {
                log::debug!("/proc/PID/mem write failed ({e}); falling back to PTRACE_POKEDATA");
                self.poke(addr, bytes, tid, step)
            }
        }
    }

    fn write_proc_mem(&self, addr: u64, bytes: &[u8], step: &'static str) -> Result<()> {
        let file = self.proc_mem(true, step)?;
        file.write_all_at(bytes, addr)
            .map_err(|e| procfs::io_error(self.pid, step, e))
    }

    /// Word-wise read-modify-write through ptrace, which forces a private copy of the page.
    fn poke(&self, addr: u64, bytes: &[u8], tid: Pid, step: &'static str) -> Result<()> {
        const W: u64 = 8;
        let err = |e| procfs::errno_error(self.pid, tid.as_raw(), step, e);
        let start = addr & !(W - 1);
        let end = (addr + bytes.len() as u64).div_ceil(W) * W;
        let mut word_addr = start;
        while word_addr < end {
            let old = ptrace::read(tid, word_addr as ptrace::AddressType).map_err(err)?;
            let mut word = old.to_ne_bytes();
            for (i, b) in word.iter_mut().enumerate() {
                let a = word_addr + i as u64;
                if a >= addr && a < addr + bytes.len() as u64 {
                    *b = bytes[(a - addr) as usize];
                }
            }
            ptrace::write(
                tid,
                word_addr as ptrace::AddressType,
                libc::c_long::from_ne_bytes(word),
            )
            .map_err(err)?;
            word_addr += W;
        }
        Ok(())
    }

    fn proc_mem(&self, write: bool, step: &'static str) -> Result<std::fs::File> {
        OpenOptions::new()
            .read(true)
            .write(write)
            .open(procfs::mem_path(self.pid, self.via))
            .map_err(|e| procfs::io_error(self.pid, step, e))
    }

    fn short(&self, step: &'static str, got: usize, want: usize) -> Error {
        Error::Io {
            pid: self.pid,
            step,
            source: std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("transferred {got} of {want} bytes"),
            ),
        }
    }
}

/// `TIMESKEW_FORCE_PROC_MEM=1` takes the `/proc/PID/mem` path for data writes, as on kernels
/// without `process_vm_writev`, so that path is tested too.
/// Honoured only with the `fault-injection` feature (test builds).
fn force_proc_mem() -> bool {
    cfg!(feature = "fault-injection")
        && std::env::var_os("TIMESKEW_FORCE_PROC_MEM").is_some_and(|v| v == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_own_memory() {
        let mem = RemoteMemory::new(std::process::id() as i32);
        let mut target = vec![1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        let addr = target.as_mut_ptr() as u64;
        mem.write_data(addr + 1, &[0xaa, 0xbb], "test write")
            .unwrap();
        mem.write_proc_mem(addr + 5, &[0xcc], "test write").unwrap();
        let back = mem.read(addr, 9, "test read").unwrap();
        assert_eq!(back, vec![1, 0xaa, 0xbb, 4, 5, 0xcc, 7, 8, 9]);
        assert_eq!(std::hint::black_box(&target)[2], 0xbb);
    }

    #[test]
    fn unmapped_read_is_an_error() {
        let mem = RemoteMemory::new(std::process::id() as i32);
        assert!(mem.read(8, 16, "read page zero").is_err());
    }
}
