//! Containers found through their cgroups, the way chaos daemons find them on a node: every
//! runtime names a container's cgroup after its 64-hex id, in every mounted hierarchy (cgroup v1
//! controllers, the v2 tree or the hybrid `unified` mount). No runtime API is asked; a name
//! alone goes through a runtime's command line (`names.rs`).
//!
//! The naming schemes recognised (the directory's name, and for a bare id where it sits):
//!
//! | runtime                 | cgroup directory                                               |
//! |-------------------------|----------------------------------------------------------------|
//! | docker                  | `docker-<id>.scope` (systemd driver), `…/docker/<id>` (cgroupfs) |
//! | containerd / Kubernetes | `cri-containerd-<id>.scope` (also under `kubepods.slice/…`)   |
//! | Kubernetes, cgroupfs    | `…/kubepods…/pod<uid>/<id>` (any runtime)                      |
//! | CRI-O                   | `crio-<id>.scope`, `crio-<id>`                                  |
//! | podman                  | `libpod-<id>.scope` (systemd), `libpod-<id>` (cgroupfs)          |
//!
//! `libpod-conmon-<id>` and `crio-conmon-<id>` are left out: conmon is the runtime's monitor,
//! outside the container.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};

/// The length of a full container id, in hex digits.
pub const ID_LEN: usize = 64;
/// The shortest prefix accepted: the short id `docker ps`, `podman ps` and `crictl ps` print.
pub const MIN_PREFIX: usize = 12;

/// Which runtime's naming a container's cgroup follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Runtime {
    Docker,
    Containerd,
    CriO,
    Podman,
    /// A bare id below `kubepods…` (the kubelet's cgroupfs driver): any CRI runtime.
    Kubernetes,
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Podman => "podman",
            Runtime::Kubernetes => "kubernetes",
        })
    }
}

/// A container found on this machine: its id and its cgroup directory in each hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub runtime: Runtime,
    /// The full id, 64 lowercase hex digits.
    pub id: String,
    /// One directory per hierarchy that has it, sorted.
    pub dirs: Vec<PathBuf>,
}

impl Container {
    /// The 12-digit short id the runtimes print.
    pub fn short_id(&self) -> &str {
        &self.id[..MIN_PREFIX]
    }
}

impl fmt::Display for Container {
    /// `podman 869bc329f6ee`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.runtime, self.short_id())
    }
}

/// What `--container` names: an id (full, or a prefix of at least [`MIN_PREFIX`] hex digits) or
/// a container name (anything else a runtime accepts as a name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerRef {
    /// Lowercase hex, [`MIN_PREFIX`] to [`ID_LEN`] digits.
    Id(String),
    Name(String),
}

impl FromStr for ContainerRef {
    type Err = Error;

    /// Accepts Kubernetes' `containerd://<id>` form (any `<runtime>://` prefix) as the id.
    fn from_str(text: &str) -> Result<ContainerRef> {
        let bad = |why: String| Error::BadSelection(format!("container {text:?}: {why}"));
        let given = text.trim();
        let (scheme, id) = match given.split_once("://") {
            Some((scheme, id)) => (Some(scheme), id),
            None => (None, given),
        };
        if id.is_empty() {
            return Err(bad("empty; give the container's id".into()));
        }
        if id.bytes().all(|b| b.is_ascii_hexdigit()) {
            let n = id.len();
            return if n < MIN_PREFIX {
                Err(bad(format!(
                    "{n} hex digits are too few to pick a container: give at least {MIN_PREFIX} \
                     (the short id `docker ps`, `podman ps` or `crictl ps` prints) or the full \
                     {ID_LEN}"
                )))
            } else if n > ID_LEN {
                Err(bad(format!(
                    "{n} hex digits: a container id has {ID_LEN}; give the id or a prefix of it"
                )))
            } else {
                Ok(ContainerRef::Id(id.to_ascii_lowercase()))
            };
        }
        // docker and podman accept [a-zA-Z0-9][a-zA-Z0-9_.-]* as names.
        let name_like = id.starts_with(|c: char| c.is_ascii_alphanumeric())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if scheme.is_some() || !name_like {
            return Err(bad(format!(
                "not a container id (hex digits: the full {ID_LEN} or a prefix of at least \
                 {MIN_PREFIX}) nor a container name"
            )));
        }
        Ok(ContainerRef::Name(id.to_string()))
    }
}

/// The runtime and id a cgroup directory named `name` belongs to, if it is a container's:
/// `parent` is the name of the directory it sits in (`None` at a hierarchy's root),
/// `under_kubepods` whether an ancestor is a `kubepods…` directory.
pub fn recognize<'a>(
    name: &'a str,
    parent: Option<&str>,
    under_kubepods: bool,
) -> Option<(Runtime, &'a str)> {
    let stem = name.strip_suffix(".scope").unwrap_or(name);
    let prefixed = [
        ("docker-", Runtime::Docker),
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::CriO),
        ("libpod-", Runtime::Podman),
    ];
    for (prefix, runtime) in prefixed {
        // `libpod-conmon-<id>` and `crio-conmon-<id>` fail the hex test: conmon stays out.
        if let Some(id) = stem.strip_prefix(prefix) {
            return is_full_id(id).then_some((runtime, id));
        }
    }
    if !is_full_id(name) {
        return None;
    }
    if parent == Some("docker") {
        Some((Runtime::Docker, name))
    } else if under_kubepods {
        Some((Runtime::Kubernetes, name))
    } else {
        None
    }
}

fn is_full_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Every container whose cgroup is under one of `roots` (the hierarchies' mount points, or a
/// fake tree in a test), sorted by id; a container seen in several hierarchies is one entry
/// with a directory in each.
pub fn scan(roots: &[PathBuf]) -> Vec<Container> {
    let mut found: BTreeMap<String, Container> = BTreeMap::new();
    for root in roots {
        // (directory, is the hierarchy's root, below a kubepods… directory)
        let mut stack = vec![(root.clone(), true, false)];
        while let Some((dir, is_root, kube)) = stack.pop() {
            // Cgroups come and go while we walk: one that vanished simply holds nothing.
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            let parent = if is_root {
                None
            } else {
                dir.file_name().and_then(|n| n.to_str())
            };
            for entry in entries.flatten() {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let file_name = entry.file_name();
                let Some(name) = file_name.to_str() else {
                    continue;
                };
                let path = entry.path();
                if let Some((runtime, id)) = recognize(name, parent, kube) {
                    let c = found.entry(id.to_string()).or_insert_with(|| Container {
                        runtime,
                        id: id.to_string(),
                        dirs: Vec::new(),
                    });
                    // The runtime's own naming says more than "somewhere below kubepods".
                    if c.runtime == Runtime::Kubernetes {
                        c.runtime = runtime;
                    }
                    c.dirs.push(path.clone());
                }
                // Below a container's cgroup too: a container may run containers.
                stack.push((path, false, kube || name.starts_with("kubepods")));
            }
        }
    }
    let mut out: Vec<Container> = found.into_values().collect();
    for c in &mut out {
        c.dirs.sort();
        c.dirs.dedup();
    }
    out
}

/// The one container in `found` whose id starts with `prefix`; `given` is what the user wrote
/// and `roots` where we looked, for the messages.
pub fn pick(
    given: &str,
    prefix: &str,
    found: &[Container],
    roots: &[PathBuf],
) -> Result<Container> {
    let matches: Vec<&Container> = found.iter().filter(|c| c.id.starts_with(prefix)).collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] if found.is_empty() => Err(Error::BadSelection(format!(
            "container {given}: no container cgroup found under {}; run timeskew on the node \
             where the container runs, in the host's PID namespace and with the host's \
             /sys/fs/cgroup (docker, containerd/Kubernetes, CRI-O and podman cgroups are \
             recognised)",
            list_paths(roots)
        ))),
        [] => Err(Error::BadSelection(format!(
            "container {given}: no running container has an id starting with {prefix}; found \
             {}; check the id (`docker ps --no-trunc`, `podman ps --no-trunc`, `crictl ps`) \
             and that the container is running on this machine",
            list_some(found.iter().map(|c| c.to_string()))
        ))),
        several => Err(Error::BadSelection(format!(
            "container {given}: {} containers have an id starting with {prefix}: {}; give more \
             digits",
            several.len(),
            list_some(several.iter().map(|c| format!("{} {}", c.runtime, c.id)))
        ))),
    }
}

/// At most 20 items, then how many more.
fn list_some(items: impl ExactSizeIterator<Item = String>) -> String {
    const MAX: usize = 20;
    let n = items.len();
    let mut text = items.take(MAX).collect::<Vec<_>>().join(", ");
    if n > MAX {
        text.push_str(&format!(" and {} more", n - MAX));
    }
    text
}

fn list_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "no mounted cgroup hierarchy".into();
    }
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    shown.join(", ")
}

/// Whether `dir` is a cgroup directory (it lists its processes).
pub fn is_cgroup(dir: &Path) -> bool {
    dir.join("cgroup.procs").is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temporary directory, removed on drop.
    struct TempTree(PathBuf);

    impl TempTree {
        fn new(tag: &str) -> TempTree {
            let dir = std::env::temp_dir().join(format!(
                "timeskew-select-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempTree(dir)
        }

        /// A cgroup directory at `rel`, with `pids` in its cgroup.procs.
        fn cgroup(&self, rel: &str, pids: &[i32]) -> PathBuf {
            let dir = self.0.join(rel);
            fs::create_dir_all(&dir).unwrap();
            let text: String = pids.iter().map(|p| format!("{p}\n")).collect();
            fs::write(dir.join("cgroup.procs"), text).unwrap();
            dir
        }

        fn root(&self, rel: &str) -> PathBuf {
            self.0.join(rel)
        }
    }

    impl Drop for TempTree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A 64-hex id: `head` then `fill` repeated.
    fn id(head: &str, fill: char) -> String {
        let mut s = head.to_string();
        while s.len() < ID_LEN {
            s.push(fill);
        }
        s
    }

    #[test]
    fn parses_ids_prefixes_and_names() {
        let full = id("3f2a9c1b7e4d", '0');
        assert_eq!(
            full.parse::<ContainerRef>().unwrap(),
            ContainerRef::Id(full.clone())
        );
        assert_eq!(
            "3F2A9C1B7E4D".parse::<ContainerRef>().unwrap(),
            ContainerRef::Id("3f2a9c1b7e4d".into())
        );
        assert_eq!(
            format!("containerd://{full}")
                .parse::<ContainerRef>()
                .unwrap(),
            ContainerRef::Id(full.clone())
        );
        assert_eq!(
            "web-1".parse::<ContainerRef>().unwrap(),
            ContainerRef::Name("web-1".into())
        );
        let err = |s: &str| s.parse::<ContainerRef>().unwrap_err().to_string();
        let short = err("3f2a9c1b7e4");
        assert!(
            short.contains("11 hex digits are too few") && short.contains("at least 12"),
            "{short}"
        );
        assert!(err(&format!("{full}0")).contains("65 hex digits"));
        assert!(err("a/b").contains("not a container id"), "{}", err("a/b"));
        assert!(err("docker://web").contains("not a container id"));
        assert!(err("").contains("empty"));
        assert!(matches!(
            "-x".parse::<ContainerRef>(),
            Err(Error::BadSelection(_))
        ));
    }

    #[test]
    fn every_runtime_naming_is_recognised() {
        let i = id("ab", 'c');
        let cases: Vec<(String, Option<&str>, bool, Option<Runtime>)> = vec![
            (
                format!("docker-{i}.scope"),
                Some("system.slice"),
                false,
                Some(Runtime::Docker),
            ),
            (i.clone(), Some("docker"), false, Some(Runtime::Docker)),
            (
                format!("cri-containerd-{i}.scope"),
                Some("x"),
                true,
                Some(Runtime::Containerd),
            ),
            (i.clone(), Some("pod1234"), true, Some(Runtime::Kubernetes)),
            (
                format!("crio-{i}.scope"),
                Some("x"),
                true,
                Some(Runtime::CriO),
            ),
            (format!("crio-{i}"), Some("x"), true, Some(Runtime::CriO)),
            (
                format!("libpod-{i}"),
                Some("libpod_parent"),
                false,
                Some(Runtime::Podman),
            ),
            (
                format!("libpod-{i}.scope"),
                Some("machine.slice"),
                false,
                Some(Runtime::Podman),
            ),
            // The runtime's monitors, outside the container.
            (
                format!("libpod-conmon-{i}.scope"),
                Some("machine.slice"),
                false,
                None,
            ),
            (
                format!("libpod-conmon-{i}"),
                Some("libpod_parent"),
                false,
                None,
            ),
            (format!("crio-conmon-{i}.scope"), Some("x"), true, None),
            // A bare id elsewhere, at a hierarchy's root, or not a full id.
            (i.clone(), Some("system.slice"), false, None),
            (i.clone(), None, false, None),
            (
                format!("docker-{}.scope", &i[..63]),
                Some("system.slice"),
                false,
                None,
            ),
            (
                format!("docker-{}.scope", i.to_uppercase()),
                Some("system.slice"),
                false,
                None,
            ),
            ("docker.service".into(), Some("system.slice"), false, None),
        ];
        for (name, parent, kube, want) in cases {
            let got = recognize(&name, parent, kube);
            assert_eq!(got.map(|g| g.0), want, "{name} in {parent:?}");
            if let Some((_, got_id)) = got {
                assert_eq!(got_id, i);
            }
        }
    }

    #[test]
    fn scans_v1_and_v2_hierarchies_and_merges_a_container_seen_in_each() {
        let t = TempTree::new("scan");
        let (podman, docker, kube, crio, containerd) = (
            id("1111", 'a'),
            id("2222", 'b'),
            id("3333", 'c'),
            id("4444", 'd'),
            id("5555", 'e'),
        );
        // v1: two controllers, the cgroupfs layouts.
        for ctl in ["cpu", "memory"] {
            t.cgroup(&format!("{ctl}/libpod_parent/libpod-{podman}"), &[10]);
            t.cgroup(&format!("{ctl}/libpod_parent/conmon"), &[9]);
            t.cgroup(&format!("{ctl}/docker/{docker}"), &[20]);
            t.cgroup(&format!("{ctl}/kubepods/burstable/pod-uid/{kube}"), &[30]);
        }
        // v2 (the hybrid `unified` mount, or /sys/fs/cgroup itself): the systemd layouts.
        t.cgroup(&format!("unified/libpod_parent/libpod-{podman}"), &[10]);
        t.cgroup(
            &format!("unified/system.slice/docker-{docker}.scope"),
            &[20],
        );
        t.cgroup(
            &format!(
                "unified/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podx.slice/\
                 crio-{crio}.scope"
            ),
            &[40],
        );
        t.cgroup(
            &format!(
                "unified/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pody.slice/\
                 cri-containerd-{containerd}.scope"
            ),
            &[50],
        );
        t.cgroup(
            &format!("unified/machine.slice/libpod-conmon-{podman}.scope"),
            &[9],
        );
        let roots = ["cpu", "memory", "unified"].map(|r| t.root(r));
        let found = scan(&roots);
        let summary: Vec<(Runtime, &str, usize)> = found
            .iter()
            .map(|c| (c.runtime, &c.id[..4], c.dirs.len()))
            .collect();
        assert_eq!(
            summary,
            [
                (Runtime::Podman, "1111", 3),
                (Runtime::Docker, "2222", 3),
                (Runtime::Kubernetes, "3333", 2),
                (Runtime::CriO, "4444", 1),
                (Runtime::Containerd, "5555", 1),
            ]
        );
        assert_eq!(
            found[0].dirs,
            [
                t.root(&format!("cpu/libpod_parent/libpod-{podman}")),
                t.root(&format!("memory/libpod_parent/libpod-{podman}")),
                t.root(&format!("unified/libpod_parent/libpod-{podman}")),
            ]
        );
        assert_eq!(found[0].to_string(), "podman 1111aaaaaaaa");
        // A v2-only machine: the whole tree is one root.
        let only_v2 = scan(&[t.root("unified")]);
        assert_eq!(only_v2.len(), 4);
        assert!(only_v2.iter().all(|c| c.dirs.len() == 1));
        // A root that does not exist holds nothing.
        assert!(scan(&[t.root("nowhere")]).is_empty());
    }

    #[test]
    fn picks_by_full_id_or_unique_prefix_and_explains_the_rest() {
        let t = TempTree::new("pick");
        let a = id("abcdef012345", '1');
        let b = id("abcdef012345", '2');
        let c = id("0123456789ab", 'f');
        t.cgroup(&format!("unified/libpod_parent/libpod-{a}"), &[1]);
        t.cgroup(&format!("unified/libpod_parent/libpod-{b}"), &[2]);
        t.cgroup(&format!("unified/system.slice/docker-{c}.scope"), &[3]);
        let roots = vec![t.root("unified")];
        let found = scan(&roots);
        let pick_id = |p: &str| pick(p, p, &found, &roots).map(|c| c.id);
        assert_eq!(pick_id(&a).unwrap(), a);
        assert_eq!(pick_id("0123456789ab").unwrap(), c);
        assert_eq!(pick_id(&b[..13]).unwrap(), b);

        let ambiguous = pick_id("abcdef012345").unwrap_err().to_string();
        assert!(
            ambiguous.starts_with("container abcdef012345: 2 containers have an id starting with")
                && ambiguous.contains(&format!("podman {a}"))
                && ambiguous.contains(&format!("podman {b}"))
                && ambiguous.ends_with("give more digits"),
            "{ambiguous}"
        );
        let unknown = pick_id("fedcba987654").unwrap_err().to_string();
        assert!(
            unknown.contains("no running container has an id starting with fedcba987654")
                && unknown.contains(
                    "found docker 0123456789ab, podman abcdef012345, podman abcdef012345;"
                )
                && unknown.contains("docker ps --no-trunc"),
            "{unknown}"
        );
        let none = pick("fedcba987654", "fedcba987654", &[], &roots)
            .unwrap_err()
            .to_string();
        assert!(
            none.contains("no container cgroup found under")
                && none.contains(&roots[0].display().to_string())
                && none.contains("host's PID namespace"),
            "{none}"
        );
    }

    #[test]
    fn long_lists_are_cut() {
        let items = (0..25).map(|i| i.to_string()).collect::<Vec<_>>();
        let text = list_some(items.into_iter());
        assert!(
            text.starts_with("0, 1, 2") && text.ends_with("19 and 5 more"),
            "{text}"
        );
    }
}
