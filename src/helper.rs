//! What a process that exists only to follow does for itself (the command line's follower
//! helper, alone in a session of its own: `bin/timeskew/follow.rs`).

/// Gives this process's session the highest scheduler weight: the autogroup the kernel makes
/// per session when `kernel.sched_autogroup_enabled` is 1 (as on Debian and Ubuntu) gets nice
/// −20. There a thread's own nice value only ranks it inside its session, and on busy CPUs a
/// follower waits its turn against every busy session while a runtime's `exec` into a
/// followed container races it: its longest wait for a CPU went from 18 ms to 4.7 ms (`perf
/// sched timehist`, 2 CPUs, two busy loops in another session). The CPU time used is the
/// same; only when it is had changes. (Also measured for every inject/recover helper, and not
/// kept there yet: README, "The helper at the highest scheduler weight".) Without CAP_SYS_NICE, or with autogroups off (then cgroup weights
/// decide), nothing changes. Not for a library caller whose session holds other work: it
/// weighs the whole session.
pub fn prioritize_own_session() {
    if let Err(e) = crate::target::procfs::set_own_autogroup_nice(-20) {
        log::debug!("this session keeps its scheduler weight: {e}");
    }
}
