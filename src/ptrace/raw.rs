//! The raw ptrace and signal calls nix does not wrap: tgkill with real-time signals,
//! PTRACE_CONT/DETACH/LISTEN with a raw signal word, PTRACE_GETSIGMASK/SETSIGMASK,
//! PTRACE_SECCOMP_GET_FILTER.

use nix::errno::Errno;
use nix::sys::signal::Signal;

/// `tgkill(2)`: a signal to one thread of a process.
pub fn tgkill(pid: i32, tid: i32, sig: Signal) -> nix::Result<()> {
    tgkill_raw(pid, tid, sig as libc::c_int)
}

/// `tgkill(2)` with a raw signal number: real-time signals have no `Signal` value in nix.
pub fn tgkill_raw(pid: i32, tid: i32, sig: libc::c_int) -> nix::Result<()> {
    // SAFETY: tgkill takes three integers and touches no memory of ours.
    let rc = unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig) };
    Errno::result(rc).map(drop)
}

/// `PTRACE_CONT` delivering raw signal `sig` (0 for none), real-time signals included.
pub fn ptrace_cont(tid: nix::unistd::Pid, sig: libc::c_int) -> nix::Result<()> {
    ptrace_word(libc::PTRACE_CONT, tid, sig)
}

/// `PTRACE_DETACH` delivering raw signal `sig` (0 for none): nix's takes only the signals it
/// can name, not the real-time ones a target may have been stopped with.
pub fn ptrace_detach(tid: nix::unistd::Pid, sig: libc::c_int) -> nix::Result<()> {
    ptrace_word(libc::PTRACE_DETACH, tid, sig)
}

/// A ptrace request that takes no address and a plain number as its data word (a signal to
/// deliver, or 0).
fn ptrace_word(request: libc::c_uint, tid: nix::unistd::Pid, data: libc::c_int) -> nix::Result<()> {
    // SAFETY: PTRACE_CONT, PTRACE_DETACH and PTRACE_LISTEN read and write no memory of ours: the
    // address is ignored and the data word is a number, not a pointer.
    let rc = unsafe {
        libc::ptrace(
            request,
            tid.as_raw(),
            std::ptr::null_mut::<libc::c_void>(),
            data as libc::c_long as *mut libc::c_void,
        )
    };
    Errno::result(rc).map(drop)
}

/// `PTRACE_LISTEN`: leaves a tracee in its group-stop (job control) while the tracer keeps
/// receiving its events; nix has no wrapper.
pub fn ptrace_listen(tid: nix::unistd::Pid) -> nix::Result<()> {
    ptrace_word(libc::PTRACE_LISTEN, tid, 0)
}

/// `PTRACE_GETSIGMASK` / `PTRACE_SETSIGMASK` (include/uapi/linux/ptrace.h); neither nix nor
/// libc has them.
const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;

/// The blocked-signal mask of a stopped tracee (bit n-1 for signal n).
pub(crate) fn get_sigmask(tid: nix::unistd::Pid) -> nix::Result<u64> {
    let mut mask = 0u64;
    // SAFETY: `addr` is the size of the kernel's sigset (8 bytes on Linux), `data` points at a
    // u64 of ours that the kernel fills with exactly that many bytes.
    let rc = unsafe {
        libc::ptrace(
            PTRACE_GETSIGMASK,
            tid.as_raw(),
            size_of::<u64>() as *mut libc::c_void,
            (&raw mut mask).cast::<libc::c_void>(),
        )
    };
    Errno::result(rc).map(|_| mask)
}

/// Sets the blocked-signal mask of a stopped tracee (SIGKILL and SIGSTOP are never blocked);
/// signals it unblocks are looked at when the tracee resumes.
pub(crate) fn set_sigmask(tid: nix::unistd::Pid, mask: u64) -> nix::Result<()> {
    // SAFETY: as `get_sigmask`; the kernel only reads the 8 bytes of `mask`.
    let rc = unsafe {
        libc::ptrace(
            PTRACE_SETSIGMASK,
            tid.as_raw(),
            size_of::<u64>() as *mut libc::c_void,
            (&raw const mask).cast_mut().cast::<libc::c_void>(),
        )
    };
    Errno::result(rc).map(drop)
}

/// `struct ptrace_peeksiginfo_args`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeekSiginfoArgs {
    pub off: u64,
    pub flags: u32,
    pub nr: i32,
}

/// `PTRACE_PEEKSIGINFO` (include/uapi/linux/ptrace.h).
const PTRACE_PEEKSIGINFO: libc::c_uint = 0x4209;

/// `PTRACE_PEEKSIGINFO` of one siginfo (`args.nr` must be 1) from a stopped tracee's queue
/// into `out`: how many were copied (0 past the end of the queue).
pub(crate) fn peek_siginfo(
    tid: nix::unistd::Pid,
    args: &PeekSiginfoArgs,
    out: &mut [u8; 128],
) -> nix::Result<i32> {
    if args.nr != 1 {
        return Err(Errno::EINVAL);
    }
    // SAFETY: `addr` points at a valid ptrace_peeksiginfo_args asking for one siginfo; the
    // kernel copies at most that one 128-byte siginfo into `out`, which has room for it.
    let rc = unsafe {
        libc::ptrace(
            PTRACE_PEEKSIGINFO,
            tid.as_raw(),
            std::ptr::from_ref(args).cast_mut().cast::<libc::c_void>(),
            out.as_mut_ptr().cast::<libc::c_void>(),
        )
    };
    Errno::result(rc).map(|n| n as i32)
}

/// The longest filter program the kernel accepts (BPF_MAXINSNS): the buffer the filter is read
/// into, and the bound the evaluator checks.
pub(crate) const MAX_FILTER_LEN: usize = libc::BPF_MAXINSNS as usize;

/// `PTRACE_SECCOMP_GET_FILTER` (include/uapi/linux/ptrace.h); neither nix nor libc has it.
const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;

/// The seccomp filter program number `index` (0 = the oldest) of thread `tid`, which the caller
/// holds in a ptrace-stop. `Err(ENOENT)` past the oldest filter; `EACCES` without CAP_SYS_ADMIN
/// or when we are under seccomp ourselves; `EMEDIUMTYPE`/`EINVAL` when the kernel cannot give it.
pub fn ptrace_seccomp_get_filter(
    tid: nix::unistd::Pid,
    index: u32,
) -> nix::Result<Vec<libc::sock_filter>> {
    // One call into a buffer of the largest size the kernel accepts for a filter: asking for
    // the length first and then the program could overflow a buffer sized by the first answer
    // if the filters changed in between.
    let empty = libc::sock_filter {
        code: 0,
        jt: 0,
        jf: 0,
        k: 0,
    };
    let mut program = vec![empty; MAX_FILTER_LEN];
    // SAFETY: `addr` is an index, not an address; the kernel copies at most BPF_MAXINSNS
    // instructions (the longest filter it accepts) into `data`, which has room for that many.
    let rc = unsafe {
        libc::ptrace(
            PTRACE_SECCOMP_GET_FILTER,
            tid.as_raw(),
            index as usize as *mut libc::c_void,
            program.as_mut_ptr().cast::<libc::c_void>(),
        )
    };
    let len = Errno::result(rc)? as usize;
    if len > program.len() {
        // Cannot happen (the kernel refuses longer filters); never read beyond what we own.
        return Err(Errno::E2BIG);
    }
    program.truncate(len);
    Ok(program)
}
