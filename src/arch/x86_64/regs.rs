//! Register save/restore and syscall set-up for a ptrace-stopped x86_64 thread.

use nix::sys::ptrace;
use nix::unistd::Pid;

use crate::arch::Registers;

/// The full user register set (`struct user_regs_struct`).
#[derive(Clone, Copy)]
pub struct Regs(pub libc::user_regs_struct);

impl std::fmt::Debug for Regs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Regs {{ rip: {:#x}, rsp: {:#x}, rax: {:#x}, orig_rax: {:#x} }}",
            self.0.rip, self.0.rsp, self.0.rax, self.0.orig_rax
        )
    }
}

impl Registers for Regs {
    fn instruction_pointer(&self) -> u64 {
        self.0.rip
    }
    fn stack_pointer(&self) -> u64 {
        self.0.rsp
    }
    fn set_instruction_pointer(&mut self, ip: u64) {
        self.0.rip = ip;
    }
}

pub fn get(tid: Pid) -> nix::Result<Regs> {
    ptrace::getregs(tid).map(Regs)
}

pub fn set(tid: Pid, regs: &Regs) -> nix::Result<()> {
    ptrace::setregs(tid, regs.0)
}

pub fn prepare_syscall(regs: &mut Regs, insn: u64, nr: i64, args: &[u64; 6]) {
    let r = &mut regs.0;
    r.rip = insn;
    r.rax = nr as u64;
    // orig_rax = -1 tells the kernel this stop is not inside a syscall, so it applies no
    // -ERESTART* restart logic to our registers when the thread resumes.
    r.orig_rax = u64::MAX;
    r.rdi = args[0];
    r.rsi = args[1];
    r.rdx = args[2];
    r.r10 = args[3];
    r.r8 = args[4];
    r.r9 = args[5];
}

pub fn syscall_return(regs: &Regs) -> i64 {
    regs.0.rax as i64
}
