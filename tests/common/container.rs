//! Real containers for the tests: podman (with runc and the cgroupfs manager: crun refuses the
//! hybrid cgroup layout of our machines) running a tiny image built here — busybox-static and
//! whatever static programs a test adds — imported as `localhost/timeskew-test:<hash>`.
//!
//! A container is ready when it prints `ready` (read from `podman logs -f`, no sleeps); dropping
//! the handle removes it (`podman rm -f -t 0`) and reaps every process the test started. Names
//! are unique per test and per run. Missing tools fail the test with the package to install
//! (`sudo scripts/install-test-deps.sh` installs podman, runc and busybox-static).
#![allow(dead_code)]

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::e2e::{LineTarget, line_channel, require};

/// How long a container may take to start and say `ready`.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `podman` with the flags every call needs here: the runc runtime and cgroupfs (crun refuses
/// our hybrid cgroups; systemd-managed scopes are not needed).
pub fn podman() -> Command {
    let mut cmd = Command::new(require("podman", "podman"));
    cmd.args(["--runtime", "runc", "--cgroup-manager=cgroupfs"])
        .stdin(Stdio::null());
    cmd
}

/// Runs a podman command to completion, failing the test with its output if it fails.
fn podman_ok(args: &[&str]) -> String {
    let out = podman()
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run podman {args:?}: {e}"));
    assert!(
        out.status.success(),
        "podman {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether the ELF file at `path` asks for a program interpreter (dynamically linked): such a
/// program cannot run in our image, which has no libraries.
fn is_dynamic(path: &Path) -> bool {
    let elf = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        elf.len() > 64 && &elf[..4] == b"\x7fELF" && elf[4] == 2,
        "{} is not a 64-bit ELF program",
        path.display()
    );
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    const PT_INTERP: u32 = 3;
    (0..count).any(|i| {
        let at = phoff + i * size;
        elf.get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().unwrap()) == PT_INTERP)
    })
}

/// The test image with `extra` programs in `/bin` (each `(name, static program)`): built and
/// imported once per test binary, and reused when this exact content is already imported (the
/// tag is a hash of it). Returns the image's name.
pub fn image(extra: &[(&str, &Path)]) -> String {
    static IMPORTED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let busybox = require("busybox", "busybox-static");
    assert!(
        !is_dynamic(&busybox),
        "{} is linked dynamically: install busybox-static (sudo scripts/install-test-deps.sh)",
        busybox.display()
    );
    let mut files: Vec<(String, PathBuf)> = vec![("busybox".into(), busybox)];
    for (name, path) in extra {
        assert!(
            !is_dynamic(path),
            "{} must be linked statically to run in the test image",
            path.display()
        );
        files.push((name.to_string(), path.to_path_buf()));
    }
    let mut hash = DefaultHasher::new();
    for (name, path) in &files {
        hash.write(name.as_bytes());
        hash.write(&std::fs::read(path).unwrap());
    }
    let tag = format!("localhost/timeskew-test:{:016x}", hash.finish());

    let mut imported = IMPORTED.lock().unwrap_or_else(|e| e.into_inner());
    if imported.contains(&tag) {
        return tag;
    }
    let exists = podman()
        .args(["image", "exists", &tag])
        .status()
        .expect("run podman image exists");
    if !exists.success() {
        build_and_import(&files, &tag);
    }
    imported.push(tag.clone());
    tag
}

/// Builds the root filesystem in a fresh temporary directory, tars it and imports it as `tag`.
fn build_and_import(files: &[(String, PathBuf)], tag: &str) {
    let work = std::env::temp_dir().join(format!(
        "timeskew-image-{}-{}",
        std::process::id(),
        tag.rsplit(':').next().unwrap()
    ));
    let _ = std::fs::remove_dir_all(&work);
    let root = work.join("root");
    for dir in ["bin", "tmp", "proc", "sys", "dev", "etc"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    for (name, path) in files {
        let to = root.join("bin").join(name);
        std::fs::copy(path, &to).unwrap_or_else(|e| panic!("copy {}: {e}", path.display()));
    }
    // Every applet as a symlink, as an installed busybox has them (sh, date, sleep, cat, …).
    let list = Command::new(root.join("bin/busybox"))
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = root.join("bin").join(applet);
        if !applet.is_empty() && !applet.contains('/') && !link.exists() {
            std::os::unix::fs::symlink("busybox", link).unwrap();
        }
    }
    let tar = work.join("image.tar");
    let out = Command::new(require("tar", "tar"))
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .output()
        .expect("run tar");
    assert!(
        out.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    podman_ok(&["import", "--quiet", tar.to_str().unwrap(), tag]);
    let _ = std::fs::remove_dir_all(&work);
}

/// `podman run --rm ARGS…` to completion (a container that does one job and exits), with the
/// runtime flags every container here needs; named `timeskew-<test>-<our pid>`.
pub fn run_once(test: &str, args: &[&str]) -> Output {
    let name = format!("timeskew-{test}-{}", std::process::id());
    podman()
        .args(["run", "--rm", "--name", &name, "--network", "none"])
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ])
        .args(args)
        .output()
        .expect("run podman run")
}

/// `-v` arguments that bind `program` and the shared libraries it loads (as `ldd` lists them)
/// read-only at the same paths, so that a dynamically linked program of the host (the timeskew
/// binary) runs in the busybox image.
pub fn bind_with_libraries(program: &Path) -> Vec<String> {
    let out = Command::new(require("ldd", "libc-bin"))
        .arg(program)
        .output()
        .expect("run ldd");
    let mut files = vec![program.to_path_buf()];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or `/lib64/ld-linux… (0x…)`
        let path = line
            .split("=>")
            .last()
            .and_then(|r| r.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(p) = path {
            files.push(p.into());
        }
    }
    files
        .iter()
        .flat_map(|f| {
            [
                "-v".to_string(),
                format!("{}:{}:ro", f.display(), f.display()),
            ]
        })
        .collect()
}

/// A running container, removed when dropped.
pub struct Container {
    /// Unique per test and run: `timeskew-<test>-<our pid>-<n>`.
    pub name: String,
    /// The full 64-hex id.
    pub id: String,
    logs: Option<Child>,
    lines: Receiver<String>,
    /// Every log line read so far (for failure messages).
    seen: Vec<String>,
    removed: bool,
}

impl Container {
    /// Starts `script` (run by `/bin/sh -c`) in a container of `image`, and waits until it
    /// prints the line `ready`.
    pub fn run(test: &str, image: &str, script: &str) -> Container {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "timeskew-{test}-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        // A container created but not started (a failed `run -d`) is removed before failing.
        struct RemoveUnlessStarted<'a>(&'a str, bool);
        impl Drop for RemoveUnlessStarted<'_> {
            fn drop(&mut self) {
                if !self.1 {
                    let _ = podman().args(["rm", "-f", "-t", "0", self.0]).output();
                }
            }
        }
        let mut guard = RemoveUnlessStarted(&name, false);
        let id = podman_ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "none",
            // The default rlimits are above what root may set here.
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "--log-driver",
            "k8s-file",
            image,
            "/bin/sh",
            "-c",
            script,
        ]);
        assert!(
            id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "podman run printed {id:?}, not an id"
        );
        guard.1 = true;
        drop(guard);
        let mut logs = podman()
            .args(["logs", "-f", &name])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start podman logs -f");
        let lines = line_channel(logs.stdout.take().unwrap());
        let mut c = Container {
            name,
            id,
            logs: Some(logs),
            lines,
            seen: Vec::new(),
            removed: false,
        };
        c.wait_for_line("ready", START_TIMEOUT, |l| l == "ready");
        c
    }

    /// The 12-digit short id.
    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }

    /// The next log line for which `want` holds (the ones before are skipped), waiting at most
    /// `timeout`; fails the test naming `what` otherwise.
    pub fn wait_for_line(
        &mut self,
        what: &str,
        timeout: Duration,
        want: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "container {}: no log line {what} within {timeout:?}; its log:\n{}",
                    self.name,
                    self.seen.join("\n")
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "container {}: its log ended before a line {what} (it exited?); state {}; \
                     log:\n{}",
                    self.name,
                    self.state(),
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// `podman inspect --format FORMAT`.
    pub fn inspect(&self, format: &str) -> String {
        podman_ok(&["inspect", "--format", format, &self.name])
    }

    fn state(&self) -> String {
        podman()
            .args(["inspect", "--format", "{{.State.Status}}", &self.name])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }

    /// The container's first process, as the host sees it.
    pub fn main_pid(&self) -> i32 {
        self.inspect("{{.State.Pid}}").parse().expect("State.Pid")
    }

    /// conmon, podman's monitor of this container (outside it).
    pub fn conmon_pid(&self) -> i32 {
        self.inspect("{{.State.ConmonPid}}")
            .parse()
            .expect("State.ConmonPid")
    }

    /// Every host process whose cgroup names this container (read from `/proc` here, apart
    /// from the code under test).
    pub fn host_pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                    .is_ok_and(|c| c.contains(&format!("libpod-{}", self.id)))
            })
            .collect();
        pids.sort();
        pids
    }

    /// The host pid of the process that is `ns_pid` inside the container (its `NSpid`).
    pub fn host_pid_of(&self, ns_pid: i32) -> i32 {
        *self
            .host_pids()
            .iter()
            .find(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("NSpid:"))
                        .and_then(|l| l.split_whitespace().last()?.parse::<i32>().ok())
                        == Some(ns_pid)
                })
            })
            .unwrap_or_else(|| panic!("no process {ns_pid} in container {}", self.name))
    }

    /// `podman exec NAME ARGS…` to completion: a new process in the container.
    pub fn exec(&self, args: &[&str]) -> Output {
        podman()
            .arg("exec")
            .arg(&self.name)
            .args(args)
            .output()
            .expect("run podman exec")
    }

    /// A program in the container that speaks the probe line protocol, started with `podman
    /// exec -i` (its pid is the one inside the container: see [`Container::host_pid_of`]).
    pub fn exec_target(&self, what: &str, args: &[&str]) -> LineTarget {
        let mut cmd = podman();
        cmd.args(["exec", "-i", &self.name]).args(args);
        LineTarget::spawn(what, cmd)
    }

    /// Removes the container now (`podman rm -f -t 0`), as dropping does.
    pub fn remove(&mut self) {
        if !self.removed {
            self.removed = true;
            let out = podman().args(["rm", "-f", "-t", "0", &self.name]).output();
            if let Ok(o) = out
                && !o.status.success()
            {
                eprintln!(
                    "podman rm -f {} failed: {}",
                    self.name,
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        }
        // `podman logs -f` ends with the container; reap it either way.
        if let Some(mut logs) = self.logs.take() {
            let _ = logs.kill();
            let _ = logs.wait();
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.remove();
    }
}
