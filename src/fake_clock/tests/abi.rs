//! The C ABI: stack depth and alignment at the inner call, callee-saved registers, and
//! genuine functions that use every freedom the ABI gives them (clobbered registers, garbage
//! in the upper half of rax, a scribbled red zone).

use super::arithmetic::{DEADLINES, REAL_NS};
use super::harness::*;
use super::model::*;
use crate::arch::Entry;
use crate::fake_clock::data_page::Params;

/// Stack use and ABI: the fakes' own frame is 24 bytes (+8 for the inner call's return
/// address), 8 bytes on time()'s fast path; the genuine function is entered with the usual
/// alignment (rsp = 8 mod 16), and the callee-saved registers survive — for time() on both
/// of its paths, each of its two inner calls.
#[test]
fn fake_clock_stack_depth_alignment_and_preserved_registers() {
    // Stubs that store their entry rsp into the output's first field and return 0:
    // clock_gettime: mov [rsi], rsp; mov qword [rsi+8], 0; xor eax, eax; ret
    let cg_stub = [
        0x48, 0x89, 0x26, 0x48, 0xc7, 0x46, 0x08, 0, 0, 0, 0, 0x31, 0xc0, 0xc3,
    ];
    // gettimeofday: mov [rdi], rsp; mov qword [rdi+8], 0; xor eax, eax; ret
    let gtod_stub = [
        0x48, 0x89, 0x27, 0x48, 0xc7, 0x47, 0x08, 0, 0, 0, 0, 0x31, 0xc0, 0xc3,
    ];
    // time: mov rax, rsp; ret (the "seconds" are the entry rsp)
    let time_stub = [0x48, 0x89, 0xe0, 0xc3];
    let inj = Injected::with_stubs(
        &cg_stub,
        &gtod_stub,
        &time_stub,
        &data_page(&Params::default()),
    );

    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let (r, rsp, ok) = probe(
        inj.addr(inj.blob.entries[Entry::ClockGettime]),
        1,
        &raw mut ts as usize,
    );
    assert!(ok, "clock_gettime clobbered a callee-saved register");
    assert_eq!(r, 0);
    assert_eq!(rsp % 16, 0);
    assert_eq!(
        ts.tv_sec % 16,
        8,
        "genuine clock_gettime entered with a misaligned stack"
    );
    assert_eq!(
        rsp - ts.tv_sec as u64,
        40,
        "clock_gettime: 8 (ret) + 24 (frame) + 8 (inner ret)"
    );

    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let (r, rsp, ok) = probe(
        inj.addr(inj.blob.entries[Entry::Gettimeofday]),
        &raw mut tv as usize,
        0,
    );
    assert!(ok, "gettimeofday clobbered a callee-saved register");
    assert_eq!(r, 0);
    assert_eq!(rsp - tv.tv_sec as u64, 40, "gettimeofday stack depth");

    // time(), fast path (realtime not selected): it returns what the time stub returned,
    // the stub's entry rsp. Its frame is one push.
    let (r, rsp, ok) = probe(inj.addr(inj.blob.entries[Entry::Time]), 0, 0);
    assert!(ok, "time (fast path) clobbered a callee-saved register");
    assert_eq!(r % 16, 8, "genuine time entered with a misaligned stack");
    assert_eq!(
        rsp - r,
        24,
        "time (fast path): 8 (ret) + 8 (frame) + 8 (inner ret)"
    );
    // The same with realtime selected, a whole-second offset of 0 and no deadline: still
    // the fast path, the value passes the whole computation unchanged.
    inj.publish(&params(1, &[(0, 0)]));
    let mut t: u64 = 0;
    let (r, rsp, ok) = probe(
        inj.addr(inj.blob.entries[Entry::Time]),
        &raw mut t as usize,
        0,
    );
    assert!(ok);
    assert_eq!(rsp - r, 24, "time (fast path, selected) stack depth");
    assert_eq!(t, r, "*tloc");
    // Slow path (fractional offset): it returns floor(coarse + 0.5 s) where the
    // clock_gettime stub stored its entry rsp as the seconds and 0 ns.
    inj.publish(&params(1, &[(0, 500_000_000)]));
    let mut t: u64 = 0;
    let (r, rsp, ok) = probe(
        inj.addr(inj.blob.entries[Entry::Time]),
        &raw mut t as usize,
        0,
    );
    assert!(ok, "time (slow path) clobbered a callee-saved register");
    assert_eq!(
        r % 16,
        8,
        "genuine clock_gettime entered with a misaligned stack"
    );
    assert_eq!(rsp - r, 40, "time (slow path) stack depth");
    assert_eq!(t, r, "*tloc");
}

/// Calls `f(a0, a1)` with rbx, rbp, r12-r15 set to sentinels; returns (rax, rsp before
/// the call, whether all sentinels survived).
/// Calls `f(a0)` and says what it returned and whether the callee-saved registers survived.
pub(super) fn probe_preserved(f: usize, a0: usize) -> (u64, bool) {
    let (r, _, ok) = probe(f, a0, 0);
    (r, ok)
}

fn probe(f: usize, a0: usize, a1: usize) -> (u64, u64, bool) {
    let (ret, rsp, ok): (u64, u64, u64);
    // SAFETY: calls a fake from the test's code page with valid arguments; rbx and rbp
    // are saved and restored around the call (two pushes keep the 16-byte alignment
    // Rust guarantees on entry to the asm block); everything else the C ABI lets the
    // callee clobber is declared clobbered.
    unsafe {
        std::arch::asm!(
            "push rbx",
            "push rbp",
            "mov rbx, 0x1111",
            "mov rbp, 0x2222",
            "mov r13, 0x4444",
            "mov r14, 0x5555",
            "mov r15, 0x6666",
            "mov r12, rsp",
            "call rax",
            "xor edx, edx",
            "cmp rbx, 0x1111", "jne 2f",
            "cmp rbp, 0x2222", "jne 2f",
            "cmp r13, 0x4444", "jne 2f",
            "cmp r14, 0x5555", "jne 2f",
            "cmp r15, 0x6666", "jne 2f",
            "mov edx, 1",
            "2:",
            "pop rbp",
            "pop rbx",
            // f in rax, not in(reg): a register class operand may be given rbx or
            // rbp (no frame pointer in release builds), which the sentinels
            // overwrite before the call.
            inout("rax") f => ret,
            out("r12") rsp,
            lateout("rdx") ok,
            out("r13") _,
            in("rdi") a0,
            in("rsi") a1,
            out("r14") _,
            out("r15") _,
            clobber_abi("C"),
        );
    }
    (ret, rsp, ok == 1)
}

/// The program paths (clock program, strobe, resolution) keep the same ABI: callee-saved
/// registers survive, the genuine function is entered with the stack aligned and no deeper than
/// on the constant path (8 return + 24 frame + 8 inner return), and `.Lprogram`, called after the
/// frame is released (or from inside time()'s), goes no deeper either.
#[test]
fn fake_clock_program_paths_keep_the_abi() {
    use crate::fake_clock::data_page::{Program, RATE_ONE, Segment, Strobe};
    use std::sync::atomic::{AtomicU64, Ordering};
    static ENTRY_RSP: AtomicU64 = AtomicU64::new(0);
    let at = ENTRY_RSP.as_ptr() as u64;
    // movabs rax, &ENTRY_RSP; mov [rax], rsp — then the stub's own job.
    let record = |rest: &[u8]| -> Vec<u8> {
        let mut code = vec![0x48, 0xb8];
        code.extend_from_slice(&at.to_le_bytes());
        code.extend_from_slice(&[0x48, 0x89, 0x20]);
        code.extend_from_slice(rest);
        code
    };
    // mov qword [rsi], 1000; mov qword [rsi+8], 0; xor eax, eax; ret
    let cg = record(&[
        0x48, 0xc7, 0x06, 0xe8, 0x03, 0, 0, 0x48, 0xc7, 0x46, 0x08, 0, 0, 0, 0, 0x31, 0xc0, 0xc3,
    ]);
    // mov qword [rdi], 1000; mov qword [rdi+8], 0; xor eax, eax; ret
    let gtod = record(&[
        0x48, 0xc7, 0x07, 0xe8, 0x03, 0, 0, 0x48, 0xc7, 0x47, 0x08, 0, 0, 0, 0, 0x31, 0xc0, 0xc3,
    ]);
    // mov eax, 1000; ret
    let time = record(&[0xb8, 0xe8, 0x03, 0, 0, 0xc3]);
    let mut p = Params {
        mask: 0b11,
        resolution_ns: 1_000_000,
        program: Some(Program {
            segments: vec![
                Segment {
                    start_ns: -1_000_000_000,
                    value_ns: -1_000_000_000,
                    rate: RATE_ONE,
                },
                Segment {
                    start_ns: 0,
                    value_ns: 0,
                    rate: 2 * RATE_ONE,
                },
            ],
            strobe: Some(Strobe {
                period_ns: 250_000_000,
                delta_ns: 1_000_000_000,
            }),
            anchors_ns: [0; 32],
            bases_ns: [0; 32],
        }),
        ..Params::default()
    };
    if let Some(prog) = p.program.as_mut() {
        prog.anchors_ns[0] = 999_000_000_000;
        prog.bases_ns[0] = 999_000_000_000;
        prog.anchors_ns[1] = 999_000_000_000;
        prog.bases_ns[1] = 5_000_000_000_000;
    }
    let inj = Injected::with_stubs(&cg, &gtod, &time, &data_page(&p));
    let depth = |rsp: u64, what: &str| {
        let entry = ENTRY_RSP.swap(0, Ordering::Relaxed);
        assert_ne!(entry, 0, "{what}: the genuine function was not called");
        assert_eq!(
            entry % 16,
            8,
            "{what}: genuine entered with a misaligned stack"
        );
        assert_eq!(
            rsp - entry,
            40,
            "{what}: 8 (ret) + 24 (frame) + 8 (inner ret)"
        );
    };
    for id in [0usize, 1] {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let (r, rsp, ok) = probe(
            inj.addr(inj.blob.entries[Entry::ClockGettime]),
            id,
            &raw mut ts as usize,
        );
        assert!(
            ok,
            "clock_gettime({id}) under a program clobbered a callee-saved register"
        );
        assert_eq!(r, 0);
        assert_eq!(rsp % 16, 0);
        depth(rsp, "clock_gettime");
        let want = p.reading(id, 1_000_000_000_000).unwrap();
        assert_eq!(
            ts.tv_sec * 1_000_000_000 + ts.tv_nsec,
            want,
            "clock_gettime({id}) under the program"
        );
    }
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let (r, rsp, ok) = probe(
        inj.addr(inj.blob.entries[Entry::Gettimeofday]),
        &raw mut tv as usize,
        0,
    );
    assert!(
        ok,
        "gettimeofday under a program clobbered a callee-saved register"
    );
    assert_eq!(r, 0);
    depth(rsp, "gettimeofday");
    // time(): the program path reads CLOCK_REALTIME_COARSE through the clock_gettime stub
    // from inside its frame.
    let mut t: u64 = 0;
    let (r, rsp, ok) = probe(
        inj.addr(inj.blob.entries[Entry::Time]),
        &raw mut t as usize,
        0,
    );
    assert!(ok, "time under a program clobbered a callee-saved register");
    depth(rsp, "time");
    assert_eq!(t, r, "*tloc");
    assert_eq!(
        r as i64,
        p.reading(0, 1_000_000_000_000).unwrap() / 1_000_000_000
    );
}

// ---- genuine functions that use every freedom the C ABI gives them -------------------

/// clock_gettime stand-in: writes 1000.5 s, then returns 0 in eax with garbage in the upper
/// half of rax, every other caller-saved register overwritten and its red zone scribbled
/// over. A fake that kept anything in a caller-saved register across the call, or looked
/// at more than eax, would go wrong.
#[unsafe(naked)]
extern "C" fn hostile_clock_gettime(_id: libc::clockid_t, _ts: *mut libc::timespec) -> libc::c_int {
    core::arch::naked_asm!(
        "mov qword ptr [rsi], 1000",
        "mov qword ptr [rsi + 8], 500000000",
        "mov rcx, -1",
        "mov rdx, -1",
        "mov rsi, -1",
        "mov rdi, -1",
        "mov r8, -1",
        "mov r9, -1",
        "mov r10, -1",
        "mov r11, -1",
        "mov qword ptr [rsp - 8], -1",
        "mov qword ptr [rsp - 16], -1",
        "mov qword ptr [rsp - 64], -1",
        "mov qword ptr [rsp - 128], -1",
        "movabs rax, 0x7ead00000000",
        "ret",
    )
}

/// gettimeofday stand-in: 1000.500000 s, then the same abuse.
#[unsafe(naked)]
extern "C" fn hostile_gettimeofday(_tv: *mut libc::timeval, _tz: *mut libc::c_void) -> libc::c_int {
    core::arch::naked_asm!(
        "mov qword ptr [rdi], 1000",
        "mov qword ptr [rdi + 8], 500000",
        "mov rcx, -1",
        "mov rdx, -1",
        "mov rsi, -1",
        "mov rdi, -1",
        "mov r8, -1",
        "mov r9, -1",
        "mov r10, -1",
        "mov r11, -1",
        "mov qword ptr [rsp - 8], -1",
        "mov qword ptr [rsp - 16], -1",
        "mov qword ptr [rsp - 64], -1",
        "mov qword ptr [rsp - 128], -1",
        "movabs rax, 0x7ead00000000",
        "ret",
    )
}

/// time stand-in: 1000, then the same abuse (rax is the whole time_t here).
#[unsafe(naked)]
extern "C" fn hostile_time(_tloc: *mut libc::time_t) -> libc::time_t {
    core::arch::naked_asm!(
        "mov rcx, -1",
        "mov rdx, -1",
        "mov rsi, -1",
        "mov rdi, -1",
        "mov r8, -1",
        "mov r9, -1",
        "mov r10, -1",
        "mov r11, -1",
        "mov qword ptr [rsp - 8], -1",
        "mov qword ptr [rsp - 16], -1",
        "mov qword ptr [rsp - 64], -1",
        "mov qword ptr [rsp - 128], -1",
        "mov eax, 1000",
        "ret",
    )
}

#[test]
fn fake_clock_hostile_genuine_functions() {
    let inj = Injected::with_stubs(
        &abs_jump(hostile_clock_gettime as *const () as usize),
        &abs_jump(hostile_gettimeofday as *const () as usize),
        &abs_jump(hostile_time as *const () as usize),
        &data_page(&Params::default()),
    );
    for off in [0, -600 * 1_000_000_000, 2 * HOUR_NS + 600_000_000, -1] {
        for d in DEADLINES {
            for mask in [0b11u32, 0b10, 0b01, 0] {
                let p = with_deadlines(params(mask, &[(0, off), (1, off)]), &[(0, d), (1, d)]);
                inj.publish(&p);
                let what = format!("mask {mask:#b} offset {off} deadline {d}");
                for id in [0, 1] {
                    let (r, ts) = cg(inj.clock_gettime(), id);
                    assert_eq!(r, 0, "{what}");
                    assert_eq!(ts_ns(&ts), model_clock(REAL_NS as i128, &p, id as usize));
                }
                let (r, tv) = gtod(inj.gettimeofday());
                assert_eq!(r, 0, "{what}");
                assert_eq!(tv_us(&tv), model_gtod(REAL_NS as i128 / 1000, &p), "{what}");
                let mut t: libc::time_t = 0;
                let want = model_time(REAL_NS as i128, &p);
                assert_eq!(inj.time()(&mut t), want, "{what}");
                assert_eq!(t, want, "{what}: *tloc");
            }
        }
    }
}
