//! Which processes an operation applies to: pids, their descendants, the members of cgroups
//! and of containers (found through their cgroups) — the way chaos tools reach "every process
//! of this container".
//!
//! `container.rs` finds containers in the cgroup trees, `names.rs` turns a name into an id.

pub mod container;
mod names;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::target::procfs;

pub use container::{Container, ContainerRef, Runtime};

/// A selection of target processes, as the command line gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Processes named directly.
    pub pids: Vec<i32>,
    /// Add every descendant of each pid (children forked later included, at the time of the call).
    pub tree: bool,
    /// Add every process in these cgroup directories, recursively (cgroup v1 or v2).
    pub cgroups: Vec<PathBuf>,
    /// Add every process of these containers: each a full id, a unique prefix of at least 12 hex
    /// digits, or a name (looked up with `podman`/`docker` when installed); see [`locate`].
    pub containers: Vec<String>,
}

impl Selection {
    /// One process.
    pub fn pid(pid: i32) -> Selection {
        Selection {
            pids: vec![pid],
            ..Selection::default()
        }
    }

    /// The process ids selected right now, sorted and without duplicates. A named pid that does
    /// not exist is kept (the operation on it reports the error); a cgroup path that is not a
    /// cgroup is an error, and so is naming this process (or one of its threads) itself, a
    /// container that is not found (or not uniquely), and one without a live process.
    ///
    /// Processes found through `tree`, `cgroups` or `containers` leave out this process (a
    /// `--tree` from a shell includes the timeskew it runs; a process cannot trace itself) and
    /// zombies (they have exited: nothing is left to skew or recover in them).
    pub fn resolve(&self) -> Result<Vec<i32>> {
        let me = std::process::id() as i32;
        for &pid in &self.pids {
            if pid == me || procfs::tgid_of(pid) == Some(me) {
                let what = if pid == me {
                    "this timeskew process itself".to_string()
                } else {
                    format!("a thread of this timeskew process ({me})")
                };
                return Err(Error::BadSelection(format!(
                    "--pid {pid} is {what}: timeskew changes other processes, it cannot stop \
                     and patch itself; give the pid of the process to skew"
                )));
            }
        }
        let mut out: BTreeSet<i32> = self.pids.iter().copied().collect();
        for cg in &self.cgroups {
            out.extend(cgroup_pids(cg)?);
        }
        for given in &self.containers {
            out.extend(container_pids(given, &locate(given)?, me)?);
        }
        if self.tree {
            let children = children_map();
            let roots: Vec<i32> = out.iter().copied().collect();
            for root in roots {
                let mut stack = vec![root];
                while let Some(p) = stack.pop() {
                    for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
                        if out.insert(c) {
                            stack.push(c);
                        }
                    }
                }
            }
        }
        Ok(out
            .into_iter()
            .filter(|&pid| self.pids.contains(&pid) || (pid != me && !procfs::is_zombie(pid)))
            .collect())
    }
}

impl Selection {
    /// The cgroup directories this selection covers: each `cgroups` entry (checked, made
    /// absolute) and each container's directory in every hierarchy; sorted, no duplicates. With
    /// [`pid_in_cgroups`], it tells whether a process started later belongs to the selection
    /// (descendants that `tree` adds outside these cgroups are not covered).
    pub fn cgroup_dirs(&self) -> Result<Vec<PathBuf>> {
        let mut out = BTreeSet::new();
        for cg in &self.cgroups {
            if !container::is_cgroup(cg) {
                return Err(not_a_cgroup(cg));
            }
            out.insert(fs::canonicalize(cg).unwrap_or_else(|_| cg.clone()));
        }
        for given in &self.containers {
            out.extend(locate(given)?.dirs);
        }
        Ok(out.into_iter().collect())
    }
}

/// How the selection reads in a message: `pid 12 and its descendants, container 869bc329f6ee`.
impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.pids.is_empty() {
            let list: Vec<String> = self.pids.iter().map(i32::to_string).collect();
            let (noun, theirs) = match self.pids.len() {
                1 => ("pid", "its"),
                _ => ("pids", "their"),
            };
            let mut part = format!("{noun} {}", list.join(", "));
            if self.tree {
                part.push_str(&format!(" and {theirs} descendants"));
            }
            parts.push(part);
        }
        parts.extend(
            self.cgroups
                .iter()
                .map(|c| format!("cgroup {}", c.display())),
        );
        parts.extend(self.containers.iter().map(|c| format!("container {c}")));
        if parts.is_empty() {
            return f.write_str("nothing");
        }
        f.write_str(&parts.join(", "))
    }
}

/// The container `given` names (see [`ContainerRef`]), found through the cgroup hierarchies
/// mounted here (`/proc/self/mountinfo`): exactly one must match.
pub fn locate(given: &str) -> Result<Container> {
    let prefix = match given.parse::<ContainerRef>()? {
        ContainerRef::Id(prefix) => prefix,
        ContainerRef::Name(name) => names::resolve(&name)?,
    };
    let roots = hierarchy_roots()?;
    container::pick(given, &prefix, &container::scan(&roots), &roots)
}

/// The mount point of each cgroup hierarchy (v1 controllers, v2), once per view.
fn hierarchy_roots() -> Result<Vec<PathBuf>> {
    Ok(roots_of(procfs::cgroup_mounts()?))
}

/// The mount points to walk: one per (hierarchy, root shown). A mount of another root of the
/// same hierarchy is kept: in a pod with its own cgroup namespace, the pod's `/sys/fs/cgroup`
/// shows its own cgroup only (root `/`), while the node's tree mounted from the host shows as
/// root `/../..`: only the second holds the other containers. Walking both costs a repeat of
/// the smaller tree, and a container seen twice is still one (its directories merged).
fn roots_of(mounts: Vec<procfs::CgroupMount>) -> Vec<PathBuf> {
    let mut seen = BTreeSet::new();
    mounts
        .into_iter()
        .filter(|m| seen.insert((m.device.clone(), m.root.clone())))
        .map(|m| m.mountpoint)
        .collect()
}

/// The live processes of container `c` (named `given` by the user), leaving out `me`; an error
/// when there is none: the container has stopped, or is stopping.
fn container_pids(given: &str, c: &Container, me: i32) -> Result<Vec<i32>> {
    let mut pids = BTreeSet::new();
    for dir in &c.dirs {
        // A directory removed since the scan (the container stopping) holds nothing.
        if container::is_cgroup(dir) {
            pids.extend(cgroup_pids(dir).unwrap_or_default());
        }
    }
    let live: Vec<i32> = pids
        .into_iter()
        .filter(|&p| p != me && !has_exited(p))
        .collect();
    if live.is_empty() {
        let tool = match c.runtime {
            Runtime::Docker => "docker ps",
            Runtime::Podman => "podman ps",
            _ => "crictl ps",
        };
        return Err(Error::BadSelection(format!(
            "container {given} ({c}): no live process in its cgroup {}: it has stopped or is              stopping; check with `{tool}`, start it again, then retry",
            c.dirs[0].display()
        )));
    }
    log::info!(
        "container {given} ({c}): {} processes {:?} in {}",
        live.len(),
        live,
        c.dirs[0].display()
    );
    Ok(live)
}

/// Whether `pid` is in one of `dirs` (see [`Selection::cgroup_dirs`]) or below, in any
/// hierarchy; false when it cannot be read (it has exited).
pub fn pid_in_cgroups(pid: i32, dirs: &[PathBuf]) -> bool {
    procfs::pid_in_cgroups(pid, dirs)
}

fn not_a_cgroup(dir: &Path) -> Error {
    Error::BadSelection(format!(
        "cgroup {}: not a cgroup directory (no cgroup.procs); give a path under /sys/fs/cgroup",
        dir.display()
    ))
}

/// True when `pid` has exited: it no longer exists, or it is a zombie without a live thread (a
/// process whose main thread alone has exited is a zombie leader but still runs).
pub fn has_exited(pid: i32) -> bool {
    !procfs::exists(pid) || procfs::is_zombie(pid)
}

/// Parent → children, from every `/proc/PID/stat` (the `children` files need a kernel option).
fn children_map() -> HashMap<i32, Vec<i32>> {
    let mut map: HashMap<i32, Vec<i32>> = HashMap::new();
    for pid in procfs::all_pids() {
        // Processes come and go while we read: a vanished one is simply not a child.
        if let Ok(info) = procfs::task_info(pid, None) {
            map.entry(info.ppid).or_default().push(pid);
        }
    }
    map
}

/// Every process listed in `cgroup.procs` at `dir` and below.
pub fn cgroup_pids(dir: &Path) -> Result<Vec<i32>> {
    let bad = |why: String| Error::BadSelection(format!("cgroup {}: {why}", dir.display()));
    if !container::is_cgroup(dir) {
        return Err(not_a_cgroup(dir));
    }
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        match fs::read_to_string(d.join("cgroup.procs")) {
            Ok(text) => out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok())),
            // A child cgroup removed while we walk is fine; the top one must be readable.
            Err(e) if d == dir => return Err(bad(e.to_string())),
            Err(_) => continue,
        }
        if let Ok(entries) = fs::read_dir(&d) {
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parent process whose child we know: `bash` starts a child that waits for a byte on
    /// the parent's stdin, prints its pid and becomes `sleep`, which never reaps it. Writing to
    /// the returned stdin (or dropping it) ends the child, which then stays a zombie.
    fn parent_with_child() -> (std::process::Child, i32) {
        use std::io::BufRead;
        let script = "exec 3<&0; head -c1 <&3 >/dev/null & echo $!; exec sleep 30 3<&-";
        let mut parent = std::process::Command::new("bash")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(parent.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        (parent, line.trim().parse().unwrap())
    }

    fn tree(pid: i32) -> Selection {
        Selection {
            pids: vec![pid],
            tree: true,
            ..Selection::default()
        }
    }

    #[test]
    fn tree_includes_children() {
        let (mut parent, child) = parent_with_child();
        let root = parent.id() as i32;
        let pids = tree(root).resolve().unwrap();
        // The child ends with its stdin; init reaps it once the parent is gone.
        drop(parent.stdin.take());
        parent.kill().unwrap();
        parent.wait().unwrap();
        assert_eq!(pids, vec![root.min(child), root.max(child)]);
    }

    #[test]
    fn a_zombie_child_is_not_selected_but_a_named_one_is() {
        let (mut parent, child) = parent_with_child();
        drop(parent.stdin.take());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !procfs::is_zombie(child) && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        let zombie = procfs::is_zombie(child) && has_exited(child);
        let from_tree = tree(parent.id() as i32).resolve().unwrap();
        let named = Selection::pid(child).resolve().unwrap();
        parent.kill().unwrap();
        parent.wait().unwrap();
        assert!(zombie, "pid {child} should be a zombie");
        assert_eq!(from_tree, vec![parent.id() as i32]);
        assert_eq!(named, vec![child]);
        assert!(!has_exited(std::process::id() as i32));
        assert!(has_exited(parent.id() as i32));
    }

    #[test]
    fn this_process_is_left_out_of_a_tree_and_refused_by_name() {
        let me = std::process::id() as i32;
        let parent = nix::unistd::getppid().as_raw();
        let pids = tree(parent).resolve().unwrap();
        assert!(pids.contains(&parent) && !pids.contains(&me), "{pids:?}");
        let e = Selection::pid(me).resolve().unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "--pid {me} is this timeskew process itself: timeskew changes other processes, \
                 it cannot stop and patch itself; give the pid of the process to skew"
            )
        );
        // A thread of ours is refused the same way.
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            tx.send(nix::unistd::gettid().as_raw()).unwrap();
            let _ = done_rx.recv();
        });
        let live = rx.recv().unwrap();
        let e = Selection::pid(live).resolve().unwrap_err().to_string();
        done_tx.send(()).unwrap();
        t.join().unwrap();
        assert!(
            e.starts_with(&format!(
                "--pid {live} is a thread of this timeskew process ({me}): "
            )),
            "{e}"
        );
    }

    #[test]
    fn a_path_that_is_not_a_cgroup_is_an_error() {
        let err = cgroup_pids(Path::new("/tmp")).unwrap_err().to_string();
        assert!(err.contains("not a cgroup"), "{err}");
    }

    #[test]
    fn a_selection_reads_well_in_messages() {
        let s = Selection {
            pids: vec![12, 13],
            tree: true,
            cgroups: vec!["/sys/fs/cgroup/unified/x".into()],
            containers: vec!["869bc329f6ee".into()],
        };
        assert_eq!(
            s.to_string(),
            "pids 12, 13 and their descendants, cgroup /sys/fs/cgroup/unified/x, container \
             869bc329f6ee"
        );
        let one = Selection {
            tree: true,
            ..Selection::pid(7)
        };
        assert_eq!(one.to_string(), "pid 7 and its descendants");
        let c = Selection {
            containers: vec!["web".into()],
            ..Selection::default()
        };
        assert_eq!(c.to_string(), "container web");
        assert_eq!(Selection::default().to_string(), "nothing");
    }

    #[test]
    fn cgroup_dirs_are_checked_and_absolute() {
        let me = std::process::id() as i32;
        let mounts = procfs::cgroup_mounts().unwrap();
        let mine = procfs::cgroup_dirs_in(&procfs::cgroup_of(me).unwrap(), &mounts);
        let dir = mine[0].clone();
        let s = Selection {
            cgroups: vec![dir.join("."), dir.clone()],
            ..Selection::default()
        };
        assert_eq!(s.cgroup_dirs().unwrap(), [dir]);
        assert!(pid_in_cgroups(me, &s.cgroup_dirs().unwrap()));
        let bad = Selection {
            cgroups: vec!["/tmp".into()],
            ..Selection::default()
        };
        let e = bad.cgroup_dirs().unwrap_err().to_string();
        assert!(e.contains("not a cgroup directory"), "{e}");
        // An id no container has: the scan of this machine's hierarchies says so.
        let none = Selection {
            containers: vec!["000000000000".into()],
            ..Selection::default()
        };
        for e in [none.cgroup_dirs().unwrap_err(), none.resolve().unwrap_err()] {
            assert!(matches!(e, Error::BadSelection(_)), "{e:?}");
            assert!(e.to_string().starts_with("container 000000000000: "), "{e}");
        }
    }

    #[test]
    fn a_container_without_a_live_process_is_an_error() {
        let dir =
            std::env::temp_dir().join(format!("timeskew-select-empty-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        // A pid that does not exist (above pid_max), and this process itself.
        let me = std::process::id() as i32;
        fs::write(dir.join("cgroup.procs"), format!("{}\n{me}\n", i32::MAX)).unwrap();
        let c = Container {
            runtime: Runtime::Podman,
            id: "869bc329f6ee7a2039b72fb75914cb95de406988d28f9286eca7ddf7399533e3".into(),
            dirs: vec![dir.clone()],
        };
        let e = container_pids("869bc329f6ee", &c, me)
            .unwrap_err()
            .to_string();
        let live = container_pids("869bc329f6ee", &c, 0);
        fs::remove_dir_all(&dir).unwrap();
        assert!(
            e.starts_with(
                "container 869bc329f6ee (podman 869bc329f6ee): no live process in its cgroup"
            ) && e.contains("`podman ps`"),
            "{e}"
        );
        assert_eq!(live.unwrap(), [me]);
    }

    #[test]
    fn every_view_of_a_hierarchy_is_walked_once() {
        // A privileged pod: its own cgroup2 view, the node's mounted at /host/sys/fs/cgroup, and
        // the node's again (a second bind of the same view).
        let mountinfo = "\
1 0 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
2 0 0:30 /../../.. /host/sys/fs/cgroup rw - cgroup2 cgroup2 rw
3 0 0:30 /../../.. /mnt/again rw - cgroup2 cgroup2 rw
4 0 0:31 / /host/sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
";
        let roots = roots_of(procfs::parse_cgroup_mounts(mountinfo));
        assert_eq!(
            roots,
            [
                PathBuf::from("/sys/fs/cgroup"),
                "/host/sys/fs/cgroup".into(),
                "/host/sys/fs/cgroup/cpu".into()
            ]
        );
    }
}
