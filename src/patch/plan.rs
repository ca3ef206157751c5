//! Before the stop: the hook windows, where to run syscalls from, and the code page built for
//! the address it will most likely get.

use crate::arch::{Arch, Entry, HookPlan, Native, PerEntry};
use crate::error::{Error, Result};
use crate::fake_clock::data_page::{DataPage, Params, Patch};
use crate::fake_clock::{self, FakeBlob};
use crate::patch::{PAGES_LEN, placement, unsafe_to_patch};
use crate::state::Existing;
use crate::target::Target;

/// What can be worked out before stopping anything: the hook windows, where to run syscalls
/// from, and the code page for the address it will most likely get — relocating the stubs
/// with iced takes about as long as everything else under stop together.
pub(crate) struct Plan {
    pid: i32,
    pub(crate) hooks: PerEntry<HookPlan>,
    pub(crate) syscall_insn: u64,
    pub(crate) blob: FakeBlob,
    /// The code page image built for `.0`.
    prebuilt: Option<(u64, Vec<u8>)>,
}

impl Plan {
    pub(crate) fn new(target: &Target, existing: Option<&Existing>) -> Result<Plan> {
        let pid = target.pid;
        let hooks = Native::plan_hooks(&target.vdso)
            .map_err(|(symbol, reason)| unsafe_to_patch(pid, symbol, reason))?;
        let syscall_insn =
            Native::find_syscall_instruction(&target.vdso).ok_or(Error::Unsupported {
                pid,
                reason: "its vDSO contains no syscall instruction to run the injected mmap from"
                    .into(),
            })?;
        let mut plan = Plan {
            pid,
            hooks,
            syscall_insn,
            blob: fake_clock::blob(),
            prebuilt: None,
        };
        // Reused pages, or else the first free place (the maps rarely change before we stop).
        let likely = existing.map(|e| e.code_addr).or_else(|| {
            let vdso_end = target.vdso.base() + target.vdso.len() as u64;
            placement::candidates(&target.maps, target.vdso.base(), vdso_end, PAGES_LEN)
                .first()
                .copied()
        });
        if let Some(addr) = likely {
            plan.prebuilt = Some((addr, plan.build_code_page(addr)?));
        }
        Ok(plan)
    }

    /// The data page this plan writes (not yet marked patched): the parameters, and each
    /// hook's address and original bytes for a later recover.
    pub(crate) fn data_page(
        &self,
        vdso_base: u64,
        code_addr: u64,
        generation: u64,
        params: Params,
    ) -> DataPage {
        DataPage {
            patched: false,
            generation,
            vdso_base,
            code_addr,
            patches: self
                .hooks
                .values()
                .iter()
                .map(|p| Patch {
                    addr: p.addr,
                    original: p.original.clone(),
                })
                .collect(),
            params,
        }
    }

    /// The code page for `code_addr`: prebuilt if we guessed right, else built now.
    pub(crate) fn code_page(&self, code_addr: u64) -> Result<Vec<u8>> {
        match &self.prebuilt {
            Some((addr, page)) if *addr == code_addr => Ok(page.clone()),
            _ => self.build_code_page(code_addr),
        }
    }

    /// The blob with each hook's relocated stub in its slot, for a page at `code_addr`.
    fn build_code_page(&self, code_addr: u64) -> Result<Vec<u8>> {
        let blob = &self.blob;
        let mut stubs: PerEntry<Vec<u8>> = PerEntry::default();
        for (entry, hook) in self.hooks.iter() {
            let slot = code_addr + blob.stubs[entry] as u64;
            stubs[entry] = Native::build_stub(hook, slot, blob.stub_capacity)
                .map_err(|reason| unsafe_to_patch(self.pid, hook.symbol, reason))?;
        }
        // time() runs a copy of the genuine one inline when it can (no call on top of a few
        // ns); otherwise its fake calls the genuine one through the stub, like the others.
        let time = &self.hooks[Entry::Time];
        let body = if inline_time_requested() {
            Native::build_body(
                time,
                code_addr + blob.time_body as u64,
                blob.stub_capacity,
                code_addr + blob.time_body_done as u64,
            )
            .inspect_err(|reason| {
                log::info!("pid {}: time() is called, not inlined: {reason}", self.pid)
            })
            .ok()
        } else {
            None
        };
        let first = Entry::ALL[0];
        blob.code_page(
            PerEntry::from_fn(|entry| stubs[entry].as_slice()),
            body.as_deref(),
        )
        .map_err(|reason| unsafe_to_patch(self.pid, self.hooks[first].symbol, reason))
    }
}

/// Whether `time()` may run a copy of the genuine one: always, but in test builds run with
/// `TIMESKEW_INLINE_TIME=0` (the benchmark's way to measure the calling fake side by side).
fn inline_time_requested() -> bool {
    !(cfg!(feature = "fault-injection")
        && std::env::var_os("TIMESKEW_INLINE_TIME").is_some_and(|v| v == "0"))
}
