//! A target process, checked and with its vDSO read: the starting point of every operation.

pub(crate) mod clocks;
mod lock;
pub(crate) mod mem;
pub(crate) mod procfs;
pub(crate) mod program;

pub use lock::TargetLock;

use crate::arch::{Arch, Native};
use crate::error::{Error, Result};
use crate::target::mem::RemoteMemory;
use crate::vdso::VdsoImage;
use procfs::Mapping;

/// A live, 64-bit user process with a vDSO.
pub struct Target {
    pub pid: i32,
    /// A live thread through which the memory and maps are read (`pid` unless the leader
    /// has exited).
    pub via: i32,
    pub mem: RemoteMemory,
    pub maps: Vec<Mapping>,
    pub vdso: VdsoImage,
}

/// How long a process without a vDSO in its mappings is read again before it is refused: one
/// caught inside execve gets one within milliseconds …
const EXEC_SETTLE: std::time::Duration = std::time::Duration::from_millis(200);
/// … unless it waits for a CPU (or a page) meanwhile: while it is running or in an
/// uninterruptible wait — an exec under way — it is read again for up to this long. Seen in
/// CI: `sh -c 'echo ready; exec sleep …'` caught in its exec showed no vDSO for over 200 ms
/// while the tests' helpers (at the highest session weight) held both CPUs.
const EXEC_SETTLE_BUSY: std::time::Duration = std::time::Duration::from_secs(2);

/// `TIMESKEW_HIDE_VDSO_ONCE=1` hides the vDSO from `Target::open`'s first read of the
/// mappings, as a process caught inside execve shows them, so that the second read is tested.
/// Honoured only with the `fault-injection` feature (test builds).
fn hide_vdso_once() -> bool {
    cfg!(feature = "fault-injection")
        && std::env::var_os("TIMESKEW_HIDE_VDSO_ONCE").is_some_and(|v| v == "1")
}

/// `TIMESKEW_HIDE_VDSO_MS=N` hides it from every read of the first N ms (an exec that waits
/// for a CPU): test builds only, as above.
fn hide_vdso_for() -> std::time::Duration {
    let ms = cfg!(feature = "fault-injection")
        .then(|| std::env::var("TIMESKEW_HIDE_VDSO_MS").ok()?.parse().ok())
        .flatten();
    std::time::Duration::from_millis(ms.unwrap_or(0))
}

/// Whether `pid`'s mappings no longer have its vDSO at `was` (a new program, or none yet).
fn vdso_moved(pid: i32, via: i32, was: &Mapping) -> bool {
    procfs::maps_of(pid, via).is_ok_and(|maps| !maps.iter().any(|m| m == was))
}

impl Target {
    /// Checks that `pid` is something we can skew and reads its vDSO (without stopping it).
    pub fn open(pid: i32) -> Result<Target> {
        let via = live_thread(pid)?;
        let unsupported = |reason: &str| Error::Unsupported {
            pid,
            reason: reason.to_string(),
        };
        // A process caught inside execve shows its new memory without a vDSO until the kernel
        // maps one (after the program and its interpreter), and one that execs between the
        // two reads below has its vDSO elsewhere: read again for a moment before refusing.
        let started = std::time::Instant::now();
        let deadline = started + EXEC_SETTLE;
        let mem = RemoteMemory::through(pid, via);
        let mut first = true;
        let (maps, vdso_map, bytes) = loop {
            let maps = procfs::maps_of(pid, via)?;
            let hidden = (std::mem::take(&mut first) && hide_vdso_once())
                || started.elapsed() < hide_vdso_for();
            let found = maps.iter().find(|m| m.path == "[vdso]").cloned();
            if let Some(vdso_map) = found.filter(|_| !hidden) {
                let len = (vdso_map.end - vdso_map.start) as usize;
                match mem.read(vdso_map.start, len, "read the vDSO") {
                    Ok(bytes) => break (maps, vdso_map, bytes),
                    Err(_)
                        if std::time::Instant::now() < deadline
                            && vdso_moved(pid, via, &vdso_map) =>
                    {
                        log::debug!("pid {pid}: its vDSO moved (execve?); reading again");
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            // Exited meanwhile (an exiting process shows no mappings at all): gone, not refused.
            if !procfs::exists(pid) || procfs::is_zombie(pid) {
                return Err(Error::ProcessGone {
                    pid,
                    step: "read its mappings",
                });
            }
            // An exec under way (mappings, a thread running or in the kernel) gets the longer
            // wait.
            let exec_under_way = || {
                !maps.is_empty()
                    && started.elapsed() < EXEC_SETTLE_BUSY
                    && procfs::thread_in_state(pid, &['R', 'D']).is_ok_and(|t| t.is_some())
            };
            if std::time::Instant::now() >= deadline && !exec_under_way() {
                return Err(unsupported(if maps.is_empty() {
                    "it is exiting: its memory is already released"
                } else {
                    "it has no vDSO (booted with vdso=0, or a process that unmapped it)"
                }));
            }
            log::debug!("pid {pid}: no vDSO in its mappings yet (inside execve?); reading again");
            std::thread::sleep(std::time::Duration::from_millis(2));
        };
        // EI_CLASS: a 32-bit process has a 32-bit vDSO.
        if bytes.get(4) == Some(&1) {
            return Err(unsupported(&format!(
                "it is a 32-bit process; timeskew supports 64-bit {} processes",
                Native::NAME
            )));
        }
        let vdso = VdsoImage::parse(vdso_map.start, bytes, Native::MACHINE)
            .map_err(|reason| Error::VdsoParse { pid, reason })?;
        Ok(Target {
            pid,
            via,
            mem,
            maps,
            vdso,
        })
    }

    /// Refuses a change of code in a process whose memory another process shares
    /// ([`memory_sharer`](Self::memory_sharer)).
    pub fn check_memory_not_shared(&self) -> Result<()> {
        match self.memory_sharer()? {
            Some(sharer) => Err(Error::Unsupported {
                pid: self.pid,
                reason: sharer,
            }),
            None => Ok(()),
        }
    }

    /// Another process that shares this one's memory, said as a reason: one made with
    /// `clone(CLONE_VM)` but not as a thread (or the process that made this one so). A patch
    /// reaches that process too — skewed though not selected, and untraced: a thread of it
    /// meeting one of our breakpoints would die of SIGTRAP, one inside an entry being
    /// rewritten could run half an instruction. A vfork child shares the memory only until it
    /// execs, while its parent waits in the kernel: that wait is left to the attach, which
    /// waits for threads in such a state, as before.
    pub fn memory_sharer(&self) -> Result<Option<String>> {
        let pid = self.pid;
        let started = std::time::Instant::now();
        // A thread waiting in the kernel inside vfork, or a clone or clone3 (posix_spawn's
        // CLONE_VFORK), until its child execs.
        let vfork_wait = |p: i32| {
            procfs::threads(p).unwrap_or_default().into_iter().any(|t| {
                procfs::task_info(p, Some(t)).is_ok_and(|i| i.state == 'D')
                    && procfs::task_file(p, t, "syscall")
                        .and_then(|text| text.split_whitespace().next()?.parse::<i64>().ok())
                        .is_some_and(|nr| {
                            [libc::SYS_vfork, libc::SYS_clone, libc::SYS_clone3].contains(&nr)
                        })
            })
        };
        // Compared through live threads: an exited leader, like a zombie, has no memory at all,
        // and two of those compare equal.
        let shares = |other: i32| {
            other != pid
                && live_thread(other)
                    .is_ok_and(|o| procfs::same_memory(self.via, o).unwrap_or(false))
        };
        // A sharing that ends within moments is a vfork child's, caught between its creation
        // and its parent's wait, or at its exec: looked at again before it counts.
        let mut sharer = None;
        for _ in 0..SHARING_LOOKS {
            let info = procfs::task_info(pid, None)?;
            let mut candidates = procfs::children(pid);
            if info.ppid > 0 {
                candidates.push(info.ppid);
                candidates.extend(procfs::children(info.ppid));
            }
            // This process waiting for its vfork child: the attach waits that out. The other
            // way round — this process the vfork child, its parent waiting — a patch would stay
            // in the parent's memory after the child's exec: refused like any sharing.
            sharer = candidates.into_iter().find(|&other| shares(other));
            if sharer.is_none() || vfork_wait(pid) {
                sharer = None;
                break;
            }
            std::thread::sleep(SHARING_PAUSE);
        }
        log::debug!(
            "pid {pid}: memory shared with {sharer:?} (looked in {} µs)",
            started.elapsed().as_micros()
        );
        Ok(sharer.map(|other| {
            let comm = procfs::task_info(other, None)
                .map(|i| i.comm)
                .unwrap_or_else(|_| "?".into());
            if vfork_wait(other) {
                format!(
                    "it is a vfork child that has not exec'd yet: it shares the memory of pid \
                     {other} ({comm}), which waits for it, and a change of its code would stay \
                     in that process after the exec; retry once it has exec'd"
                )
            } else {
                format!(
                    "it shares its memory with pid {other} ({comm}), a process made with \
                     clone(CLONE_VM) rather than a thread: a change of its code would reach that \
                     process too, skewed without being selected and untraced, where a breakpoint \
                     of ours would kill it (SIGTRAP)"
                )
            }
        }))
    }

    /// Re-reads the memory map (after the process has been stopped).
    pub fn refresh_maps(&mut self) -> Result<()> {
        self.maps = procfs::maps_of(self.pid, self.via)?;
        Ok(())
    }
}

/// Looks at a sharing of memory before it counts (`memory_sharer`): a vfork child's lasts
/// microseconds to milliseconds unless its parent is seen waiting for it.
const SHARING_LOOKS: u32 = 20;
const SHARING_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

/// Checks that `pid` is a user process with a live thread and returns the thread to reach its
/// memory through: `pid` itself, unless its leader has exited (`pthread_exit` in `main`) and
/// keeps no memory map of its own while its other threads run on.
fn live_thread(pid: i32) -> Result<i32> {
    check_is_process(pid)?;
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
    let via = if matches!(info.state, 'Z' | 'X') {
        let live = procfs::threads(pid)?
            .into_iter()
            .find(|&t| t != pid && procfs::thread_alive(pid, t));
        match live {
            Some(t) => t,
            None => {
                return Err(unsupported(
                    "it is a zombie (it has exited and waits to be reaped)",
                ));
            }
        }
    } else {
        pid
    };
    Ok(via)
}

/// `pid` must name a process (a thread group), not one of its threads: the lock, the memory and
/// every thread are per process, and a thread id would slip past another timeskew's lock.
fn check_is_process(pid: i32) -> Result<()> {
    if pid <= 0 {
        return Err(Error::NoSuchProcess { pid });
    }
    match procfs::tgid_of(pid) {
        Some(tgid) if tgid != pid => Err(Error::IsAThread { tid: pid, tgid }),
        Some(_) => Ok(()),
        None => Err(Error::NoSuchProcess { pid }),
    }
}
