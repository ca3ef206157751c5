//! Clock programs, their fast cases, resolution and slow reads: the fakes against
//! [`Params::reading`], the model in `data_page`, exactly on scripted real readings and
//! bracketed on the genuine vDSO; an hour of elapsed time at several rates; the system call
//! taken instead of the vDSO; and a writer switching between continuous programs while
//! readers watch a monotonic clock.

use super::harness::*;
use super::model::*;
use crate::fake_clock::data_page::{
    self as layout, MAX_CLOCK_ID, MAX_RATE, NEVER, Params, Program, RATE_ONE, RATE_SHIFT, Segment,
    Strobe,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const S: i64 = 1_000_000_000;

/// `num / den` in the program's fixed point, rounded.
fn rate(num: i128, den: i128) -> u64 {
    (((num << RATE_SHIFT) + den / 2) / den) as u64
}

fn seg(start_ns: i64, value_ns: i64, rate: u64) -> Segment {
    Segment {
        start_ns,
        value_ns,
        rate,
    }
}

/// A program over the ids in `mask`, every id anchored at `anchor` with base `base`.
fn program(
    mask: u32,
    segments: Vec<Segment>,
    strobe: Option<Strobe>,
    anchor: i64,
    base: i64,
) -> Params {
    let mut p = Program {
        segments,
        strobe,
        anchors_ns: [0; MAX_CLOCK_ID + 1],
        bases_ns: [0; MAX_CLOCK_ID + 1],
    };
    for id in 0..=MAX_CLOCK_ID {
        if mask & (1 << id) != 0 {
            p.anchors_ns[id] = anchor;
            p.bases_ns[id] = base;
        }
    }
    Params {
        mask,
        program: Some(p),
        ..Params::default()
    }
}

/// The shapes the tests run, each with a name: rates 0, 0.5, 1, 1.0005, 2 and 1000 from the
/// anchor; a suspend (frozen for 10 s, then real speed); a slew (1 − 1/2000 until 20 s, then
/// real speed); a strobe (±3 s every odd quarter second) on top of real speed; a four-segment
/// program with a decreasing, non-zero segment 0 that also covers the time before the anchor.
fn shapes() -> Vec<(&'static str, Vec<Segment>, Option<Strobe>)> {
    let mut v: Vec<(&'static str, Vec<Segment>, Option<Strobe>)> = vec![
        ("rate 0", vec![seg(0, 0, 0)], None),
        ("rate 0.5", vec![seg(0, 0, rate(1, 2))], None),
        ("rate 1", vec![seg(0, 0, RATE_ONE)], None),
        ("rate 1.0005", vec![seg(0, 0, rate(10_005, 10_000))], None),
        ("rate 2", vec![seg(0, 0, rate(2, 1))], None),
        ("rate 1000", vec![seg(0, 0, rate(1000, 1))], None),
        (
            "suspend 10 s",
            vec![seg(0, 0, 0), seg(10 * S, 0, RATE_ONE)],
            None,
        ),
        (
            "slew -10 ms over 20 s",
            vec![
                seg(0, 0, rate(1999, 2000)),
                seg(20 * S, 20 * S - 10_000_000, RATE_ONE),
            ],
            None,
        ),
        (
            "strobe 250 ms -3 s",
            vec![seg(0, 0, RATE_ONE)],
            Some(Strobe {
                period_ns: 250_000_000,
                delta_ns: -3 * S,
            }),
        ),
        (
            "strobe 1 ns +1",
            vec![seg(0, 0, RATE_ONE)],
            Some(Strobe {
                period_ns: 1,
                delta_ns: 1,
            }),
        ),
        (
            "four segments",
            vec![
                seg(-5 * S, 7 * S, rate(1, 3)),
                seg(0, 9 * S, RATE_ONE),
                seg(S, 10 * S, rate(3, 1)),
                seg(HOUR_NS, 20 * S, rate(1, 7)),
            ],
            Some(Strobe {
                period_ns: 999_999_937,
                delta_ns: 5,
            }),
        ),
    ];
    v.shrink_to_fit();
    v
}

/// Real readings around `anchor`: before it (segment 0), at it, across strobe and segment
/// boundaries, an hour on.
fn reals_around(anchor: i64) -> Vec<i64> {
    let mut v = vec![];
    for e in [
        -HOUR_NS,
        -5 * S - 1,
        -1,
        0,
        1,
        2,
        249_999_999,
        250_000_000,
        999_999_999,
        S,
        S + 1,
        10 * S - 1,
        10 * S,
        20 * S,
        HOUR_NS - 1,
        HOUR_NS,
        HOUR_NS + 123_456_789,
    ] {
        v.push(anchor + e);
    }
    v
}

fn split_ns(v: i64) -> (i64, i64) {
    (v.div_euclid(S), v.rem_euclid(S))
}

/// What clock_gettime must return for real reading `real`.
fn want_clock(p: &Params, id: usize, real: i64) -> (i64, i64) {
    split_ns(p.reading(id, real).unwrap_or(real))
}

/// What gettimeofday must return for real (sec, usec): the realtime reading of
/// `sec·1e9 + usec·1000`, floored to microseconds.
fn want_gtod(p: &Params, sec: i64, usec: i64) -> (i64, i64) {
    let real = sec * S + usec * 1000;
    match p.reading(0, real) {
        Some(v) => (v.div_euclid(S), v.rem_euclid(S).div_euclid(1000)),
        None => (sec, usec),
    }
}

/// What time() must return for the coarse reading `coarse`.
fn want_time(p: &Params, coarse: i64) -> i64 {
    p.reading(0, coarse).unwrap_or(coarse).div_euclid(S)
}

/// Calls the three fakes of `inj` (scripted genuine functions) on real reading `real` and
/// checks each against the model exactly.
fn check_scripted(inj: &Injected, p: &Params, ids: &[i32], real: i64, what: &str) {
    let (sec, nsec) = split_ns(real);
    for &id in ids {
        script(0, sec, nsec);
        let (r, ts) = cg(inj.clock_gettime(), id);
        assert_eq!(r, 0, "{what}");
        assert_eq!(
            (ts.tv_sec, ts.tv_nsec),
            want_clock(p, id as usize, real),
            "{what}: clock_gettime({id}) at real {real}"
        );
    }
    let usec = nsec / 1000;
    script(0, sec, usec);
    let (r, tv) = gtod(inj.gettimeofday());
    assert_eq!(r, 0, "{what}");
    assert_eq!(
        (tv.tv_sec, tv.tv_usec),
        want_gtod(p, sec, usec),
        "{what}: gettimeofday at real {sec}.{usec:06}"
    );
    script(0, sec, nsec);
    let mut t: libc::time_t = 0;
    let got = inj.time()(&mut t);
    assert_eq!(got, want_time(p, real), "{what}: time() at coarse {real}");
    assert_eq!(t, got, "{what}: *tloc");
    if p.mask & 1 != 0 {
        // CLOCK_REALTIME_COARSE, unless the fast case decides from the seconds alone.
        assert!(
            SCRIPT.get().calls <= 1,
            "{what}: time() reads CLOCK_REALTIME_COARSE at most once"
        );
    }
}

/// Every shape, on every id the fakes hook, realtime and not, matches the model exactly on
/// scripted real readings: before the anchor, at it, across boundaries, an hour on; with a
/// positive and a negative base (a monotonic clock read negative is the model's business,
/// not the fake's).
#[test]
fn fake_clock_program_shapes_match_the_model_exactly() {
    let anchor = 1_700_000_000 * S + 123_456_789;
    let ids = [0, 1, 4, 5, 6, 7, 11, 31];
    let mask = ids.iter().fold(0u32, |m, &id| m | 1 << id);
    for (name, segments, strobe) in shapes() {
        for base in [anchor - 600 * S + 1, 5 * S, -HOUR_NS - 7] {
            let p = program(mask, segments.clone(), strobe, anchor, base);
            let inj = Injected::scripted(&p);
            for real in reals_around(anchor) {
                check_scripted(&inj, &p, &ids, real, &format!("{name}, base {base}"));
            }
            // Unselected ids pass through.
            let unselected = program(0b10, segments.clone(), strobe, anchor, base);
            inj.publish(&unselected);
            check_scripted(&inj, &unselected, &[0, 2, 7], anchor + S, name);
        }
    }
}

/// Per-clock anchors and bases: each id follows its own.
#[test]
fn fake_clock_program_anchors_and_bases_are_per_clock() {
    let mut p = program(0b11, vec![seg(0, 0, rate(1, 2))], None, 0, 0);
    let prog = p.program.as_mut().unwrap();
    prog.anchors_ns[0] = 1_700_000_000 * S;
    prog.bases_ns[0] = 1_600_000_000 * S + 1;
    prog.anchors_ns[1] = 50 * S;
    prog.bases_ns[1] = 7;
    let inj = Injected::scripted(&p);
    for real in [
        0,
        50 * S,
        60 * S + 3,
        1_700_000_000 * S,
        1_700_003_600 * S + 5,
    ] {
        check_scripted(&inj, &p, &[0, 1], real, "per-clock anchors");
    }
}

/// An hour of simulated elapsed time (the anchor an hour before the scripted reading) at
/// several rates: the fake equals the model to the nanosecond, and the model is within a
/// nanosecond of the exact rational value.
#[test]
fn fake_clock_program_is_exact_over_an_hour() {
    let real = 1_700_000_000 * S + 987_654_321;
    let anchor = real - HOUR_NS;
    for (num, den) in [
        (0i128, 1i128),
        (1, 2),
        (1, 1),
        (10_005, 10_000),
        (999_950, 1_000_000),
        (2, 1),
        (1, 3),
        (1000, 1),
    ] {
        let p = program(
            0b1000_0011,
            vec![seg(0, 0, rate(num, den))],
            None,
            anchor,
            S,
        );
        let inj = Injected::scripted(&p);
        for r in [real, real - 1, real + 1, real + 999_999_999] {
            check_scripted(&inj, &p, &[0, 1, 7], r, &format!("rate {num}/{den}"));
            let exact = S as i128 + (r - anchor) as i128 * num / den;
            let model = p.reading(1, r).unwrap() as i128;
            assert!(
                (model - exact).abs() <= 1,
                "{num}/{den}: {model} vs {exact}"
            );
        }
    }
}

/// Random rates over the whole range (every fraction bit in play) and random distances from
/// the anchor up to 2^63 ns, where the product wraps: the fake's two 64-bit multiplies give
/// the model's 128-bit product shifted down, bit for bit, and its split the model's floor.
#[test]
fn fake_clock_program_rates_match_the_model_at_any_distance() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        // xorshift64*: a fixed sequence, so a failure repeats.
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let real = 1_700_000_000 * S + 987_654_321;
    for case in 0..2_000 {
        let rate = match case % 4 {
            0 => next() % (MAX_RATE + 1),
            1 => next() % (4 * RATE_ONE),
            2 => RATE_ONE + next() % (RATE_ONE / 1000),
            _ => next() % RATE_ONE,
        };
        // e = real − anchor: small, up to an hour, or anywhere in [0, 2^63).
        let e = match case % 3 {
            0 => (next() % (2 * S as u64)) as i64,
            1 => (next() % HOUR_NS as u64) as i64,
            _ => (next() >> 1) as i64,
        };
        let anchor = real.wrapping_sub(e);
        let base = next() as i64 >> (next() % 64);
        let p = program(0b11, vec![seg(0, 0, rate)], None, anchor, base);
        let inj = Injected::scripted(&p);
        check_scripted(
            &inj,
            &p,
            &[0, 1],
            real,
            &format!("rate {rate:#x}, e {e}, base {base}"),
        );
    }
}

/// Resolution, with and without a program: 1 ns (no rounding), 15 ms and 1 s, on positive
/// and negative values (negative values are not rounded), and the flags alone with a zero
/// offset.
#[test]
fn fake_clock_resolution_matches_the_model_exactly() {
    let anchor = 1_700_000_000 * S + 123_456_789;
    for resolution in [1u64, 2, 15_000_000, S as u64, 3_600 * S as u64, 999_999_937] {
        let mut constant = params(0b1000_0011, &[(0, -600 * S + 1), (1, -3 * S - 1), (7, 0)]);
        constant.resolution_ns = resolution;
        let mut prog = program(
            0b1000_0011,
            vec![seg(0, 0, rate(3, 2))],
            None,
            anchor,
            S + 5,
        );
        prog.resolution_ns = resolution;
        for p in [constant, prog] {
            let inj = Injected::scripted(&p);
            for real in reals_around(anchor).into_iter().chain([
                0,
                1,
                2_999_999,
                3 * S - 1,
                3 * S,
                3 * S + 1,
            ]) {
                check_scripted(
                    &inj,
                    &p,
                    &[0, 1, 7],
                    real,
                    &format!("resolution {resolution}"),
                );
            }
        }
    }
}

/// Deadlines in program mode: at or after the deadline the real reading passes through,
/// compared lexicographically before any change.
#[test]
fn fake_clock_program_deadlines_pass_real_time() {
    let anchor = 1_700_000_000 * S;
    let real = anchor + 10 * S + 500_000_000;
    for d in [
        real - 1,
        real,
        real + 1,
        real + 999,
        real + 1000,
        real - S,
        real + S,
        NEVER,
        0,
    ] {
        let mut p = program(0b11, vec![seg(0, 0, rate(1, 2))], None, anchor, 3 * S);
        p.resolution_ns = 15_000_000;
        let p = with_deadlines(p, &[(0, d), (1, d)]);
        let inj = Injected::scripted(&p);
        for r in [real - 1, real, real + 1, real + 1000] {
            check_scripted(&inj, &p, &[0, 1], r, &format!("deadline {d}"));
        }
    }
}

// ---- against the genuine vDSO, bracketed --------------------------------------------------

/// The fake reading of `id` lies between the model at the genuine readings just before and
/// after it (the shapes here never decrease, except the strobe, which is only judged when
/// both readings lie in the same strobe period).
fn check_clock_program(inj: &Injected, p: &Params, id: libc::clockid_t) {
    for _ in 0..100 {
        let g1 = now(id) as i64;
        let (r, ts) = cg(inj.clock_gettime(), id);
        let g2 = now(id) as i64;
        assert_eq!(r, 0);
        assert!((0..S).contains(&ts.tv_nsec), "tv_nsec {}", ts.tv_nsec);
        if let Some(strobe) = p.program.as_ref().and_then(|pr| pr.strobe) {
            let a = p.program.as_ref().unwrap().anchors_ns[id as usize];
            let per = strobe.period_ns as i64;
            if (g1 - a).div_euclid(per) != (g2 - a).div_euclid(per) {
                continue;
            }
        }
        let f = ts_ns(&ts) as i64;
        let lo = p.reading(id as usize, g1).unwrap_or(g1);
        let hi = p.reading(id as usize, g2).unwrap_or(g2);
        assert!(
            lo <= f && f <= hi,
            "clock {id}: fake {f} not in [{lo}, {hi}] (real {g1} .. {g2})"
        );
        return;
    }
    panic!("clock {id}: no bracket inside one strobe period");
}

fn check_gtod_program(inj: &Injected, p: &Params) {
    let m = |us: i128| {
        let real = us as i64 * 1000;
        p.reading(0, real).unwrap_or(real).div_euclid(1000)
    };
    let g1 = now_us();
    let (r, tv) = gtod(inj.gettimeofday());
    let g2 = now_us();
    assert_eq!(r, 0);
    assert!((0..1_000_000).contains(&tv.tv_usec));
    let f = tv_us(&tv) as i64;
    assert!(
        m(g1) <= f && f <= m(g2),
        "gettimeofday: {f} not in [{}, {}]",
        m(g1),
        m(g2)
    );
}

fn check_time_program(inj: &Injected, p: &Params) {
    let c1 = now(libc::CLOCK_REALTIME_COARSE) as i64;
    let mut t: libc::time_t = 0;
    let got = inj.time()(&mut t);
    let c2 = now(libc::CLOCK_REALTIME_COARSE) as i64;
    assert_eq!(t, got, "*tloc");
    let (lo, hi) = (want_time(p, c1), want_time(p, c2));
    assert!(lo <= got && got <= hi, "time(): {got} not in [{lo}, {hi}]");
}

/// Each monotone shape and a strobe, anchored an hour ago on each clock's own reading, on
/// the genuine vDSO: realtime, monotonic, boottime, TAI, the coarse and raw clocks; and
/// gettimeofday and time from the realtime parameters.
#[test]
fn fake_clock_vdso_programs_bracketed() {
    let ids = VDSO_CLOCKS;
    let mask = ids.iter().fold(0u32, |m, &id| m | 1 << id);
    for (name, segments, strobe) in shapes() {
        if name == "strobe 1 ns +1" {
            continue; // a period shorter than any bracket
        }
        let mut p = program(mask, segments, strobe, 0, 0);
        let prog = p.program.as_mut().unwrap();
        for &id in &ids {
            prog.anchors_ns[id as usize] = now(id) as i64 - HOUR_NS;
            prog.bases_ns[id as usize] = 1_000 * S + id as i64;
        }
        // time() and gettimeofday judge realtime by the coarse / microsecond readings, which
        // the anchor shares.
        for resolution in [0, 1, 15_000_000, S as u64] {
            p.resolution_ns = resolution;
            let inj = Injected::with_vdso(&p);
            for _ in 0..20 {
                for &id in &ids {
                    check_clock_program(&inj, &p, id);
                }
                if strobe.is_none() {
                    check_gtod_program(&inj, &p);
                    check_time_program(&inj, &p);
                }
            }
        }
    }
}

/// Resolution without a program on the vDSO, and program mode past its deadline: real time.
#[test]
fn fake_clock_vdso_resolution_and_program_deadline() {
    let mut p = params(0b11, &[(0, -600 * S), (1, 7)]);
    for resolution in [1, 15_000_000, S as u64] {
        p.resolution_ns = resolution;
        let inj = Injected::with_vdso(&p);
        for _ in 0..20 {
            check_clock_program(&inj, &p, libc::CLOCK_REALTIME);
            check_clock_program(&inj, &p, libc::CLOCK_MONOTONIC);
            check_gtod_program(&inj, &p);
            check_time_program(&inj, &p);
        }
    }
    let expired = with_deadlines(
        program(0b11, vec![seg(0, 0, rate(2, 1))], None, 0, 5 * S),
        &[
            // A second ago: time() judges by the coarse clock, which lags behind.
            (0, now(libc::CLOCK_REALTIME) as i64 - S),
            (1, now(libc::CLOCK_MONOTONIC) as i64 - S),
        ],
    );
    let inj = Injected::with_vdso(&expired);
    for _ in 0..20 {
        check_clock(&inj, libc::CLOCK_REALTIME, 0);
        check_clock(&inj, libc::CLOCK_MONOTONIC, 0);
        check_gtod(&inj, 0);
        check_time(&inj, 0);
    }
}

// ---- slow reads --------------------------------------------------------------------------

/// With FLAG_SLOW_READS the fakes take the real reading with the system call: the scripted
/// genuine functions return a sentinel a year in the past, which the fakes then replace with
/// the real reading (shifted as usual); without the flag, or for an unselected clock, the
/// sentinel (shifted) is what they return. A failing system call passes its error through.
#[test]
fn fake_clock_slow_reads_take_the_system_call() {
    let sentinel = (1_000_000, 5);
    let off = -600 * S + 250_000_000;
    for slow in [false, true] {
        for prog in [false, true] {
            let mut p = if prog {
                program(0b11, vec![seg(0, 0, RATE_ONE)], None, 0, off)
            } else {
                params(0b11, &[(0, off), (1, off)])
            };
            p.slow_reads = slow;
            let inj = Injected::scripted(&p);
            let what = format!("slow {slow} program {prog}");
            for id in [libc::CLOCK_REALTIME, libc::CLOCK_MONOTONIC] {
                script(0, sentinel.0, sentinel.1);
                let g1 = now(id);
                let (r, ts) = cg(inj.clock_gettime(), id);
                let g2 = now(id);
                assert_eq!(r, 0, "{what}");
                // The genuine code runs first either way (the flag is read after it).
                assert_eq!(SCRIPT.get().calls, 1, "{what}: the genuine is still called");
                let f = ts_ns(&ts);
                if slow {
                    let o = off as i128;
                    assert!(g1 + o <= f && f <= g2 + o, "{what}: clock {id} read {f}");
                } else {
                    let real = sentinel.0 * S + sentinel.1;
                    assert_eq!(f, p.reading(id as usize, real).unwrap() as i128, "{what}");
                }
            }
            // An unselected clock keeps the genuine (sentinel) reading.
            script(0, sentinel.0, sentinel.1);
            let (r, ts) = cg(inj.clock_gettime(), libc::CLOCK_BOOTTIME);
            assert_eq!(
                (r, ts.tv_sec, ts.tv_nsec),
                (0, sentinel.0, sentinel.1),
                "{what}"
            );

            script(0, sentinel.0, sentinel.1);
            let g1 = now_us();
            let mut tz = [0x1234u32, 0x5678];
            let mut tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            };
            let r = inj.gettimeofday()(&mut tv, tz.as_mut_ptr().cast());
            let g2 = now_us();
            assert_eq!(r, 0, "{what}");
            assert_eq!(
                tz,
                [0x1234, 0x5678],
                "{what}: tz is the genuine call's business (the stand-in leaves it)"
            );
            let f = tv_us(&tv);
            let o = (off as i128).div_euclid(1000);
            if slow {
                assert!(g1 + o <= f && f <= g2 + o, "{what}: gettimeofday read {f}");
            } else {
                assert_eq!(
                    f,
                    sentinel.0 as i128 * US + sentinel.1 as i128 + o,
                    "{what}"
                );
            }

            script(0, sentinel.0, sentinel.1);
            let c1 = now(libc::CLOCK_REALTIME_COARSE);
            let got = inj.time()(std::ptr::null_mut());
            let c2 = now(libc::CLOCK_REALTIME_COARSE);
            if slow {
                let (lo, hi) = (
                    (c1 + off as i128).div_euclid(NS) as i64,
                    (c2 + off as i128).div_euclid(NS) as i64,
                );
                assert!(lo <= got && got <= hi, "{what}: time() {got}");
            } else {
                let real = sentinel.0 as i128 * NS + sentinel.1 as i128;
                assert_eq!(got, (real + off as i128).div_euclid(NS) as i64, "{what}");
            }
        }
    }
    // The system call's error passes through: a selected id the kernel does not know.
    let mut p = params(1 << 20, &[(20, S)]);
    p.slow_reads = true;
    let inj = Injected::scripted(&p);
    script(0, sentinel.0, sentinel.1);
    let (r, _) = cg(inj.clock_gettime(), 20);
    assert_eq!(
        r,
        -libc::EINVAL,
        "the syscall's -EINVAL, as the vDSO's fallback returns it"
    );
}

/// The flags word alone decides: slow reads on a slot with neither program nor resolution
/// and a zero offset return the real reading; unknown flag bits change nothing.
#[test]
fn fake_clock_flags_without_a_program_keep_the_constant_path() {
    let off = 3 * S + 1;
    let p = params(0b11, &[(0, off), (1, off)]);
    let mut slot = p.encode_slot();
    let flags = 0x8000_0000u32 | 0x100 | 8;
    slot[layout::SLOT_OFF_FLAGS..][..4].copy_from_slice(&flags.to_le_bytes());
    let inj = Injected::scripted(&Params::default());
    inj.publish_raw(&slot);
    for real in [1_700_000_000 * S + 999_999_999, 5, 3 * S] {
        check_scripted(&inj, &p, &[0, 1, 2], real, "unknown flag bits");
    }
}

// ---- the fast case: a piece at rate 1 or 0, precomputed -------------------------------------

/// Shapes with a fast case (data_page::FastCase) and a few without, for the edge tests.
fn fast_shapes() -> Vec<(&'static str, Vec<Segment>, u64)> {
    vec![
        ("rate 0", vec![seg(0, 0, 0)], 0),
        ("rate 1", vec![seg(0, 0, RATE_ONE)], 0),
        ("rate 0, resolution 15 ms", vec![seg(0, 7, 0)], 15_000_000),
        (
            "rate 1, resolution 1 ms (no fast case)",
            vec![seg(0, 0, RATE_ONE)],
            1_000_000,
        ),
        (
            "history, then rate 0",
            vec![seg(-HOUR_NS, -HOUR_NS, RATE_ONE), seg(0, 3, 0)],
            0,
        ),
        (
            "suspend 10 s",
            vec![seg(0, 0, 0), seg(10 * S, 0, RATE_ONE)],
            0,
        ),
        (
            "slew, then rate 1",
            vec![
                seg(0, 0, rate(1999, 2000)),
                seg(20 * S + 1, 20 * S - 10_000_000, RATE_ONE),
            ],
            0,
        ),
        (
            "unsorted: a later segment shadows an earlier one",
            vec![seg(5 * S, 1, 0), seg(2 * S, 9 * S + 999_999_999, RATE_ONE)],
            0,
        ),
        ("rate 2 (no fast case)", vec![seg(0, 0, rate(2, 1))], 0),
    ]
}

/// Every fast window edge, at whole seconds and a nanosecond either side, on ids with and
/// without windows (11, 12, 31), anchors on and off whole seconds, bases whose nanoseconds
/// carry, a negative base, and deadlines inside the window: exactly the model.
#[test]
fn fake_clock_fast_cases_match_the_model_at_their_edges() {
    let ids = [0, 1, 7, 11, 12, 31];
    let mask = ids.iter().fold(0u32, |m, &id| m | 1 << id);
    for (name, segments, resolution) in fast_shapes() {
        for anchor in [
            1_700_000_000 * S,
            1_700_000_000 * S + 999_999_999,
            50 * S + 1,
        ] {
            for base in [anchor - 600 * S + 999_999_999, anchor + 1, -HOUR_NS - 7] {
                let mut p = program(mask, segments.clone(), None, anchor, base);
                p.resolution_ns = resolution;
                let prog = p.program.clone().unwrap();
                let fast = layout::FastCase::of(&prog, resolution);
                let mut reals = reals_around(anchor);
                if let Some((from, until, _)) = fast.and_then(|f| f.for_clock(&p, &prog, 0)) {
                    reals.extend([from - 1, from, from + 1]);
                    let (sec, _) = split_ns(from);
                    reals.extend([sec * S, sec * S + S - 1, sec * S + S]);
                    if until.abs() < i64::MAX / S {
                        let end = until * S;
                        reals.extend([end - S, end - 1, end, end + 1]);
                    }
                }
                for deadline in [NEVER, anchor + 3 * S + 1, anchor + 3 * S] {
                    let p = with_deadlines(p.clone(), &[(0, deadline), (7, deadline)]);
                    let inj = Injected::scripted(&p);
                    for &real in &reals {
                        check_scripted(&inj, &p, &ids, real, &format!("{name}, base {base}"));
                    }
                }
            }
        }
    }
}

/// The fast case is what answers inside a window (not the general path): a slot whose fast
/// pair is replaced by a marker returns the marker there, and the model outside.
#[test]
fn fake_clock_fast_case_answers_inside_its_window() {
    let anchor = 1_700_000_000 * S + 250_000_000;
    let p = program(
        0b11,
        vec![seg(0, 0, 0), seg(10 * S, 0, RATE_ONE)],
        None,
        anchor,
        5 * S,
    );
    let mut slot = p.encode_slot();
    assert_eq!(
        layout::get_u32(&slot, layout::SLOT_OFF_FAST_KIND),
        layout::FAST_VALUE
    );
    let entry = |id: usize| layout::SLOT_OFF_FAST + id * layout::FAST_ENTRY_LEN;
    let window = |slot: &[u8], id: usize| {
        let at = entry(id);
        (
            layout::get_u64(slot, at + layout::FAST_FROM) as i64,
            layout::get_u64(slot, at + layout::FAST_FROM + 8) as i64,
            layout::get_u64(slot, at + layout::FAST_UNTIL) as i64,
        )
    };
    // The frozen piece [anchor, anchor + 10 s), its end cut to a whole second.
    assert_eq!(
        window(&slot, 1),
        (1_700_000_000, 250_000_000, 1_700_000_010)
    );
    assert_eq!(
        window(&slot, 2),
        (i64::MAX, 0, i64::MIN),
        "unselected: empty"
    );
    let pair = entry(1) + layout::FAST_PAIR;
    slot[pair..pair + 8].copy_from_slice(&77i64.to_le_bytes());
    slot[pair + 8..pair + 16].copy_from_slice(&88i64.to_le_bytes());
    let inj = Injected::scripted(&Params::default());
    inj.publish_raw(&slot);
    for (real, marked) in [
        (anchor - 1, false),
        (anchor, true),
        (1_700_000_009 * S + 999_999_999, true),
        (1_700_000_010 * S, false),
    ] {
        let (sec, nsec) = split_ns(real);
        script(0, sec, nsec);
        let (r, ts) = cg(inj.clock_gettime(), 1);
        assert_eq!(r, 0);
        let want = if marked {
            (77, 88)
        } else {
            want_clock(&p, 1, real)
        };
        assert_eq!((ts.tv_sec, ts.tv_nsec), want, "real {real}");
    }
}

// ---- concurrency: continuous switches never go backwards ------------------------------------

/// A writer switches the monotonic clock between programs of integer rates (0, 1, 2, 3) and
/// constant offsets, each continuous with the one before: the new program starts a few
/// milliseconds in the future at the value the old one reaches then, and its segment 0 (in
/// force until then, from a second before) continues the old line exactly. Between switches it republishes the same
/// parameters in a loop (generation churn). Reader threads read CLOCK_MONOTONIC through the
/// fake: no reading goes backwards, and none jumps further than the fastest rate allows (a
/// torn slot would). Readings whose bracket shows the reader stalled inside the fake are not
/// judged: a new program applied to a real reading taken before the old one's own switch
/// extrapolates differently (inherent: the real reading precedes the parameters).
#[test]
fn fake_clock_program_switches_never_go_backwards() {
    const ID: usize = libc::CLOCK_MONOTONIC as usize;
    const CONST: u64 = u64::MAX;
    // The rate after each switch; CONST (a constant offset) only follows rate 1.
    let cycle = [2, 1, CONST, 0, 1, CONST, 3];
    let start = now(libc::CLOCK_MONOTONIC) as i64;
    let first = params(1 << ID, &[(ID, 1000 * S)]);
    let inj = Injected::with_vdso(&first);
    let stop = AtomicBool::new(false);
    let (switches, late, churn) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let run_for = Duration::from_millis(1500);

    let writer = || {
        let mut current = first.clone();
        let mut prev_rate = 1u64;
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let new_rate = cycle[i % cycle.len()];
            i += 1;
            let t = now(libc::CLOCK_MONOTONIC) as i64 + 3_000_000;
            let v = current.reading(ID, t).unwrap();
            let next = if new_rate == CONST {
                assert_eq!(prev_rate, 1);
                params(1 << ID, &[(ID, v - t)])
            } else {
                let mut p = program(
                    1 << ID,
                    vec![
                        // The old line, a second back (segment 0 stands still before it).
                        seg(-S, -S * prev_rate as i64, prev_rate * RATE_ONE),
                        seg(0, 0, new_rate * RATE_ONE),
                    ],
                    None,
                    t,
                    v,
                );
                // The old line and the new segment 0 agree before t, exactly (integer rates).
                for r in [t - 2_000_000, t - 1, t] {
                    assert_eq!(p.reading(ID, r), current.reading(ID, r));
                }
                p.mask = 1 << ID;
                p
            };
            inj.publish(&next);
            if now(libc::CLOCK_MONOTONIC) as i64 >= t {
                late.fetch_add(1, Ordering::Relaxed);
            }
            while (now(libc::CLOCK_MONOTONIC) as i64) < t + 500_000 {
                inj.publish(&next);
                churn.fetch_add(1, Ordering::Relaxed);
            }
            current = next;
            prev_rate = if new_rate == CONST { 1 } else { new_rate };
            switches.fetch_add(1, Ordering::Relaxed);
        }
    };
    let reader = || {
        let f = inj.clock_gettime();
        let deadline = Instant::now() + run_for;
        let (mut prev_f, mut prev_g) = (i64::MIN, 0i64);
        let mut violations = vec![];
        let mut samples = 0u64;
        while Instant::now() < deadline {
            let g1 = now(libc::CLOCK_MONOTONIC) as i64;
            let (r, ts) = cg(f, libc::CLOCK_MONOTONIC);
            assert_eq!(r, 0);
            assert!((0..S).contains(&ts.tv_nsec));
            let v = ts_ns(&ts) as i64;
            let g2 = now(libc::CLOCK_MONOTONIC) as i64;
            // A reader stalled inside the fake (preempted between its real reading and the
            // parameters) may apply a newer program to an older real reading, where the new
            // program extrapolates its segment 0 backwards: only judged unstalled.
            if prev_f != i64::MIN && g2 - g1 < 500_000 {
                // Fastest rate 3: the value moves at most 3 × the real time that passed.
                let bound = prev_f + 3 * (g2 - prev_g) + 1000;
                if v < prev_f || v > bound {
                    violations.push((prev_f, v, bound));
                }
            }
            prev_f = v;
            prev_g = g1;
            samples += 1;
        }
        (samples, violations)
    };
    let results = std::thread::scope(|s| {
        let w = s.spawn(writer);
        let readers: Vec<_> = (0..3).map(|_| s.spawn(reader)).collect();
        let results: Vec<_> = readers.into_iter().map(|r| r.join()).collect();
        stop.store(true, Ordering::Relaxed);
        w.join().unwrap();
        results
    });
    let late = late.load(Ordering::Relaxed);
    let mut samples = 0;
    for r in results {
        let (n, violations) = r.unwrap_or_else(|e| std::panic::resume_unwind(e));
        samples += n;
        // A publication that landed after its own start time (the writer was preempted for
        // 3 ms) may legitimately show a step; only then is a violation excused.
        assert!(
            violations.is_empty() || late > 0,
            "{} readings out of order or torn, e.g. {:?}",
            violations.len(),
            &violations[..violations.len().min(5)]
        );
    }
    let switches = switches.load(Ordering::Relaxed);
    assert!(switches > 50, "only {switches} switches");
    assert!(
        churn.load(Ordering::Relaxed) > 1000,
        "little generation churn"
    );
    assert!(samples > 10_000, "only {samples} samples");
    assert!(now(libc::CLOCK_MONOTONIC) as i64 > start);
}

/// The constants `fake_clock` derives for the assembly agree with the data page: the
/// reciprocal is `data_page::reciprocal`, the microsecond multiply is floor(n / 1000) at its
/// edges, and the segment field offsets are where `encode_slot` writes start, value and rate.
#[test]
fn fake_clock_derived_constants_match_the_data_page() {
    use crate::fake_clock::{
        NSEC_PER_SEC, NSEC_PER_USEC, NSEC_RECIP, SEG_RATE, SEG_START, SEG_VALUE, USEC_MAGIC,
        USEC_MAGIC_SHIFT,
    };
    assert_eq!(NSEC_RECIP, layout::reciprocal(NSEC_PER_SEC));
    let usec = |n: u64| (n * USEC_MAGIC) >> USEC_MAGIC_SHIFT;
    for k in [0, 1, 2, 499_999, 500_000, 999_998, 999_999] {
        for n in [k * 1000, k * 1000 + 1, k * 1000 + 999] {
            assert_eq!(usec(n), n / NSEC_PER_USEC, "{n}");
        }
    }
    assert_eq!(usec(NSEC_PER_SEC - 1), 999_999);
    let p = program(1, vec![seg(11, 22, 33), seg(44, 55, 66)], None, 0, 0);
    let slot = p.encode_slot();
    let at = |k: usize, f: usize| {
        let o = layout::SLOT_OFF_SEGMENTS + k * layout::SEGMENT_LEN + f;
        layout::get_u64(&slot, o)
    };
    assert_eq!(
        (at(0, SEG_START), at(0, SEG_VALUE), at(0, SEG_RATE)),
        (11, 22, 33)
    );
    assert_eq!(
        (at(1, SEG_START), at(1, SEG_VALUE), at(1, SEG_RATE)),
        (44, 55, 66)
    );
}
