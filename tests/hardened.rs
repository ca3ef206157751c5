//! End-to-end: hardened targets (issue 7, point 5). A target's own seccomp policy or W^X
//! policy must never be what kills it: the real `timeskew` binary against the small C program
//! tests/targets/hardened/hardened.c, which locks itself down before it says it is ready.
//!
//! - seccomp filters that KILL_PROCESS / KILL_THREAD / TRAP (with and without a SIGSYS
//!   handler) / ERRNO / USER_NOTIF (supervised by a thread of the target) on `mmap`, and strict
//!   mode: timeskew needs mmap, so it must refuse — exit 1, a message naming seccomp and mmap,
//!   the target alive and answering, no SIGSYS delivered, its vDSO and memory map unchanged.
//!   These pass once inject.rs calls `seccomp::check` before its first injected call.
//! - the same filters on `mprotect`, a MemoryDenyWriteExecute=-like filter and
//!   `prctl(PR_SET_MDWE)`: timeskew must succeed without ever calling mprotect or making a
//!   writable page executable, the clock skewed by -600 s, then recover restores the vDSO.
//!   These pass once injection maps the code page r-x directly and fills it through
//!   /proc/PID/mem.
//!
//! Every target is killed and reaped (LineTarget's Drop); readiness is a line on stdout; every
//! timeskew run is bounded.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::e2e::*;
use common::*;

/// How long one timeskew run may take before the test fails (it must never hang).
const TIMESKEW_TIMEOUT: Duration = Duration::from_secs(60);

/// tests/targets/hardened/hardened.c, built once per test binary with `cc`.
fn target_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cc = require("cc", "build-essential");
        let src = sources().join("hardened/hardened.c");
        let out = build_dir().join("hardened");
        // Built under a private name and renamed: test binaries building at the same time
        // never run a half-written program.
        let tmp = build_dir().join(format!(".hardened.{}", std::process::id()));
        let o = Command::new(cc)
            .args(["-O2", "-Wall", "-pthread", "-o"])
            .arg(&tmp)
            .arg(&src)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run cc: {e}"));
        assert!(
            o.status.success(),
            "building {} failed: {}",
            src.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        std::fs::rename(&tmp, &out).unwrap();
        out
    })
}

fn spawn(policy: &str, call: &str) -> LineTarget {
    let mut cmd = Command::new(target_bin());
    cmd.args([policy, call]);
    LineTarget::spawn(&format!("hardened {policy} {call}"), cmd)
}

/// Runs the CLI, failing the test (after killing it) if it takes longer than
/// TIMESKEW_TIMEOUT.
fn timeskew_bounded(args: &[&str]) -> Output {
    let child = Command::new(timeskew_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run timeskew");
    let pid = child.id() as i32;
    let (done, finished) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = done.send(());
        out
    });
    let hung = finished.recv_timeout(TIMESKEW_TIMEOUT).is_err();
    if hung {
        // Not reaped yet (the waiter is still waiting), so the pid is still our child.
        // SAFETY: kill takes two integers.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let out = waiter.join().unwrap().expect("wait for timeskew");
    assert!(
        !hung,
        "timeskew {args:?} did not finish within {TIMESKEW_TIMEOUT:?}: {}",
        stderr(&out)
    );
    out
}

fn inject(pid: i32) -> Output {
    timeskew_bounded(&["inject", "--pid", &pid.to_string(), "--offset", "-600s"])
}

const OFFSET: i128 = -600 * SEC;

/// What must hold after any refusal: alive and answering with its real time, no SIGSYS, no
/// thread left stopped or traced, the vDSO and the memory map as they were.
fn assert_untouched(t: &mut LineTarget, vdso: &[u8], maps_before: &[String], threads: usize) {
    let now = t.now();
    now.assert_realtime_shift("realtime", 1, 0, 0);
    assert_eq!(now.get("sigsys"), 0, "{}: a SIGSYS was delivered", t.name);
    assert_eq!(
        now.get("notified"),
        0,
        "{}: a call reached the seccomp supervisor",
        t.name
    );
    assert_eq!(held_threads(t.pid), Vec::<String>::new(), "{}", t.name);
    assert_eq!(thread_count(t.pid), threads, "{}: a thread died", t.name);
    assert!(vdso_bytes(t.pid) == vdso, "{}: the vDSO changed", t.name);
    assert_eq!(
        maps(t.pid),
        maps_before,
        "{}: the memory map changed",
        t.name
    );
}

/// timeskew must refuse: exit 1, naming seccomp and mmap, and leave the target untouched.
fn assert_refused(policy: &str) {
    let mut t = spawn(policy, "mmap");
    let threads = t.now().get("threads") as usize;
    let (vdso, maps_before) = (vdso_bytes(t.pid), maps(t.pid));
    let out = inject(t.pid);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}: timeskew should refuse; stdout {:?} stderr {err:?}",
        t.name,
        stdout(&out)
    );
    assert!(
        err.contains("seccomp") && err.contains("mmap"),
        "{}: the refusal should name seccomp and mmap: {err:?}",
        t.name
    );
    assert_untouched(&mut t, &vdso, &maps_before, threads);
}

/// timeskew must succeed without tripping the policy: skewed by -600 s, no W+X mapping, no
/// SIGSYS; then recover puts the vDSO back.
fn assert_skewed(policy: &str, call: &str) {
    let mut t = spawn(policy, call);
    let threads = t.now().get("threads") as usize;
    let vdso = vdso_bytes(t.pid);
    let out = inject(t.pid);
    assert!(
        out.status.success(),
        "{}: inject failed ({}): {}",
        t.name,
        out.status,
        stderr(&out)
    );
    let now = t.now();
    now.assert_realtime_shift("realtime", 1, OFFSET, 0);
    assert_eq!(now.get("sigsys"), 0, "{}: a SIGSYS was delivered", t.name);
    assert_eq!(thread_count(t.pid), threads, "{}: a thread died", t.name);
    assert_eq!(wx_mappings(t.pid), Vec::<String>::new(), "{}", t.name);
    assert_eq!(held_threads(t.pid), Vec::<String>::new(), "{}", t.name);

    let out = timeskew_bounded(&["recover", "--pid", &t.pid_str()]);
    assert!(
        out.status.success(),
        "{}: recover failed ({}): {}",
        t.name,
        out.status,
        stderr(&out)
    );
    let now = t.now();
    now.assert_realtime_shift("realtime", 1, 0, 0);
    assert_eq!(now.get("sigsys"), 0, "{}: a SIGSYS was delivered", t.name);
    assert!(
        vdso_bytes(t.pid) == vdso,
        "{}: recover left the vDSO changed",
        t.name
    );
}

// --- the harness itself: no policy ------------------------------------------------------------

#[test]
fn control_without_policy_is_skewed() {
    assert_skewed("none", "mmap");
}

// --- filters on mmap: refused ----------------------------------------------------------------

#[test]
fn mmap_kill_process_is_refused() {
    assert_refused("kill_process");
}

#[test]
fn mmap_kill_thread_is_refused() {
    assert_refused("kill_thread");
}

#[test]
fn mmap_trap_with_handler_is_refused() {
    assert_refused("trap");
}

#[test]
fn mmap_trap_without_handler_is_refused() {
    assert_refused("trap_nohandler");
}

#[test]
fn mmap_errno_is_refused() {
    assert_refused("errno");
}

#[test]
fn mmap_user_notif_with_supervisor_thread_is_refused() {
    assert_refused("user_notif");
}

/// A single-threaded process in strict mode blocked in read(): any call but read, write, exit
/// and rt_sigreturn kills it, so timeskew must refuse, naming strict mode.
#[test]
fn strict_mode_is_refused() {
    let mut t = spawn("strict", "mmap");
    assert_eq!(t.ask_line("ping"), "ping strict=1");
    let (vdso, maps_before) = (vdso_bytes(t.pid), maps(t.pid));
    let out = inject(t.pid);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "timeskew should refuse: {err:?}"
    );
    assert!(
        err.contains("seccomp strict mode") && err.contains("mmap"),
        "the refusal should name strict mode and mmap: {err:?}"
    );
    assert_eq!(
        t.ask_line("ping"),
        "ping strict=1",
        "the target must still answer"
    );
    assert_eq!(held_threads(t.pid), Vec::<String>::new());
    assert!(vdso_bytes(t.pid) == vdso, "the vDSO changed");
    assert_eq!(maps(t.pid), maps_before, "the memory map changed");
}

/// One worker thread in strict mode, blocked in read(); the main thread and a ticker are
/// normal. Expected: timeskew runs its calls in a thread whose policy allows them (the main
/// thread) and succeeds; refusing — naming strict mode — is also acceptable if it picks the
/// strict thread. Never acceptable: a dead thread, a changed vDSO after a refusal.
#[test]
fn strict_worker_thread_is_never_harmed() {
    let mut t = spawn("strict_worker", "mmap");
    let threads = t.now().get("threads") as usize;
    assert_eq!(thread_count(t.pid), threads);
    let (vdso, maps_before) = (vdso_bytes(t.pid), maps(t.pid));
    let out = inject(t.pid);
    let err = stderr(&out);
    if out.status.success() {
        eprintln!("strict worker: timeskew injected (it ran its calls in a normal thread)");
        t.now().assert_realtime_shift("realtime", 1, OFFSET, 0);
        assert_eq!(thread_count(t.pid), threads, "a thread died: {err}");
        let out = timeskew_bounded(&["recover", "--pid", &t.pid_str()]);
        assert!(out.status.success(), "recover failed: {}", stderr(&out));
        t.now().assert_realtime_shift("realtime", 1, 0, 0);
        assert!(vdso_bytes(t.pid) == vdso, "recover left the vDSO changed");
        assert_eq!(thread_count(t.pid), threads, "a thread died");
    } else {
        eprintln!("strict worker: timeskew refused: {err}");
        assert_eq!(out.status.code(), Some(1), "{err:?}");
        assert!(err.contains("seccomp strict mode"), "{err:?}");
        assert_untouched(&mut t, &vdso, &maps_before, threads);
    }
}

// --- filters on mprotect and W^X policies: injection must not need mprotect --------------------

#[test]
fn mprotect_kill_process_is_skewed() {
    assert_skewed("kill_process", "mprotect");
}

#[test]
fn mprotect_kill_thread_is_skewed() {
    assert_skewed("kill_thread", "mprotect");
}

#[test]
fn mprotect_trap_without_handler_is_skewed() {
    assert_skewed("trap_nohandler", "mprotect");
}

#[test]
fn mprotect_errno_is_skewed() {
    assert_skewed("errno", "mprotect");
}

#[test]
fn mprotect_user_notif_is_skewed() {
    assert_skewed("user_notif", "mprotect");
}

/// systemd's MemoryDenyWriteExecute=: no mmap with PROT_WRITE|PROT_EXEC, no mprotect or
/// pkey_mprotect adding PROT_EXEC (EPERM).
#[test]
fn memory_deny_write_execute_filter_is_skewed() {
    assert_skewed("mdwe_filter", "mmap");
}

/// prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN): the kernel refuses to make a writable or
/// non-executable mapping executable, but allows mapping r-x directly.
#[test]
fn prctl_mdwe_is_skewed() {
    assert_skewed("mdwe_prctl", "mmap");
}
