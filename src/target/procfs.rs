//! Reading `/proc/PID/…` of targets: process state, threads, memory maps, tracer, namespaces —
//! every path and every parser of those files is here.

use std::fs;

use nix::errno::Errno;

use crate::error::{Error, Refusal, Result};

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// `rwxp`-style permissions.
    pub perms: String,
    /// Backing file or pseudo-name (`[vdso]`, `[stack]`); empty for anonymous memory.
    pub path: String,
}

impl Mapping {
    pub fn is_anonymous(&self) -> bool {
        self.path.is_empty()
    }
}

/// What `/proc/PID/stat` says about a process or thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    pub comm: String,
    pub state: char,
    /// The parent process.
    pub ppid: i32,
    pub is_kernel_thread: bool,
    /// Threads of the process (field 20; a thread's own file gives its process's count).
    pub threads: usize,
}

/// PF_KTHREAD from include/linux/sched.h.
const PF_KTHREAD: u64 = 0x0020_0000;

/// Reads `/proc/PID/stat` (or `/proc/PID/task/TID/stat`).
pub fn task_info(pid: i32, tid: Option<i32>) -> Result<TaskInfo> {
    let path = match tid {
        Some(t) => format!("/proc/{pid}/task/{t}/stat"),
        None => format!("/proc/{pid}/stat"),
    };
    let text = fs::read_to_string(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound if tid.is_none() => Error::NoSuchProcess { pid },
        _ => io_error(pid, "read /proc/PID/stat", e),
    })?;
    parse_stat(&text).ok_or_else(|| Error::Io {
        pid,
        step: "parse /proc/PID/stat",
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, text.clone()),
    })
}

/// comm is in parentheses and may itself contain spaces and parentheses: split at the last ')'.
fn parse_stat(text: &str) -> Option<TaskInfo> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] = state (field 3), rest[1] = ppid (field 4), rest[6] = flags (field 9),
    // rest[17] = num_threads (field 20).
    let state = rest.first()?.chars().next()?;
    let ppid: i32 = rest.get(1)?.parse().ok()?;
    let flags: u64 = rest.get(6)?.parse().ok()?;
    let threads: usize = rest.get(17).and_then(|n| n.parse().ok()).unwrap_or(0);
    Some(TaskInfo {
        comm,
        state,
        ppid,
        is_kernel_thread: flags & PF_KTHREAD != 0,
        threads,
    })
}

/// Thread ids listed in `/proc/PID/task`.
pub fn threads(pid: i32) -> Result<Vec<i32>> {
    let dir =
        fs::read_dir(format!("/proc/{pid}/task")).map_err(|e| io_error(pid, "list threads", e))?;
    let mut tids: Vec<i32> = dir
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    Ok(tids)
}

/// Whether processes `a` and `b` share one address space (made with `clone(CLONE_VM)` without
/// `CLONE_THREAD`, or a vfork child before its exec): `kcmp(2)` with `KCMP_VM`, the kernel's
/// answer where `/proc` has none. Needs ptrace access to both.
pub fn same_memory(a: i32, b: i32) -> nix::Result<bool> {
    const KCMP_VM: libc::c_int = 1;
    // SAFETY: kcmp with KCMP_VM takes two pids, a type and two unused integers; it reads and
    // writes no memory of ours.
    let rc = unsafe { libc::syscall(libc::SYS_kcmp, a, b, KCMP_VM, 0, 0) };
    Errno::result(rc).map(|order| order == 0)
}

/// The children of `pid` (made by any of its threads). Read from each thread's
/// `/proc/PID/task/TID/children` for a process with few threads; for one with many (a file per
/// thread: 10–50 ms at 1,000), from the parent pid of every process instead.
pub fn children(pid: i32) -> Vec<i32> {
    const FEW_THREADS: usize = 64;
    let few = task_info(pid, None).is_ok_and(|i| i.threads <= FEW_THREADS);
    let mut kids: Vec<i32> = if few {
        threads(pid)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|tid| fs::read_to_string(format!("/proc/{pid}/task/{tid}/children")).ok())
            .flat_map(|text| {
                text.split_whitespace()
                    .filter_map(|k| k.parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect()
    } else {
        all_pids()
            .into_iter()
            .filter(|&p| p != pid && task_info(p, None).is_ok_and(|i| i.ppid == pid))
            .collect()
    };
    kids.sort_unstable();
    kids.dedup();
    kids
}

/// Parses the memory map of `pid` as its thread `tid` shows it (`/proc/PID/task/TID/maps`): the
/// same for every live thread, empty for an exited leader.
pub fn maps_of(pid: i32, tid: i32) -> Result<Vec<Mapping>> {
    let text = fs::read_to_string(format!("/proc/{pid}/task/{tid}/maps"))
        .map_err(|e| io_error(pid, "read /proc/PID/maps", e))?;
    Ok(text.lines().filter_map(parse_maps_line).collect())
}

fn parse_maps_line(line: &str) -> Option<Mapping> {
    let mut fields = line.splitn(6, char::is_whitespace);
    let range = fields.next()?;
    let perms = fields.next()?.to_string();
    let (start, end) = range.split_once('-')?;
    // offset, dev, inode, then the path (possibly with spaces).
    let path = fields.nth(3).unwrap_or("").trim().to_string();
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        perms,
        path,
    })
}

/// The tracer of `pid` (the tracing *thread*, as `TracerPid` shows it), with its command name.
pub fn tracer_of(pid: i32) -> Option<(i32, String)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let tracer: i32 = status_field(&status, "TracerPid:")?.parse().ok()?;
    if tracer == 0 {
        return None;
    }
    let name = fs::read_to_string(format!("/proc/{tracer}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    Some((tracer, name))
}

/// The process (thread group) that thread `tid` belongs to.
pub fn tgid_of(tid: i32) -> Option<i32> {
    let status = fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status_field(&status, "Tgid:")?.parse().ok()
}

/// The value of the `name` line (`"Tgid:"`) of a `status` file, trimmed.
fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
}

/// The seccomp state of one thread, from `/proc/PID/task/TID/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeccompStatus {
    /// `Seccomp:` 0 = off, 1 = strict, 2 = filter (0 on a kernel without seccomp).
    pub mode: u32,
    /// `Seccomp_filters:` how many filters apply to the thread (kernels since 5.9).
    pub filters: Option<u32>,
}

/// Reads the `Seccomp:` and `Seccomp_filters:` lines of thread `tid` of `pid`.
pub fn seccomp_status(pid: i32, tid: i32) -> Result<SeccompStatus> {
    let text = fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
        .map_err(|e| io_error(pid, "read /proc/PID/task/TID/status", e))?;
    let field = |name: &str| -> Result<Option<u32>> {
        match status_field(&text, name) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| Error::Io {
                pid,
                step: "parse the seccomp lines of /proc/PID/task/TID/status",
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, text.clone()),
            }),
        }
    };
    Ok(SeccompStatus {
        mode: field("Seccomp:")?.unwrap_or(0),
        filters: field("Seccomp_filters:")?,
    })
}

/// `/proc/sys/kernel/yama/ptrace_scope`, or a note that Yama is absent.
pub fn yama_scope() -> String {
    fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "Yama not enabled".into())
}

/// What the kernel reports a thread to be waiting in (`/proc/PID/task/TID/wchan`), for messages.
pub fn wchan(pid: i32, tid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/task/{tid}/wchan"))
        .ok()
        .filter(|s| !s.is_empty() && s != "0")
        .unwrap_or_else(|| "unknown".into())
}

/// True when `/proc/PID` exists (a process, a thread, or a zombie not yet reaped).
pub fn exists(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// A zombie (or dead) process, waiting to be reaped: state Z or X and at most one thread (a
/// process whose main thread alone has exited is a zombie leader but still runs).
pub fn is_zombie(pid: i32) -> bool {
    task_info(pid, None).is_ok_and(|i| matches!(i.state, 'Z' | 'X'))
        && threads(pid).map_or(0, |t| t.len()) <= 1
}

/// Whether job control (SIGSTOP, SIGTSTP, …) holds `pid` stopped (state `T`; a tracer's stop
/// is `t`). One read: a group stop stops the leader with the rest — unless the leader has
/// exited (a zombie listed while the other threads run), when the threads are looked at.
pub fn job_control_stopped(pid: i32) -> bool {
    match task_info(pid, None).map(|i| i.state) {
        Ok('T') => true,
        Ok('Z' | 'X') => thread_in_state(pid, &['T']).is_ok_and(|t| t.is_some()),
        _ => false,
    }
}

/// A thread of `pid` whose state (`stat` field 3) is one of `states`, if any.
pub fn thread_in_state(pid: i32, states: &[char]) -> Result<Option<i32>> {
    Ok(threads(pid)?
        .into_iter()
        .find(|&t| task_info(pid, Some(t)).is_ok_and(|i| states.contains(&i.state))))
}

/// Whether thread `tid` of `pid` is still alive: listed and neither a zombie nor dead. The
/// kernel answers PTRACE_SEIZE with EPERM, not ESRCH, for one that has exited.
pub fn thread_alive(pid: i32, tid: i32) -> bool {
    task_info(pid, Some(tid)).is_ok_and(|i| !matches!(i.state, 'Z' | 'X'))
}

/// Every process (and thread group leader) listed in `/proc`; processes come and go while it
/// is read.
pub fn all_pids() -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Where `pid`'s namespace link `which` (`time`, `time_for_children`) points, if readable.
pub fn namespace(pid: i32, which: &str) -> Option<std::path::PathBuf> {
    fs::read_link(format!("/proc/{pid}/ns/{which}")).ok()
}

/// `/proc/PID/timens_offsets`: the offsets of the time namespace of `pid`'s future children.
pub fn timens_offsets(pid: i32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/timens_offsets")).ok()
}

/// The `mem` file of `pid` as its thread `tid` reaches it (a leader that has exited keeps no
/// memory of its own): opened by `RemoteMemory`, the remote-memory mechanism.
pub fn mem_path(pid: i32, tid: i32) -> String {
    format!("/proc/{pid}/task/{tid}/mem")
}

/// The `/proc/PID` directory, opened to take the target lock on (see `TargetLock`).
pub fn process_dir(pid: i32) -> Result<fs::File> {
    fs::File::open(format!("/proc/{pid}")).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NoSuchProcess { pid },
        _ => io_error(pid, "open /proc/PID to lock the target", e),
    })
}

/// Why an access to thread `tid` of `pid` may have been refused: the tracer of the thread (the
/// one traced may be a single thread, `strace -p TID`) or of the process, unless it is a thread
/// of this process, and the Yama setting.
pub(crate) fn refusal(pid: i32, tid: i32) -> Refusal {
    let me = std::process::id() as i32;
    let other_tracer = tracer_of(tid)
        .or_else(|| tracer_of(pid))
        .filter(|&(tracer, _)| tgid_of(tracer) != Some(me));
    Refusal {
        other_tracer,
        yama: yama_scope(),
    }
}

/// The error for `errno` from a ptrace call or an access to thread `tid` of `pid`; a refusal
/// (EPERM, EACCES) is explained by what /proc says now, read here where the call failed.
pub(crate) fn errno_error(pid: i32, tid: i32, step: &'static str, errno: Errno) -> Error {
    match errno {
        Errno::EPERM | Errno::EACCES => Error::refused(pid, step, errno, refusal(pid, tid)),
        _ => Error::ptrace(pid, tid, step, errno),
    }
}

/// The error for a failed read or open under `/proc/PID`, recognising vanished processes and
/// explaining refusals like [`errno_error`].
pub(crate) fn io_error(pid: i32, step: &'static str, source: std::io::Error) -> Error {
    match source.raw_os_error().map(Errno::from_raw) {
        Some(e @ (Errno::EPERM | Errno::EACCES)) => errno_error(pid, pid, step, e),
        _ => Error::io(pid, step, source),
    }
}

/// Why `pid` is frozen by a cgroup freezer, if it is: a thread of a frozen (or freezing)
/// cgroup never reports a ptrace stop until it is thawed, so it is checked before attaching.
/// Looks at the v2 cgroup (its `cgroup.freeze` and every ancestor's) and the v1 `freezer`
/// hierarchy (`freezer.state`, which includes what a parent imposes).
pub fn frozen_by(pid: i32) -> Option<String> {
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mounts = fs::read_to_string("/proc/self/mountinfo").ok()?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            let Some(dir) = cgroup_dir(&mounts, None, path) else {
                continue;
            };
            // cgroup.freeze is the cgroup's own setting; a frozen ancestor freezes it too.
            let mut d = Some(dir.as_path());
            while let Some(cur) = d {
                let file = cur.join("cgroup.freeze");
                match fs::read_to_string(&file) {
                    Ok(v) if v.trim() == "1" => {
                        return Some(format!(
                            "cgroup v2 freezer: {} is 1; thaw it with `echo 0 > {}`",
                            file.display(),
                            file.display()
                        ));
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
                d = cur.parent();
            }
        } else if controllers.split(',').any(|c| c == "freezer") {
            let Some(dir) = cgroup_dir(&mounts, Some("freezer"), path) else {
                continue;
            };
            let file = dir.join("freezer.state");
            if let Ok(v) = fs::read_to_string(&file)
                && v.trim() != "THAWED"
            {
                return Some(format!(
                    "cgroup v1 freezer: {} is {}; thaw it with `echo THAWED > {}`",
                    file.display(),
                    v.trim(),
                    file.display()
                ));
            }
        }
    }
    None
}

/// The directory of cgroup `path` in the hierarchy mounted for `controller` (v1), or the
/// cgroup2 mount (`None`), as this process sees it in `/proc/self/mountinfo`.
fn cgroup_dir(mountinfo: &str, controller: Option<&str>, path: &str) -> Option<std::path::PathBuf> {
    parse_cgroup_mounts(mountinfo)
        .iter()
        .find(|m| match (controller, &m.controllers) {
            (None, None) => true,
            (Some(c), Some(have)) => have.iter().any(|h| h == c),
            _ => false,
        })?
        .dir_of(path)
}

/// A mounted cgroup hierarchy, from a `cgroup` (v1) or `cgroup2` line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// Where it is mounted (`/sys/fs/cgroup/cpu`, `/sys/fs/cgroup/unified`, `/sys/fs/cgroup`).
    pub mountpoint: std::path::PathBuf,
    /// The cgroup shown at the mount point (`/` unless a sub-tree is mounted).
    pub root: String,
    /// v1: the controllers and `name=` options of the hierarchy; v2: `None`.
    pub controllers: Option<Vec<String>>,
    /// The superblock (`major:minor`): the same hierarchy mounted twice has one.
    pub device: String,
}

impl CgroupMount {
    /// The directory of cgroup `path` (as `/proc/PID/cgroup` writes it) under this mount, if
    /// the mount shows it.
    pub fn dir_of(&self, path: &str) -> Option<std::path::PathBuf> {
        let rel = if self.root == "/" {
            path
        } else {
            let rest = path.strip_prefix(self.root.as_str())?;
            // `/a/bc` is not below a mount of `/a/b`.
            if !(rest.is_empty() || rest.starts_with('/')) {
                return None;
            }
            rest
        };
        Some(self.mountpoint.join(rel.trim_start_matches('/')))
    }

    /// Whether this mount holds the hierarchy of a `/proc/PID/cgroup` line with `controllers`
    /// (empty for the v2 line `0::PATH`).
    pub fn holds(&self, controllers: &str) -> bool {
        match &self.controllers {
            None => controllers.is_empty(),
            Some(have) => {
                !controllers.is_empty()
                    && controllers.split(',').all(|c| have.iter().any(|h| h == c))
            }
        }
    }
}

/// The cgroup hierarchies mounted in this process's mount namespace.
pub fn cgroup_mounts() -> Result<Vec<CgroupMount>> {
    let text = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::BadSelection(format!("cannot read /proc/self/mountinfo: {e}")))?;
    Ok(parse_cgroup_mounts(&text))
}

/// The `cgroup` and `cgroup2` lines of a mountinfo text.
pub fn parse_cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        // id parent major:minor root mountpoint options... - fstype source superoptions
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (Some(device), Some(root), Some(mountpoint), Some(fstype)) =
            (fields.get(2), fields.get(3), fields.get(4), right.first())
        else {
            continue;
        };
        let controllers = match *fstype {
            "cgroup2" => None,
            // The super options name the controllers (`rw,cpu,cpuacct`, `rw,name=systemd`).
            "cgroup" => Some(
                right
                    .get(2)
                    .map(|o| {
                        o.split(',')
                            .filter(|o| !matches!(*o, "rw" | "ro"))
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            _ => continue,
        };
        out.push(CgroupMount {
            mountpoint: unescape_mountinfo(mountpoint).into(),
            root: unescape_mountinfo(root),
            controllers,
            device: device.to_string(),
        });
    }
    out
}

/// mountinfo writes space, tab, newline and backslash in paths as `\NNN` octal escapes.
fn unescape_mountinfo(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The text of `/proc/PID/cgroup`: one `hierarchy:controllers:path` line per hierarchy.
pub fn cgroup_of(pid: i32) -> std::io::Result<String> {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
}

/// Whether `pid` is in one of the cgroup directories `dirs` or below, in any hierarchy (as
/// `Selection::cgroup_dirs` lists them). False when the process cannot be read (it is gone).
/// Reads `/proc/self/mountinfo` each time: mounts may change, and the read is cheap.
pub fn pid_in_cgroups(pid: i32, dirs: &[std::path::PathBuf]) -> bool {
    let (Ok(cgroups), Ok(mounts)) = (cgroup_of(pid), cgroup_mounts()) else {
        return false;
    };
    cgroup_dirs_in(&cgroups, &mounts)
        .iter()
        .any(|d| dirs.iter().any(|want| d.starts_with(want)))
}

/// The directories of the cgroups a `/proc/PID/cgroup` text names, in every mount that shows
/// them.
pub fn cgroup_dirs_in(cgroups: &str, mounts: &[CgroupMount]) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        out.extend(
            mounts
                .iter()
                .filter(|m| m.holds(controllers))
                .filter_map(|m| m.dir_of(path)),
        );
    }
    out
}

// --- for timeskew run ---

/// The program `pid` runs: where `/proc/PID/exe` points.
pub fn exe(pid: i32) -> std::io::Result<std::path::PathBuf> {
    fs::read_link(format!("/proc/{pid}/exe"))
}

/// The file `pid` runs (its owner and mode), reached through `/proc/PID/exe`, which holds even
/// when the path it was started from has changed since.
pub fn exe_metadata(pid: i32) -> std::io::Result<fs::Metadata> {
    fs::metadata(format!("/proc/{pid}/exe"))
}

/// The `security.capability` attribute (the file capabilities) of the file `pid` runs, if it
/// has one: the raw `struct vfs_cap_data`, at most 32 bytes.
pub fn exe_capability_attr(pid: i32) -> Option<Vec<u8>> {
    let path = std::ffi::CString::new(format!("/proc/{pid}/exe")).ok()?;
    let mut buf = [0u8; 32];
    // SAFETY: valid NUL-terminated strings and a buffer of the length given.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            c"security.capability".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    Some(buf.get(..usize::try_from(n).ok()?)?.to_vec())
}

/// One small file of `/proc/PID/task/TID` (`stat`, `syscall`, `schedstat`) in one read
/// where it fits: the live path reads a few of them per thread, for every thread of targets
/// with thousands, and `read_to_string`'s size query and second read cost as much as the
/// read itself.
pub fn task_file(pid: i32, tid: i32, name: &str) -> Option<String> {
    use std::io::Read;
    let mut file = open_task_file(pid, tid, name).ok()?;
    let mut buf = [0u8; 1024];
    let n = file.read(&mut buf).ok()?;
    if n < buf.len() {
        // These files are made whole at the first read: a short one is all of it.
        return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let mut all = buf.to_vec();
    file.read_to_end(&mut all).ok()?;
    Some(String::from_utf8_lossy(&all).into_owned())
}

std::thread_local! {
    /// `/proc/PID/task` of the process whose threads this thread read last, kept open: a file
    /// opened relative to it skips the walk down `/proc/PID/task` (≈ 2.5 µs of the 7–10 an open
    /// costs; three per thread, 1,000 threads). One descriptor per thread that reads threads.
    static TASK_DIR: std::cell::RefCell<Option<(i32, std::os::fd::OwnedFd)>> =
        const { std::cell::RefCell::new(None) };
}

/// Opens `/proc/PID/task/TID/NAME` for reading, relative to the kept `/proc/PID/task`. Where
/// that fails (the thread is gone, or the kept directory is of a process that died and whose
/// pid was taken again), by its whole path — what it says is then the answer.
fn open_task_file(pid: i32, tid: i32, name: &str) -> std::io::Result<fs::File> {
    use nix::fcntl::{OFlag, openat};
    use nix::sys::stat::Mode;
    let relative = TASK_DIR.with(|kept| {
        let mut kept = kept.try_borrow_mut().ok()?;
        if kept.as_ref().is_none_or(|(of, _)| *of != pid) {
            let dir = fs::File::open(format!("/proc/{pid}/task")).ok()?;
            *kept = Some((pid, dir.into()));
        }
        let (_, dir) = kept.as_ref()?;
        let opened = openat(
            dir,
            format!("{tid}/{name}").as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        );
        if opened.is_err() {
            *kept = None;
        }
        opened.ok()
    });
    match relative {
        Some(fd) => Ok(fs::File::from(fd)),
        None => fs::File::open(format!("/proc/{pid}/task/{tid}/{name}")),
    }
}

/// A thread's scheduler counters from `/proc/PID/task/TID/schedstat`: time run (ns), time
/// waited on a run queue (ns), times switched in. Any change means it ran in between; a
/// kernel without them prints zeros (`None` here).
pub fn schedstat(pid: i32, tid: i32) -> Option<[u64; 3]> {
    parse_schedstat(&task_file(pid, tid, "schedstat")?)
}

fn parse_schedstat(text: &str) -> Option<[u64; 3]> {
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    let counters = [fields.next()??, fields.next()??, fields.next()??];
    (counters[2] > 0).then_some(counters)
}

/// A thread's `schedstat` kept open, to read its counters again with one system call (a
/// `/proc` file read from offset 0 is made anew): thousands of threads are read this way
/// while a breakpoint is in place. Where the file could not be kept (out of descriptors), each
/// read opens it by path.
pub struct SchedCounters {
    pid: i32,
    tid: i32,
    file: Option<fs::File>,
}

impl SchedCounters {
    pub fn open(pid: i32, tid: i32) -> SchedCounters {
        let file = open_task_file(pid, tid, "schedstat").ok();
        SchedCounters { pid, tid, file }
    }

    /// The counters now; `None` once the thread is gone (or on a kernel without them).
    pub fn read(&self) -> Option<[u64; 3]> {
        use std::os::unix::fs::FileExt;
        let Some(file) = &self.file else {
            return schedstat(self.pid, self.tid);
        };
        let mut buf = [0u8; 128];
        let n = file.read_at(&mut buf, 0).ok()?;
        parse_schedstat(std::str::from_utf8(&buf[..n]).ok()?)
    }
}

/// How many threads `pid` has (`Threads:` in its status); `None` if it cannot be read.
pub fn thread_count(pid: i32) -> Option<usize> {
    status(pid)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))?
        .trim()
        .parse()
        .ok()
}

/// Grows this process's descriptor table at once to hold `kept` more files ([`SchedCounters`]
/// keeps one per thread). Grown one file at a time it doubles again and again (64, 128, …,
/// 1,024), and each growth of a table that threads share waits for an RCU grace period in the
/// kernel (`expand_files` → `synchronize_rcu`): 4–16 ms each here, two or three per first
/// look at 1,000 threads. One growth waits once at most, not at all while single-threaded
/// (the command line's helper, before it starts a thread). Best effort: a table that cannot
/// grow leaves each read to open the file by path.
pub fn reserve_descriptors(kept: usize) {
    use nix::fcntl::{FcntlArg, fcntl};
    use nix::sys::resource::{Resource, getrlimit};
    const SMALL: usize = 32; // fits the table a process starts with (64)
    if kept < SMALL {
        return;
    }
    let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let below_limit = usize::try_from(soft)
        .unwrap_or(usize::MAX)
        .saturating_sub(1);
    let highest = (kept + 2 * SMALL).min(below_limit);
    let Ok(probe) = fs::File::open("/proc/self/stat") else {
        return;
    };
    let at = i32::try_from(highest).unwrap_or(i32::MAX);
    if let Ok(fd) = fcntl(&probe, FcntlArg::F_DUPFD_CLOEXEC(at)) {
        let _ = nix::unistd::close(fd); // the table stays grown
    }
}

/// Whether `tid` is a thread of process `pid` (`/proc/PID/task/TID` exists).
pub fn has_thread(pid: i32, tid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}/task/{tid}")).exists()
}

/// The text of `/proc/PID/status`.
pub fn status(pid: i32) -> std::io::Result<String> {
    fs::read_to_string(format!("/proc/{pid}/status"))
}

/// The signals pending for `pid`'s main thread (`SigPnd`) and for the whole process (`ShdPnd`),
/// as `(thread, process)` masks: bit n-1 for signal n.
pub fn pending_signals(pid: i32) -> Option<(u64, u64)> {
    let status = status(pid).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    };
    Some((field("SigPnd:")?, field("ShdPnd:")?))
}

/// Whether `signal` is pending for `pid`'s main thread or for the whole process.
pub fn signal_pending(pid: i32, signal: nix::sys::signal::Signal) -> bool {
    pending_signals(pid).is_some_and(|(t, p)| (t | p) & (1u64 << (signal as u32 - 1)) != 0)
}

/// Sets the nice value of this process's autogroup (`/proc/self/autogroup`: the scheduler
/// group of its session when `kernel.sched_autogroup_enabled` is 1), which weighs this session
/// against the others as a whole.
pub fn set_own_autogroup_nice(nice: i32) -> std::io::Result<()> {
    fs::write("/proc/self/autogroup", nice.to_string())
}

/// Puts thread `tid` under the lowest real-time priority (`SCHED_FIFO` 1): it then gets a CPU
/// as soon as it can run, ahead of every normal thread. Only for a thread of timeskew's own
/// making that runs a few instructions and exits (the membarrier registration helper, see
/// `ptrace/live/worker.rs`). Needs CAP_SYS_NICE.
pub fn set_realtime(tid: i32) -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: sched_setscheduler reads `param` and writes nothing of ours.
    let rc = unsafe { libc::sched_setscheduler(tid, libc::SCHED_FIFO, &param) };
    Errno::result(rc).map(drop).map_err(std::io::Error::from)
}

/// Gives the calling thread the lowest weight (nice 19): for work that may wait for a CPU
/// until nothing else wants one. Raising one's own nice value needs no privilege.
pub fn lower_own_thread_weight() {
    // SAFETY: setpriority takes plain integers; `who` 0 with PRIO_PROCESS is the calling
    // thread on Linux (nice is per thread).
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
}

/// Waits, at most `within`, until thread `tid` of this process is gone from `/proc`. A joined
/// thread is not gone yet: pthread_join returns before the kernel's exit work for it has run —
/// among it `exit_ptrace`, which detaches whatever that thread still traced.
pub fn wait_own_thread_gone(tid: i32, within: std::time::Duration) {
    let path = format!("/proc/self/task/{tid}");
    let deadline = std::time::Instant::now() + within;
    while std::path::Path::new(&path).exists() && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
}

/// The text of `/proc/self/status`: this process's own.
pub fn own_status() -> std::io::Result<String> {
    fs::read_to_string("/proc/self/status")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserving_descriptors_grows_the_table_at_once_and_keeps_none() {
        let me = std::process::id() as i32;
        let size = || -> usize {
            let status = status(me).unwrap();
            let field = status.lines().find_map(|l| l.strip_prefix("FDSize:"));
            field.unwrap().trim().parse().unwrap()
        };
        reserve_descriptors(3000);
        assert!(size() > 3000 + 64, "FDSize {}", size());
        // The descriptor that grew it is closed again.
        assert!(!std::path::Path::new("/proc/self/fd/3064").exists());
    }

    #[test]
    fn a_thread_count_is_read_from_status() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let count = thread_count(pid);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(count, Some(1));
        assert_eq!(thread_count(pid), None, "reaped: no status");
    }

    /// `program` started with piped stdin and stdout, once it has printed "ready".
    fn spawn_ready(program: &str, args: &[&str]) -> (std::process::Child, i32) {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect(program);
        let pid = child.id() as i32;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        (child, pid)
    }

    #[test]
    fn a_blocked_signal_shows_as_pending_until_it_is_taken() {
        use std::io::Write;
        // A process that blocks SIGUSR1, says so, and waits for a line.
        let (mut child, pid) = spawn_ready(
            "python3",
            &[
                "-c",
                "import signal, sys\n\
                 signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])\n\
                 print('ready', flush=True)\n\
                 sys.stdin.readline()",
            ],
        );
        use nix::sys::signal::{Signal, kill};
        assert!(!signal_pending(pid, Signal::SIGUSR1));
        kill(nix::unistd::Pid::from_raw(pid), Signal::SIGUSR1).unwrap();
        // Sent to the process: shared-pending (bit 9 for signal 10), nothing else.
        assert_eq!(pending_signals(pid), Some((0, 1 << 9)));
        assert!(signal_pending(pid, Signal::SIGUSR1));
        assert!(!signal_pending(pid, Signal::SIGCONT));
        child.stdin.take().unwrap().write_all(b"\n").unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(pending_signals(1 << 30), None);
    }

    #[test]
    fn task_files_are_read_right_across_processes_through_the_kept_directory() {
        use std::io::Write;
        let field = |pid: i32, tid: i32| {
            task_file(pid, tid, "stat").and_then(|s| s.split(' ').next()?.parse::<i32>().ok())
        };
        let me = std::process::id() as i32;
        let (mut child, pid) = spawn_ready("sh", &["-c", "echo ready; read line"]);
        // Each process's own file, the kept directory switching between them.
        for _ in 0..3 {
            assert_eq!(field(me, me), Some(me));
            assert_eq!(field(pid, pid), Some(pid));
        }
        // A thread of another process is not found under this one.
        assert_eq!(field(pid, me), None);
        assert_eq!(field(me, pid), None);
        let counters = SchedCounters::open(pid, pid);
        assert!(counters.read().is_some());
        child.stdin.take().unwrap().write_all(b"\n").unwrap();
        let _ = child.wait();
        // Reaped: gone, though its directory was the one kept.
        assert_eq!(field(pid, pid), None);
        assert_eq!(counters.read(), None);
        assert_eq!(field(me, me), Some(me));
    }

    #[test]
    fn a_forked_child_has_memory_of_its_own_and_is_listed_as_a_child() {
        use std::io::Write;
        let me = std::process::id() as i32;
        let (mut child, pid) = spawn_ready("sh", &["-c", "echo ready; read line"]);
        assert_eq!(same_memory(me, me), Ok(true));
        assert_eq!(same_memory(me, pid), Ok(false));
        assert!(children(me).contains(&pid), "{:?}", children(me));
        child.stdin.take().unwrap().write_all(b"\n").unwrap();
        let _ = child.wait();
        assert!(same_memory(me, pid).is_err(), "reaped: no such process");
    }

    #[test]
    fn the_children_of_a_process_with_many_threads_are_found_too() {
        use std::io::Write;
        // 100 threads (over the per-thread files' limit), then a child made by one of them.
        let (mut parent, pid) = spawn_ready(
            "python3",
            &[
                "-c",
                "import subprocess, sys, threading\n\
                 stop = threading.Event()\n\
                 ts = [threading.Thread(target=stop.wait) for _ in range(100)]\n\
                 [t.start() for t in ts]\n\
                 child = [None]\n\
                 def spawn(): child[0] = subprocess.Popen(['sleep', '30'])\n\
                 t = threading.Thread(target=spawn); t.start(); t.join()\n\
                 print('ready', flush=True)\n\
                 sys.stdin.readline()\n\
                 child[0].kill(); child[0].wait(); stop.set()",
            ],
        );
        assert!(threads(pid).unwrap().len() > 64);
        let kids = children(pid);
        assert_eq!(kids.len(), 1, "{kids:?}");
        let child = task_info(kids[0], None).unwrap();
        assert_eq!((child.ppid, child.comm.as_str()), (pid, "sleep"));
        parent.stdin.take().unwrap().write_all(b"\n").unwrap();
        let _ = parent.wait();
    }

    #[test]
    fn scheduler_counters_move_when_a_thread_runs_and_only_then() {
        let me = std::process::id() as i32;
        // A thread blocked on a channel: its counters stand still until it is woken.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<i32>();
        let sleeper = std::thread::spawn(move || {
            ready_tx.send(nix::unistd::gettid().as_raw()).unwrap();
            rx.recv().unwrap();
        });
        let tid = ready_rx.recv().unwrap();
        // Asleep once the kernel says so and its counters have settled (the last update comes
        // when it leaves the CPU, a moment after its state says sleeping).
        let mut before = schedstat(me, tid).expect("this kernel keeps scheduler counters");
        for _ in 0..1000 {
            std::thread::sleep(std::time::Duration::from_millis(1));
            let now = schedstat(me, tid).expect("counters");
            if now == before && task_info(me, Some(tid)).is_ok_and(|i| i.state == 'S') {
                break;
            }
            before = now;
        }
        assert!(before[2] > 0, "{before:?}");
        for _ in 0..3 {
            std::thread::sleep(std::time::Duration::from_millis(2));
            assert_eq!(schedstat(me, tid), Some(before), "it has not run");
        }
        tx.send(()).unwrap();
        sleeper.join().unwrap();
        let kept = SchedCounters::open(me, me);
        assert!(kept.file.is_some(), "own schedstat kept open");
        let first = kept.read().expect("own counters");
        assert!(
            kept.read()
                .is_some_and(|again| again[0] >= first[0] && again[2] >= first[2])
        );
        let own = schedstat(me, me).expect("own counters");
        assert!(own[0] > 0 && own[2] > 0, "{own:?}");
        assert!(task_file(me, me, "schedstat").is_some_and(|t| t.ends_with('\n')));
        assert_eq!(task_file(me, 1 << 30, "schedstat"), None);
    }

    #[test]
    fn stat_with_odd_comm() {
        let t = parse_stat("42 (a) b (c)) S 1 42 42 0 -1 4194560 0 0").unwrap();
        assert_eq!(t.comm, "a) b (c)");
        assert_eq!(t.state, 'S');
        assert!(!t.is_kernel_thread);
        assert_eq!(t.ppid, 1);
        let k = parse_stat("2 (kthreadd) S 0 0 0 0 -1 2129984 0 0").unwrap();
        assert!(k.is_kernel_thread);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn maps_lines() {
        let m = parse_maps_line(
            "7f3ca2d37000-7f3ca2d39000 r-xp 00000000 00:00 0                          [vdso]",
        )
        .unwrap();
        assert_eq!(
            (m.start, m.end, m.perms.as_str()),
            (0x7f3ca2d37000, 0x7f3ca2d39000, "r-xp")
        );
        assert_eq!(m.path, "[vdso]");
        let anon = parse_maps_line("7f0000000000-7f0000001000 rw-p 00000000 00:00 0").unwrap();
        assert!(anon.is_anonymous());
        let spaced =
            parse_maps_line("55d0-55d1 r--p 00000000 08:01 123 /tmp/a b (deleted)").unwrap();
        assert_eq!(spaced.path, "/tmp/a b (deleted)");
    }

    #[test]
    fn own_process() {
        let me = std::process::id() as i32;
        assert!(threads(me).unwrap().contains(&me));
        assert!(maps_of(me, me).unwrap().iter().any(|m| m.path == "[vdso]"));
        assert!(!task_info(me, None).unwrap().is_kernel_thread);
        // (Other tests' threads come and go: only that it is read.)
        assert!(task_info(me, None).unwrap().threads >= 1);
        assert!(matches!(
            task_info(i32::MAX, None),
            Err(Error::NoSuchProcess { .. })
        ));
    }

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
50 23 0:38 /kubepods /host\\040cg rw - cgroup2 cgroup2 rw
60 23 0:40 / /proc rw - proc proc rw
";

    #[test]
    fn cgroup_mounts_and_directories() {
        let mounts = parse_cgroup_mounts(MOUNTINFO);
        assert_eq!(mounts.len(), 4, "{mounts:?}");
        assert_eq!(
            mounts[0].controllers,
            Some(vec!["cpu".to_string(), "cpuacct".to_string()])
        );
        assert_eq!(mounts[2].controllers, None);
        assert_eq!(mounts[3].mountpoint, std::path::Path::new("/host cg"));
        assert_eq!(
            (mounts[3].root.as_str(), mounts[3].device.as_str()),
            ("/kubepods", "0:38")
        );
        let cgroups = "\
12:cpu,cpuacct:/docker/abc
3:name=systemd:/docker/abc
0::/kubepods/pod1/abc
";
        let dirs: Vec<String> = cgroup_dirs_in(cgroups, &mounts)
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        assert_eq!(
            dirs,
            [
                "/sys/fs/cgroup/cpu,cpuacct/docker/abc",
                "/sys/fs/cgroup/systemd/docker/abc",
                "/sys/fs/cgroup/unified/kubepods/pod1/abc",
                "/host cg/pod1/abc",
            ]
        );
        // A sub-tree mount shows only what is below its root, on a path boundary.
        assert_eq!(mounts[3].dir_of("/kubepodsX/a"), None);
        assert!(!mounts[0].holds("cpu,memory") && mounts[0].holds("cpuacct"));
        assert!(!mounts[2].holds("cpu") && mounts[2].holds(""));
        assert_eq!(
            cgroup_dir(MOUNTINFO, Some("cpu"), "/a"),
            Some("/sys/fs/cgroup/cpu,cpuacct/a".into())
        );
    }

    #[test]
    fn this_process_is_in_its_own_cgroups_only() {
        let me = std::process::id() as i32;
        let mounts = cgroup_mounts().unwrap();
        let mine = cgroup_dirs_in(&cgroup_of(me).unwrap(), &mounts);
        assert!(!mine.is_empty(), "{mounts:?}");
        assert!(pid_in_cgroups(me, &mine[..1]));
        // Below the given directory counts; a sibling does not.
        let parent = mine[0].parent().unwrap().to_path_buf();
        assert!(pid_in_cgroups(me, std::slice::from_ref(&parent)));
        assert!(!pid_in_cgroups(
            me,
            &[parent.join("timeskew-no-such-cgroup")]
        ));
        assert!(!pid_in_cgroups(i32::MAX, &mine));
    }
}
