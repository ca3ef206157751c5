//! The interpreter cross-checked against the kernel: the same programs run by both.

use super::child::{filters, spawn};
use super::*;

/// The interpreter against the kernel itself: the same programs run by both on the same
/// inputs. The programs compute a value from the arguments with every ALU operation, the
/// scratch memory and both registers, or branch with every jump, and return it as an errno
/// (SECCOMP_RET_ERRNO | value & 0xfff), which the child's own call reports.
#[test]
fn real_kernel_agrees() {
    let nr = libc::SYS_getppid;
    let wrap = |body: Vec<sock_filter>| {
        let mut p = vec![
            stmt(LD_ABS, ARCH),
            jump(JEQ_K, AUDIT_ARCH_NATIVE, 1, 0),
            stmt(RET_K, ALLOW),
            stmt(LD_ABS, 0),
            jump(JEQ_K, nr as u32, 1, 0),
            stmt(RET_K, ALLOW),
        ];
        p.extend(body);
        p
    };
    let arithmetic = |window: u32| {
        wrap(vec![
            stmt(LD_ABS, arg_lo(0)),
            stmt(alu(libc::BPF_ADD, K), 0x9e37_79b9),
            stmt(ST, 0),
            stmt(LD_ABS, arg_lo(1)),
            stmt(TAX, 0),
            stmt(LD_MEM, 0),
            stmt(alu(libc::BPF_MUL, X), 0),
            stmt(alu(libc::BPF_XOR, K), 0x5bd1_e995),
            stmt(alu(libc::BPF_SUB, X), 0),
            stmt(ST, 1),
            stmt(LD_ABS, arg_hi(0)),
            stmt(alu(libc::BPF_OR, K), 1),
            stmt(TAX, 0),
            stmt(LD_MEM, 1),
            stmt(alu(libc::BPF_DIV, X), 0),
            stmt(alu(libc::BPF_XOR, X), 0),
            stmt(ST, 2),
            stmt(LD_ABS, arg_lo(2)),
            stmt(alu(libc::BPF_AND, K), 31),
            stmt(TAX, 0),
            stmt(LD_MEM, 2),
            stmt(alu(libc::BPF_LSH, X), 0),
            stmt(STX, 5),
            stmt(LDX_MEM, 1),
            stmt(alu(libc::BPF_ADD, X), 0),
            stmt(ST, 3),
            stmt(LD_ABS, arg_lo(3)),
            stmt(alu(libc::BPF_AND, K), 31),
            stmt(TAX, 0),
            stmt(LD_MEM, 3),
            stmt(alu(libc::BPF_RSH, X), 0),
            stmt(ALU_NEG, 0),
            stmt(LDX_W_LEN, 0),
            stmt(alu(libc::BPF_ADD, X), 0),
            stmt(alu(libc::BPF_MUL, K), 2_654_435_761),
            stmt(alu(libc::BPF_DIV, K), 7),
            stmt(alu(libc::BPF_SUB, K), 12345),
            stmt(alu(libc::BPF_OR, K), 0x0100_0010),
            stmt(alu(libc::BPF_AND, K), 0xfff0_fff7),
            stmt(alu(libc::BPF_LSH, K), 3),
            stmt(TAX, 0),
            stmt(LD_ABS, arg_hi(5)),
            stmt(alu(libc::BPF_XOR, X), 0),
            stmt(alu(libc::BPF_OR, X), 0),
            stmt(alu(libc::BPF_AND, X), 0),
            stmt(alu(libc::BPF_SUB, X), 0),
            stmt(LD_W_LEN, 0),
            stmt(TXA, 0),
            stmt(alu(libc::BPF_RSH, K), window),
            stmt(alu(libc::BPF_AND, K), 0xfff),
            stmt(alu(libc::BPF_OR, K), libc::SECCOMP_RET_ERRNO),
            stmt(RET_A, 0),
        ])
    };
    let errno = |e: u32| stmt(RET_K, libc::SECCOMP_RET_ERRNO | e);
    let branches = wrap(vec![
        stmt(LD_ABS, arg_lo(1)),
        stmt(TAX, 0),
        stmt(LD_ABS, arg_lo(0)),
        jump(JGT_X, 0, 0, 3),
        // a0 > a1
        jump(JSET_K, 0x10, 0, 1),
        errno(1),
        errno(2),
        jump(JGE_K, 0x8000_0000, 0, 3),
        jump(JEQ_X, 0, 0, 1),
        errno(3),
        errno(4),
        jump(JSET_X, 0, 0, 1),
        errno(5),
        jump(JEQ_K, 7, 3, 0),
        stmt(LD_ABS, arg_hi(5)),
        jump(JGE_X, 0, 0, 1),
        errno(6),
        stmt(JA, 1),
        errno(8),
        errno(7),
    ]);
    // Random arguments, plus equal and zero ones for the X compares.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut inputs: Vec<[u64; 6]> = (0..300).map(|_| std::array::from_fn(|_| next())).collect();
    for v in [0u64, 7, 0x10, 0x8000_0000, 0xffff_ffff] {
        inputs.push([v, v, v, v, v, v]);
        inputs.push([v, 0, 0, 0, 0, v << 32]);
        inputs.push([0, v, 0, 0, 0, 0]);
    }
    for (what, program) in [
        ("arithmetic, bits 0..12", arithmetic(0)),
        ("arithmetic, bits 12..24", arithmetic(12)),
        ("arithmetic, bits 20..32", arithmetic(20)),
        ("branches", branches),
    ] {
        let child = spawn(filters(vec![program.clone()]), &inputs);
        for (args, kernel) in inputs.iter().zip(&child.results) {
            let c = call("getppid", nr, *args);
            let ours = run(&program, &c).unwrap() & 0xffff;
            assert_eq!(ours, *kernel, "{what}: args {args:x?}");
        }
    }
}
