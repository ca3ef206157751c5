//! Which processes an operation applies to: pids, their descendants, the members of cgroups —
//! the way chaos tools reach "every process of this container".

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

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
    /// cgroup is an error.
    pub fn resolve(&self) -> Result<Vec<i32>> {
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
        Ok(out.into_iter().collect())
    }
}

/// Parent → children, from every `/proc/PID/stat` (the `children` files need a kernel option).
fn children_map() -> HashMap<i32, Vec<i32>> {
    let mut map: HashMap<i32, Vec<i32>> = HashMap::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return map;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        // Processes come and go while we read: a vanished one is simply not a child.
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some(ppid) = ppid_of(&stat) {
            map.entry(ppid).or_default().push(pid);
        }
    }
    map
}

/// Field 4 of /proc/PID/stat, after the parenthesised command name.
fn ppid_of(stat: &str) -> Option<i32> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    rest.split_whitespace().nth(1)?.parse().ok()
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

    #[test]
    fn ppid_parsing() {
        assert_eq!(ppid_of("42 (a b) c) S 7 42 42 0"), Some(7));
        assert_eq!(ppid_of("garbage"), None);
    }

    #[test]
    fn tree_of_this_process_includes_its_children() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let me = std::process::id() as i32;
        let sel = Selection {
            pids: vec![me],
            tree: true,
            cgroups: vec![],
        };
        let pids = sel.resolve().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            pids.contains(&me) && pids.contains(&(child.id() as i32)),
            "{pids:?}"
        );
    }

    #[test]
    fn a_path_that_is_not_a_cgroup_is_an_error() {
        let err = cgroup_pids(Path::new("/tmp")).unwrap_err().to_string();
        assert!(err.contains("not a cgroup"), "{err}");
    }
}
