//! Under the stop: map the pages, write the code and data pages, write and verify each jump —
//! every step registered with the undo log.

use std::time::Instant;

use nix::errno::Errno;

use crate::arch::{Arch, Native};
use crate::error::{Error, Result};
use crate::fake_clock::DATA_PAGE_OFFSET;
use crate::fake_clock::data_page::{DataPage, OFF_PATCHED, PAGE_SIZE, Params};
use crate::fault;
use crate::patch::plan::Plan;
use crate::patch::transaction::Transaction;
use crate::patch::{PAGES_LEN, placement, unsafe_to_patch};
use crate::ptrace::{RemoteCall, StoppedProcess};
use crate::report::{InjectAction, InjectReport};
use crate::state::status::status_of;
use crate::state::{self, Existing};
use crate::target::Target;

/// Holds the process and installs the hooks (mapping fresh pages, or reusing recovered ones).
pub(crate) fn patch(
    target: Target,
    plan: &Plan,
    params: Params,
    held: StoppedProcess,
    started: Instant,
) -> Result<InjectReport> {
    let pid = target.pid;
    let threads = held.threads().len();
    let mut tx = Transaction::new(held, target.mem, plan.syscall_insn);
    let (action, written) = match install(&mut tx, &target, plan, params) {
        Ok(done) => {
            tx.commit();
            done
        }
        Err(e) => return Err(tx.abort(e)),
    };
    let stopped_for = started.elapsed();
    log::info!("pid {pid}: held {threads} threads for {stopped_for:?}");
    Ok(InjectReport {
        action,
        stopped_for,
        threads,
        status: status_of(pid, Some(&written)),
        live: None,
        all_stop_reason: None,
    })
}

/// The steps under stop. Each one that changes the target registers its undo with `tx`.
/// `target`'s maps were read while its threads were held (`hold_clear_of`, or `Target::open`
/// of a process already stopped for `inject_traced`).
fn install(
    tx: &mut Transaction,
    target: &Target,
    plan: &Plan,
    params: Params,
) -> Result<(InjectAction, Existing)> {
    let (blob, plans) = (&plan.blob, &plan.hooks);
    let pid = target.pid;
    // Pages left by an earlier injection (then recovered) are reused, never duplicated.
    let (code_addr, generation) = match state::find(target)? {
        Some(e) => (e.code_addr, e.data.generation + 1),
        None => (map_pages(tx, target)?, 0),
    };
    fault::point(pid, "after-mmap")?;

    let code = plan.code_page(code_addr)?;
    let data_addr = code_addr + DATA_PAGE_OFFSET;
    let data = plan.data_page(target.vdso.base(), code_addr, generation, params);

    if generation == 0 {
        // The code page was mapped read+execute and is never writable: the write is forced
        // through /proc/PID/mem, as for the vDSO (W^X policies such as MemoryDenyWriteExecute
        // and PR_SET_MDWE forbid making writable memory executable, not this).
        let tid = tx.worker()?;
        tx.mem()
            .write_code(code_addr, &code, tid, "write the trampoline code")?;
        tx.mem()
            .write_data(data_addr, &data.encode(), "write the data page")?;
    } else {
        // Reused pages: the code must be exactly what we would write (same vDSO, same build).
        let current = tx.mem().read(
            code_addr,
            PAGE_SIZE as usize,
            "read the existing trampoline",
        )?;
        if current != code {
            return Err(Error::CorruptState {
                pid,
                addr: code_addr,
                reason: "the trampoline code differs from what this timeskew builds (injected by \
                         another version?)"
                    .into(),
            });
        }
        // Nobody runs our fakes while the jumps are gone and the process is held.
        tx.mem()
            .write_data(data_addr, &data.encode(), "write the data page")?;
    }
    fault::point(pid, "before-patch")?;

    // No thread is inside a window: checked when the threads were stopped (hold_clear_of).
    for (entry, plan) in plans.iter() {
        // The image was read before the process stopped: check nothing changed since.
        let now = tx
            .mem()
            .read(plan.addr, plan.original.len(), "re-read a vDSO entry")?;
        if now != plan.original {
            return Err(unsafe_to_patch(
                pid,
                plan.symbol,
                "its code changed while timeskew was attaching".into(),
            ));
        }
        let jump = Native::encode_jump(plan.addr, code_addr + blob.detour(entry, &code) as u64)
            .ok_or_else(|| {
                unsafe_to_patch(
                    pid,
                    plan.symbol,
                    "the trampoline is out of jump range".into(),
                )
            })?;
        tx.patch_code(plan.addr, &jump, plan.original.clone())?;
        fault::point(pid, "patch")?;
        let back = tx
            .mem()
            .read(plan.addr, jump.len(), "verify the written jump")?;
        if back != jump {
            return Err(unsafe_to_patch(
                pid,
                plan.symbol,
                format!("the jump did not stick (read back {back:02x?})"),
            ));
        }
    }
    tx.mem().write_data(
        data_addr + OFF_PATCHED as u64,
        &1u32.to_le_bytes(),
        "mark the hooks as installed",
    )?;
    fault::point(pid, "before-commit")?;
    tx.held().check_alive("finish the injection")?;
    Ok(committed(code_addr, data))
}

/// What an injection that wrote `data` at `code_addr` did, and what the target now holds (for
/// the report: no need to read it back).
pub(crate) fn committed(code_addr: u64, data: DataPage) -> (InjectAction, Existing) {
    let action = if data.generation == 0 {
        InjectAction::Injected
    } else {
        InjectAction::Repatched
    };
    let written = Existing {
        code_addr,
        data: DataPage {
            patched: true,
            ..data
        },
        hooks_live: true,
    };
    (action, written)
}

/// Maps the code page (read+execute, never writable) and the data page (read-write, never
/// executable) side by side at the nearest free place, trying a few.
fn map_pages(tx: &mut Transaction, target: &Target) -> Result<u64> {
    let pid = target.pid;
    let vdso_end = target.vdso.base() + target.vdso.len() as u64;
    let candidates = placement::candidates(&target.maps, target.vdso.base(), vdso_end, PAGES_LEN);
    for addr in candidates {
        // Both mappings, and unmapping them again on rollback, must be allowed.
        tx.check_allowed(&[
            page_at(addr, CODE_PROT),
            page_at(addr + DATA_PAGE_OFFSET, DATA_PROT),
            RemoteCall::Munmap {
                addr,
                len: PAGE_SIZE,
            },
        ])?;
        let Some(code) = map_page(tx, addr, CODE_PROT)? else {
            continue;
        };
        if code != addr {
            // A kernel older than 4.17 treats MAP_FIXED_NOREPLACE as a hint.
            return Err(Error::NoPlacement { pid });
        }
        let data_at = addr + DATA_PAGE_OFFSET;
        let data = map_page(tx, data_at, DATA_PROT)?;
        if data != Some(data_at) {
            // The guard-page gap was checked free a moment ago and every thread is held.
            return Err(Error::NoPlacement { pid });
        }
        log::debug!("pid {pid}: trampoline pages at {addr:#x}");
        return Ok(addr);
    }
    Err(Error::NoPlacement { pid })
}

/// The code page: read+execute, never writable (its bytes are written through /proc/PID/mem).
pub(crate) const CODE_PROT: i32 = libc::PROT_READ | libc::PROT_EXEC;
/// The data page: read-write, never executable.
pub(crate) const DATA_PROT: i32 = libc::PROT_READ | libc::PROT_WRITE;

/// mmap of one anonymous private page at exactly `addr`, never over an existing mapping.
pub(crate) fn page_at(addr: u64, prot: i32) -> RemoteCall {
    RemoteCall::Mmap {
        addr,
        len: PAGE_SIZE,
        prot,
        flags: libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
    }
}

/// One anonymous private page at exactly `addr` with `prot`, registered for undo; `None` if
/// something is mapped there already.
fn map_page(tx: &mut Transaction, addr: u64, prot: i32) -> Result<Option<u64>> {
    match tx.run(&page_at(addr, prot)) {
        Ok(got) => {
            tx.mapped(got, PAGE_SIZE);
            Ok(Some(got))
        }
        // MAP_FIXED_NOREPLACE: taken, try the next candidate.
        Err(Error::RemoteSyscall {
            errno: Errno::EEXIST,
            ..
        }) => Ok(None),
        Err(e) => Err(e),
    }
}
