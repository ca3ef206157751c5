//! The blob itself: its header, building the code page, position independence (static, and
//! two live copies at different addresses).

use super::harness::*;
use super::model::*;
use crate::arch::{Entry, PerEntry};
use crate::fake_clock::data_page as layout;
use crate::fake_clock::*;

// ---- header, page building, ABI constants ----------------------------------------------

#[test]
fn fake_clock_header_is_valid() {
    let b = blob();
    assert_eq!(&b.bytes[..8], b"TSKFAKE1");
    assert_eq!(HEADER_LEN, 0x24);
    assert_eq!(b.stub_capacity, STUB_CAPACITY);
    assert_eq!(STUB_CAPACITY, 64);
    for &e in b.entries.values() {
        assert!(e >= HEADER_LEN);
        assert_eq!(e % 16, 0, "entry {e:#x} not 16-byte aligned");
        assert_ne!(b.bytes[e], FILL_BYTE, "entry {e:#x} points at int3 padding");
    }
    let slots = b.stubs.0;
    assert!(slots.is_sorted(), "slots in Entry order");
    for s in slots {
        assert!(
            b.bytes[s..s + b.stub_capacity]
                .iter()
                .all(|&x| x == FILL_BYTE),
            "stub slot {s:#x} not filled with int3"
        );
    }
    assert!(b.bytes.len() <= CODE_PAGE_LEN);
}

#[test]
fn fake_clock_parse_rejects_bad_headers() {
    fn leak(v: Vec<u8>) -> &'static [u8] {
        Box::leak(v.into_boxed_slice())
    }
    let good = blob().bytes.to_vec();
    assert!(parse(leak(good.clone())).is_ok());
    let mut bad = good.clone();
    bad[0] = b'X';
    assert!(parse(leak(bad)).unwrap_err().contains("magic"));
    let mut bad = good.clone();
    bad[0x08..0x0c].copy_from_slice(&0x10_0000u32.to_le_bytes());
    assert!(
        parse(leak(bad))
            .unwrap_err()
            .contains("clock_gettime entry")
    );
    let mut bad = good.clone();
    bad[0x18..0x1c].copy_from_slice(&(good.len() as u32 - 10).to_le_bytes());
    assert!(
        parse(leak(bad))
            .unwrap_err()
            .contains("gettimeofday stub slot")
    );
    let mut bad = good.clone();
    bad[0x20..0x24].copy_from_slice(&(good.len() as u32 - 10).to_le_bytes());
    assert!(parse(leak(bad)).unwrap_err().contains("time stub slot"));
    let mut bad = good.clone();
    bad[0x20..0x24].copy_from_slice(&(0x10u32).to_le_bytes());
    assert!(parse(leak(bad)).unwrap_err().contains("time stub slot"));
    let mut bad = good.clone();
    let overlapping = blob().stubs[Entry::Gettimeofday] as u32 + 63;
    bad[0x20..0x24].copy_from_slice(&overlapping.to_le_bytes());
    let err = parse(leak(bad)).unwrap_err();
    assert!(
        err.contains("gettimeofday and time stub slots overlap"),
        "{err}"
    );
    let mut bad = good.clone();
    bad[0x1c..0x20].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(parse(leak(bad)).is_err());
    assert!(parse(leak(good[..0x10].to_vec())).is_err());
    assert!(parse(leak(good[..0x22].to_vec())).is_err());
    assert!(parse(leak(vec![0xcc; CODE_PAGE_LEN + 1])).is_err());
}

#[test]
fn fake_clock_code_page_places_stubs() {
    let b = blob();
    let s1 = [1u8, 2, 3];
    let s2 = vec![7u8; 64];
    let s3 = [9u8; 10];
    let page = b.code_page(PerEntry([&s1, &s2, &s3])).unwrap();
    assert_eq!(page.len(), CODE_PAGE_LEN);
    assert_eq!(
        &page[..b.stubs[Entry::ClockGettime]],
        &b.bytes[..b.stubs[Entry::ClockGettime]]
    );
    let c = b.stubs[Entry::ClockGettime];
    assert_eq!(&page[c..c + 3], &s1);
    assert!(page[c + 3..c + 64].iter().all(|&x| x == 0xcc));
    let g = b.stubs[Entry::Gettimeofday];
    assert_eq!(&page[g..g + 64], &s2[..]);
    let t = b.stubs[Entry::Time];
    assert_eq!(&page[t..t + 10], &s3);
    assert!(page[t + 10..t + 64].iter().all(|&x| x == 0xcc));
    assert!(page[b.bytes.len()..].iter().all(|&x| x == 0xcc));

    let err = b.code_page(PerEntry([&[0x90; 65], &s1, &s3])).unwrap_err();
    assert!(err.contains("clock_gettime stub is 65 bytes"), "{err}");
    let err = b.code_page(PerEntry([&s1, &[0x90; 65], &s3])).unwrap_err();
    assert!(err.contains("gettimeofday stub is 65 bytes"), "{err}");
    let err = b.code_page(PerEntry([&s1, &s3, &[0x90; 65]])).unwrap_err();
    assert!(err.contains("time stub is 65 bytes"), "{err}");
    assert!(
        b.code_page(PerEntry([&[], &s1, &s3]))
            .unwrap_err()
            .contains("empty")
    );
    let err = b.code_page(PerEntry([&s1, &s3, &[]])).unwrap_err();
    assert!(err.contains("time stub is empty"), "{err}");
}

/// Static proof of position independence: every RIP-relative operand in the code points at
/// the data page (blob start + DATA_PAGE_OFFSET) or its generation word, every branch stays
/// inside the blob, and every call goes to a stub slot or to the blob's own program
/// evaluator (one routine, below the three fakes).
#[test]
fn fake_clock_code_is_position_independent() {
    use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, Mnemonic};
    let b = blob();
    let code_start = *b.entries.values().iter().min().unwrap();
    let code_end = *b.stubs.values().iter().min().unwrap();
    let base = 0x7000_0000_0000u64;
    let mut d = Decoder::with_ip(
        64,
        &b.bytes[code_start..code_end],
        base + code_start as u64,
        DecoderOptions::NONE,
    );
    let (mut rip_rel, mut generation_checks, mut calls, mut syscalls) = (0, 0, 0, 0);
    let mut internal_calls = std::collections::BTreeMap::new();
    let last_entry = *b.entries.values().iter().max().unwrap() as u64;
    for insn in &mut d {
        assert_ne!(
            insn.code(),
            Code::INVALID,
            "undecodable byte at {:#x}",
            insn.ip()
        );
        if insn.is_ip_rel_memory_operand() {
            let at = insn.ip_rel_memory_address();
            if at == base + DATA_PAGE_OFFSET + layout::OFF_GENERATION as u64 {
                generation_checks += 1;
            } else {
                assert_eq!(at, base + DATA_PAGE_OFFSET, "{insn}");
                rip_rel += 1;
            }
        }
        if insn.is_jcc_short_or_near() || insn.is_jmp_short_or_near() || insn.is_call_near() {
            let t = insn.near_branch_target();
            assert!(
                t >= base && t < base + b.bytes.len() as u64,
                "branch leaves the blob: {insn}"
            );
            if insn.is_call_near() {
                if b.stubs.values().contains(&((t - base) as usize)) {
                    calls += 1;
                } else {
                    assert!(
                        t > base + last_entry && t < base + code_end as u64,
                        "call to something other than a stub slot or the evaluator: {insn}"
                    );
                    *internal_calls.entry(t).or_insert(0) += 1;
                }
            }
        } else if matches!(
            insn.flow_control(),
            FlowControl::IndirectBranch | FlowControl::IndirectCall
        ) || insn.is_jmp_far()
            || insn.is_call_far()
        {
            panic!("indirect or far branch in the blob: {insn}");
        }
        if insn.mnemonic() == Mnemonic::Syscall {
            syscalls += 1;
        }
    }
    assert_eq!(rip_rel, 7, "one data-page lea per checked-read loop");
    assert_eq!(
        generation_checks, 8,
        "the evaluating loops and the fast cases of clock_gettime and gettimeofday re-check \
         the generation RIP-relatively"
    );
    assert_eq!(calls, 5, "one stub call per fake, three in time()");
    assert_eq!(
        internal_calls.values().collect::<Vec<_>>(),
        [&3],
        "one evaluator, called once each by clock_gettime, gettimeofday and time"
    );
    assert_eq!(
        syscalls, 4,
        "time()'s fallback and the three slow reads (clock_gettime, gettimeofday, time)"
    );
}

/// The same blob copied to two different addresses, alive at once, each with its own data
/// page: each copy must read its own page.
#[test]
fn fake_clock_copies_at_two_addresses() {
    let a = Injected::with_vdso(&params(0b11, &[(0, HOUR_NS), (1, HOUR_NS)]));
    let b = Injected::with_vdso(&params(0b11, &[(0, -HOUR_NS - 1), (1, -HOUR_NS - 1)]));
    assert_ne!(a.addr(0), b.addr(0));
    for _ in 0..10 {
        for id in [libc::CLOCK_REALTIME, libc::CLOCK_MONOTONIC] {
            check_clock(&a, id, HOUR_NS);
            check_clock(&b, id, -HOUR_NS - 1);
        }
        check_gtod(&a, HOUR_NS as i128 / 1000);
        check_gtod(&b, (-HOUR_NS as i128 - 1).div_euclid(1000));
        check_time(&a, HOUR_NS);
        check_time(&b, -HOUR_NS - 1);
    }
}
