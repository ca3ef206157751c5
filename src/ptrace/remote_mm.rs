//! The memory-management syscalls timeskew runs inside a held thread, typed: their numbers and
//! arguments, the seccomp pre-check and the result check in one place.

use nix::errno::Errno;

use super::stop::StoppedProcess;
use crate::arch::{Arch, Native};
use crate::error::{Error, Result};
use crate::ptrace::seccomp::{self, PlannedSyscall};
use crate::target::procfs;

/// A syscall to run in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RemoteCall {
    /// Anonymous memory (no file: fd -1, offset 0).
    Mmap {
        addr: u64,
        len: u64,
        prot: i32,
        flags: i32,
    },
    Munmap {
        addr: u64,
        len: u64,
    },
    /// `membarrier(cmd, flags, 0)`: asks about (`MEMBARRIER_CMD_QUERY`), registers for, or
    /// issues a core-serializing barrier across every thread of the target.
    Membarrier {
        cmd: i32,
    },
    /// `clone(flags, 0, …)`: a new thread of the target that starts at the instruction after
    /// the system call, with the caller's registers, stack pointer and signal mask (the live
    /// path's membarrier helper, `fake_clock/x86_64.S`).
    CloneThread,
}

/// The flags of the thread [`RemoteCall::CloneThread`] makes: a thread of the target's, sharing
/// what its threads share; no new stack, no TLS, no thread id written anywhere.
const HELPER_CLONE_FLAGS: i32 = libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD
    | libc::CLONE_SYSVSEM;

impl RemoteCall {
    /// The name in messages (`the injected mmap() failed …`).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            RemoteCall::Mmap { .. } => "mmap",
            RemoteCall::Munmap { .. } => "munmap",
            RemoteCall::Membarrier { .. } => "membarrier",
            RemoteCall::CloneThread => "clone",
        }
    }

    /// The syscall number and its six argument registers.
    pub(crate) fn nr_and_args(&self) -> (i64, [u64; 6]) {
        match *self {
            RemoteCall::Mmap {
                addr,
                len,
                prot,
                flags,
            } => (
                libc::SYS_mmap,
                [
                    addr,
                    len,
                    prot as u64,
                    flags as u64,
                    u64::MAX, /* fd -1 */
                    0,
                ],
            ),
            RemoteCall::Munmap { addr, len } => (libc::SYS_munmap, [addr, len, 0, 0, 0, 0]),
            RemoteCall::Membarrier { cmd } => (libc::SYS_membarrier, [cmd as u64, 0, 0, 0, 0, 0]),
            RemoteCall::CloneThread => {
                (libc::SYS_clone, [HELPER_CLONE_FLAGS as u64, 0, 0, 0, 0, 0])
            }
        }
    }

    /// The raw return value `ret` of this call run in thread `tid`: the value, or
    /// [`Error::RemoteSyscall`] for a `-errno`, with a hint where one is known.
    pub(crate) fn check(&self, pid: i32, tid: i32, ret: i64) -> Result<u64> {
        if !(-4095..0).contains(&ret) {
            return Ok(ret as u64);
        }
        let errno = Errno::from_raw(-ret as i32);
        Err(Error::RemoteSyscall {
            pid,
            tid,
            syscall: self.name(),
            errno,
            hint: self.hint(errno),
        })
    }

    /// What an error of this call usually means in a target.
    fn hint(&self, errno: Errno) -> &'static str {
        match (self, errno) {
            (RemoteCall::Mmap { .. }, Errno::EPERM | Errno::EACCES) => {
                " — a seccomp filter or a security policy (SELinux execmem, systemd \
                 MemoryDenyWriteExecute) in the target forbids it"
            }
            (RemoteCall::Mmap { .. }, Errno::ENOMEM) => {
                " — the target is out of memory or address space (RLIMIT_AS)"
            }
            (RemoteCall::Membarrier { .. }, Errno::ENOSYS | Errno::EINVAL | Errno::EPERM) => {
                " — the kernel (or a policy) does not offer a core-serializing membarrier here"
            }
            _ => "",
        }
    }
}

impl StoppedProcess {
    /// Runs `call` in a held thread from the syscall instruction at `insn` and returns its
    /// result, or the error it failed with ([`RemoteCall::check`]).
    pub(crate) fn run_call(&mut self, insn: u64, call: &RemoteCall) -> Result<u64> {
        let (tid, ret) = self.syscall(insn, call)?;
        call.check(self.pid(), tid.as_raw(), ret)
    }

    /// Fails unless `tid`'s seccomp filters allow each of `calls` run from the syscall
    /// instruction at `insn`. A thread without filters is remembered as such for the rest of
    /// the hold.
    pub(crate) fn check_calls(
        &mut self,
        tid: nix::unistd::Pid,
        insn: u64,
        calls: &[RemoteCall],
    ) -> Result<()> {
        if self.seccomp_free.contains(&tid) {
            return Ok(());
        }
        let pid = self.pid();
        if procfs::seccomp_status(pid, tid.as_raw())?.mode == 0 {
            self.seccomp_free.push(tid);
            return Ok(());
        }
        let ip = <Native as Arch>::after_syscall(insn);
        let planned: Vec<PlannedSyscall> = calls
            .iter()
            .map(|call| {
                let (nr, args) = call.nr_and_args();
                PlannedSyscall {
                    name: call.name(),
                    nr,
                    args,
                    ip,
                }
            })
            .collect();
        seccomp::check(pid, tid, &planned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_results() {
        let map = RemoteCall::Mmap {
            addr: 0x1000,
            len: 0x2000,
            prot: libc::PROT_READ,
            flags: libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        };
        let (nr, args) = map.nr_and_args();
        assert_eq!(nr, libc::SYS_mmap);
        assert_eq!(args[..3], [0x1000, 0x2000, libc::PROT_READ as u64]);
        assert_eq!(args[4] as i64, -1);
        assert_eq!(map.check(1, 2, 0x1000).unwrap(), 0x1000);
        let e = map
            .check(1, 2, -(libc::ENOMEM as i64))
            .unwrap_err()
            .to_string();
        assert!(e.contains("out of memory or address space"), "{e}");
        let barrier = RemoteCall::Membarrier {
            cmd: libc::MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE,
        };
        assert_eq!(
            barrier.nr_and_args(),
            (libc::SYS_membarrier, [32, 0, 0, 0, 0, 0])
        );
        assert_eq!(barrier.name(), "membarrier");
        let unmap = RemoteCall::Munmap { addr: 1, len: 2 };
        assert_eq!(unmap.nr_and_args(), (libc::SYS_munmap, [1, 2, 0, 0, 0, 0]));
        assert!(matches!(
            unmap.check(1, 2, -(libc::EINVAL as i64)),
            Err(Error::RemoteSyscall { hint: "", .. })
        ));
    }
}
