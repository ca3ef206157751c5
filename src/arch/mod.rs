//! Per-architecture code behind one small trait: how a jump looks, how displaced instructions
//! are relocated, how a syscall is run in a stopped thread. x86_64 now; aarch64 goes beside it.

use std::ops::{Index, IndexMut};

use crate::vdso::{Machine, VdsoImage};

pub mod x86_64;

/// The vDSO functions timeskew redirects. Their order is the order of the data page's patch
/// records and of the fake-clock blob's entry and stub tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Entry {
    ClockGettime,
    Gettimeofday,
    Time,
}

impl Entry {
    /// Every entry, in table order.
    pub const ALL: [Entry; 3] = [Entry::ClockGettime, Entry::Gettimeofday, Entry::Time];

    /// The C function the entry implements, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Entry::ClockGettime => "clock_gettime",
            Entry::Gettimeofday => "gettimeofday",
            Entry::Time => "time",
        }
    }
}

/// One value per hooked entry, indexed by [`Entry`] instead of by position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerEntry<T>(pub [T; 3]);

impl<T> PerEntry<T> {
    /// Builds the table from a function of each entry.
    pub fn from_fn(mut f: impl FnMut(Entry) -> T) -> Self {
        PerEntry(Entry::ALL.map(&mut f))
    }

    /// Each entry with its value, in table order.
    pub fn iter(&self) -> impl Iterator<Item = (Entry, &T)> {
        Entry::ALL.into_iter().zip(self.0.iter())
    }

    /// The values, in table order.
    pub fn values(&self) -> &[T] {
        &self.0
    }
}

impl<T> Index<Entry> for PerEntry<T> {
    type Output = T;
    fn index(&self, entry: Entry) -> &T {
        &self.0[entry as usize]
    }
}

impl<T> IndexMut<Entry> for PerEntry<T> {
    fn index_mut(&mut self, entry: Entry) -> &mut T {
        &mut self.0[entry as usize]
    }
}

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
    /// The whole function, as long as its symbol says (what [`Arch::build_body`] copies).
    pub function: Vec<u8>,
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
    /// The stack pointer: saved contexts of interrupted code (signal frames) lie above it.
    fn stack_pointer(&self) -> u64;
    /// Moves the thread: where it resumes.
    fn set_instruction_pointer(&mut self, ip: u64);
}

/// Everything the injector needs to know about an instruction set.
pub trait Arch {
    /// Saved/restored register set.
    type Regs: Registers;

    /// The architecture's name, as messages print it (`x86_64`).
    const NAME: &'static str;

    /// `e_machine` of the vDSO's ELF header on this architecture.
    const ELF_MACHINE: u16;

    /// What the vDSO parser checks the image against.
    const MACHINE: Machine = Machine {
        elf: Self::ELF_MACHINE,
        name: Self::NAME,
    };

    /// Length of the jump written over each entry.
    const JUMP_LEN: usize;

    /// How far the jump (and a relocated PC-relative operand) reaches, in bytes either way: the
    /// code page must lie this close to the vDSO.
    const JUMP_REACH: u64;

    /// End of the user address space every process gets without asking; nothing is placed above.
    const USER_SPACE_TOP: u64;

    /// The vDSO symbol of each hooked entry (`__vdso_clock_gettime` here, `__kernel_…` on
    /// aarch64).
    const SYMBOLS: PerEntry<&'static str>;

    /// Plans the hook of every entry of `image`: decodes each entry's first instructions and refuses
    /// (with a reason naming the symbol) when the window holds a branch, call, ret or syscall,
    /// when any branch anywhere in the vDSO text lands strictly inside a window, or when the
    /// function is shorter than the window.
    fn plan_hooks(image: &VdsoImage) -> Result<PerEntry<HookPlan>, (&'static str, String)>;

    /// Machine code for the stub at `stub_addr`: the window's instructions relocated (RIP-relative
    /// operands fixed up) followed by a jump back to `plan.addr + window length`. Fails if the
    /// result does not fit `capacity` bytes or a displacement does not reach.
    fn build_stub(plan: &HookPlan, stub_addr: u64, capacity: usize) -> Result<Vec<u8>, String>;

    /// Machine code for a copy of `plan`'s whole function at `at`, run inline by a fake: every
    /// return becomes a jump to `continue_at`. Fails (and the fake calls the genuine function
    /// instead) unless the function is a leaf that uses no stack, writes only the registers a
    /// caller may lose except the one holding the fake's argument, branches only inside itself
    /// and fits `capacity` bytes.
    fn build_body(
        plan: &HookPlan,
        at: u64,
        capacity: usize,
        continue_at: u64,
    ) -> Result<Vec<u8>, String>;

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
    /// The bytes of the system call instruction `find_syscall_instruction` finds.
    fn syscall_instruction() -> &'static [u8];

    /// The one-byte breakpoint written over an entry's first byte while the rest of it changes
    /// under running threads (`int3`); executing it traps with the instruction pointer just
    /// past it.
    const BREAKPOINT: u8;

    /// Where the breakpoint that trapped lies, given the instruction pointer at the trap.
    fn breakpoint_at(ip_after_trap: u64) -> u64;

    /// Where a thread at `ip`, strictly inside `window` (its bytes at `window_addr`), carries
    /// on in the relocated copy `stub` at `stub_addr`; `None` if that cannot be told exactly.
    fn equivalent_in_stub(
        window: &[u8],
        window_addr: u64,
        stub: &[u8],
        stub_addr: u64,
        ip: u64,
    ) -> Option<u64>;
}
