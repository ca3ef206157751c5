//! Per-architecture code behind one small trait: how a jump looks, how displaced instructions
//! are relocated, how a syscall is run in a stopped thread. x86_64 now; aarch64 goes beside it.

use crate::vdso::VdsoImage;

pub mod x86_64;

/// The architecture this build injects into (same as the host: we only patch our own kind).
#[cfg(target_arch = "x86_64")]
pub type Native = x86_64::X86_64;

/// How one vDSO entry will be hooked: the whole instructions that the jump overwrites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookPlan {
    /// Symbol name, e.g. `__vdso_clock_gettime`.
    pub symbol: &'static str,
    /// Address of the entry in the target.
    pub addr: u64,
    /// The original bytes of the window: whole instructions, at least `JUMP_LEN` long.
    pub original: Vec<u8>,
}

impl HookPlan {
    /// True when `ip` lies strictly inside the window, where a thread must not be when we patch.
    pub fn contains_strictly(&self, ip: u64) -> bool {
        ip > self.addr && ip < self.addr + self.original.len() as u64
    }
}

/// Register file of a stopped thread, as the architecture sees it.
pub trait Registers: Clone + std::fmt::Debug {
    fn instruction_pointer(&self) -> u64;
    fn set_instruction_pointer(&mut self, ip: u64);
    /// The stack pointer: saved contexts of interrupted code (signal frames) lie above it.
    fn stack_pointer(&self) -> u64;
}

/// Everything the injector needs to know about an instruction set.
pub trait Arch {
    /// Saved/restored register set.
    type Regs: Registers;

    /// Length of the jump written over each entry.
    const JUMP_LEN: usize;

    /// Plans hooks for `symbols` of `image`: decodes each entry's first instructions and refuses
    /// (with a reason naming the symbol) when the window holds a branch, call, ret or syscall,
    /// when any branch anywhere in the vDSO text lands strictly inside a window, or when the
    /// function is shorter than the window.
    fn plan_hooks(
        image: &VdsoImage,
        symbols: &[&'static str],
    ) -> Result<Vec<HookPlan>, (&'static str, String)>;

    /// Machine code for the stub at `stub_addr`: the window's instructions relocated (RIP-relative
    /// operands fixed up) followed by a jump back to `plan.addr + window length`. Fails if the
    /// result does not fit `capacity` bytes or a displacement does not reach.
    fn build_stub(plan: &HookPlan, stub_addr: u64, capacity: usize) -> Result<Vec<u8>, String>;

    /// The jump written at `from` to reach `to`, exactly `JUMP_LEN` bytes; `None` if out of reach.
    fn encode_jump(from: u64, to: u64) -> Option<Vec<u8>>;

    /// If `bytes` (read at `from`) start with a jump of ours, its destination.
    fn decode_jump(bytes: &[u8], from: u64) -> Option<u64>;

    /// Address of a syscall instruction inside the vDSO text, used to run injected syscalls.
    fn find_syscall_instruction(image: &VdsoImage) -> Option<u64>;

    /// Reads the registers of a ptrace-stopped thread.
    fn get_regs(tid: nix::unistd::Pid) -> nix::Result<Self::Regs>;
    /// Writes the registers of a ptrace-stopped thread.
    fn set_regs(tid: nix::unistd::Pid, regs: &Self::Regs) -> nix::Result<()>;
    /// Prepares `regs` to execute syscall `nr` with `args` from the instruction at `insn`,
    /// with syscall-restart processing disabled.
    fn prepare_syscall(regs: &mut Self::Regs, insn: u64, nr: i64, args: &[u64; 6]);
    /// The raw return value (negative errno on failure) after the syscall instruction ran.
    fn syscall_return(regs: &Self::Regs) -> i64;
    /// Address of the instruction after the syscall instruction at `insn`.
    fn after_syscall(insn: u64) -> u64;
}
