//! Against the genuine vDSO of this process: each fake reading bracketed by genuine ones.

use super::arithmetic::OFFSETS;
use super::harness::*;
use super::model::*;
use crate::fake_clock::data_page::{self as layout, Params};
use std::time::Duration;

#[test]
fn fake_clock_vdso_offsets() {
    let clocks = VDSO_CLOCKS;
    for off in OFFSETS {
        let mut mask = 0;
        let mut offs = vec![];
        for &c in &clocks {
            mask |= 1 << c;
            offs.push((c as usize, off));
        }
        let inj = Injected::with_vdso(&params(mask, &offs));
        for _ in 0..3 {
            for &c in &clocks {
                check_clock(&inj, c, off);
            }
            check_gtod(&inj, (off as i128).div_euclid(1000));
            check_time(&inj, off);
        }
    }
}

#[test]
fn fake_clock_vdso_normalises_over_many_calls() {
    for off in [-1, 999_999_999, -1_500_000_000, 1] {
        let inj = Injected::with_vdso(&params(0b11, &[(0, off), (1, off)]));
        let (f, g) = (inj.clock_gettime(), inj.gettimeofday());
        let mut last_mono = i128::MIN;
        for _ in 0..100_000 {
            for id in [libc::CLOCK_REALTIME, libc::CLOCK_MONOTONIC] {
                let (r, ts) = cg(f, id);
                assert_eq!(r, 0);
                assert!(
                    (0..1_000_000_000).contains(&ts.tv_nsec),
                    "tv_nsec {}",
                    ts.tv_nsec
                );
                if id == libc::CLOCK_MONOTONIC {
                    let v = ts_ns(&ts);
                    assert!(v >= last_mono, "fake monotonic went backwards");
                    last_mono = v;
                }
            }
            let (r, tv) = gtod(g);
            assert_eq!(r, 0);
            assert!(
                (0..1_000_000).contains(&tv.tv_usec),
                "tv_usec {}",
                tv.tv_usec
            );
        }
    }
}

#[test]
fn fake_clock_vdso_unselected_clocks_are_untouched() {
    // Poison every unselected entry (encode_slot would zero them) so that a fake that
    // ignored the mask would visibly shift them.
    let poison = |mask: u32, off: i64| {
        let mut slot = params(mask, &(0..32).map(|i| (i, off)).collect::<Vec<_>>()).encode_slot();
        for id in 0..32 {
            if mask & (1 << id) == 0 {
                let at = layout::SLOT_OFF_CLOCKS + id * 16;
                slot[at..at + 8].copy_from_slice(&3600i64.to_le_bytes());
                slot[at + 8..at + 16].copy_from_slice(&1i64.to_le_bytes());
            }
        }
        if mask & 1 == 0 {
            slot[layout::SLOT_OFF_GTOD_SEC..][..8].copy_from_slice(&3600i64.to_le_bytes());
            slot[layout::SLOT_OFF_GTOD_USEC..][..8].copy_from_slice(&1i64.to_le_bytes());
        }
        slot
    };
    let off = -600 * 1_000_000_000;
    let rt = libc::CLOCK_REALTIME;
    let mono = libc::CLOCK_MONOTONIC;
    let boot = libc::CLOCK_BOOTTIME;
    let all = [
        rt,
        mono,
        libc::CLOCK_MONOTONIC_RAW,
        libc::CLOCK_REALTIME_COARSE,
        libc::CLOCK_MONOTONIC_COARSE,
        boot,
        libc::CLOCK_TAI,
    ];
    for mask in [
        1u32 << rt,
        1 << mono,
        (1 << mono) | (1 << boot),
        0,
        1 << libc::CLOCK_TAI,
    ] {
        let inj = Injected::with_vdso(&Params::default());
        inj.publish_raw(&poison(mask, off));
        for &c in &all {
            let want = if mask & (1 << c) != 0 { off } else { 0 };
            check_clock(&inj, c, want);
        }
        let rt_off = if mask & 1 != 0 { off } else { 0 };
        check_gtod(&inj, (rt_off as i128).div_euclid(1000));
        check_time(&inj, rt_off);
    }
}

#[test]
fn fake_clock_vdso_cpu_time_clocks_are_not_shifted() {
    let inj = Injected::with_vdso(&params(
        u32::MAX,
        &(0..32)
            .map(|i| (i, 1000 * 1_000_000_000))
            .collect::<Vec<_>>(),
    ));
    let mut proc_clock: libc::clockid_t = 0;
    // SAFETY: valid out pointer; pid 0 is this process.
    assert_eq!(unsafe { libc::clock_getcpuclockid(0, &mut proc_clock) }, 0);
    let mut thread_clock: libc::clockid_t = 0;
    // SAFETY: valid out pointer; pthread_self is a live thread.
    let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut thread_clock) };
    assert_eq!(rc, 0);
    assert!(
        proc_clock < 0 && thread_clock < 0,
        "{proc_clock} {thread_clock}"
    );
    for id in [proc_clock, thread_clock] {
        for _ in 0..100 {
            check_clock(&inj, id, 0);
        }
    }
    // The static CPU-time ids (2, 3) are ordinary ids for the mask: selected, they shift.
    check_clock(&inj, libc::CLOCK_THREAD_CPUTIME_ID, 1000 * 1_000_000_000);
}

#[test]
fn fake_clock_vdso_invalid_ids_return_the_genuine_error() {
    let inj = Injected::with_vdso(&params(
        u32::MAX,
        &(0..32)
            .map(|i| (i, 1000 * 1_000_000_000))
            .collect::<Vec<_>>(),
    ));
    for id in [100, -1, 20, 31, 32, i32::MAX] {
        let (gr, gts) = cg(genuine_clock_gettime(), id);
        let (fr, fts) = cg(inj.clock_gettime(), id);
        assert_ne!(gr, 0, "clock id {id} unexpectedly valid");
        assert_eq!(fr, gr, "clock id {id}: fake returned {fr}, genuine {gr}");
        assert_eq!((fts.tv_sec, fts.tv_nsec), (gts.tv_sec, gts.tv_nsec));
        assert_eq!(
            (fts.tv_sec, fts.tv_nsec),
            (0x5555_5555, 0x6666_6666),
            "sentinel touched"
        );
    }
}

#[test]
fn fake_clock_vdso_gettimeofday_null_arguments() {
    let off = 2 * HOUR_NS + 250_000_000;
    let inj = Injected::with_vdso(&params(1, &[(0, off)]));
    // struct timezone { int tz_minuteswest; int tz_dsttime; }
    let mut tz = [77i32; 2];
    let mut gtz = [99i32; 2];
    let tzp = (&raw mut tz).cast::<libc::c_void>();
    assert_eq!(inj.gettimeofday()(std::ptr::null_mut(), tzp), 0);
    assert_eq!(
        genuine_gettimeofday()(std::ptr::null_mut(), (&raw mut gtz).cast()),
        0
    );
    assert_eq!(tz, gtz, "tz filled like the genuine one");
    assert_eq!(
        inj.gettimeofday()(std::ptr::null_mut(), std::ptr::null_mut()),
        0
    );
    // tv with tz, tv with NULL tz.
    let g1 = now_us();
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    assert_eq!(inj.gettimeofday()(&mut tv, tzp), 0);
    let g2 = now_us();
    let f = tv_us(&tv);
    let off_us = off as i128 / 1000;
    assert!(g1 + off_us <= f && f <= g2 + off_us);
    check_gtod(&inj, off_us);
    // Realtime not selected.
    let inj = Injected::with_vdso(&params(0b10, &[(1, off)]));
    check_gtod(&inj, 0);
    check_time(&inj, 0);
    check_clock(&inj, libc::CLOCK_MONOTONIC, off);
}

/// The harness injects as timeskew does: `time()` runs a copy of this machine's genuine
/// `time()` (the inlining fake), so every `with_vdso` test of `time()` goes through the copy.
/// Called through a probe that checks the callee-saved registers, it answers what the
/// genuine one does (through `tloc` too), unselected, whole and fractional offsets alike.
#[test]
fn fake_clock_vdso_time_runs_a_copy_of_the_genuine_one() {
    for (mask, off) in [(0, 0), (1, 0), (1, -600 * 1_000_000_000), (1, HOUR_NS + 1)] {
        let inj = Injected::with_vdso(&params(mask, &[(0, off)]));
        assert!(inj.time_is_inline(), "the copy of time() was refused");
        let mut t: i64 = 0;
        let lo = genuine_time()(std::ptr::null_mut());
        let (r, ok) =
            super::abi::probe_preserved(inj.addr(inj.blob.time_inline), &raw mut t as usize);
        let hi = genuine_time()(std::ptr::null_mut());
        assert!(ok, "the inlined time() clobbered a callee-saved register");
        assert_eq!(r as i64, t, "*tloc");
        let (lo, hi) = (
            (lo as i128 * NS + off as i128 - NS).div_euclid(NS) as i64,
            (hi as i128 * NS + off as i128 + NS).div_euclid(NS) as i64,
        );
        assert!(lo <= t && t <= hi, "{t} not in [{lo}, {hi}]");
        for _ in 0..20 {
            check_time(&inj, off);
        }
    }
}

#[test]
fn fake_clock_vdso_time_floor_semantics() {
    for off in [
        -1_500_000_000,
        1_500_000_000,
        -600 * 1_000_000_000,
        999_999_999,
        -1,
        2 * HOUR_NS,
        CENTURY_NS,
        -CENTURY_NS,
    ] {
        let inj = Injected::with_vdso(&params(1, &[(0, off)]));
        for _ in 0..50 {
            check_time(&inj, off);
        }
    }
}

/// Each clock against its own deadline, in its own time: far ahead or none → shifted, just
/// or long passed → genuine. The other clocks' deadlines are set the other way round, so
/// a fake that looked at the wrong entry would be caught.
#[test]
fn fake_clock_vdso_deadlines_per_clock() {
    // Fractional (time() takes its slow path) and whole seconds (its fast path).
    for off in [HOUR_NS + 1, -600 * 1_000_000_000] {
        for &c in &VDSO_CLOCKS {
            let cu = c as usize;
            for (ahead, shifted) in [
                (Some(HOUR_NS), true),
                (None, true),
                (Some(-1_000_000_000), false),
                (Some(-HOUR_NS), false),
            ] {
                let mask = VDSO_CLOCKS.iter().fold(0u32, |m, &k| m | 1 << k);
                let offs: Vec<_> = VDSO_CLOCKS.iter().map(|&k| (k as usize, off)).collect();
                let mut p = params(mask, &offs);
                for &k in &VDSO_CLOCKS {
                    // The others: expired if this one runs, running if this one expired.
                    let n = now(k) as i64;
                    p.expires_ns[k as usize] = if shifted { n - HOUR_NS } else { n + HOUR_NS };
                }
                p.expires_ns[cu] = match ahead {
                    Some(d) => now(c) as i64 + d,
                    None => layout::NEVER,
                };
                let inj = Injected::with_vdso(&p);
                let want = if shifted { off } else { 0 };
                for _ in 0..3 {
                    check_clock(&inj, c, want);
                }
                if c == libc::CLOCK_REALTIME {
                    check_gtod(&inj, (want as i128).div_euclid(1000));
                    check_time(&inj, want);
                } else if c == libc::CLOCK_REALTIME_COARSE {
                    // gettimeofday and time follow deadlines[0] (CLOCK_REALTIME), not
                    // CLOCK_REALTIME_COARSE's, set the other way round here.
                    let rt = if shifted { 0 } else { off };
                    check_gtod(&inj, (rt as i128).div_euclid(1000));
                    check_time(&inj, rt);
                }
            }
        }
    }
}

/// Realtime's deadline passed while monotonic's has not, and the other way round.
#[test]
fn fake_clock_vdso_one_deadline_passed_the_other_not() {
    let off = 2 * HOUR_NS;
    let (rt, mono) = (libc::CLOCK_REALTIME, libc::CLOCK_MONOTONIC);
    for rt_passed in [true, false] {
        let dir = |passed: bool| if passed { -1_000_000_000 } else { HOUR_NS };
        let p = with_deadlines(
            params(0b11, &[(0, off), (1, off)]),
            &[
                (0, now(rt) as i64 + dir(rt_passed)),
                (1, now(mono) as i64 + dir(!rt_passed)),
            ],
        );
        let inj = Injected::with_vdso(&p);
        let (rt_off, mono_off) = if rt_passed { (0, off) } else { (off, 0) };
        for _ in 0..10 {
            check_clock(&inj, rt, rt_off);
            check_clock(&inj, mono, mono_off);
            check_gtod(&inj, rt_off as i128 / 1000);
            check_time(&inj, rt_off);
        }
    }
}

/// A data page of zeros (generation 0, slot 0 all zero), and a slot whose mask and offsets
/// are set but whose deadline table is zeros: every fake returns the genuine time.
#[test]
fn fake_clock_vdso_zeroed_page_and_zeroed_deadlines_pass_real_time() {
    let g = genuine();
    let zero = Injected::with_stubs(
        &abs_jump(g.clock_gettime),
        &abs_jump(g.gettimeofday),
        &abs_jump(g.time),
        &[0u8; PAGE],
    );
    let all: Vec<_> = (0..32).map(|i| (i, 1000 * 1_000_000_000 + 1)).collect();
    let mut slot = params(u32::MAX, &all).encode_slot();
    slot[layout::SLOT_OFF_DEADLINES..].fill(0);
    let deadlines_zero = Injected::with_vdso(&Params::default());
    deadlines_zero.publish_raw(&slot);
    let mut whole = params(u32::MAX, &all).encode_slot();
    whole[layout::SLOT_OFF_DEADLINES..].fill(0);
    for i in 0..32 {
        // Whole seconds, so that time() could take its fast path.
        whole[layout::SLOT_OFF_CLOCKS + 16 * i + 8..][..8].fill(0);
    }
    let deadlines_zero_whole = Injected::with_vdso(&Params::default());
    deadlines_zero_whole.publish_raw(&whole);
    for inj in [&zero, &deadlines_zero, &deadlines_zero_whole] {
        for _ in 0..3 {
            for &c in &VDSO_CLOCKS {
                check_clock(inj, c, 0);
            }
            check_gtod(inj, 0);
            check_time(inj, 0);
        }
    }
}

/// The deadline passes while we watch, inside one realtime second: clock_gettime and
/// gettimeofday compare nanoseconds (microseconds × 1000), time() runs its slow path
/// (its seconds equal the deadline's). Each reading is bracketed by genuine readings;
/// below the deadline it must be shifted, at or after it genuine, and once genuine it stays
/// genuine.
#[test]
fn fake_clock_vdso_deadline_passes_within_a_second() {
    // A run is inconclusive (and repeated) only when preemption kept it from observing
    // both sides of a deadline; a wrong reading fails at once.
    for _attempt in 0..10 {
        if deadline_passes_within_a_second() {
            return;
        }
    }
    panic!("10 runs never watched every deadline pass (the machine is too busy?)");
}

/// One run of [`fake_clock_vdso_deadline_passes_within_a_second`]: false if inconclusive.
fn deadline_passes_within_a_second() -> bool {
    let off = HOUR_NS; // whole seconds: time() is slow only because of the deadline
    let (rt, mono, coarse) = (
        libc::CLOCK_REALTIME,
        libc::CLOCK_MONOTONIC,
        libc::CLOCK_REALTIME_COARSE,
    );
    // Start early in a second so that the deadline (now + 100 ms) and the 60 ms watched
    // after it stay inside the same second.
    while now(rt).rem_euclid(NS) > 300_000_000 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let d_rt = now(rt) as i64 + 100_000_000;
    let d_mono = now(mono) as i64 + 100_000_000;
    let p = with_deadlines(
        params(0b11, &[(0, off), (1, off)]),
        &[(0, d_rt), (1, d_mono)],
    );
    let inj = Injected::with_vdso(&p);
    // Judges one reading f taken between genuine readings lo and hi: 1 if it is shifted,
    // which only a reading below the deadline may be, 0 if genuine, which only a reading
    // at or after the deadline may be.
    let judge = |what: &str, f: i128, (lo, hi): (i128, i128), off: i128, below, above| {
        if below && lo + off <= f && f <= hi + off {
            1
        } else if above && lo <= f && f <= hi {
            0
        } else {
            panic!(
                "{what}: {f} is neither shifted (below the deadline: {below}) nor genuine \
                 (at or after it: {above}) within [{lo}, {hi}], offset {off}"
            )
        }
    };
    let names = ["realtime", "monotonic", "gettimeofday", "time"];
    let mut last = [1u8; 4];
    let mut seen = [[0u32; 2]; 4];
    let end = d_rt as i128 + 60_000_000;
    let mut time_in_deadline_second = 0;
    loop {
        let g1 = now(rt);
        let (r, ts) = cg(inj.clock_gettime(), rt);
        let g2 = now(rt);
        assert_eq!(r, 0);
        if g1 > end {
            break;
        }
        let d = d_rt as i128;
        let o = off as i128;
        let k = [
            judge(names[0], ts_ns(&ts), (g1, g2), o, g1 < d, g2 >= d),
            {
                let g1 = now(mono);
                let (r, ts) = cg(inj.clock_gettime(), mono);
                let g2 = now(mono);
                assert_eq!(r, 0);
                let d = d_mono as i128;
                judge(names[1], ts_ns(&ts), (g1, g2), o, g1 < d, g2 >= d)
            },
            {
                let g1 = now_us();
                let (r, tv) = gtod(inj.gettimeofday());
                let g2 = now_us();
                assert_eq!(r, 0);
                let (below, above) = (g1 * 1000 < d, g2 * 1000 >= d);
                judge(names[2], tv_us(&tv), (g1, g2), o / 1000, below, above)
            },
            {
                let c1 = now(coarse);
                let t = inj.time()(std::ptr::null_mut()) as i128;
                let c2 = now(coarse);
                let secs = (c1.div_euclid(NS), c2.div_euclid(NS));
                if secs.0 == d.div_euclid(NS) && secs.1 == secs.0 {
                    time_in_deadline_second += 1;
                }
                judge(names[3], t, secs, o / NS, c1 < d, c2 >= d)
            },
        ];
        for (i, &k) in k.iter().enumerate() {
            assert!(
                k <= last[i],
                "{}: shifted again after the deadline",
                names[i]
            );
            last[i] = k;
            seen[i][k as usize] += 1;
        }
    }
    seen.iter().all(|s| s[0] > 0 && s[1] > 0) && time_in_deadline_second > 0
}
