//! The operations: inject (fresh, re-patch, or live update), recover and status.

use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::arch::{Arch, HookPlan, Native};
use crate::deadline;
use crate::error::{Error, Result};
use crate::fake_clock::{self, DATA_PAGE_OFFSET, FakeBlob};
use crate::fault;
use crate::layout::{self, DataPage, OFF_GENERATION, OFF_PATCHED, PAGE_SIZE, Params, Patch};
use crate::placement;
use crate::ptrace::StoppedProcess;
use crate::report::{ClockOffset, InjectAction, InjectReport, RecoverReport, Status};
use crate::skew::{Clock, Offset, Skew};
use crate::state::{self, Existing};
use crate::sys::TerminationDeferred;
use crate::target::{HOOKED_SYMBOLS, Target};
use crate::transaction::Transaction;

/// Both pages: code (r-x) then data (rw-).
const PAGES_LEN: u64 = 2 * PAGE_SIZE;

/// Skews the clocks of process `pid` (all its threads) as `skew` says.
///
/// A process that is already injected has its parameters replaced in place, without being
/// stopped. Otherwise every thread is held for the short time it takes to map the pages and
/// write the jumps; on any error, everything done so far is undone.
pub fn inject(pid: i32, skew: &Skew) -> Result<InjectReport> {
    let _lock = Target::lock(pid)?;
    let mut target = Target::open(pid)?;
    let params = params_for(pid, skew)?;
    let existing = state::find(&target)?;
    if let Some(existing) = &existing
        && existing.hooks_live
    {
        update_params(&target, existing, &params)?;
        return Ok(InjectReport {
            action: InjectAction::Updated,
            stopped_for: Duration::ZERO,
            threads: 0,
            status: status_of(pid, Some(&reread(&target, existing)?)),
        });
    }
    // Decode, plan and build while the process still runs: the stop covers only the changes.
    let plan = Plan::new(&target, existing.as_ref())?;
    let _deferred = TerminationDeferred::new();
    let (held, started) = hold_clear_of(&mut target, &plan.hooks)?;
    patch(target, &plan, params, held, started)
}

/// Attempts at finding every thread clear of the hook windows, and the pause after a miss.
const WINDOW_ATTEMPTS: u32 = 40;
const WINDOW_PAUSE: Duration = Duration::from_micros(250);

/// Stops every thread at a moment when none is executing inside a hook window and no signal
/// handler is running on top of code interrupted inside one; otherwise lets them all go and
/// tries again a moment later (bounded), since both last only nanoseconds to microseconds.
fn hold_clear_of(target: &mut Target, hooks: &[HookPlan]) -> Result<(StoppedProcess, Instant)> {
    let inside = |ip: u64| hooks.iter().any(|h| h.contains_strictly(ip));
    let first = Instant::now();
    let mut why = String::new();
    for attempt in 0..WINDOW_ATTEMPTS {
        let held = StoppedProcess::stop(target.pid)?;
        let started = held.held_since();
        target.refresh_maps()?;
        // The plan was made from the vDSO read before stopping: a program exec'd meanwhile has
        // another one.
        let vdso_now = target.maps.iter().find(|m| m.path == "[vdso]");
        if vdso_now.is_none_or(|m| {
            (m.start, (m.end - m.start) as usize) != (target.vdso.base(), target.vdso.len())
        }) {
            return Err(Error::Execed { pid: target.pid });
        }
        match held.window_in_use(&target.mem, &target.maps, inside)? {
            None => return Ok((held, started)),
            Some(reason) => {
                log::debug!("pid {}: attempt {attempt}: {reason}", target.pid);
                why = reason;
            }
        }
        drop(held);
        std::thread::sleep(WINDOW_PAUSE * (attempt + 1).min(8));
    }
    Err(unsafe_to_patch(
        target.pid,
        "vDSO entry",
        format!(
            "{why} — still so after {WINDOW_ATTEMPTS} attempts in {} ms; retry",
            first.elapsed().as_millis()
        ),
    ))
}

/// Injects into `pid`, a single-threaded process that the calling thread already traces and
/// that sits in a ptrace-stop from which a single step runs user code: a signal-delivery,
/// interrupt or syscall-exit stop. Not an event stop *inside* a syscall (PTRACE_EVENT_EXEC,
/// _FORK): resuming from there, the kernel stores that syscall's return value over the
/// injected syscall number — `timeskew run` first moves from the exec event to the
/// syscall-exit stop (PTRACE_SYSCALL), where no instruction of the new program has run yet.
/// The process is left stopped and traced.
pub fn inject_traced(pid: i32, skew: &Skew) -> Result<InjectReport> {
    let _lock = Target::lock(pid)?;
    let target = Target::open(pid)?;
    let plan = Plan::new(&target, state::find(&target)?.as_ref())?;
    let started = Instant::now();
    let held = StoppedProcess::adopt(pid);
    let inside = |ip: u64| plan.hooks.iter().any(|h| h.contains_strictly(ip));
    if let Some(reason) = held.window_in_use(&target.mem, &target.maps, inside)? {
        return Err(unsafe_to_patch(pid, "vDSO entry", reason));
    }
    patch(target, &plan, params_for(pid, skew)?, held, started)
}

/// The data-page parameters for `skew` in `pid`, with the deadlines of `--duration`.
fn params_for(pid: i32, skew: &Skew) -> Result<Params> {
    let mut params = skew.params();
    // Before anything is changed: no selected clock may read negative in the target.
    deadline::check_not_negative(pid, &params)?;
    if let Some(duration) = skew.duration() {
        params.expires_ns = deadline::expiries(pid, params.mask, duration)?;
    }
    Ok(params)
}

/// What can be worked out before stopping anything: the hook windows, where to run syscalls
/// from, and the code page for the address it will most likely get — relocating the stubs
/// with iced takes about as long as everything else under stop together.
struct Plan {
    pid: i32,
    hooks: Vec<HookPlan>,
    syscall_insn: u64,
    blob: FakeBlob,
    /// The code page image built for `.0`.
    prebuilt: Option<(u64, Vec<u8>)>,
}

impl Plan {
    fn new(target: &Target, existing: Option<&Existing>) -> Result<Plan> {
        let pid = target.pid;
        let hooks = Native::plan_hooks(&target.vdso, &HOOKED_SYMBOLS)
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

    /// The code page for `code_addr`: prebuilt if we guessed right, else built now.
    fn code_page(&self, code_addr: u64) -> Result<Vec<u8>> {
        match &self.prebuilt {
            Some((addr, page)) if *addr == code_addr => Ok(page.clone()),
            _ => self.build_code_page(code_addr),
        }
    }

    /// The blob with each hook's relocated stub in its slot, for a page at `code_addr`.
    fn build_code_page(&self, code_addr: u64) -> Result<Vec<u8>> {
        let blob = &self.blob;
        let slots = [
            blob.stub_clock_gettime,
            blob.stub_gettimeofday,
            blob.stub_time,
        ];
        let mut stubs = Vec::with_capacity(slots.len());
        for (hook, slot) in self.hooks.iter().zip(slots) {
            let stub = Native::build_stub(hook, code_addr + slot as u64, blob.stub_capacity)
                .map_err(|reason| unsafe_to_patch(self.pid, hook.symbol, reason))?;
            stubs.push(stub);
        }
        blob.code_page(&stubs[0], &stubs[1], &stubs[2])
            .map_err(|reason| unsafe_to_patch(self.pid, self.hooks[0].symbol, reason))
    }
}

/// Puts the original vDSO code back and zeroes the offsets. The pages stay mapped: a thread
/// may be executing in them, or about to return through them, at any moment.
pub fn recover(pid: i32) -> Result<RecoverReport> {
    let _lock = Target::lock(pid)?;
    let target = Target::open(pid)?;
    let not_injected = RecoverReport {
        pid,
        was_injected: false,
        restored: 0,
        skipped: Vec::new(),
        stopped_for: Duration::ZERO,
        threads: 0,
    };
    match state::find(&target)? {
        Some(existing) if existing.hooks_live || any_jump_left(&target, &existing) => {}
        _ => return Ok(not_injected),
    }
    let _deferred = TerminationDeferred::new();
    let mut held = StoppedProcess::stop(pid)?;
    let started = held.held_since();
    // Look again now that nothing moves.
    let target = Target::open(pid)?;
    let Some(existing) = state::find(&target)? else {
        return Ok(not_injected);
    };
    let tid = held.worker().ok_or(Error::ProcessGone {
        pid,
        step: "pick a stopped thread",
    })?;
    let mut report = RecoverReport {
        pid,
        was_injected: true,
        restored: 0,
        skipped: Vec::new(),
        stopped_for: Duration::ZERO,
        threads: held.threads().len(),
    };
    // Offsets first: a hook that cannot be restored then passes the real time through.
    let data_addr = existing.data_addr();
    write_slot(
        &target,
        data_addr,
        existing.data.generation,
        &Params::default(),
    )?;
    let code_page = existing.code_addr;
    for p in &existing.data.patches {
        let current = target
            .mem
            .read(p.addr, Native::JUMP_LEN, "read a patched vDSO entry")?;
        if state::is_our_jump(&current, p.addr, code_page) {
            target
                .mem
                .write_code(p.addr, &p.original, tid, "restore the original vDSO bytes")?;
            report.restored += 1;
        } else {
            report.skipped.push(format!(
                "{:#x}: no longer our jump (bytes {current:02x?}), left as it is",
                p.addr
            ));
        }
    }
    target.mem.write_data(
        data_addr + OFF_PATCHED as u64,
        &0u32.to_le_bytes(),
        "mark as recovered",
    )?;
    held.check_alive("finish the recovery")?;
    drop(held);
    report.stopped_for = started.elapsed();
    Ok(report)
}

/// What timeskew state `pid` holds, without stopping it.
pub fn status(pid: i32) -> Result<Status> {
    let target = Target::open(pid)?;
    let existing = state::find(&target)?;
    Ok(status_of(pid, existing.as_ref()))
}

fn status_of(pid: i32, existing: Option<&Existing>) -> Status {
    let Some(e) = existing else {
        return Status {
            pid,
            injected: false,
            trampoline: None,
            layout_version: None,
            clocks: Vec::new(),
            generation: 0,
            expires_in: None,
        };
    };
    let clocks = (0..=layout::MAX_CLOCK_ID)
        .filter(|id| e.data.params.mask & (1 << id) != 0)
        .filter_map(|id| {
            Some(ClockOffset {
                clock: Clock::from_id(id as u32)?,
                offset: Offset::from_nanos(e.data.params.offsets_ns[id]),
            })
        })
        .collect();
    let params = &e.data.params;
    Status {
        pid,
        injected: e.hooks_live,
        trampoline: Some(e.code_addr),
        layout_version: Some(layout::LAYOUT_VERSION),
        clocks,
        generation: e.data.generation,
        expires_in: if params.is_open_ended() {
            None
        } else {
            Some(deadline::remaining(pid, params.mask, &params.expires_ns).unwrap_or_default())
        },
    }
}

fn any_jump_left(target: &Target, existing: &Existing) -> bool {
    existing
        .data
        .patches
        .iter()
        .any(|p| state::jump_in_image(target, p, existing.code_addr))
}

fn reread(target: &Target, existing: &Existing) -> Result<Existing> {
    let data_addr = existing.data_addr();
    let page = target
        .mem
        .read(data_addr, PAGE_SIZE as usize, "read back the data page")?;
    Ok(Existing {
        data: DataPage::decode(target.pid, data_addr, &page)?,
        ..existing.clone()
    })
}

/// Writes `params` into the inactive slot, then bumps the generation: readers see either the
/// old or the new parameters, never a mix, and a writer dying half-way changes nothing.
fn write_slot(target: &Target, data_addr: u64, generation: u64, params: &Params) -> Result<()> {
    let next = generation.wrapping_add(1);
    target.mem.write_data(
        data_addr + layout::slot_offset(next) as u64,
        &params.encode_slot(),
        "write the new offsets",
    )?;
    target.mem.write_data(
        data_addr + OFF_GENERATION as u64,
        &next.to_le_bytes(),
        "publish the new offsets",
    )
}

/// Live update: the data page only, no ptrace stop.
fn update_params(target: &Target, existing: &Existing, params: &Params) -> Result<()> {
    write_slot(
        target,
        existing.data_addr(),
        existing.data.generation,
        params,
    )
}

/// Holds the process and installs the hooks (mapping fresh pages, or reusing recovered ones).
fn patch(
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
    let data = DataPage {
        patched: false,
        generation,
        vdso_base: target.vdso.base(),
        code_addr,
        patches: plans
            .iter()
            .map(|p| Patch {
                addr: p.addr,
                original: p.original.clone(),
            })
            .collect(),
        params,
    };

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
    let entries = [
        blob.entry_clock_gettime,
        blob.entry_gettimeofday,
        blob.entry_time,
    ];
    for (plan, entry) in plans.iter().zip(entries) {
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
        let jump = Native::encode_jump(plan.addr, code_addr + entry as u64).ok_or_else(|| {
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
    let action = if generation == 0 {
        InjectAction::Injected
    } else {
        InjectAction::Repatched
    };
    // What the target now holds, for the report: no need to read it back.
    let written = Existing {
        code_addr,
        data: DataPage {
            patched: true,
            ..data
        },
        hooks_live: true,
    };
    Ok((action, written))
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
            (libc::SYS_mmap, mmap_args(addr, CODE_PROT), "mmap"),
            (
                libc::SYS_mmap,
                mmap_args(addr + DATA_PAGE_OFFSET, DATA_PROT),
                "mmap",
            ),
            (libc::SYS_munmap, [addr, PAGE_SIZE, 0, 0, 0, 0], "munmap"),
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
const CODE_PROT: i32 = libc::PROT_READ | libc::PROT_EXEC;
/// The data page: read-write, never executable.
const DATA_PROT: i32 = libc::PROT_READ | libc::PROT_WRITE;

/// The arguments of mmap for one anonymous private page at exactly `addr`.
fn mmap_args(addr: u64, prot: i32) -> [u64; 6] {
    [
        addr,
        PAGE_SIZE,
        prot as u64,
        (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64,
        u64::MAX, // fd -1
        0,
    ]
}

/// One anonymous private page at exactly `addr` with `prot`, registered for undo; `None` if
/// something is mapped there already.
fn map_page(tx: &mut Transaction, addr: u64, prot: i32) -> Result<Option<u64>> {
    let ret = tx.syscall(libc::SYS_mmap, mmap_args(addr, prot), "mmap")?;
    if ret == -(Errno::EEXIST as i64) {
        return Ok(None);
    }
    check_syscall(tx, ret, "mmap")?;
    let got = ret as u64;
    tx.mapped(got, PAGE_SIZE);
    Ok(Some(got))
}

fn check_syscall(tx: &Transaction, ret: i64, name: &'static str) -> Result<()> {
    if !(-4095..0).contains(&ret) {
        return Ok(());
    }
    let errno = Errno::from_raw(-ret as i32);
    let hint = match errno {
        Errno::EPERM | Errno::EACCES => {
            " — a seccomp filter or a security policy (SELinux execmem, systemd \
             MemoryDenyWriteExecute) in the target forbids it"
        }
        Errno::ENOMEM => " — the target is out of memory or address space (RLIMIT_AS)",
        _ => "",
    };
    Err(Error::RemoteSyscall {
        pid: tx.pid(),
        tid: tx.worker().map(|t| t.as_raw()).unwrap_or(0),
        syscall: name,
        errno,
        hint,
    })
}

fn unsafe_to_patch(pid: i32, symbol: &'static str, reason: String) -> Error {
    Error::UnsafeToPatch {
        pid,
        symbol,
        reason,
    }
}
