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
    // rest[0] = state (field 3), rest[1] = ppid (field 4), rest[6] = flags (field 9).
    let state = rest.first()?.chars().next()?;
    let ppid: i32 = rest.get(1)?.parse().ok()?;
    let flags: u64 = rest.get(6)?.parse().ok()?;
    Some(TaskInfo {
        comm,
        state,
        ppid,
        is_kernel_thread: flags & PF_KTHREAD != 0,
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
    for line in mountinfo.lines() {
        // id parent major:minor root mountpoint options... - fstype source superoptions
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(mountpoint), Some(fstype)) =
            (fields.get(3), fields.get(4), right.first())
        else {
            continue;
        };
        let matches = match controller {
            None => *fstype == "cgroup2",
            Some(c) => {
                *fstype == "cgroup"
                    && right
                        .get(2)
                        .is_some_and(|opts| opts.split(',').any(|o| o == c))
            }
        };
        if !matches {
            continue;
        }
        let rel = if *root == "/" {
            path
        } else {
            path.strip_prefix(root)?
        };
        return Some(std::path::Path::new(mountpoint).join(rel.trim_start_matches('/')));
    }
    None
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

/// Whether `tid` is a thread of process `pid` (`/proc/PID/task/TID` exists).
pub fn has_thread(pid: i32, tid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}/task/{tid}")).exists()
}

/// The text of `/proc/PID/status`.
pub fn status(pid: i32) -> std::io::Result<String> {
    fs::read_to_string(format!("/proc/{pid}/status"))
}

/// The text of `/proc/self/status`: this process's own.
pub fn own_status() -> std::io::Result<String> {
    fs::read_to_string("/proc/self/status")
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(matches!(
            task_info(i32::MAX, None),
            Err(Error::NoSuchProcess { .. })
        ));
    }
}
