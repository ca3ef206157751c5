//! What a process that exists only to change targets does for itself (the command line's
//! helpers, each alone in a session of its own: `bin/timeskew/isolate.rs`).

/// Gives this process's session the highest scheduler weight: the autogroup the kernel makes
/// per session when `kernel.sched_autogroup_enabled` is 1 (as on Debian and Ubuntu) gets nice
/// −20. There a thread's own nice value only ranks it inside its session, and on busy CPUs a
/// helper waits its turn against every busy session — while it holds target threads, or while
/// a runtime's `exec` into a followed container races the follower. Measured on 2 CPUs with
/// two busy loops in another session (README, "The helper at the highest scheduler weight"):
/// a first injection's longest stop of a 6-thread target, median 1.8–2.1 ms → 0.5–0.7 ms;
/// the follower's longest wait for a CPU 18 ms → 4.7 ms (`perf sched timehist`). The CPU time
/// used is the same; only when it is had changes. Without CAP_SYS_NICE, or with autogroups off
/// (then cgroup weights decide), nothing changes. Not for a library caller whose session holds
/// other work: it weighs the whole session.
pub fn prioritize_own_session() {
    if let Err(e) = crate::target::procfs::set_own_autogroup_nice(-20) {
        log::debug!("this session keeps its scheduler weight: {e}");
    }
}
