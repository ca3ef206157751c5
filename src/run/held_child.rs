//! A forked child held before `execvp`, so that `timeskew run` can attach first.

use nix::errno::Errno;
use nix::sys::signal::SigSet;

/// A forked child that waits, before `execvp`, until [`HeldChild::release`]: the parent can
/// attach to it first, so the command is traced from its first instruction.
#[derive(Debug)]
pub struct HeldChild {
    pub pid: nix::unistd::Pid,
    go: std::os::fd::OwnedFd,
    errors: std::os::fd::OwnedFd,
}

impl HeldChild {
    /// Lets the child go on to `execvp`.
    pub fn release(&self) -> nix::Result<()> {
        match nix::unistd::write(&self.go, &[1]) {
            Ok(1) => Ok(()),
            Ok(_) => Err(Errno::EIO),
            Err(e) => Err(e),
        }
    }

    /// The errno of a failed `execvp`, once the child has exited without running the command.
    pub fn exec_error(&self) -> Option<Errno> {
        let mut buf = [0u8; 4];
        match nix::unistd::read(&self.errors, &mut buf) {
            Ok(4) => Some(Errno::from_raw(i32::from_ne_bytes(buf))),
            _ => None,
        }
    }
}

/// Forks a child that restores the caller's signal state (`mask`, the SIGCHLD disposition
/// `sigchld`, SIGPIPE at its default like `std::process::Command`), waits for
/// [`HeldChild::release`] and then runs `execvp(argv[0], argv)`, inheriting stdio, environment
/// and working directory. An exec failure is reported through [`HeldChild::exec_error`] and exit
/// status 127. Everything the child needs is prepared before the fork: between fork and exec it
/// makes only async-signal-safe system calls, so this is sound in a multi-threaded process.
pub fn fork_held(
    argv: &[std::ffi::CString],
    mask: &SigSet,
    sigchld: &libc::sigaction,
) -> nix::Result<HeldChild> {
    use std::os::fd::AsRawFd;
    let Some(program) = argv.first() else {
        return Err(Errno::EINVAL);
    };
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let (go_rd, go_wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // Non-blocking: the parent reads it only after the child exited, and four bytes always fit.
    let (err_rd, err_wr) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
    let child_fds = [go_rd.as_raw_fd(), err_wr.as_raw_fd()];
    let parent_fds = [go_wr.as_raw_fd(), err_rd.as_raw_fd()];
    let mask: &libc::sigset_t = mask.as_ref();
    // SAFETY: the child runs only `held_child_exec`, which makes async-signal-safe calls on
    // memory prepared above and never returns.
    match unsafe { nix::unistd::fork() }? {
        // SAFETY: we are the freshly forked child, and the pointers are the child's copies of
        // the memory prepared above (see `held_child_exec`).
        nix::unistd::ForkResult::Child => unsafe {
            held_child_exec(
                program.as_ptr(),
                &ptrs,
                child_fds,
                parent_fds,
                mask,
                sigchld,
            )
        },
        nix::unistd::ForkResult::Parent { child } => Ok(HeldChild {
            pid: child,
            go: go_wr,
            errors: err_rd,
        }),
    }
}

/// The child side of [`fork_held`].
///
/// # Safety
/// Only to be called in a freshly forked child; the pointers must stay valid (they do: the
/// child's copy of the parent's memory is not freed before exec).
unsafe fn held_child_exec(
    program: *const libc::c_char,
    argv: &[*const libc::c_char],
    [go, errors]: [libc::c_int; 2],
    parent_fds: [libc::c_int; 2],
    mask: &libc::sigset_t,
    sigchld: &libc::sigaction,
) -> ! {
    // SAFETY: plain system calls on valid pointers; see the function's contract.
    unsafe {
        for fd in parent_fds {
            libc::close(fd);
        }
        libc::sigaction(libc::SIGCHLD, sigchld, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::pthread_sigmask(libc::SIG_SETMASK, mask, std::ptr::null_mut());
        let mut byte = 0u8;
        loop {
            match libc::read(go, (&raw mut byte).cast(), 1) {
                1 => break,
                -1 if Errno::last_raw() == libc::EINTR => {}
                // The parent went away without letting us run: never run untraced.
                _ => libc::_exit(125),
            }
        }
        libc::execvp(program, argv.as_ptr());
        let errno = Errno::last_raw().to_ne_bytes();
        libc::write(errors, errno.as_ptr().cast(), errno.len());
        libc::_exit(127)
    }
}
