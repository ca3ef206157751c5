//! A target process, checked and with its vDSO read: the starting point of every operation.

use crate::error::{Error, Result};
use crate::mem::RemoteMemory;
use crate::procfs::{self, Mapping};
use crate::vdso::VdsoImage;

/// The vDSO entries we redirect, in the order their patch records are stored.
pub const HOOKED_SYMBOLS: [&str; 3] =
    ["__vdso_clock_gettime", "__vdso_gettimeofday", "__vdso_time"];

/// Held while changing a target; released on drop (or by the kernel if we die).
pub struct TargetLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// A live, 64-bit user process with a vDSO.
pub struct Target {
    pub pid: i32,
    pub mem: RemoteMemory,
    pub maps: Vec<Mapping>,
    pub vdso: VdsoImage,
}

impl Target {
    /// Checks that `pid` is something we can skew and reads its vDSO (without stopping it).
    pub fn open(pid: i32) -> Result<Target> {
        if pid <= 0 {
            return Err(Error::NoSuchProcess { pid });
        }
        let info = procfs::task_info(pid, None)?;
        let unsupported = |reason: &str| Error::Unsupported {
            pid,
            reason: reason.to_string(),
        };
        if info.is_kernel_thread {
            return Err(unsupported(&format!(
                "it is a kernel thread ({}), which has no user-space clock to skew",
                info.comm
            )));
        }
        if matches!(info.state, 'Z' | 'X') && procfs::threads(pid)?.len() <= 1 {
            return Err(unsupported(
                "it is a zombie (it has exited and waits to be reaped)",
            ));
        }
        let maps = procfs::maps(pid)?;
        let Some(vdso_map) = maps.iter().find(|m| m.path == "[vdso]") else {
            return Err(unsupported(
                "it has no vDSO (booted with vdso=0, or a process that unmapped it)",
            ));
        };
        let mem = RemoteMemory::new(pid);
        let bytes = mem.read(
            vdso_map.start,
            (vdso_map.end - vdso_map.start) as usize,
            "read the vDSO",
        )?;
        // EI_CLASS: a 32-bit process has a 32-bit vDSO.
        if bytes.get(4) == Some(&1) {
            return Err(unsupported(
                "it is a 32-bit process; timeskew supports 64-bit x86_64 processes",
            ));
        }
        let vdso = VdsoImage::parse(vdso_map.start, bytes)
            .map_err(|reason| Error::VdsoParse { pid, reason })?;
        Ok(Target {
            pid,
            mem,
            maps,
            vdso,
        })
    }

    /// Takes the per-target lock that serialises timeskew processes changing the same target.
    ///
    /// Two concurrent live updates could otherwise both fill the same spare parameter slot,
    /// one of them while readers already use it. The lock is an flock on the target's
    /// `/proc/PID/mem`: no file of our own, released by the kernel if we die, and the inode is
    /// the same for every timeskew looking at that process (from the same PID namespace).
    pub fn lock(&self) -> Result<TargetLock> {
        let file = std::fs::File::open(format!("/proc/{}/mem", self.pid))
            .map_err(|e| Error::from_io(self.pid, "open /proc/PID/mem to lock the target", e))?;
        log::debug!("pid {}: waiting for the target lock", self.pid);
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::from_errno(self.pid, self.pid, "lock the target", e))?;
        Ok(TargetLock { _lock: lock })
    }

    /// Re-reads the memory map (after the process has been stopped).
    pub fn refresh_maps(&mut self) -> Result<()> {
        self.maps = procfs::maps(self.pid)?;
        Ok(())
    }
}
