# A 32-bit (i386) process for the "32-bit targets are refused" test: says "ready", then pauses
# forever. Built with binutils alone (as --32, ld -m elf_i386), no 32-bit libc needed.
.globl _start
.section .rodata
msg: .ascii "ready\n"
.text
_start:
    mov $4, %eax        # write(1, msg, 6)
    mov $1, %ebx
    mov $msg, %ecx
    mov $6, %edx
    int $0x80
1:  mov $29, %eax       # pause()
    int $0x80
    jmp 1b
