//! x86_64: the [`Arch`] facts and operations, each delegated to the file that does that job.
//!
//! `hooks` plans the windows, `relocate` builds the stubs, `inline` copies a whole function for a
//! fake to run inline, `jump` is the `jmp rel32` codec,
//! `decode` holds the shared iced-x86 helpers, `regs` runs `syscall` in a stopped thread.

use nix::unistd::Pid;

use super::{Arch, HookPlan, PerEntry};
use crate::vdso::VdsoImage;

mod decode;
mod hooks;
mod inline;
mod jump;
mod regs;
mod relocate;
#[cfg(test)]
mod test_support;

pub use regs::Regs;

/// Marker type implementing [`Arch`] for x86_64.
pub struct X86_64;

impl Arch for X86_64 {
    type Regs = Regs;
    const NAME: &'static str = "x86_64";
    /// `EM_X86_64`.
    const ELF_MACHINE: u16 = goblin::elf::header::EM_X86_64;
    const JUMP_LEN: usize = jump::JUMP_LEN;
    const JUMP_REACH: u64 = jump::REACH;
    /// 4-level paging (47-bit user addresses), less the guard page the kernel keeps at the top.
    /// Higher (5-level) addresses are only handed out to a process that asks for them.
    const USER_SPACE_TOP: u64 = 0x7fff_ffff_f000;
    const SYMBOLS: PerEntry<&'static str> =
        PerEntry(["__vdso_clock_gettime", "__vdso_gettimeofday", "__vdso_time"]);

    fn plan_hooks(image: &VdsoImage) -> Result<PerEntry<HookPlan>, (&'static str, String)> {
        let plans = hooks::plan_hooks(image, Self::SYMBOLS.values())?;
        let plans: [HookPlan; 3] = plans.try_into().expect("one plan per symbol");
        Ok(PerEntry(plans))
    }

    fn build_stub(plan: &HookPlan, stub_addr: u64, capacity: usize) -> Result<Vec<u8>, String> {
        relocate::build_stub(plan, stub_addr, capacity)
    }

    fn build_body(
        plan: &HookPlan,
        at: u64,
        capacity: usize,
        continue_at: u64,
    ) -> Result<Vec<u8>, String> {
        inline::build_body(plan, at, capacity, continue_at)
    }

    fn encode_jump(from: u64, to: u64) -> Option<Vec<u8>> {
        jump::encode_jump(from, to)
    }

    fn decode_jump(bytes: &[u8], from: u64) -> Option<u64> {
        jump::decode_jump(bytes, from)
    }

    fn find_syscall_instruction(image: &VdsoImage) -> Option<u64> {
        decode::find_syscall_instruction(image)
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

    fn syscall_instruction() -> &'static [u8] {
        &[0x0f, 0x05]
    }

    fn after_syscall(insn: u64) -> u64 {
        insn + 2
    }

    const BREAKPOINT: u8 = 0xcc;

    fn breakpoint_at(ip_after_trap: u64) -> u64 {
        ip_after_trap.wrapping_sub(1)
    }

    fn equivalent_in_stub(
        window: &[u8],
        window_addr: u64,
        stub: &[u8],
        stub_addr: u64,
        ip: u64,
    ) -> Option<u64> {
        decode::equivalent_in_stub(window, window_addr, stub, stub_addr, ip)
    }
}

#[cfg(test)]
mod tests {
    use super::decode::find_syscall_instruction;
    use super::hooks::plan_hooks;
    use super::relocate::build_stub;
    use super::test_support::{ENTRIES, live};
    use crate::vdso::{Symbol, VdsoImage};

    /// Random corruption of the live vDSO's code never makes planning or relocation panic.
    #[test]
    fn corrupted_code_never_panics() {
        let image = live();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let symbols: Vec<Symbol> = ENTRIES
            .iter()
            .map(|n| image.symbol(n).unwrap().clone())
            .collect();
        let (text, text_len) = image.exec_ranges()[0];
        for _ in 0..2_000 {
            let mut bytes = image.bytes().to_vec();
            for _ in 0..1 + next() % 16 {
                let off = (text - image.base() + next() % text_len) as usize;
                bytes[off] = next() as u8;
            }
            let mutated = VdsoImage::from_parts(
                image.base(),
                bytes,
                symbols.clone(),
                image.exec_ranges().to_vec(),
            );
            if let Ok(plans) = plan_hooks(&mutated, &ENTRIES) {
                for plan in &plans {
                    let _ = build_stub(plan, image.base() - 4096, 64);
                }
            }
            let _ = find_syscall_instruction(&mutated);
        }
    }
}
