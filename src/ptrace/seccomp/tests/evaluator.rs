//! The interpreter on hand-written filters, and the refusal messages.

use super::*;

#[test]
fn seccomp_data_layout() {
    let c = PlannedSyscall {
        name: "x",
        nr: 9,
        args: [1, 2, 3, 4, 5, 0x0102_0304_0506_0708],
        ip: 0x1122_3344_5566_7788,
    };
    // Checked against libc's struct layout: same size, fields where the kernel puts them.
    assert_eq!(std::mem::size_of::<libc::seccomp_data>(), SECCOMP_DATA_LEN);
    let d = seccomp_data(&c);
    assert_eq!(&d[0..4], &9i32.to_le_bytes());
    assert_eq!(&d[4..8], &AUDIT_ARCH_NATIVE.to_le_bytes());
    assert_eq!(&d[8..16], &0x1122_3344_5566_7788u64.to_le_bytes());
    assert_eq!(&d[56..64], &0x0102_0304_0506_0708u64.to_le_bytes());
    let load = |off| eval(vec![stmt(LD_ABS, off)]);
    let c_run = |off| run(&ret_a(vec![stmt(LD_ABS, off)]), &c).unwrap();
    assert_eq!(c_run(0), 9);
    assert_eq!(c_run(IP_LO), 0x5566_7788);
    assert_eq!(c_run(IP_HI), 0x1122_3344);
    assert_eq!(c_run(arg_lo(5)), 0x0506_0708);
    assert_eq!(c_run(arg_hi(5)), 0x0102_0304);
    assert_eq!(c_run(arg_lo(0)), 1);
    assert_eq!(load(ARCH), AUDIT_ARCH_NATIVE);
}

#[test]
fn deny_one_call() {
    let f = on_call(libc::SYS_mmap, libc::SECCOMP_RET_KILL_PROCESS);
    assert_eq!(run(&f, &mmap_rw()), Ok(libc::SECCOMP_RET_KILL_PROCESS));
    assert_eq!(run(&f, &munmap()), Ok(ALLOW));
    // Another arch's mmap is a different call: the filter lets it through.
    let mut d = seccomp_data(&mmap_rw());
    d[4..8].copy_from_slice(&0x4000_0003u32.to_le_bytes()); // AUDIT_ARCH_I386
    assert_eq!(run_filter(&f, &d), Ok(ALLOW));
}

#[test]
fn loads_and_moves() {
    assert_eq!(eval(vec![stmt(LD_IMM, 7)]), 7);
    assert_eq!(eval(vec![stmt(LDX_IMM, 9), stmt(TXA, 0)]), 9);
    assert_eq!(
        eval(vec![
            stmt(LD_IMM, 5),
            stmt(TAX, 0),
            stmt(LD_IMM, 0),
            stmt(TXA, 0)
        ]),
        5
    );
    assert_eq!(eval(vec![stmt(LD_W_LEN, 0)]), 64);
    assert_eq!(eval(vec![stmt(LDX_W_LEN, 0), stmt(TXA, 0)]), 64);
    // Scratch memory: ST/STX, LD/LDX MEM, all 16 slots.
    assert_eq!(
        eval(vec![
            stmt(LD_IMM, 11),
            stmt(ST, 0),
            stmt(LDX_IMM, 22),
            stmt(STX, 15),
            stmt(LD_IMM, 0),
            stmt(LDX_IMM, 0),
            stmt(LD_MEM, 15),
            stmt(LDX_MEM, 0),
            stmt(alu(libc::BPF_ADD, X), 0),
        ]),
        33
    );
    // A and X start at 0.
    assert_eq!(eval(vec![]), 0);
    assert_eq!(eval(vec![stmt(TXA, 0)]), 0);
}

#[test]
fn alu_with_k_and_x() {
    let cases: [(u32, u32, u32, u32); 10] = [
        (libc::BPF_ADD, 0xffff_fff0, 0x20, 0x10),
        (libc::BPF_SUB, 3, 5, 0xffff_fffe),
        (libc::BPF_MUL, 0x1000_0001, 0x10, 0x10),
        (libc::BPF_DIV, 100, 7, 14),
        (libc::BPF_OR, 0xf0, 0x0f, 0xff),
        (libc::BPF_AND, 0xf0f0, 0xff00, 0xf000),
        (libc::BPF_XOR, 0xff, 0x0f, 0xf0),
        (libc::BPF_LSH, 0x8000_0001, 1, 2),
        (libc::BPF_RSH, 0x8000_0000, 31, 1),
        (libc::BPF_LSH, 1, 31, 0x8000_0000),
    ];
    for (op, a, v, want) in cases {
        assert_eq!(
            eval(vec![stmt(LD_IMM, a), stmt(alu(op, K), v)]),
            want,
            "{op:#x} K"
        );
        assert_eq!(
            eval(vec![stmt(LDX_IMM, v), stmt(LD_IMM, a), stmt(alu(op, X), 0)]),
            want,
            "{op:#x} X"
        );
    }
    assert_eq!(eval(vec![stmt(LD_IMM, 1), stmt(ALU_NEG, 0)]), 0xffff_ffff);
    assert_eq!(eval(vec![stmt(ALU_NEG, 0)]), 0);
}

#[test]
fn jumps_with_k_and_x() {
    // Returns 1 when the jump is taken, 2 when not.
    let branch = |op: u32, a: u32, v: u32| {
        let by_x = op & X != 0;
        run(
            &[
                stmt(LDX_IMM, v),
                stmt(LD_IMM, a),
                jump(op, if by_x { 0xdead } else { v }, 1, 0),
                stmt(RET_K, 2),
                stmt(RET_K, 1),
            ],
            &munmap(),
        )
        .unwrap()
    };
    for (k_op, x_op) in [
        (JEQ_K, JEQ_X),
        (JGT_K, JGT_X),
        (JGE_K, JGE_X),
        (JSET_K, JSET_X),
    ] {
        for (a, v) in [(5, 5), (6, 5), (4, 5), (0x10, 0x11), (0x10, 0x01), (0, 0)] {
            let want = match k_op {
                JEQ_K => a == v,
                JGT_K => a > v,
                JGE_K => a >= v,
                _ => a & v != 0,
            };
            let want = if want { 1 } else { 2 };
            assert_eq!(branch(k_op, a, v), want, "{k_op:#x} a={a} v={v}");
            assert_eq!(branch(x_op, a, v), want, "{x_op:#x} a={a} v={v}");
        }
    }
    // Unsigned compares.
    assert_eq!(branch(JGT_K, 0x8000_0000, 1), 1);
    // JA skips k instructions; jt/jf of 0 fall through.
    assert_eq!(
        run(&[stmt(JA, 1), stmt(RET_K, 1), stmt(RET_K, 2)], &munmap()),
        Ok(2)
    );
    assert_eq!(
        run(&[jump(JEQ_K, 0, 0, 0), stmt(RET_K, 3)], &munmap()),
        Ok(3)
    );
}

#[test]
fn argument_and_instruction_pointer_checks() {
    let mdwe = mdwe_filter();
    assert_eq!(run(&mdwe, &mmap_rw()), Ok(ALLOW));
    assert_eq!(
        run(&mdwe, &mmap(libc::PROT_READ | libc::PROT_EXEC)),
        Ok(ALLOW)
    );
    let rwx = mmap(libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC);
    assert_eq!(run(&mdwe, &rwx), Ok(EPERM));
    // The high half of the argument counts: not W|X as a 64-bit value.
    let mut high = rwx;
    high.args[2] |= 1 << 32;
    assert_eq!(run(&mdwe, &high), Ok(ALLOW));
    assert_eq!(run(&mdwe, &mprotect(libc::PROT_READ)), Ok(ALLOW));
    assert_eq!(
        run(&mdwe, &mprotect(libc::PROT_READ | libc::PROT_EXEC)),
        Ok(EPERM)
    );
    assert_eq!(run(&mdwe, &munmap()), Ok(ALLOW));

    let ipf = ip_filter(IP - 2, IP + 0x1000);
    let kill = Ok(libc::SECCOMP_RET_KILL_PROCESS);
    assert_eq!(run(&ipf, &mmap_rw()), kill);
    let mut elsewhere = mmap_rw();
    elsewhere.ip = IP + 0x1000;
    assert_eq!(run(&ipf, &elsewhere), Ok(ALLOW));
    elsewhere.ip = IP - 3;
    assert_eq!(run(&ipf, &elsewhere), Ok(ALLOW));
    // Same low half, other high half: a different address.
    elsewhere.ip = IP + (1 << 32);
    assert_eq!(run(&ipf, &elsewhere), Ok(ALLOW));
}

#[test]
fn precedence_across_filters() {
    let m = libc::SYS_mmap;
    let f = |ret: u32| vec![stmt(RET_K, ret)];
    use libc::{
        SECCOMP_RET_KILL_PROCESS as KP, SECCOMP_RET_KILL_THREAD as KT, SECCOMP_RET_LOG as LOG,
        SECCOMP_RET_TRACE as TRACE, SECCOMP_RET_TRAP as TRAP, SECCOMP_RET_USER_NOTIF as NOTIF,
    };
    let errno = |e: u32| libc::SECCOMP_RET_ERRNO | e;
    // Highest precedence first; each beats everything after it, whichever filter has it.
    let order = [KP, KT, TRAP, errno(1), NOTIF, TRACE, LOG, ALLOW];
    for (i, hi) in order.iter().enumerate() {
        for lo in &order[i..] {
            assert_eq!(
                run_filters(&[f(*hi), f(*lo)], &seccomp_data(&mmap_rw())),
                Ok(*hi)
            );
            assert_eq!(
                run_filters(&[f(*lo), f(*hi)], &seccomp_data(&mmap_rw())),
                Ok(*hi)
            );
        }
    }
    // Same action: the newest filter (index 0) keeps its data.
    assert_eq!(
        action(&[f(errno(13)), f(errno(1))], &mmap_rw()),
        Action::Errno(13)
    );
    // A filter that allows never hides another's refusal.
    let stack = [
        on_call(libc::SYS_munmap, errno(1)),
        f(LOG),
        on_call(m, TRAP),
    ];
    assert_eq!(action(&stack, &mmap_rw()), Action::Trap);
    assert_eq!(action(&stack, &munmap()), Action::Errno(1));
    assert_eq!(action(&stack[1..2], &munmap()), Action::Log);
    assert!(action(&stack[1..2], &munmap()).allows());
    // An undefined action sorts by its value (here between KILL_THREAD and TRAP) and is a
    // kill, as in the kernel.
    let odd = 0x0001_0000;
    assert_eq!(action(&[f(TRAP), f(odd)], &mmap_rw()), Action::Unknown(odd));
    assert_eq!(action(&[f(KT), f(odd)], &mmap_rw()), Action::KillThread);
    // Errno is capped at MAX_ERRNO.
    assert_eq!(action(&[f(errno(0xffff))], &mmap_rw()), Action::Errno(4095));
    // No filters: allowed.
    assert_eq!(action(&[], &mmap_rw()), Action::Allow);
}

#[test]
fn malformed_programs_cannot_be_told() {
    let bad = |p: &[sock_filter]| {
        let r = run(p, &mmap_rw());
        assert!(r.is_err(), "{p:?} gave {r:?}");
        r.unwrap_err()
    };
    assert!(bad(&[]).contains("0 instructions"));
    assert!(bad(&vec![stmt(RET_K, 0); MAX_FILTER_LEN + 1]).contains("4097"));
    // Loads outside seccomp_data, unaligned, or of a size/mode seccomp refuses.
    assert!(bad(&[stmt(LD_ABS, 64), stmt(RET_A, 0)]).contains("outside"));
    assert!(bad(&[stmt(LD_ABS, 62), stmt(RET_A, 0)]).contains("outside"));
    assert!(bad(&[stmt(LD_ABS, 2), stmt(RET_A, 0)]).contains("unaligned"));
    assert!(bad(&[stmt(LD_ABS, u32::MAX), stmt(RET_A, 0)]).contains("outside"));
    let refused = "does not accept";
    for code in [
        libc::BPF_LD | libc::BPF_H | libc::BPF_ABS,
        libc::BPF_LD | libc::BPF_B | libc::BPF_ABS,
        libc::BPF_LD | libc::BPF_W | libc::BPF_IND,
        libc::BPF_LDX | libc::BPF_B | libc::BPF_MSH,
        alu(libc::BPF_MOD, K),
        alu(libc::BPF_MOD, X),
        ALU_NEG | X,
        JA | X,
        libc::BPF_RET | X,
        0xff,
        0x0106, // RET|K with a stray high bit
    ] {
        assert!(
            bad(&[stmt(code, 1), stmt(RET_K, ALLOW)]).contains(refused),
            "{code:#x}"
        );
    }
    // Jumps out of the program (either branch), JA too.
    assert!(bad(&[stmt(JA, 1), stmt(RET_K, ALLOW)]).contains("past the end"));
    assert!(bad(&[stmt(JA, u32::MAX), stmt(RET_K, ALLOW)]).contains("past the end"));
    assert!(bad(&[jump(JEQ_K, 0, 0, 1), stmt(RET_K, ALLOW)]).contains("past the end"));
    assert!(bad(&[jump(JEQ_K, 1, 1, 0), stmt(RET_K, ALLOW)]).contains("past the end"));
    // No return reached.
    assert!(bad(&[stmt(LD_IMM, 1)]).contains("without a return"));
    assert!(
        bad(&[jump(JEQ_K, 0, 1, 0), stmt(RET_K, ALLOW), stmt(LD_IMM, 0)])
            .contains("without a return")
    );
    // Scratch memory out of range or never written.
    assert!(bad(&[stmt(ST, 16), stmt(RET_K, ALLOW)]).contains("out of range"));
    assert!(bad(&[stmt(LD_MEM, 3), stmt(RET_A, 0)]).contains("unset"));
    assert!(bad(&[stmt(LDX_MEM, 16), stmt(RET_A, 0)]).contains("out of range"));
    // Shifts by 32 or more; constant division by zero.
    assert!(bad(&[stmt(alu(libc::BPF_LSH, K), 32), stmt(RET_A, 0)]).contains("shifts"));
    assert!(
        bad(&[
            stmt(LDX_IMM, 40),
            stmt(alu(libc::BPF_RSH, X), 0),
            stmt(RET_A, 0)
        ])
        .contains("shifts")
    );
    assert!(bad(&[stmt(alu(libc::BPF_DIV, K), 0), stmt(RET_A, 0)]).contains("divides"));
    // Division by X = 0 returns 0 (= kill the thread), as the kernel's translation does.
    assert_eq!(
        run(
            &[
                stmt(LD_IMM, 5),
                stmt(alu(libc::BPF_DIV, X), 0),
                stmt(RET_K, ALLOW)
            ],
            &mmap_rw()
        ),
        Ok(libc::SECCOMP_RET_KILL_THREAD)
    );
    // One unreadable filter among several makes the whole answer unknown.
    let why = run_filters(
        &[vec![stmt(RET_K, ALLOW)], vec![stmt(LD_IMM, 0)]],
        &seccomp_data(&mmap_rw()),
    )
    .unwrap_err();
    assert!(why.contains("filter #1 of 2"), "{why}");
}

#[test]
fn refusals_in_words() {
    let say = |ret: u32| Action::from_ret(ret).describe("mmap");
    assert_eq!(
        say(libc::SECCOMP_RET_KILL_PROCESS),
        "its seccomp filter would kill the process (SECCOMP_RET_KILL_PROCESS) on mmap()"
    );
    assert!(say(libc::SECCOMP_RET_KILL_THREAD).contains("kill the thread"));
    assert!(say(libc::SECCOMP_RET_TRAP).contains("send it SIGSYS (SECCOMP_RET_TRAP)"));
    assert_eq!(
        say(EPERM),
        "its seccomp filter would fail mmap() with errno EPERM (SECCOMP_RET_ERRNO)"
    );
    assert!(say(libc::SECCOMP_RET_ERRNO).contains("return 0"));
    assert!(say(libc::SECCOMP_RET_ERRNO | 4000).contains("errno 4000"));
    assert!(say(libc::SECCOMP_RET_USER_NOTIF).contains(
        "hands mmap() to a user-space supervisor (SECCOMP_RET_USER_NOTIF), which may be a \
         thread timeskew has stopped"
    ));
    assert!(say(libc::SECCOMP_RET_TRACE).contains("report mmap() to a tracer"));
    assert!(say(0x0001_0000).contains("SECCOMP_RET_KILL_PROCESS"));
    let e = Error::Seccomp {
        pid: 1,
        tid: 2,
        syscall: "mmap",
        reason: say(libc::SECCOMP_RET_KILL_PROCESS),
    };
    assert_eq!(
        e.to_string(),
        "pid 1: refusing to run mmap() in thread 2: its seccomp filter would kill the process \
         (SECCOMP_RET_KILL_PROCESS) on mmap(); nothing was changed"
    );
}
