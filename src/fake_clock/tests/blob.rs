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
    assert_eq!(HEADER_LEN, 0x34);
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
    // The inlining time(): `mov rsi, rdi; xor edi, edi`, then the body slot (int3 until
    // filled), then where the body continues: `mov rdi, rsi` and the calling fake's code.
    assert_eq!(b.time_inline % 16, 0);
    assert_eq!(
        &b.bytes[b.time_inline..b.time_inline + 5],
        &[0x48, 0x89, 0xfe, 0x31, 0xff]
    );
    assert_eq!(b.time_body, b.time_inline + 5);
    assert_eq!(b.time_body_done, b.time_body + b.stub_capacity);
    assert!(
        b.bytes[b.time_body..b.time_body_done]
            .iter()
            .all(|&x| x == FILL_BYTE)
    );
    assert_eq!(
        &b.bytes[b.time_body_done..b.time_body_done + 3],
        &[0x48, 0x89, 0xf7]
    );
}

#[test]
fn fake_clock_time_body_is_placed_and_chooses_the_detour() {
    let b = blob();
    let stubs = [[1u8; 6], [2u8; 6], [3u8; 6]];
    let stubs = PerEntry([&stubs[0][..], &stubs[1][..], &stubs[2][..]]);
    let without = b.code_page(stubs, None).unwrap();
    assert!(
        without[b.time_body..b.time_body_done]
            .iter()
            .all(|&x| x == FILL_BYTE)
    );
    assert_eq!(b.detour(Entry::Time, &without), b.entries[Entry::Time]);
    let body = [0x31u8, 0xc0, 0xeb, 0x00];
    let with = b.code_page(stubs, Some(&body)).unwrap();
    assert_eq!(&with[b.time_body..b.time_body + 4], &body);
    assert!(
        with[b.time_body + 4..b.time_body_done]
            .iter()
            .all(|&x| x == FILL_BYTE)
    );
    assert_eq!(b.detour(Entry::Time, &with), b.time_inline);
    for e in [Entry::ClockGettime, Entry::Gettimeofday] {
        assert_eq!(b.detour(e, &with), b.entries[e]);
    }
    let err = b.code_page(stubs, Some(&[0x90; 65])).unwrap_err();
    assert!(err.contains("time body is 65 bytes"), "{err}");
    assert!(b.code_page(stubs, Some(&[])).is_err());
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
    bad[0x24..0x28].copy_from_slice(&(good.len() as u32 - 4).to_le_bytes());
    assert!(
        parse(leak(bad))
            .unwrap_err()
            .contains("registration helper")
    );
    let mut bad = good.clone();
    bad[0x28..0x2c].copy_from_slice(&(good.len() as u32).to_le_bytes());
    assert!(
        parse(leak(bad))
            .unwrap_err()
            .contains("inlining time entry")
    );
    let mut bad = good.clone();
    bad[0x2c..0x30].copy_from_slice(&(blob().time_body as u32 + 1).to_le_bytes());
    let err = parse(leak(bad)).unwrap_err();
    assert!(err.contains("past where it continues"), "{err}");
    let mut bad = good.clone();
    let gtod = blob().stubs[Entry::Gettimeofday] as u32;
    bad[0x2c..0x30].copy_from_slice(&gtod.to_le_bytes());
    bad[0x30..0x34].copy_from_slice(&(gtod + 64).to_le_bytes());
    let err = parse(leak(bad)).unwrap_err();
    assert!(
        err.contains("gettimeofday and time body stub slots overlap"),
        "{err}"
    );
    let mut bad = good.clone();
    bad[0x30..0x34].copy_from_slice(&(good.len() as u32).to_le_bytes());
    assert!(parse(leak(bad)).unwrap_err().contains("outside the blob"));
    let mut bad = good.clone();
    bad[0x1c..0x20].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(parse(leak(bad)).is_err());
    assert!(parse(leak(good[..0x10].to_vec())).is_err());
    assert!(parse(leak(good[..0x26].to_vec())).is_err());
    assert!(parse(leak(vec![0xcc; CODE_PAGE_LEN + 1])).is_err());
}

#[test]
fn fake_clock_code_page_places_stubs() {
    let b = blob();
    let s1 = [1u8, 2, 3];
    let s2 = vec![7u8; 64];
    let s3 = [9u8; 10];
    let page = b.code_page(PerEntry([&s1, &s2, &s3]), None).unwrap();
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

    let err = b
        .code_page(PerEntry([&[0x90; 65], &s1, &s3]), None)
        .unwrap_err();
    assert!(err.contains("clock_gettime stub is 65 bytes"), "{err}");
    let err = b
        .code_page(PerEntry([&s1, &[0x90; 65], &s3]), None)
        .unwrap_err();
    assert!(err.contains("gettimeofday stub is 65 bytes"), "{err}");
    let err = b
        .code_page(PerEntry([&s1, &s3, &[0x90; 65]]), None)
        .unwrap_err();
    assert!(err.contains("time stub is 65 bytes"), "{err}");
    assert!(
        b.code_page(PerEntry([&[], &s1, &s3]), None)
            .unwrap_err()
            .contains("empty")
    );
    let err = b.code_page(PerEntry([&s1, &s3, &[]]), None).unwrap_err();
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
    let mut time_words = 0;
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
            } else if at == base + DATA_PAGE_OFFSET + layout::OFF_TIME_WORD as u64 {
                time_words += 1;
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
        generation_checks, 9,
        "the evaluating loops and the fast cases of clock_gettime and gettimeofday re-check \
         the generation RIP-relatively, and time() reads it beside its summary word"
    );
    assert_eq!(time_words, 1, "time()'s summary word, read once");
    assert_eq!(calls, 5, "one stub call per fake, three in time()");
    assert_eq!(
        internal_calls.values().collect::<Vec<_>>(),
        [&3],
        "one evaluator, called once each by clock_gettime, gettimeofday and time"
    );
    assert_eq!(
        syscalls, 7,
        "time()'s fallback, the three slow reads (clock_gettime, gettimeofday, time) and the \
         registration helper's three (clone, membarrier, exit)"
    );
}

/// The registration helper is what the live path sends a thread to: the `syscall` the worker
/// runs clone at, then membarrier registration, exit with the errno, and a `ud2` that is never
/// reached — no stack, no memory, no branch, exactly REGISTER_HELPER_LEN bytes.
#[test]
fn registration_helper_registers_and_exits_without_touching_memory() {
    use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};
    let b = blob();
    let code = &b.bytes[b.register_helper..][..REGISTER_HELPER_LEN];
    let insns: Vec<_> = Decoder::new(64, code, DecoderOptions::NONE)
        .into_iter()
        .collect();
    let names: Vec<Mnemonic> = insns.iter().map(|i| i.mnemonic()).collect();
    use Mnemonic::*;
    assert_eq!(
        names,
        [
            Syscall, Mov, Mov, Xor, Xor, Syscall, Neg, Mov, Mov, Syscall, Ud2
        ]
    );
    assert_eq!(
        insns.iter().map(|i| i.len()).sum::<usize>(),
        REGISTER_HELPER_LEN
    );
    assert!(
        insns
            .iter()
            .all(|i| !i.op_kinds().any(|k| k == OpKind::Memory))
    );
    let imm = |i: &iced_x86::Instruction, reg: Register| {
        assert_eq!(i.op0_register(), reg, "{i}");
        i.immediate32() as i64
    };
    assert_eq!(imm(&insns[1], Register::EAX), libc::SYS_membarrier);
    assert_eq!(
        imm(&insns[2], Register::EDI),
        i64::from(libc::MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE)
    );
    assert_eq!(imm(&insns[8], Register::EAX), libc::SYS_exit);
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
