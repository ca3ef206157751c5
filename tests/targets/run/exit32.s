# A 32-bit x86 program that exits with status 0 at once (tests/run.rs): timeskew cannot skew a
# 32-bit process, so `timeskew run` must let it run unskewed and say so.
        .globl _start
        .text
_start:
        movl $1, %eax           # exit(0)
        xorl %ebx, %ebx
        int $0x80
