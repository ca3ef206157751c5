//! Exact offset arithmetic against scripted genuine values: carries and signs, every clock
//! id, errors passed through, time()'s two paths and syscall fallback, and deadlines.

use super::harness::*;
use super::model::*;
use crate::fake_clock::data_page::{self as layout, Params};
use std::sync::atomic::Ordering;

// ---- exact arithmetic against scripted genuine values ----------------------------------

pub(super) const OFFSETS: [i64; 10] = [
    -600 * 1_000_000_000,
    2 * HOUR_NS,
    -1_500_000_000,
    999_999_999,
    -1,
    CENTURY_NS,
    -CENTURY_NS,
    0,
    1,
    -999_999_999,
];

fn expected_ns(real: i128, off: i64) -> (i64, i64) {
    let t = real + off as i128;
    (t.div_euclid(NS) as i64, t.rem_euclid(NS) as i64)
}

#[test]
fn fake_clock_scripted_clock_gettime_is_exact() {
    let reals = [
        (1_700_000_000i64, 0i64),
        (1_700_000_000, 1),
        (1_700_000_000, 499_999_999),
        (1_700_000_000, 500_000_000),
        (1_700_000_000, 999_999_999),
        (0, 0),
        (5, 999_999_999),
    ];
    for off in OFFSETS {
        for id in [0, 1, 7, 11, 31] {
            let inj = Injected::scripted(&params(1 << id, &[(id as usize, off)]));
            for &(sec, nsec) in &reals {
                script(0, sec, nsec);
                let (r, ts) = cg(inj.clock_gettime(), id);
                assert_eq!(r, 0);
                let s = SCRIPT.get();
                assert_eq!(
                    (s.calls, s.last_id),
                    (1, id),
                    "genuine called once with the id"
                );
                let want = expected_ns(sec as i128 * NS + nsec as i128, off);
                assert_eq!(
                    (ts.tv_sec, ts.tv_nsec),
                    want,
                    "id {id} real {sec}.{nsec:09} offset {off} ns"
                );
            }
        }
    }
}

#[test]
fn fake_clock_scripted_errors_pass_through() {
    let all = params(
        u32::MAX,
        &(0..32).map(|i| (i, 1_234_567_891)).collect::<Vec<_>>(),
    );
    let inj = Injected::scripted(&all);
    for ret in [-22, -14, -1, 1] {
        script(ret, 123, 456);
        let (r, ts) = cg(inj.clock_gettime(), 0);
        assert_eq!(r, ret);
        assert_eq!(
            (ts.tv_sec, ts.tv_nsec),
            (123, 456),
            "output shifted after an error"
        );

        script(ret, 123, 456);
        let (r, tv) = gtod(inj.gettimeofday());
        assert_eq!(r, ret);
        assert_eq!(
            (tv.tv_sec, tv.tv_usec),
            (123, 456),
            "output shifted after an error"
        );
    }
    // Selected ids above 31 and negative ids are never shifted, even if the mask bit that
    // `id & 31` would pick is set.
    for id in [32, 33, 63, 100, -1, -2, -6, i32::MIN] {
        script(0, 123, 456);
        let (r, ts) = cg(inj.clock_gettime(), id);
        assert_eq!(r, 0);
        assert_eq!((ts.tv_sec, ts.tv_nsec), (123, 456), "clock id {id} shifted");
        assert_eq!(SCRIPT.get().last_id, id);
    }
}

#[test]
fn fake_clock_scripted_gettimeofday_is_exact() {
    for off in OFFSETS {
        let inj = Injected::scripted(&params(1, &[(0, off)]));
        let off_us = (off as i128).div_euclid(1000);
        for (sec, usec) in [
            (1_700_000_000i64, 0i64),
            (1_700_000_000, 1),
            (1_700_000_000, 999_999),
            (3, 500_000),
        ] {
            script(0, sec, usec);
            let mut tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            };
            let mut tz = [0u8; 8];
            let r = inj.gettimeofday()(&mut tv, tz.as_mut_ptr().cast());
            assert_eq!(r, 0);
            let s = SCRIPT.get();
            assert_eq!(s.last_ptr, &raw mut tv as usize, "tv passed through");
            assert_eq!(s.last_tz, tz.as_ptr() as usize, "tz passed through");
            let t = sec as i128 * US + usec as i128 + off_us;
            assert_eq!(
                (tv.tv_sec as i128, tv.tv_usec as i128),
                (t.div_euclid(US), t.rem_euclid(US)),
                "real {sec}.{usec:06} offset {off} ns"
            );
        }
        // tv == NULL (with and without tz): nothing to shift, no crash, genuine result.
        for tz in [std::ptr::null_mut(), 8usize as *mut libc::c_void] {
            script(0, 0, 0);
            let r = inj.gettimeofday()(std::ptr::null_mut(), tz);
            assert_eq!(r, 0);
            assert_eq!(SCRIPT.get().last_tz, tz as usize);
            assert_eq!(SCRIPT.get().calls, 1);
        }
    }
    // Realtime not selected: gettimeofday untouched even with gtod fields set in the slot.
    let mut slot = params(0b10, &[(1, 5 * 1_000_000_000)]).encode_slot();
    slot[layout::SLOT_OFF_GTOD_SEC..][..8].copy_from_slice(&77i64.to_le_bytes());
    slot[layout::SLOT_OFF_GTOD_USEC..][..8].copy_from_slice(&5i64.to_le_bytes());
    let inj = Injected::scripted(&Params::default());
    inj.publish_raw(&slot);
    script(0, 1000, 999_999);
    let (r, tv) = gtod(inj.gettimeofday());
    assert_eq!((r, tv.tv_sec, tv.tv_usec), (0, 1000, 999_999));
}

/// time(): the exact floor of coarse + offset on both paths. A whole-second offset takes the
/// fast path (the genuine time() alone, no clock_gettime); a fractional one reads
/// CLOCK_REALTIME_COARSE. The stand-ins count their calls, so the path taken is checked.
#[test]
fn fake_clock_scripted_time_is_floor_of_coarse_plus_offset() {
    for off in OFFSETS {
        let p = params(1, &[(0, off)]);
        let inj = Injected::scripted(&p);
        let slow = off % 1_000_000_000 != 0;
        for (sec, nsec) in [
            (1_700_000_000i64, 0i64),
            (1_700_000_000, 499_999_999),
            (1_700_000_000, 500_000_000),
            (1_700_000_000, 999_999_999),
            (0, 0),
            (-1, 999_999_999),
        ] {
            let want = expected_ns(sec as i128 * NS + nsec as i128, off).0;
            assert_eq!(want, model_time(sec as i128 * NS + nsec as i128, &p));
            assert_eq!(time_needs_slow_path(sec, &p), slow);
            script(0, sec, nsec);
            assert_eq!(
                inj.time()(std::ptr::null_mut()),
                want,
                "real {sec}.{nsec:09} offset {off}"
            );
            let s = SCRIPT.get();
            assert_eq!(s.time_calls, 1, "genuine time() called once");
            assert_eq!(
                s.last_tloc, 0,
                "genuine time() gets NULL, never the caller's tloc"
            );
            assert_eq!(
                s.calls,
                slow as u32,
                "offset {off}: {} path expected",
                if slow { "slow" } else { "fast" }
            );
            if slow {
                assert_eq!(s.last_id, libc::CLOCK_REALTIME_COARSE);
            }
            script(0, sec, nsec);
            let mut t: libc::time_t = 42;
            assert_eq!(inj.time()(&mut t), want);
            assert_eq!(t, want, "*tloc");
            assert_eq!(SCRIPT.get().last_tloc, 0);
        }
    }
    // Realtime not selected: the genuine seconds, unshifted, even with clocks[0] non-zero
    // (also fractional: the fast path must not look at the offset at all).
    for nsec in [0i64, 5] {
        let mut slot = params(0b10, &[(1, 5 * 1_000_000_000)]).encode_slot();
        slot[layout::SLOT_OFF_CLOCKS..][..8].copy_from_slice(&77i64.to_le_bytes());
        slot[layout::SLOT_OFF_CLOCKS + 8..][..8].copy_from_slice(&nsec.to_le_bytes());
        let inj = Injected::scripted(&Params::default());
        inj.publish_raw(&slot);
        script(0, 1000, 999_999_999);
        assert_eq!(inj.time()(std::ptr::null_mut()), 1000);
        assert_eq!((SCRIPT.get().calls, SCRIPT.get().time_calls), (0, 1));
    }
}

/// time()'s summary word (data_page::time_word): answered from when its tag is the current
/// generation's, ignored when a writer published a slot without it (died before it, or an
/// older timeskew) — then the slot decides.
#[test]
fn fake_clock_time_answers_from_its_word_only_while_its_tag_is_current() {
    let inj = Injected::scripted(&params(1, &[(0, 3 * HOUR_NS)]));
    script(0, 1000, 0);
    assert_eq!(inj.time()(std::ptr::null_mut()), 1000 + 3 * 3600);
    // A word that says otherwise than the slot, with the current tag (0): it is what answers,
    // with no look at the slot.
    let forged = 777u64 << layout::TIME_WORD_TAG_BITS; // tag 0
    inj.word(layout::OFF_TIME_WORD)
        .store(forged, Ordering::Release);
    let mut t: libc::time_t = 0;
    assert_eq!(inj.time()(&mut t), 1777);
    assert_eq!(t, 1777, "*tloc");
    // A slot published without its word: the stale tag sends time() to the slot.
    let next = inj.publish_raw_without_time_word(&params(1, &[(0, -5_000_000_000)]).encode_slot());
    assert_eq!(next, 1);
    assert_eq!(inj.time()(std::ptr::null_mut()), 995);
    // ...and a published word takes over again.
    inj.publish(&params(1, &[(0, 60_000_000_000)]));
    assert_eq!(
        inj.word(layout::OFF_TIME_WORD).load(Ordering::Acquire)
            & ((1 << layout::TIME_WORD_TAG_BITS) - 1),
        2
    );
    assert_eq!(inj.time()(std::ptr::null_mut()), 1060);
    // A word whose tag agrees with the generation in its low 16 bits only (2^16 publications
    // ago) is stale too: the whole 32-bit tag is compared.
    let old = (777u64 << layout::TIME_WORD_TAG_BITS) | (2 + (1 << 16));
    inj.word(layout::OFF_TIME_WORD)
        .store(old, Ordering::Release);
    assert_eq!(inj.time()(std::ptr::null_mut()), 1060);
    assert_eq!((SCRIPT.get().calls, SCRIPT.get().time_calls), (0, 5));
}

#[test]
fn fake_clock_time_falls_back_to_the_time_syscall() {
    // A fractional offset forces the slow path, whose clock_gettime fails.
    let inj = Injected::scripted(&params(1, &[(0, 3 * HOUR_NS + 1)]));
    script(-22, 1, 2);
    // SAFETY: time(NULL) has no preconditions.
    let before = unsafe { libc::time(std::ptr::null_mut()) };
    let mut t: libc::time_t = 0;
    let got = inj.time()(&mut t);
    // SAFETY: as above.
    let after = unsafe { libc::time(std::ptr::null_mut()) };
    assert!(
        before <= got && got <= after,
        "{before} <= {got} <= {after}"
    );
    assert_eq!(t, got);
    assert_eq!((SCRIPT.get().calls, SCRIPT.get().time_calls), (1, 1));
    // The same failure on the fast path is never seen: clock_gettime is not called.
    let inj = Injected::scripted(&params(1, &[(0, 3 * HOUR_NS)]));
    script(-22, 1, 2);
    assert_eq!(inj.time()(std::ptr::null_mut()), 1 + 3 * 3600);
    assert_eq!((SCRIPT.get().calls, SCRIPT.get().time_calls), (0, 1));
}

// ---- deadlines (the dead man's switch), exact against scripted genuine values ----------

/// Deadlines around the scripted real value 1000.5 s, as `expires_ns`.
pub(super) const REAL_SEC: i64 = 1000;
pub(super) const REAL_NSEC: i64 = 500_000_000;
pub(super) const REAL_NS: i64 = REAL_SEC * 1_000_000_000 + REAL_NSEC;
pub(super) const DEADLINES: [i64; 14] = [
    layout::NEVER,
    i64::MAX - 1, // a real deadline far away, not "none"
    REAL_NS + 3600 * 1_000_000_000,
    (REAL_SEC + 1) * 1_000_000_000, // the next second
    REAL_NS + 1,                    // same second, one nanosecond later
    REAL_NS + 999,                  // same second, below the next microsecond
    REAL_NS + 1000,
    REAL_NS, // exactly at the deadline: expired
    REAL_NS - 1,
    REAL_SEC * 1_000_000_000, // same second, its start
    REAL_SEC * 1_000_000_000 - 1,
    0,
    -5,
    i64::MIN,
];

#[test]
fn fake_clock_scripted_clock_gettime_deadlines_are_exact() {
    for off in [2 * HOUR_NS + 250_000_000, -600 * 1_000_000_000, -1] {
        for id in [0usize, 1, 5, 7, 31] {
            for d in DEADLINES {
                // Every other clock's deadline is in the past: only deadlines[id] counts.
                let others: Vec<_> = (0..32).filter(|&i| i != id).map(|i| (i, 0)).collect();
                let p = with_deadlines(params(1 << id, &[(id, off)]), &others);
                let p = with_deadlines(p, &[(id, d)]);
                let inj = Injected::scripted(&p);
                for (sec, nsec) in [
                    (REAL_SEC, REAL_NSEC),
                    (REAL_SEC, REAL_NSEC + 1),
                    (REAL_SEC, REAL_NSEC - 1),
                    (REAL_SEC, 0),
                    (REAL_SEC, 999_999_999),
                    (REAL_SEC - 1, 999_999_999),
                    (REAL_SEC + 1, 0),
                    (-1, 999_999_999),
                    (-5, 0),
                ] {
                    script(0, sec, nsec);
                    let (r, ts) = cg(inj.clock_gettime(), id as libc::clockid_t);
                    assert_eq!(r, 0);
                    let real = sec as i128 * NS + nsec as i128;
                    let want = model_clock(real, &p, id);
                    assert_eq!(
                        ts_ns(&ts),
                        want,
                        "id {id} real {sec}.{nsec:09} offset {off} deadline {d}"
                    );
                    assert!((0..1_000_000_000).contains(&ts.tv_nsec));
                }
            }
        }
    }
}

#[test]
fn fake_clock_scripted_gettimeofday_deadlines_are_exact() {
    for off in [2 * HOUR_NS + 250_000_000, -600 * 1_000_000_000, -1] {
        for d in DEADLINES {
            // gettimeofday follows deadlines[0] alone.
            let others: Vec<_> = (1..32).map(|i| (i, 0)).collect();
            let p = with_deadlines(params(0b11, &[(0, off), (1, off)]), &others);
            let p = with_deadlines(p, &[(0, d)]);
            let inj = Injected::scripted(&p);
            for (sec, usec) in [
                (REAL_SEC, 500_000i64),
                (REAL_SEC, 500_001),
                (REAL_SEC, 499_999),
                (REAL_SEC, 0),
                (REAL_SEC, 999_999),
                (REAL_SEC - 1, 999_999),
                (REAL_SEC + 1, 0),
                (-5, 0),
            ] {
                script(0, sec, usec);
                let (r, tv) = gtod(inj.gettimeofday());
                assert_eq!(r, 0);
                let want = model_gtod(sec as i128 * US + usec as i128, &p);
                assert_eq!(
                    tv_us(&tv),
                    want,
                    "real {sec}.{usec:06} offset {off} deadline {d}"
                );
                assert!((0..1_000_000).contains(&tv.tv_usec));
            }
        }
    }
}

#[test]
fn fake_clock_scripted_time_deadlines_are_exact_and_take_the_right_path() {
    for off in [
        -600 * 1_000_000_000,
        2 * HOUR_NS,
        2 * HOUR_NS + 600_000_000,
        -1,
        0,
    ] {
        for d in DEADLINES {
            let others: Vec<_> = (1..32).map(|i| (i, 0)).collect();
            let p = with_deadlines(params(0b11, &[(0, off), (1, off)]), &others);
            let p = with_deadlines(p, &[(0, d)]);
            let inj = Injected::scripted(&p);
            for (sec, nsec) in [
                (REAL_SEC, REAL_NSEC),
                (REAL_SEC, REAL_NSEC - 1),
                (REAL_SEC, 0),
                (REAL_SEC, 999_999_999),
                (REAL_SEC - 1, 999_999_999),
                (REAL_SEC + 1, 0),
                (-1, 999_999_999),
            ] {
                script(0, sec, nsec);
                let got = inj.time()(std::ptr::null_mut());
                let want = model_time(sec as i128 * NS + nsec as i128, &p);
                let what = format!("real {sec}.{nsec:09} offset {off} deadline {d}");
                assert_eq!(got, want, "{what}");
                let s = SCRIPT.get();
                let slow = time_needs_slow_path(sec, &p);
                assert_eq!((s.time_calls, s.calls), (1, slow as u32), "{what}: path");
            }
        }
    }
}
