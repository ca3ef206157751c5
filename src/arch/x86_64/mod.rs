//! x86_64: `jmp rel32` hooks, iced-x86 relocation, `syscall` injection.

use nix::unistd::Pid;

use super::{Arch, HookPlan, PerEntry};
use crate::vdso::VdsoImage;

mod regs;
mod relocate;

pub use regs::Regs;

/// Marker type implementing [`Arch`] for x86_64.
pub struct X86_64;

impl Arch for X86_64 {
    type Regs = Regs;
    const JUMP_LEN: usize = relocate::JUMP_LEN;
    const SYMBOLS: PerEntry<&'static str> =
        PerEntry(["__vdso_clock_gettime", "__vdso_gettimeofday", "__vdso_time"]);

    fn plan_hooks(image: &VdsoImage) -> Result<PerEntry<HookPlan>, (&'static str, String)> {
        let plans = relocate::plan_hooks(image, Self::SYMBOLS.values())?;
        let plans: [HookPlan; 3] = plans.try_into().expect("one plan per symbol");
        Ok(PerEntry(plans))
    }

    fn build_stub(plan: &HookPlan, stub_addr: u64, capacity: usize) -> Result<Vec<u8>, String> {
        relocate::build_stub(plan, stub_addr, capacity)
    }

    fn encode_jump(from: u64, to: u64) -> Option<Vec<u8>> {
        relocate::encode_jump(from, to)
    }

    fn decode_jump(bytes: &[u8], from: u64) -> Option<u64> {
        relocate::decode_jump(bytes, from)
    }

    fn find_syscall_instruction(image: &VdsoImage) -> Option<u64> {
        relocate::find_syscall_instruction(image)
    }

    fn get_regs(tid: Pid) -> nix::Result<Regs> {
        regs::get(tid)
    }

    fn set_regs(tid: Pid, regs: &Regs) -> nix::Result<()> {
        regs::set(tid, regs)
    }

    fn prepare_syscall(regs: &mut Regs, insn: u64, nr: i64, args: &[u64; 6]) {
        regs::prepare_syscall(regs, insn, nr, args)
    }

    fn syscall_return(regs: &Regs) -> i64 {
        regs::syscall_return(regs)
    }

    fn after_syscall(insn: u64) -> u64 {
        insn + 2
    }
}
