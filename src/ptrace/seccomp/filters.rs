//! Reading a held thread's seccomp filter programs back from the kernel
//! (`PTRACE_SECCOMP_GET_FILTER`).

use libc::sock_filter;
use nix::errno::Errno;
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// The kernel caps the instructions of all filters of a thread at 256 Ki, each filter costing
/// 4 more: no thread has more filters than this.
const MAX_FILTERS: u32 = 1 << 16;

/// Every filter of the thread, newest first: the order the kernel runs them in. `refuse` turns
/// the reason a filter cannot be read into the error the caller reports (it names the call).
pub(super) fn read_filters(
    pid: i32,
    tid: Pid,
    refuse: impl Fn(String) -> Error,
) -> Result<Vec<Vec<sock_filter>>> {
    let mut filters = Vec::new();
    for index in 0..MAX_FILTERS {
        match crate::ptrace::raw::ptrace_seccomp_get_filter(tid, index) {
            Ok(program) => filters.push(program),
            // Past the oldest filter.
            Err(Errno::ENOENT) => break,
            Err(Errno::ESRCH) => {
                return Err(crate::target::procfs::errno_error(
                    pid,
                    tid.as_raw(),
                    "read its seccomp filters",
                    Errno::ESRCH,
                ));
            }
            Err(e) => return Err(refuse(unreadable(index, e))),
        }
    }
    // PTRACE_SECCOMP_GET_FILTER numbers them oldest first (get_nth_filter counts back from
    // the newest), checked by the test `real_stacked_filters_newest_first`.
    filters.reverse();
    if filters.is_empty() {
        return Err(refuse(
            "it is in seccomp filter mode but the kernel returned no filter, so timeskew cannot \
             tell what would be allowed"
                .into(),
        ));
    }
    Ok(filters)
}

/// Why a filter could not be read, in words (the errors of `seccomp_get_filter`).
fn unreadable(index: u32, e: Errno) -> String {
    let why = match e {
        Errno::EACCES => {
            "reading them needs CAP_SYS_ADMIN, and a timeskew that is not itself under seccomp"
        }
        Errno::EMEDIUMTYPE => {
            "this kernel keeps no copy of the filter program (CONFIG_CHECKPOINT_RESTORE is off)"
        }
        Errno::EINVAL => "this kernel does not support PTRACE_SECCOMP_GET_FILTER for the thread",
        _ => e.desc(),
    };
    format!(
        "its seccomp filter #{index} (oldest first) cannot be read (PTRACE_SECCOMP_GET_FILTER: {e}: {why}), so \
         timeskew cannot tell whether the call would be allowed"
    )
}
