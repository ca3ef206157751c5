//! Torn reads and the generation (seqlock) protocol: dead writers, generation parity, a live
//! writer thread against reader threads, and a writer lapping a single-stepped reader at every
//! instruction boundary.

use super::arithmetic::REAL_NS;
use super::harness::*;
use super::model::*;
use crate::arch::Entry;
use crate::fake_clock::data_page::{self as layout, Params};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A writer that never finishes (garbage in the inactive slot, generation untouched) does
/// not disturb readers, and any generation value selects its slot by parity.
#[test]
fn fake_clock_dead_writer_and_generation_parity() {
    let off = -600 * 1_000_000_000;
    let inj = Injected::with_vdso(&params(0b11, &[(0, off), (1, off)]));
    inj.write_slot(1, &[0x5a; layout::SLOT_LEN]);
    for _ in 0..10 {
        check_clock(&inj, libc::CLOCK_REALTIME, off);
        check_clock(&inj, libc::CLOCK_MONOTONIC, off);
        check_gtod(&inj, off as i128 / 1000);
        check_time(&inj, off);
    }
    for generation in [1u64, 2, u64::MAX, u64::MAX - 1] {
        let o = generation as i64 & 0xffff;
        inj.write_slot(generation, &params(0b10, &[(1, o)]).encode_slot());
        inj.word(layout::OFF_GENERATION)
            .store(generation, Ordering::Release);
        check_clock(&inj, libc::CLOCK_MONOTONIC, o);
        check_clock(&inj, libc::CLOCK_REALTIME, 0);
    }
}

/// Live updates: a writer flips between two parameter sets while readers check that every
/// value corresponds to one set or the other, never a mix of the two.
#[test]
fn fake_clock_live_update_never_tears() {
    // (sec, nsec) splits: A = (1000, 250e6), B = (-1001, 750e6); in microseconds for
    // gettimeofday likewise. A torn read yields +1000.75 s or -1000.75 s, half a second
    // away from either set.
    let a_off: i64 = 1000 * 1_000_000_000 + 250_000_000;
    let b_off: i64 = -a_off;
    let set_a = params(0b11, &[(0, a_off), (1, a_off)]);
    let set_b = params(0b11, &[(0, b_off), (1, b_off)]);
    let inj = Injected::with_vdso(&set_a);
    let stop = AtomicBool::new(false);
    let flips = AtomicU64::new(0);
    let run_for = Duration::from_millis(1500);
    // The fake read f lies in [g1 + off, g2 + off] for the set it used.
    let within = |f: i128, g1: i128, g2: i128, off: i64, unit: i128| {
        let off = (off as i128).div_euclid(unit);
        g1 + off <= f && f <= g2 + off
    };

    let reader = || {
        let (mut seen_a, mut seen_b, mut samples) = (0u64, 0u64, 0u64);
        let deadline = Instant::now() + run_for;
        let (f, g) = (inj.clock_gettime(), inj.gettimeofday());
        while Instant::now() < deadline {
            for id in [libc::CLOCK_MONOTONIC, libc::CLOCK_REALTIME] {
                let g1 = now(id);
                let (r, ts) = cg(f, id);
                let g2 = now(id);
                assert_eq!(r, 0);
                assert!((0..1_000_000_000).contains(&ts.tv_nsec));
                if g2 - g1 > 100_000_000 {
                    continue; // preempted for long: the bracket is too wide to judge
                }
                let v = ts_ns(&ts);
                if within(v, g1, g2, a_off, 1) {
                    seen_a += 1;
                } else if within(v, g1, g2, b_off, 1) {
                    seen_b += 1;
                } else {
                    panic!(
                        "torn read on clock {id}: fake - genuine = {} ns, \
                         expected {a_off} or {b_off}",
                        v - g1
                    );
                }
                samples += 1;
            }
            let g1 = now_us();
            let (r, tv) = gtod(g);
            let g2 = now_us();
            assert_eq!(r, 0);
            assert!((0..1_000_000).contains(&tv.tv_usec));
            let v = tv_us(&tv);
            if g2 - g1 <= 100_000 {
                assert!(
                    within(v, g1, g2, a_off, 1000) || within(v, g1, g2, b_off, 1000),
                    "torn gettimeofday: fake - genuine = {} us",
                    v - g1
                );
                samples += 1;
            }
        }
        (seen_a, seen_b, samples)
    };

    let results = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                inj.publish(&set_b);
                inj.publish(&set_a);
                flips.fetch_add(2, Ordering::Relaxed);
            }
        });
        let readers: Vec<_> = (0..2).map(|_| s.spawn(reader)).collect();
        let results: Vec<_> = readers.into_iter().map(|r| r.join()).collect();
        stop.store(true, Ordering::Relaxed); // also when a reader failed
        writer.join().unwrap();
        results
    });
    let (mut seen_a, mut seen_b, mut samples) = (0, 0, 0);
    for r in results {
        let (a, b, n) = r.unwrap_or_else(|e| std::panic::resume_unwind(e));
        seen_a += a;
        seen_b += b;
        samples += n;
    }
    let flips = flips.load(Ordering::Relaxed);
    assert!(flips > 1000, "writer flipped only {flips} times");
    assert!(samples > 10_000, "only {samples} samples");
    assert!(
        seen_a > 0 && seen_b > 0,
        "saw A {seen_a} times, B {seen_b} times: the updates were not observed"
    );
}

// ---- deterministic interleavings: a writer lapping the reader at every instruction ----

/// State shared with the SIGTRAP handler (async-signal-safe: atomics only).
static TRACE_LO: AtomicUsize = AtomicUsize::new(0);
static TRACE_HI: AtomicUsize = AtomicUsize::new(0);
static TRACE_DATA: AtomicUsize = AtomicUsize::new(0);
static TRACE_AT: AtomicUsize = AtomicUsize::new(usize::MAX);
static TRACE_STEPS: AtomicUsize = AtomicUsize::new(0);
static TRACE_MODE: AtomicUsize = AtomicUsize::new(0);
static TRACE_VARIANT: AtomicUsize = AtomicUsize::new(0);

const MODE_FULL_LAP: usize = 1;
const MODE_DEAD_WRITER: usize = 2;
/// Publishes set 1 (slot and generation) and dies before `time()`'s summary word.
const MODE_NO_TIME_WORD: usize = 3;

/// Offsets of parameter set `n` for CLOCK_REALTIME and CLOCK_MONOTONIC: every set has
/// distinct sub-second digits, and sets n and n + 2 differ in whether time() carries, so
/// any mix of two sets' fields gives a value no single set gives.
fn lap_offset(n: i64) -> i64 {
    let carry = matches!(n % 4, 1 | 2);
    10 * n * 1_000_000_000 + if carry { 600_000_000 } else { 100_000_000 } + n * 1000
}

/// Kinds of offsets the lap sets use (see [`lap_params`]).
const LAP_OFFSET_KINDS: usize = 4;
/// Kinds of deadlines the lap sets use (see [`lap_params`]).
const LAP_DEADLINE_KINDS: usize = 7;
const LAP_VARIANTS: usize = LAP_OFFSET_KINDS * LAP_DEADLINE_KINDS;

/// Parameter set `n` (0, 1 or 2) of lap `variant`, for CLOCK_REALTIME and CLOCK_MONOTONIC,
/// whose stand-ins read 1000.5 s. Each variant makes the sets differ so that any mix of
/// two sets' fields that a misplaced generation check could produce gives a value that
/// neither set gives, in at least one variant:
/// - offsets: [`lap_offset`] (distinct sub-second digits, time() carries differently); set
///   0 whole seconds and set 2 fractional, or the reverse (time()'s fast path reads the
///   offset's nanoseconds to decide, a torn pair takes the wrong path); all whole seconds
///   (time()'s fast path throughout);
/// - deadlines: none; set 0 expired and the others running, or the reverse, decided by
///   the seconds (time()'s fast path) or, inside the real second, by the nanoseconds
///   (time()'s slow path); both running but with a different (sec, nsec) such that a torn
///   pair (1000, 0) has expired.
fn lap_params(n: i64, variant: usize) -> Params {
    const S: i64 = 1_000_000_000;
    let whole = (10 * n + 3) * S;
    let off = match variant % LAP_OFFSET_KINDS {
        0 => lap_offset(n) + 5 * S, // + 5 s: set 0 never reads as real time
        1 if n == 2 => whole + 600_000_000,
        2 if n == 0 => whole + 600_000_000,
        _ => whole,
    };
    let first = n == 0;
    let pick = |set0: i64, others: i64| if first { set0 } else { others };
    let deadline = match variant / LAP_OFFSET_KINDS {
        0 => layout::NEVER,
        1 => pick(999 * S, 1001 * S),
        2 => pick(1001 * S, 999 * S),
        3 => pick(REAL_NS, REAL_NS + 1),
        4 => pick(REAL_NS + 1, REAL_NS),
        5 => pick(REAL_NS + 1, 1001 * S),
        _ => pick(1001 * S, REAL_NS + 1),
    };
    with_deadlines(
        params(0b11, &[(0, off), (1, off)]),
        &[(0, deadline), (1, deadline)],
    )
}

fn lap_slot(n: i64) -> [u8; layout::SLOT_LEN] {
    lap_params(n, TRACE_VARIANT.load(Ordering::Relaxed)).encode_slot()
}

fn data_word(data: usize, off: usize) -> &'static AtomicU64 {
    // SAFETY: `data` is the base of a live, rw data page (the test keeps the mapping alive
    // while tracing) and off is 8-aligned and in bounds.
    unsafe { AtomicU64::from_ptr((data + off) as *mut u64) }
}

/// Stores `time()`'s summary word of `slot` published as `generation`, as the writer does
/// after the generation (state/publish.rs).
fn trace_write_time_word(data: usize, generation: u64, slot: &[u8]) {
    data_word(data, layout::OFF_TIME_WORD)
        .store(layout::time_word(slot, generation), Ordering::Release);
}

fn trace_write_slot(data: usize, generation: u64, slot: &[u8]) {
    let at = layout::slot_offset(generation);
    for (i, w) in slot.chunks_exact(8).enumerate() {
        let v = u64::from_le_bytes(w.try_into().unwrap());
        data_word(data, at + 8 * i).store(v, Ordering::Relaxed);
    }
}

/// What the writer does between two instructions of the reader.
fn trace_writer(data: usize) {
    let generation = data_word(data, layout::OFF_GENERATION);
    match TRACE_MODE.load(Ordering::Relaxed) {
        MODE_FULL_LAP => {
            // Two complete publications: set 1 into slot 1, then set 2 into slot 0, the
            // slot the reader may be reading.
            trace_write_slot(data, 1, &lap_slot(1));
            generation.store(1, Ordering::Release);
            trace_write_time_word(data, 1, &lap_slot(1));
            trace_write_slot(data, 2, &lap_slot(2));
            generation.store(2, Ordering::Release);
            trace_write_time_word(data, 2, &lap_slot(2));
        }
        MODE_NO_TIME_WORD => {
            trace_write_slot(data, 1, &lap_slot(1));
            generation.store(1, Ordering::Release);
        }
        MODE_DEAD_WRITER => {
            // Publishes set 1, then dies half-way through writing set 2 into slot 0: the
            // mask word is cleared (as if set 2 selected nothing) and only the
            // whole-second words of the offsets and deadlines are written; the generation
            // is never bumped to 2.
            trace_write_slot(data, 1, &lap_slot(1));
            generation.store(1, Ordering::Release);
            trace_write_time_word(data, 1, &lap_slot(1));
            let two = lap_slot(2);
            let slot0 = layout::slot_offset(0);
            data_word(data, slot0 + layout::SLOT_OFF_MASK).store(0, Ordering::Relaxed);
            for at in [
                layout::SLOT_OFF_GTOD_SEC,
                layout::SLOT_OFF_CLOCKS,
                layout::SLOT_OFF_CLOCKS + 16,
                layout::SLOT_OFF_DEADLINES,
                layout::SLOT_OFF_DEADLINES + 16,
            ] {
                let v = u64::from_le_bytes(two[at..at + 8].try_into().unwrap());
                data_word(data, slot0 + at).store(v, Ordering::Relaxed);
            }
        }
        _ => {}
    }
}

extern "C" fn on_sigtrap(_: libc::c_int, _: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid ucontext_t to an SA_SIGINFO handler.
    let rip =
        unsafe { (*(ctx as *const libc::ucontext_t)).uc_mcontext.gregs[libc::REG_RIP as usize] }
            as usize;
    if rip < TRACE_LO.load(Ordering::Relaxed) || rip >= TRACE_HI.load(Ordering::Relaxed) {
        return;
    }
    let step = TRACE_STEPS.fetch_add(1, Ordering::Relaxed);
    if step == TRACE_AT.load(Ordering::Relaxed) {
        trace_writer(TRACE_DATA.load(Ordering::Relaxed));
    }
}

/// Calls `f(a0, a1)` with the trap flag set: SIGTRAP after every instruction.
fn call_single_stepped(f: usize, a0: usize, a1: usize) -> u64 {
    let ret: u64;
    // SAFETY: calls a fake in the live test code page with valid arguments; the flags are
    // restored (TF cleared) before the block ends; the stack is balanced.
    unsafe {
        std::arch::asm!(
            "pushfq",
            "or qword ptr [rsp], 0x100",
            "popfq",
            "call {f}",
            "pushfq",
            "and qword ptr [rsp], -0x101",
            "popfq",
            f = in(reg) f,
            in("rdi") a0,
            in("rsi") a1,
            lateout("rax") ret,
            clobber_abi("C"),
        );
    }
    ret
}

/// Single-steps each fake and, in separate runs, lets a writer lap it (or die half-way)
/// at every instruction boundary of the fake, for every lap variant (offsets and deadlines
/// chosen so that every field read inside the checked read matters). Every result must be
/// exactly what one of the published parameter sets gives; a missing or misplaced
/// generation re-check shows up as a mix.
#[test]
fn fake_clock_writer_at_every_instruction_never_tears() {
    // SAFETY: installs a SIGTRAP handler that only touches atomics (the previous one is
    // restored at the end); no other test uses SIGTRAP (it would otherwise kill the
    // process), and the handler ignores traps outside the test's code page.
    let previous = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        let mut previous: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigtrap as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGTRAP, &sa, &mut previous), 0);
        previous
    };
    // Genuine stand-ins as machine code in the slots: they return 1000.5 s / 1000.5 s /
    // 1000 s.
    // mov qword ptr [rsi], 1000; mov qword ptr [rsi+8], 500000000; xor eax, eax; ret
    let cg_stub = [
        0x48, 0xc7, 0x06, 0xe8, 0x03, 0, 0, 0x48, 0xc7, 0x46, 0x08, 0x00, 0x65, 0xcd, 0x1d, 0x31,
        0xc0, 0xc3,
    ];
    // mov qword ptr [rdi], 1000; mov qword ptr [rdi+8], 500000; xor eax, eax; ret
    let gtod_stub = [
        0x48, 0xc7, 0x07, 0xe8, 0x03, 0, 0, 0x48, 0xc7, 0x47, 0x08, 0x20, 0xa1, 0x07, 0x00, 0x31,
        0xc0, 0xc3,
    ];
    // mov eax, 1000; ret
    let time_stub = [0xb8, 0xe8, 0x03, 0, 0, 0xc3];
    let inj = Injected::with_stubs(
        &cg_stub,
        &gtod_stub,
        &time_stub,
        &data_page(&Params::default()),
    );
    let data = inj.addr(PAGE);
    TRACE_LO.store(inj.addr(0), Ordering::Relaxed);
    TRACE_HI.store(inj.addr(PAGE), Ordering::Relaxed);
    TRACE_DATA.store(data, Ordering::Relaxed);

    let real_ns = 1000 * NS + 500_000_000;
    let real_us = 1000 * US + 500_000;
    let reset = || {
        trace_write_slot(data, 0, &lap_slot(0));
        trace_write_slot(data, 1, &[0; layout::SLOT_LEN]);
        data_word(data, layout::OFF_GENERATION).store(0, Ordering::Release);
        trace_write_time_word(data, 0, &lap_slot(0));
    };
    // Outputs, only accessed through these addresses (the stand-ins overwrite them fully
    // on every call).
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let ts_ptr = &raw mut ts as usize;
    let tv_ptr = &raw mut tv as usize;
    let cases: [(&str, usize, usize, usize); 4] = [
        (
            "clock_gettime(REALTIME)",
            inj.blob.entries[Entry::ClockGettime],
            0,
            ts_ptr,
        ),
        (
            "clock_gettime(MONOTONIC)",
            inj.blob.entries[Entry::ClockGettime],
            1,
            ts_ptr,
        ),
        (
            "gettimeofday",
            inj.blob.entries[Entry::Gettimeofday],
            tv_ptr,
            0,
        ),
        ("time", inj.blob.entries[Entry::Time], 0, 0),
    ];
    let mut total_steps = 0;
    for variant in 0..LAP_VARIANTS {
        TRACE_VARIANT.store(variant, Ordering::Relaxed);
        for mode in [MODE_FULL_LAP, MODE_DEAD_WRITER, MODE_NO_TIME_WORD] {
            TRACE_MODE.store(mode, Ordering::Relaxed);
            // The sets a reader may legitimately return: the one before the writer ran,
            // and the last one the writer completely published.
            let allowed = [0, if mode == MODE_FULL_LAP { 2 } else { 1 }];
            for (name, entry, a0, a1) in cases {
                let f = inj.addr(entry);
                let run = |at: usize| -> i128 {
                    reset();
                    TRACE_AT.store(at, Ordering::Relaxed);
                    TRACE_STEPS.store(0, Ordering::Relaxed);
                    let r = call_single_stepped(f, a0, a1);
                    match name {
                        "time" => r as i64 as i128,
                        "gettimeofday" => {
                            assert_eq!(r as i32, 0);
                            // SAFETY: tv_ptr points at the live local `tv`.
                            tv_us(unsafe { &*(tv_ptr as *const libc::timeval) })
                        }
                        _ => {
                            assert_eq!(r as i32, 0);
                            // SAFETY: ts_ptr points at the live local `ts`.
                            ts_ns(unsafe { &*(ts_ptr as *const libc::timespec) })
                        }
                    }
                };
                let expect = |n: i64| -> i128 {
                    let p = lap_params(n, variant);
                    match name {
                        "time" => model_time(real_ns, &p) as i128,
                        "gettimeofday" => model_gtod(real_us, &p),
                        "clock_gettime(MONOTONIC)" => model_clock(real_ns, &p, 1),
                        _ => model_clock(real_ns, &p, 0),
                    }
                };
                let what = format!("{name}, lap variant {variant}, writer mode {mode}");
                let (a, b) = (allowed[0], allowed[1]);
                assert_ne!(
                    expect(a),
                    expect(b),
                    "{what}: the sets are indistinguishable"
                );
                let undisturbed = run(usize::MAX);
                let steps = TRACE_STEPS.load(Ordering::Relaxed);
                assert_eq!(undisturbed, expect(0), "{what}: single-stepped result");
                assert!((10..200).contains(&steps), "{what}: {steps} steps traced");
                total_steps += steps;
                let (mut old, mut new) = (0, 0);
                for at in 0..steps {
                    let got = run(at);
                    assert!(
                        TRACE_STEPS.load(Ordering::Relaxed) > at,
                        "{what}: the writer never ran"
                    );
                    if got == expect(a) {
                        old += 1;
                    } else if got == expect(b) {
                        new += 1;
                    } else {
                        panic!(
                            "{what}, at instruction {at}: got {got}, expected {} (set {a}) \
                             or {} (set {b})",
                            expect(a),
                            expect(b),
                        );
                    }
                }
                assert!(old > 0 && new > 0, "{what}: old {old}, new {new}");
            }
        }
    }
    assert!(total_steps > 0);
    TRACE_HI.store(0, Ordering::Relaxed);
    // SAFETY: restores the disposition saved above.
    let rc = unsafe { libc::sigaction(libc::SIGTRAP, &previous, std::ptr::null_mut()) };
    assert_eq!(rc, 0);
}
