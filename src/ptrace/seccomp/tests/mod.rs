//! Tests of the seccomp check, split by theme; the helpers here build filter programs and the
//! planned calls they are run on.

mod child;
mod evaluator;
mod kernel_agrees;
mod real_threads;

use libc::sock_filter;

use super::bpf::*;
use super::*;

fn stmt(code: u32, k: u32) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

const ARCH: u32 = 4;
const IP_LO: u32 = 8;
const IP_HI: u32 = 12;
const fn arg_lo(i: u32) -> u32 {
    16 + 8 * i
}
const fn arg_hi(i: u32) -> u32 {
    20 + 8 * i
}
const LD_ABS: u32 = LD_W_ABS;
const JEQ_K: u32 = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
const JEQ_X: u32 = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_X;
const JGT_K: u32 = libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K;
const JGT_X: u32 = libc::BPF_JMP | libc::BPF_JGT | libc::BPF_X;
const JGE_K: u32 = libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K;
const JGE_X: u32 = libc::BPF_JMP | libc::BPF_JGE | libc::BPF_X;
const JSET_K: u32 = libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K;
const JSET_X: u32 = libc::BPF_JMP | libc::BPF_JSET | libc::BPF_X;
const fn alu(op: u32, src: u32) -> u32 {
    libc::BPF_ALU | op | src
}
const K: u32 = libc::BPF_K;
const X: u32 = libc::BPF_X;
const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;

/// The usual filter: other arches and other calls allowed, `nr` gets `action`.
fn on_call(nr: i64, action: u32) -> Vec<sock_filter> {
    vec![
        stmt(LD_ABS, ARCH),
        jump(JEQ_K, AUDIT_ARCH_NATIVE, 1, 0),
        stmt(RET_K, ALLOW),
        stmt(LD_ABS, 0),
        jump(JEQ_K, nr as u32, 0, 1),
        stmt(RET_K, action),
        stmt(RET_K, ALLOW),
    ]
}

/// Like systemd's MemoryDenyWriteExecute=: mmap with PROT_WRITE|PROT_EXEC together, and
/// mprotect/pkey_mprotect with PROT_EXEC, fail with EPERM (both halves of the 64-bit prot
/// argument checked, as libseccomp does).
fn mdwe_filter() -> Vec<sock_filter> {
    let wx = (libc::PROT_WRITE | libc::PROT_EXEC) as u32;
    vec![
        stmt(LD_ABS, ARCH),
        jump(JEQ_K, AUDIT_ARCH_NATIVE, 1, 0),
        stmt(RET_K, ALLOW),
        stmt(LD_ABS, 0),
        jump(JEQ_K, libc::SYS_mmap as u32, 0, 6),
        // mmap: prot is args[2]; hi word must be 0 and lo & (W|X) == W|X to deny.
        stmt(LD_ABS, arg_hi(2)),
        jump(JEQ_K, 0, 0, 3),
        stmt(LD_ABS, arg_lo(2)),
        stmt(alu(libc::BPF_AND, K), wx),
        jump(JEQ_K, wx, 6, 0),
        stmt(RET_K, ALLOW),
        // mprotect and pkey_mprotect: deny PROT_EXEC in args[2].
        jump(JEQ_K, libc::SYS_mprotect as u32, 1, 0),
        jump(JEQ_K, libc::SYS_pkey_mprotect as u32, 0, 2),
        stmt(LD_ABS, arg_lo(2)),
        jump(JSET_K, libc::PROT_EXEC as u32, 1, 0),
        stmt(RET_K, ALLOW),
        stmt(RET_K, EPERM),
    ]
}

/// Kills mmap made from an instruction pointer in [lo, hi) (a filter that only trusts
/// calls made from one library, say): 64-bit compares done on the two halves.
fn ip_filter(lo: u64, hi: u64) -> Vec<sock_filter> {
    assert_eq!(
        lo >> 32,
        hi >> 32,
        "the test keeps both bounds in one 4 GiB half"
    );
    vec![
        stmt(LD_ABS, 0),
        jump(JEQ_K, libc::SYS_mmap as u32, 0, 5),
        stmt(LD_ABS, IP_HI),
        jump(JEQ_K, (lo >> 32) as u32, 0, 3),
        stmt(LD_ABS, IP_LO),
        jump(JGE_K, lo as u32, 0, 1),
        jump(JGE_K, hi as u32, 0, 1),
        stmt(RET_K, ALLOW),
        stmt(RET_K, libc::SECCOMP_RET_KILL_PROCESS),
    ]
}

const IP: u64 = 0x7ffd_e5f0_1002;

fn call(name: &'static str, nr: i64, args: [u64; 6]) -> PlannedSyscall {
    PlannedSyscall {
        name,
        nr,
        args,
        ip: IP,
    }
}

fn mmap(prot: i32) -> PlannedSyscall {
    call(
        "mmap",
        libc::SYS_mmap,
        [
            0x7ffd_e5e0_0000,
            8192,
            prot as u64,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64,
            -1i64 as u64,
            0,
        ],
    )
}

fn mmap_rw() -> PlannedSyscall {
    mmap(libc::PROT_READ | libc::PROT_WRITE)
}

fn munmap() -> PlannedSyscall {
    call(
        "munmap",
        libc::SYS_munmap,
        [0x7ffd_e5e0_0000, 8192, 0, 0, 0, 0],
    )
}

fn mprotect(prot: i32) -> PlannedSyscall {
    call(
        "mprotect",
        libc::SYS_mprotect,
        [0x7ffd_e5e0_0000, 4096, prot as u64, 0, 0, 0],
    )
}

fn run(program: &[sock_filter], c: &PlannedSyscall) -> std::result::Result<u32, String> {
    run_filter(program, &seccomp_data(c))
}

fn action(filters: &[Vec<sock_filter>], c: &PlannedSyscall) -> Action {
    Action::from_ret(run_filters(filters, &seccomp_data(c)).unwrap())
}

/// A program that leaves its result in A and returns it.
fn ret_a(mut body: Vec<sock_filter>) -> Vec<sock_filter> {
    body.push(stmt(RET_A, 0));
    body
}

fn eval(body: Vec<sock_filter>) -> u32 {
    run(&ret_a(body), &munmap()).unwrap()
}
