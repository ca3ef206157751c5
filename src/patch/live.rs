//! The hooks installed and removed one thread at a time (issue 11): the pages mapped through
//! one worker thread, each entry changed under running threads by the breakpoint protocol of
//! `ptrace/live/` — breakpoint on the first byte, barrier, every thread seen outside the
//! window, the rest of the jump, barrier, its first byte, barrier — and everything undone on
//! error. `Ok(Err(Fallback))`: the live path cannot run in this target; the caller stops every
//! thread instead and says why.

use std::time::Duration;

use crate::arch::{Arch, Native};
use crate::error::{Error, Result};
use crate::fake_clock::data_page::{DataPage, OFF_PATCHED, PAGE_SIZE, Params};
use crate::fake_clock::{DATA_PAGE_OFFSET, REGISTER_HELPER_LEN};
use crate::fault;
use crate::patch::install::{CODE_PROT, DATA_PROT, committed, page_at};
use crate::patch::plan::Plan;
use crate::patch::{PAGES_LEN, placement, unsafe_to_patch};
use crate::ptrace::RemoteCall;
use crate::ptrace::live::{Fallback, LiveSession, Swap, SwapState, in_tracer_thread};
use crate::report::{InjectAction, InjectReport, LiveStats, RecoverReport};
use crate::state::status::status_of;
use crate::state::{self, Existing, publish};
use crate::target::{Target, procfs};

/// Whether to try the live path: always, but in test builds run with `TIMESKEW_LIVE=0` (the
/// benchmark's and the tests' way to measure and exercise the all-stop path side by side).
/// Where the live path cannot run, it says why and the caller falls back.
pub(crate) fn requested() -> bool {
    !(cfg!(feature = "fault-injection")
        && std::env::var_os("TIMESKEW_LIVE").is_some_and(|v| v == "0"))
}

/// First injection (or re-injection into recovered pages, `pages_there`) without stopping the
/// process.
pub(crate) fn inject(
    target: &mut Target,
    plan: &Plan,
    params: Params,
    pages_there: bool,
) -> Result<std::result::Result<InjectReport, Fallback>> {
    let pid = target.pid;
    let syscall_insn = plan.syscall_insn;
    let vdso = (target.vdso.base(), target.vdso.len());
    let planned = plan
        .hooks
        .iter()
        .map(|(_, hook)| (hook.addr, hook.original.len()))
        .collect();
    // The first look keeps each thread's scheduler counters open (`creations_settled`).
    let kept = procfs::thread_count(pid).unwrap_or(0);
    in_tracer_thread(kept, move || {
        // The first look at every thread is made once the registration helper is cloned.
        // Into pages of an earlier injection, the process is likely registered for membarrier
        // already: asked first (0 says so). Otherwise the registration helper's exit status
        // says what the check would have, one hold of the worker fewer.
        let start = LiveSession::start(
            pid,
            target.mem.via(),
            syscall_insn,
            vdso,
            planned,
            true,
            pages_there,
        )?;
        let mut s = match start {
            Ok(s) => s,
            Err(f) => return Ok(Err(f)),
        };
        let mut fresh = None;
        let outcome = install(&mut s, target, plan, params, &mut fresh);
        let outcome = match outcome {
            Ok(done) => s.release().map(|()| done),
            Err(e) => Err(undo(&mut s, fresh, e)),
        };
        s.finish();
        if let Err(undone) = &outcome
            && let Some(why) = s.fell_back(undone)
        {
            return Ok(Err(why));
        }
        let stats = s.stats();
        let (action, written) = outcome?;
        log::info!(
            "pid {pid}: injected one thread at a time: {} of {} threads stopped, longest {} µs",
            stats.threads_stopped,
            stats.threads,
            stats.longest_stop_us
        );
        Ok(Ok(InjectReport {
            action,
            stopped_for: Duration::from_micros(stats.longest_stop_us),
            threads: stats.threads,
            status: status_of(pid, Some(&written)),
            live: Some(stats),
            all_stop_reason: None,
        }))
    })
}

/// The steps; `fresh` receives the pages this injection mapped (for the undo).
fn install(
    s: &mut LiveSession,
    target: &mut Target,
    plan: &Plan,
    params: Params,
    fresh: &mut Option<u64>,
) -> Result<(InjectAction, Existing)> {
    let pid = target.pid;
    // The plan was made from the vDSO read before: a program exec'd meanwhile has another one.
    // (`LiveSession::start` checked the vDSO is still the planned one from mappings it read
    // after the attach, a moment ago: placement uses those. Another thread's mmap since only
    // makes a candidate place taken, and the next one is tried.)
    match s.take_start_maps() {
        Some(maps) => target.maps = maps,
        None => target.refresh_maps()?,
    }
    let (code_addr, data) = stage(s, target, plan, params, fresh)?;
    let data_addr = code_addr + DATA_PAGE_OFFSET;
    s.check_threads()?;
    fault::point(pid, "live-checked")?;
    s.write_tails()?;
    fault::point(pid, "live-tails")?;
    s.write_heads()?;
    fault::point(pid, "patch")?;
    s.mem().write(
        data_addr + OFF_PATCHED as u64,
        &1u32.to_le_bytes(),
        "mark the hooks as installed",
    )?;
    fault::point(pid, "before-commit")?;
    if s.process_gone() {
        return Err(Error::ProcessGone {
            pid,
            step: "finish the injection",
        });
    }
    Ok(committed(code_addr, data))
}

/// The pages (mapped if new), the code and the parameters written, the entries re-read, and
/// step 1 of the protocol (breakpoints, barrier). Returns the code page's address and the
/// data written.
fn stage(
    s: &mut LiveSession,
    target: &mut Target,
    plan: &Plan,
    params: Params,
    fresh: &mut Option<u64>,
) -> Result<(u64, DataPage)> {
    let pid = target.pid;
    let (code_addr, generation) = match state::find(target)? {
        Some(e) => (e.code_addr, e.data.generation + 1),
        None => {
            let addr = map_pages(s, target)?;
            *fresh = Some(addr);
            (addr, 0)
        }
    };
    fault::point(pid, "after-mmap")?;

    let blob = &plan.blob;
    let code = plan.code_page(code_addr)?;
    let data_addr = code_addr + DATA_PAGE_OFFSET;
    let data = plan.data_page(target.vdso.base(), code_addr, generation, params);
    if fresh.is_some() {
        // Nobody can run the code page yet: no jump leads there.
        s.mem()
            .write(code_addr, &code, "write the trampoline code")?;
    } else {
        let current = s.mem().read(
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
    }
    s.mem()
        .write(data_addr, &data.encode(), "write the data page")?;
    // Before the first breakpoint: each step of the protocol ends with a barrier.
    s.register_barriers(Some(code_addr + blob.register_helper as u64))?;
    if let Some(why) = s.look_first()? {
        return Err(s.fall_back(why));
    }
    fault::point(pid, "before-patch")?;

    let mut swaps = Vec::new();
    for (entry, hook) in plan.hooks.iter() {
        // The image was read before anything was traced: check nothing changed since.
        let now = s
            .mem()
            .read(hook.addr, hook.original.len(), "re-read a vDSO entry")?;
        if now != hook.original {
            return Err(unsafe_to_patch(
                pid,
                hook.symbol,
                "its code changed while timeskew was attaching".into(),
            ));
        }
        let detour = code_addr + blob.detour(entry, &code) as u64;
        let jump = Native::encode_jump(hook.addr, detour).ok_or_else(|| {
            unsafe_to_patch(
                pid,
                hook.symbol,
                "the trampoline is out of jump range".into(),
            )
        })?;
        let stub_at = blob.stubs[entry];
        let stub = code
            .get(stub_at..stub_at + blob.stub_capacity)
            .unwrap_or_default()
            .to_vec();
        swaps.push(Swap {
            addr: hook.addr,
            before: hook.original[..jump.len()].to_vec(),
            after: jump,
            detour,
            window: Some((hook.original.clone(), stub, code_addr + stub_at as u64)),
            state: SwapState::Before,
        });
    }
    s.swaps = swaps;
    s.arm()?;
    fault::point(pid, "live-armed")?;
    Ok((code_addr, data))
}

/// Undoes a failed live injection: every entry back to its original bytes by the protocol in
/// reverse; fresh pages unmapped unless a thread may still be in them (a thread that met a
/// breakpoint was sent into the trampoline, and a complete jump leads there): then they stay
/// mapped, marked not patched, and the next injection reuses them — as after `recover`.
fn undo(s: &mut LiveSession, fresh: Option<u64>, err: Error) -> Error {
    let pid = s.pid();
    // Nothing to undo in a process that is gone, or in memory an exec left behind; a
    // "gone" that was only one thread (the worker exiting) still needs the undo.
    if nothing_to_undo(s, &err) {
        return err;
    }
    s.begin_undo();
    // One hold for the three barriers; the writes happen even if the worker cannot be held.
    let mut failures = match s.holding(|s| Ok(s.unwind())) {
        Ok(failures) => failures,
        Err(e) => {
            let mut failures = s.unwind();
            failures.push(format!("hold the worker for the undo: {e}"));
            failures
        }
    };
    if s.program_replaced() {
        // An exec took the memory the undo was writing to: nothing of ours is left.
        return Error::Execed { pid };
    }
    if let Some(addr) = fresh {
        let entered = s.code_entered();
        // A thread leaves the fakes within nanoseconds unless preempted there: look again a
        // few times before giving up on unmapping.
        let mut clear = !entered;
        for round in 0..if entered { 40 } else { 0 } {
            match s.anyone_in(addr, addr + PAGE_SIZE) {
                Ok(false) => {
                    clear = true;
                    break;
                }
                Ok(true) => std::thread::sleep(Duration::from_micros(200 * (round + 1).min(8))),
                Err(e) => {
                    failures.push(format!("look for threads in the trampoline: {e}"));
                    break;
                }
            }
        }
        if clear {
            for page in [addr, addr + DATA_PAGE_OFFSET] {
                if let Err(e) = s.run(&RemoteCall::Munmap {
                    addr: page,
                    len: PAGE_SIZE,
                }) {
                    failures.push(format!("munmap {page:#x}: {e}"));
                }
            }
        } else {
            log::warn!(
                "pid {pid}: the trampoline pages at {addr:#x} stay mapped (a thread may still \
                 run in them), marked not injected; the next injection reuses them"
            );
        }
    }
    let _ = s.release();
    let failures: Vec<String> = failures
        .into_iter()
        .filter(|f| !f.contains("exited"))
        .collect();
    if failures.is_empty() {
        err
    } else {
        Error::RollbackFailed {
            pid,
            source: Box::new(err),
            failures,
        }
    }
}

/// The code page and the data page, side by side near the vDSO, through the worker thread.
fn map_pages(s: &mut LiveSession, target: &Target) -> Result<u64> {
    let pid = target.pid;
    let vdso_end = target.vdso.base() + target.vdso.len() as u64;
    let candidates = placement::candidates(&target.maps, target.vdso.base(), vdso_end, PAGES_LEN);
    for addr in candidates {
        s.check_allowed(&[
            page_at(addr, CODE_PROT),
            page_at(addr + DATA_PAGE_OFFSET, DATA_PROT),
            RemoteCall::Munmap {
                addr,
                len: PAGE_SIZE,
            },
        ])?;
        let code = match s.run(&page_at(addr, CODE_PROT)) {
            Ok(got) => got,
            Err(Error::RemoteSyscall {
                errno: nix::errno::Errno::EEXIST,
                ..
            }) => continue,
            Err(e) => return Err(e),
        };
        if code != addr {
            let _ = s.run(&RemoteCall::Munmap {
                addr: code,
                len: PAGE_SIZE,
            });
            return Err(Error::NoPlacement { pid });
        }
        let data_at = addr + DATA_PAGE_OFFSET;
        match s.run(&page_at(data_at, DATA_PROT)) {
            Ok(got) if got == data_at => {
                log::debug!("pid {pid}: trampoline pages at {addr:#x}");
                return Ok(addr);
            }
            other => {
                // The other threads run: something may have been mapped there meanwhile.
                if let Ok(got) = other {
                    let _ = s.run(&RemoteCall::Munmap {
                        addr: got,
                        len: PAGE_SIZE,
                    });
                }
                let _ = s.run(&RemoteCall::Munmap {
                    addr,
                    len: PAGE_SIZE,
                });
                match other {
                    Err(Error::RemoteSyscall {
                        errno: nix::errno::Errno::EEXIST,
                        ..
                    })
                    | Ok(_) => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Err(Error::NoPlacement { pid })
}

/// Recover without stopping the process: offsets zeroed, then each entry that still holds our
/// jump gets its original bytes back by the same protocol (breakpoint over the jump's first
/// byte — no thread can be inside a jump instruction, so no thread needs looking at — the
/// original tail, the original first byte, a barrier after each step).
pub(crate) fn recover(
    target: &Target,
    existing: &Existing,
) -> Result<std::result::Result<RecoverReport, Fallback>> {
    let pid = target.pid;
    let vdso = (target.vdso.base(), target.vdso.len());
    in_tracer_thread(0, move || {
        let mut s = match LiveSession::start(
            pid,
            target.mem.via(),
            existing_syscall(target)?,
            vdso,
            Vec::new(),
            false,
            true,
        )? {
            Ok(s) => s,
            Err(f) => return Ok(Err(f)),
        };
        let mut report = RecoverReport {
            was_injected: true,
            ..RecoverReport::nothing(pid)
        };
        let outcome = restore(&mut s, target, existing, &mut report);
        let outcome = match outcome {
            Ok(()) => {
                let woke = if monotonic_moves_forward(&existing.data.params) {
                    s.wake_blocked()
                } else {
                    Ok(())
                };
                let released = s.release();
                woke.and(released)
            }
            Err(e) => {
                let failures = if nothing_to_undo(&s, &e) {
                    Vec::new()
                } else {
                    s.begin_undo();
                    let failures = s.settle_swaps();
                    if s.program_replaced() {
                        Vec::new()
                    } else {
                        failures
                    }
                };
                let _ = s.release();
                Err(if failures.is_empty() {
                    e
                } else {
                    Error::RollbackFailed {
                        pid,
                        source: Box::new(e),
                        failures,
                    }
                })
            }
        };
        s.finish();
        let stats: LiveStats = s.stats();
        outcome?;
        report.stopped_for = Duration::from_micros(stats.longest_stop_us);
        report.threads = stats.threads;
        report.live = Some(stats);
        Ok(Ok(report))
    })
}

/// The registration helper in the code page at `code_page`, if the page holds this build's
/// (another version's page is only ever read): a thread is sent there.
fn registration_helper(s: &LiveSession, code_page: u64) -> Option<u64> {
    let blob = crate::fake_clock::blob();
    let at = code_page + blob.register_helper as u64;
    let want = &blob.bytes[blob.register_helper..][..REGISTER_HELPER_LEN];
    let have = s
        .mem()
        .read(at, want.len(), "read the registration helper")
        .ok()?;
    (have == want).then_some(at)
}

/// Whether `err` leaves nothing to undo: the process is gone (not merely one of its threads,
/// such as the worker), or an exec replaced the memory the change was made in.
fn nothing_to_undo(s: &LiveSession, err: &Error) -> bool {
    matches!(err, Error::Execed { .. })
        || matches!(err, Error::ProcessGone { .. }) && s.process_gone()
}

/// Whether recovering from `params` steps a monotonic-family clock forward (the target read
/// it behind real time), which leaves waits armed on it too long.
fn monotonic_moves_forward(params: &Params) -> bool {
    let monotonic = [
        libc::CLOCK_MONOTONIC,
        libc::CLOCK_MONOTONIC_RAW,
        libc::CLOCK_MONOTONIC_COARSE,
        libc::CLOCK_BOOTTIME,
    ];
    monotonic.into_iter().any(|id| {
        let Ok(now) = nix::time::clock_gettime(nix::time::ClockId::from_raw(id)) else {
            return false;
        };
        let real = now.tv_sec() * 1_000_000_000 + now.tv_nsec();
        params
            .reading(id as usize, real)
            .is_some_and(|seen| seen < real)
    })
}

/// The vDSO's own `syscall` instruction, for the worker's calls.
fn existing_syscall(target: &Target) -> Result<u64> {
    Native::find_syscall_instruction(&target.vdso).ok_or(Error::Unsupported {
        pid: target.pid,
        reason: "its vDSO contains no syscall instruction to run timeskew's calls from".into(),
    })
}

fn restore(
    s: &mut LiveSession,
    target: &Target,
    existing: &Existing,
    report: &mut RecoverReport,
) -> Result<()> {
    let pid = target.pid;
    let data_addr = existing.data_addr();
    // Offsets first: a hook that cannot be restored then passes the real time through.
    // The seqlock writer's writes (state/publish.rs), through the bound memory.
    for (addr, bytes, what) in
        publish::publication(data_addr, existing.data.generation, &Params::default())
    {
        s.mem().write(addr, &bytes, what)?;
    }
    let code_page = existing.code_addr;
    let mut swaps = Vec::new();
    for p in &existing.data.patches {
        let current = s
            .mem()
            .read(p.addr, Native::JUMP_LEN, "read a patched vDSO entry")?;
        let dest = Native::decode_jump(&current, p.addr);
        match dest {
            Some(detour) if state::is_our_jump(&current, p.addr, code_page) => {
                swaps.push(Swap {
                    addr: p.addr,
                    after: p.original[..Native::JUMP_LEN].to_vec(),
                    before: current,
                    detour,
                    window: None,
                    state: SwapState::Before,
                });
            }
            _ => report.skipped.push(format!(
                "{:#x}: no longer our jump (bytes {current:02x?}), left as it is",
                p.addr
            )),
        }
    }
    s.swaps = swaps;
    if !s.swaps.is_empty() {
        s.register_barriers(registration_helper(s, code_page))?;
        s.arm()?;
        fault::point(pid, "recover-armed")?;
        s.write_tails()?;
        fault::point(pid, "recover-tails")?;
        s.write_heads()?;
    }
    report.restored = s.swaps.len();
    s.mem().write(
        data_addr + OFF_PATCHED as u64,
        &0u32.to_le_bytes(),
        "mark as recovered",
    )?;
    Ok(())
}
