//! Which processes an operation applies to: pids, their descendants, the members of cgroups —
//! the way chaos tools reach "every process of this container".

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::target::procfs;

/// A selection of target processes, as the command line gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Processes named directly.
    pub pids: Vec<i32>,
    /// Add every descendant of each pid (children forked later included, at the time of the call).
    pub tree: bool,
    /// Add every process in these cgroup directories, recursively (cgroup v1 or v2).
    pub cgroups: Vec<PathBuf>,
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
    /// cgroup is an error, and so is naming this process (or one of its threads) itself.
    ///
    /// Processes found through `tree` or `cgroups` leave out this process (a `--tree` from a
    /// shell includes the timeskew it runs; a process cannot trace itself) and zombies (they
    /// have exited: nothing is left to skew or recover in them).
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
    if !dir.join("cgroup.procs").is_file() {
        return Err(bad(
            "not a cgroup directory (no cgroup.procs); give a path under /sys/fs/cgroup".into(),
        ));
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
            cgroups: vec![],
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
}
