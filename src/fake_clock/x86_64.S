# timeskew fake clock, x86_64 (Intel syntax, assembled by rustc's global_asm!, no preprocessor).
#
# This is the image of the code page that timeskew maps into a target process. It is copied
# verbatim to offset 0 of that page, so every reference inside it must be position independent:
# only RIP-relative references to local (.L) labels of this same section, which the assembler
# resolves to constants (no relocation survives into the copy). The data page sits exactly one
# page (TSK_DATA_PAGE bytes) above the start of the blob.
#
# Header at offset 0, 0x28 bytes = fake_clock::HEADER_LEN (read by src/fake_clock/mod.rs with
# from_le_bytes):
#   0x00 magic "TSKFAKE1"
#   0x08 u32 offset of the fake clock_gettime    0x0c u32 offset of the fake gettimeofday
#   0x10 u32 offset of the fake time             0x14 u32 offset of the clock_gettime stub slot
#   0x18 u32 offset of the gettimeofday stub slot 0x1c u32 stub slot capacity
#   0x20 u32 offset of the time stub slot
#   0x24 u32 offset of the membarrier registration helper's `syscall` (see .Lregister_helper)
#   0x28 u32 offset of the inlining fake time  0x2c u32 offset of the time body slot
#   0x30 u32 offset where the time body continues (the slot's end; its rets jump here)
#
# A stub slot receives, at inject time, the relocated first instructions of the genuine vDSO
# function followed by a jump back into the vDSO: calling the slot calls the genuine function.
#
# The fakes are leaves (no libc) with one frame per inner call, sized so that the stack is
# 16-byte aligned at the call (rsp is 8 mod 16 at entry): 24 bytes in clock_gettime,
# gettimeofday and time()'s slow path, 8 bytes (one push) on time()'s calling fast path, none on its inlining one. Below its own
# return address a fake uses at most 24 + 8 bytes (the inner call's return address); time()'s
# slow path releases the fast path's frame before it makes its own call. The flagged paths
# (below) stay within the same bounds: clock_gettime and gettimeofday call the evaluator
# .Lprogram after releasing their frame (8 bytes: its return address), time()'s flagged path
# calls it from inside its 24-byte frame (24 + 8). .Lprogram is the blob's own leaf, using no
# stack but its return address, so the stack need not be aligned for it. The fakes clobber only
# caller-saved registers (rax rcx rdx rsi rdi r8-r11, flags) and rely on none of them surviving
# an inner call or a system call.
#
# Flags (data page v2): each fast path adds one compare-and-branch inside its checked read,
# `cmp dword ptr [slot + FLAGS], 0; jne .L*_flagged`; flags == 0 takes today's constant path.
# A non-zero flags word sends a selected clock to its flagged path:
# - FLAG_SLOW_READS: the real reading is taken again with the system call (clock_gettime:
#   SYS_clock_gettime with the same id and ts; gettimeofday: SYS_gettimeofday with tz NULL,
#   *tz having been filled by the genuine call; time: SYS_clock_gettime(CLOCK_REALTIME_COARSE)).
#   The genuine call has already run by then: looking at the flag before it would put a
#   dependent pair of loads in front of every constant-offset call (measured ≈ 1–2 ns, the
#   whole budget of that path), so slow reads cost the genuine read on top of the system call.
#   The flag is read before the generation is re-checked: a torn or stale value is harmless,
#   both ways give a correct real reading.
# - FLAG_PROGRAM / FLAG_RESOLUTION: the reading in ns is evaluated by .Lprogram exactly as
#   data_page::Params::reading, then stored as (sec, nsec), (sec, usec) or seconds, by floor.
# Each flagged path makes its own checked-read loop (which never takes the syscall again), so
# a writer switching between constant and flagged slots meanwhile is followed either way.
#
# Reading the parameters (src/state/data_page.rs): take the generation, select slot (generation & 1), read
# the fields, re-read the generation and start again if it changed. Every field that decides the
# result, the mask bit included, is read inside such a checked read. A clear mask bit skips the
# offset and deadline loads but still re-checks the generation before it answers: returning on
# the unchecked bit alone could act on a slot that a later writer is half-way through (or died
# half-way through) rewriting, i.e. on parameters that were never published.
#
# Deadlines (the dead man's switch): the skew of clock id n applies only while the real reading
# (sec, nsec) the genuine call returned is strictly below deadlines[n], compared
# lexicographically with signed seconds. No deadline is sec = INT64_MAX, so the common case costs
# one compare that is always "below". gettimeofday and time use deadlines[0]. A zeroed slot has
# mask 0 and deadlines at 0 (in the past): it passes real time through.

# ---- Data page contract. The values are global_asm! operands supplied by src/fake_clock/mod.rs
# ---- from crate::state::data_page (the one home of the layout), libc and fake_clock itself; the
# ---- names below only make the code readable. (Literal braces in this file must be doubled.)
.set TSK_DATA_PAGE,          {DATA_PAGE}          # data page = blob start + this (fake_clock::DATA_PAGE_OFFSET)
.set TSK_OFF_GENERATION,     {OFF_GENERATION}     # data_page::OFF_GENERATION (u64)
.set TSK_OFF_SLOT0,          {OFF_SLOT0}          # data_page::OFF_SLOT0
.set TSK_OFF_TIME_WORD,      {OFF_TIME_WORD}      # data_page::OFF_TIME_WORD (u64, see time_word)
.set TSK_TIME_WORD_TAG_BITS, {TIME_WORD_TAG_BITS} # data_page::TIME_WORD_TAG_BITS (32: cmp r8d, r9d)
.set TSK_SLOT_STRIDE,        {SLOT_STRIDE}        # data_page::SLOT_STRIDE
.set TSK_SLOT_OFF_MASK,      {SLOT_OFF_MASK}      # data_page::SLOT_OFF_MASK (u32)
.set TSK_SLOT_OFF_GTOD_SEC,  {SLOT_OFF_GTOD_SEC}  # data_page::SLOT_OFF_GTOD_SEC (i64)
.set TSK_SLOT_OFF_GTOD_USEC, {SLOT_OFF_GTOD_USEC} # data_page::SLOT_OFF_GTOD_USEC (i64, 0..1e6)
.set TSK_SLOT_OFF_CLOCKS,    {SLOT_OFF_CLOCKS}    # clocks[id] = (sec i64, nsec i64)
.set TSK_SLOT_OFF_DEADLINES, {SLOT_OFF_DEADLINES} # deadlines[id] = (sec, nsec)
.set TSK_CLOCK_ENTRY_SHIFT,  {CLOCK_ENTRY_SHIFT}  # log2(data_page::CLOCK_ENTRY_LEN), both tables
.set TSK_MAX_CLOCK_ID,       {MAX_CLOCK_ID}       # data_page::MAX_CLOCK_ID
.set TSK_STUB_CAPACITY,      {STUB_CAPACITY}      # bytes per stub slot (fake_clock::STUB_CAPACITY)
.set TSK_CLOCK_REALTIME_COARSE, {CLOCK_REALTIME_COARSE}  # libc::CLOCK_REALTIME_COARSE
.set TSK_SYS_TIME,           {SYS_TIME}           # libc::SYS_time
.set TSK_SYS_CLOCK_GETTIME,  {SYS_CLOCK_GETTIME}  # libc::SYS_clock_gettime
.set TSK_SYS_GETTIMEOFDAY,   {SYS_GETTIMEOFDAY}   # libc::SYS_gettimeofday
.set TSK_SYS_MEMBARRIER,     {SYS_MEMBARRIER}     # libc::SYS_membarrier
.set TSK_SYS_EXIT,           {SYS_EXIT}           # libc::SYS_exit (this thread only)
.set TSK_MEMBARRIER_REGISTER_SYNC_CORE, {MEMBARRIER_REGISTER_SYNC_CORE}  # libc::MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE
.set TSK_SLOT_OFF_FLAGS,     {SLOT_OFF_FLAGS}     # data_page::SLOT_OFF_FLAGS (u32)
.set TSK_FLAG_PROGRAM,       {FLAG_PROGRAM}       # data_page::FLAG_PROGRAM
.set TSK_FLAG_RESOLUTION,    {FLAG_RESOLUTION}    # data_page::FLAG_RESOLUTION
.set TSK_FLAG_SLOW_READS,    {FLAG_SLOW_READS}    # data_page::FLAG_SLOW_READS
.set TSK_SLOT_OFF_SEGMENT_COUNT, {SLOT_OFF_SEGMENT_COUNT}  # data_page::SLOT_OFF_SEGMENT_COUNT (u32)
.set TSK_SLOT_OFF_RESOLUTION, {SLOT_OFF_RESOLUTION}        # u64 ns
.set TSK_SLOT_OFF_RESOLUTION_RECIP, {SLOT_OFF_RESOLUTION_RECIP}  # u64
.set TSK_SLOT_OFF_STROBE_PERIOD, {SLOT_OFF_STROBE_PERIOD}  # u64 ns, 0: no strobe
.set TSK_SLOT_OFF_STROBE_RECIP, {SLOT_OFF_STROBE_RECIP}    # u64
.set TSK_SLOT_OFF_STROBE_DELTA, {SLOT_OFF_STROBE_DELTA}    # i64 ns
.set TSK_SLOT_OFF_SEGMENTS,  {SLOT_OFF_SEGMENTS}  # segments[MAX_SEGMENTS] {{ start i64, value i64, rate u64 }}
.set TSK_SEGMENT_LEN,        {SEGMENT_LEN}        # data_page::SEGMENT_LEN
.set TSK_SEG_START,          {SEG_START}          # fake_clock::SEG_START (field offsets in a segment)
.set TSK_SEG_VALUE,          {SEG_VALUE}          # fake_clock::SEG_VALUE
.set TSK_SEG_RATE,           {SEG_RATE}           # fake_clock::SEG_RATE
.set TSK_MAX_SEGMENTS,       {MAX_SEGMENTS}       # data_page::MAX_SEGMENTS
.set TSK_SLOT_OFF_ANCHORS,   {SLOT_OFF_ANCHORS}   # anchors[id] i64, 8 bytes each
.set TSK_SLOT_OFF_BASES,     {SLOT_OFF_BASES}     # bases[id] i64, 8 bytes each
.set TSK_RATE_SHIFT,         {RATE_SHIFT}         # data_page::RATE_SHIFT
.set TSK_SLOT_OFF_FAST_KIND, {SLOT_OFF_FAST_KIND} # data_page::SLOT_OFF_FAST_KIND (u32)
.set TSK_SLOT_OFF_FAST,      {SLOT_OFF_FAST}      # fast[id], 40 bytes each (with a program)
.set TSK_FAST_PAIR,          {FAST_PAIR}          # (sec, nsec): the offset or the value
.set TSK_FAST_FROM,          {FAST_FROM}          # (sec, nsec): the window's first real reading
.set TSK_FAST_UNTIL,         {FAST_UNTIL}         # sec: real seconds below this
.set TSK_FAST_CLOCKS,        {FAST_CLOCKS}        # ids below this have a window
.set TSK_FAST_OFFSET,        {FAST_OFFSET}        # in the window: real + clocks[id]
.set TSK_FAST_VALUE,         {FAST_VALUE}         # in the window: clocks[id]
.set TSK_NSEC_PER_SEC,       {NSEC_PER_SEC}       # fake_clock::NSEC_PER_SEC
.set TSK_NSEC_RECIP,         {NSEC_RECIP}         # data_page::reciprocal(NSEC_PER_SEC), as a constant
.set TSK_NSEC_PER_USEC,      {NSEC_PER_USEC}      # fake_clock::NSEC_PER_USEC
.set TSK_USEC_MAGIC,         {USEC_MAGIC}         # fake_clock::USEC_MAGIC: n / 1000 = n * this >> the shift
.set TSK_USEC_MAGIC_SHIFT,   {USEC_MAGIC_SHIFT}   # fake_clock::USEC_MAGIC_SHIFT (n < 1e9)

# ---- Blob-local constants.
.set TSK_USEC_PER_SEC,       1000000
.set TSK_FLAGS_PROGRAM_OR_RESOLUTION, TSK_FLAG_PROGRAM | TSK_FLAG_RESOLUTION
.set TSK_FRAME,              24      # own frame: rsp is 8 mod 16 at entry, 0 mod 16 at the call

.pushsection .text.timeskew_fake,"ax",@progbits
.p2align 4, 0xcc
.globl timeskew_fake_start
.hidden timeskew_fake_start
.globl timeskew_fake_end
.hidden timeskew_fake_end

timeskew_fake_start:
.Lblob_start:
    .ascii "TSKFAKE1"
    .long .Lfake_clock_gettime - .Lblob_start
    .long .Lfake_gettimeofday - .Lblob_start
    .long .Lfake_time - .Lblob_start
    .long .Lstub_clock_gettime - .Lblob_start
    .long .Lstub_gettimeofday - .Lblob_start
    .long TSK_STUB_CAPACITY
    .long .Lstub_time - .Lblob_start
    .long .Lregister_helper - .Lblob_start
    .long .Lfake_time_inline - .Lblob_start
    .long .Lbody_time - .Lblob_start
    .long .Ltime_body_done - .Lblob_start

# Every checked read below selects the slot the same way, without a multiply: with r11 = the
# data page, r8 = the generation and rcx + TSK_OFF_SLOT0 = the slot of generation r8.
.macro TSK_SELECT_SLOT
    mov r8, qword ptr [r11 + TSK_OFF_GENERATION]
    lea rcx, [r11 + TSK_SLOT_STRIDE]
    test r8b, 1
    cmovz rcx, r11
.endm

# int clock_gettime(clockid_t id /*edi*/, struct timespec *ts /*rsi*/)
.p2align 4, 0xcc
.type timeskew_fake_clock_gettime,@function
timeskew_fake_clock_gettime:
.Lfake_clock_gettime:
    .cfi_startproc
    sub rsp, TSK_FRAME
    .cfi_adjust_cfa_offset TSK_FRAME
    mov qword ptr [rsp], rsi            # ts
    mov qword ptr [rsp + 8], rdi        # id (low 32 bits meaningful)
    call .Lstub_clock_gettime           # genuine clock_gettime(id, ts); edi/rsi still intact
    mov rsi, qword ptr [rsp]
    mov edi, dword ptr [rsp + 8]
    add rsp, TSK_FRAME
    .cfi_adjust_cfa_offset -TSK_FRAME
    test eax, eax
    jnz .Lcg_return                     # genuine failed: return its value, *ts is not ours
    cmp edi, TSK_MAX_CLOCK_ID
    ja .Lcg_return                      # unsigned: ids > 31 and negative (CPU-time) ids
    lea r11, [rip + .Lblob_start + TSK_DATA_PAGE]
    mov edx, edi
    shl edx, TSK_CLOCK_ENTRY_SHIFT      # rdx = id * 16 (zero-extended)
.Lcg_retry:
    TSK_SELECT_SLOT
    mov eax, dword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_MASK]
    bt eax, edi
    jnc .Lcg_unselected
    cmp dword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_FLAGS], 0
    jne .Lcg_flagged                    # a program, a resolution or slow reads
    mov r9, qword ptr [rcx + rdx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_CLOCKS]          # offset sec
    mov r10, qword ptr [rcx + rdx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_CLOCKS + 8]     # offset nsec
    mov rax, qword ptr [rcx + rdx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_DEADLINES]      # deadline sec
    mov rcx, qword ptr [rcx + rdx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_DEADLINES + 8]  # deadline nsec
    cmp r8, qword ptr [r11 + TSK_OFF_GENERATION]
    jne .Lcg_retry                      # an update was published meanwhile: read again
.Lcg_checked:                           # r9:r10 offset, rax:rcx deadline, all checked
    cmp qword ptr [rsi], rax            # real sec against deadline sec, signed
    jl .Lcg_shift                       # an earlier second: before the deadline
    jg .Lcg_success                     # a later second: the skew has expired
    cmp qword ptr [rsi + 8], rcx        # the deadline's own second: compare nanoseconds
    jge .Lcg_success                    # at or after the deadline: real time
.Lcg_shift:
    mov rax, qword ptr [rsi + 8]
    add rax, r10                        # both in [0, 1e9): sum in [0, 2e9)
    cmp rax, TSK_NSEC_PER_SEC
    jb .Lcg_store
    sub rax, TSK_NSEC_PER_SEC
    add r9, 1
.Lcg_store:
    add qword ptr [rsi], r9
    mov qword ptr [rsi + 8], rax
.Lcg_success:
    xor eax, eax
.Lcg_return:
    ret
.Lcg_unselected:
    cmp r8, qword ptr [r11 + TSK_OFF_GENERATION]
    jne .Lcg_retry                      # the bit may come from a slot being rewritten
    xor eax, eax                        # clock not selected: genuine value, success
    ret

# Flagged (selected, flags != 0, read in the checked read of generation r8, not yet re-checked).
.Lcg_flagged:
    test byte ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_FLAGS], TSK_FLAG_SLOW_READS
    jz .Lcg_program                     # continue this checked read
    # Slow reads: take the real reading again, with the system call (same rdi, rsi), over the
    # genuine one. The flag is not yet checked: a torn or stale value is harmless, both ways
    # *ts holds a correct real reading (nothing computed is stored before a re-check).
    mov eax, TSK_SYS_CLOCK_GETTIME
    syscall                             # clobbers rcx, r11; keeps rdi, rsi
    test eax, eax
    jnz .Lcg_return                     # -errno, as the genuine code's own fallback returns it
.Lcg_prog_retry:                        # a checked read that never takes the syscall again
    lea r11, [rip + .Lblob_start + TSK_DATA_PAGE]
    mov edx, edi
    shl edx, TSK_CLOCK_ENTRY_SHIFT      # rdx = id * 16 (.Lprogram clobbers it)
    TSK_SELECT_SLOT
    mov eax, dword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_MASK]
    bt eax, edi
    jnc .Lcg_prog_unselected
    test byte ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_FLAGS], TSK_FLAGS_PROGRAM_OR_RESOLUTION
    jnz .Lcg_program
    # No program, no resolution (slow reads alone): the constant path, checked here.
    mov r9, qword ptr [rcx + rdx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_CLOCKS]
    mov r10, qword ptr [rcx + rdx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_CLOCKS + 8]
    mov rax, qword ptr [rcx + rdx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_DEADLINES]
    mov rcx, qword ptr [rcx + rdx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_DEADLINES + 8]
    cmp r8, qword ptr [r11 + TSK_OFF_GENERATION]
    jne .Lcg_prog_retry
    jmp .Lcg_checked
.Lcg_program:                           # rsi ts, edi id, rdx id * 16, rcx slot, r8 generation
    # The fast case (data_page::FastCase): a real reading inside this clock's window (empty
    # without one) gives real + pair or the pair, like the constant path.
    cmp edi, TSK_FAST_CLOCKS - 1
    ja .Lcg_general
    lea eax, [rdi + rdi * 4]            # id * 5: 40-byte entries
    lea r9, [rcx + rax * 8 + TSK_OFF_SLOT0 + TSK_SLOT_OFF_FAST]
    mov rax, qword ptr [rsi]            # real sec
    cmp rax, qword ptr [r9 + TSK_FAST_UNTIL]
    jge .Lcg_general                    # at or after the window's end second
    cmp rax, qword ptr [r9 + TSK_FAST_FROM]
    jl .Lcg_general                     # before the window, signed
    jg .Lcg_fast_in
    mov rax, qword ptr [rsi + 8]
    cmp rax, qword ptr [r9 + TSK_FAST_FROM + 8]
    jl .Lcg_general
.Lcg_fast_in:
    mov r10, qword ptr [r9 + TSK_FAST_PAIR + 8]     # nsec
    mov r9, qword ptr [r9 + TSK_FAST_PAIR]          # sec
    mov rax, qword ptr [rcx + rdx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_DEADLINES]
    mov r11, qword ptr [rcx + rdx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_DEADLINES + 8]
    mov ecx, dword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_FAST_KIND]
    cmp r8, qword ptr [rip + .Lblob_start + TSK_DATA_PAGE + TSK_OFF_GENERATION]
    jne .Lcg_prog_retry
    cmp qword ptr [rsi], rax            # the deadline, as on the constant path
    jl .Lcg_fast
    jg .Lcg_success
    cmp qword ptr [rsi + 8], r11
    jge .Lcg_success
.Lcg_fast:
    cmp ecx, TSK_FAST_OFFSET
    je .Lcg_shift                       # real + (r9, r10)
    mov qword ptr [rsi], r9             # the value
    mov qword ptr [rsi + 8], r10
    xor eax, eax
    ret
.Lcg_general:
    mov rax, qword ptr [rcx + rdx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_DEADLINES]
    cmp qword ptr [rsi], rax
    jl .Lcg_prog_eval
    jg .Lcg_prog_real
    mov rax, qword ptr [rcx + rdx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_DEADLINES + 8]
    cmp qword ptr [rsi + 8], rax
    jge .Lcg_prog_real                  # at or after the deadline: real time
.Lcg_prog_eval:
    imul r9, qword ptr [rsi], TSK_NSEC_PER_SEC
    add r9, qword ptr [rsi + 8]         # real ns
    call .Lprogram                      # r9 = seconds, r10 = nanoseconds
    cmp r8, qword ptr [rip + .Lblob_start + TSK_DATA_PAGE + TSK_OFF_GENERATION]
    jne .Lcg_prog_retry                 # computed from a slot being rewritten: again
    mov qword ptr [rsi], r9
    mov qword ptr [rsi + 8], r10
    xor eax, eax
    ret
.Lcg_prog_real:
.Lcg_prog_unselected:
    cmp r8, qword ptr [rip + .Lblob_start + TSK_DATA_PAGE + TSK_OFF_GENERATION]
    jne .Lcg_prog_retry
    xor eax, eax
    ret
    .cfi_endproc
.size timeskew_fake_clock_gettime, . - timeskew_fake_clock_gettime

# int gettimeofday(struct timeval *tv /*rdi*/, struct timezone *tz /*rsi*/)
.p2align 4, 0xcc
.type timeskew_fake_gettimeofday,@function
timeskew_fake_gettimeofday:
.Lfake_gettimeofday:
    .cfi_startproc
    sub rsp, TSK_FRAME
    .cfi_adjust_cfa_offset TSK_FRAME
    mov qword ptr [rsp], rdi            # tv
    call .Lstub_gettimeofday            # genuine gettimeofday(tv, tz)
    mov rdi, qword ptr [rsp]
    add rsp, TSK_FRAME
    .cfi_adjust_cfa_offset -TSK_FRAME
    test eax, eax
    jnz .Lgtod_return                   # genuine failed: pass through untouched
    test rdi, rdi
    jz .Lgtod_return                    # tv == NULL: nothing to shift (eax is 0)
    lea r11, [rip + .Lblob_start + TSK_DATA_PAGE]
.Lgtod_retry:
    TSK_SELECT_SLOT
    test byte ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_MASK], 1
    jz .Lgtod_unselected                # CLOCK_REALTIME (bit 0) not selected
    cmp dword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_FLAGS], 0
    jne .Lgtod_flagged
    mov r9, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_GTOD_SEC]
    mov r10, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_GTOD_USEC]
    mov rdx, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_DEADLINES]       # deadlines[0].sec
    mov rsi, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_DEADLINES + 8]   # deadlines[0].nsec
    cmp r8, qword ptr [r11 + TSK_OFF_GENERATION]
    jne .Lgtod_retry
.Lgtod_checked:                         # r9:r10 offset, rdx:rsi deadline, all checked
    cmp qword ptr [rdi], rdx
    jl .Lgtod_shift
    jg .Lgtod_success
    imul rax, qword ptr [rdi + 8], TSK_NSEC_PER_USEC   # tv_usec in [0, 1e6): no overflow
    cmp rax, rsi
    jge .Lgtod_success
.Lgtod_shift:
    mov rax, qword ptr [rdi + 8]
    add rax, r10                        # both in [0, 1e6)
    cmp rax, TSK_USEC_PER_SEC
    jb .Lgtod_store
    sub rax, TSK_USEC_PER_SEC
    add r9, 1
.Lgtod_store:
    add qword ptr [rdi], r9
    mov qword ptr [rdi + 8], rax
.Lgtod_success:
    xor eax, eax
.Lgtod_return:
    ret
.Lgtod_unselected:
    cmp r8, qword ptr [r11 + TSK_OFF_GENERATION]
    jne .Lgtod_retry
    xor eax, eax
    ret

# Flagged (realtime selected, flags != 0, unchecked), rdi = tv (not NULL).
.Lgtod_flagged:
    test byte ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_FLAGS], TSK_FLAG_SLOW_READS
    jz .Lgtod_program
    # Slow reads: the system call takes the real reading again (unchecked flag: harmless, as
    # in clock_gettime). tz is NULL: the genuine call has already filled *tz.
    xor esi, esi
    mov eax, TSK_SYS_GETTIMEOFDAY
    syscall
    test eax, eax
    jnz .Lgtod_return
.Lgtod_prog_retry:
    lea r11, [rip + .Lblob_start + TSK_DATA_PAGE]
    TSK_SELECT_SLOT
    test byte ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_MASK], 1
    jz .Lgtod_prog_unselected
    test byte ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_FLAGS], TSK_FLAGS_PROGRAM_OR_RESOLUTION
    jnz .Lgtod_program
    mov r9, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_GTOD_SEC]
    mov r10, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_GTOD_USEC]
    mov rdx, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_DEADLINES]
    mov rsi, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_DEADLINES + 8]
    cmp r8, qword ptr [r11 + TSK_OFF_GENERATION]
    jne .Lgtod_prog_retry
    jmp .Lgtod_checked
.Lgtod_program:                         # rdi tv, rcx slot, r8 generation
    # The fast case, as in clock_gettime (id 0): the gtod pair is clocks[0] in microseconds.
    mov rax, qword ptr [rdi]            # real sec
    cmp rax, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_FAST + TSK_FAST_UNTIL]
    jge .Lgtod_general
    cmp rax, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_FAST + TSK_FAST_FROM]
    jl .Lgtod_general
    jg .Lgtod_fast_in
    imul rax, qword ptr [rdi + 8], TSK_NSEC_PER_USEC
    cmp rax, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_FAST + TSK_FAST_FROM + 8]
    jl .Lgtod_general
.Lgtod_fast_in:
    mov r9, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_GTOD_SEC]
    mov r10, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_GTOD_USEC]
    mov rdx, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_DEADLINES]
    mov rsi, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_DEADLINES + 8]
    mov ecx, dword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_FAST_KIND]
    cmp r8, qword ptr [rip + .Lblob_start + TSK_DATA_PAGE + TSK_OFF_GENERATION]
    jne .Lgtod_prog_retry
    cmp qword ptr [rdi], rdx
    jl .Lgtod_fast
    jg .Lgtod_success
    imul rax, qword ptr [rdi + 8], TSK_NSEC_PER_USEC
    cmp rax, rsi
    jge .Lgtod_success
.Lgtod_fast:
    cmp ecx, TSK_FAST_OFFSET
    je .Lgtod_shift
    mov qword ptr [rdi], r9
    mov qword ptr [rdi + 8], r10
    xor eax, eax
    ret
.Lgtod_general:
    mov rax, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_DEADLINES]
    cmp qword ptr [rdi], rax
    jl .Lgtod_prog_eval
    jg .Lgtod_prog_real
    imul rax, qword ptr [rdi + 8], TSK_NSEC_PER_USEC
    cmp rax, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_DEADLINES + 8]
    jge .Lgtod_prog_real
.Lgtod_prog_eval:
    imul r9, qword ptr [rdi], TSK_NSEC_PER_SEC
    imul rax, qword ptr [rdi + 8], TSK_NSEC_PER_USEC
    add r9, rax                         # real ns
    mov rsi, rdi                        # tv, kept by .Lprogram
    xor edi, edi                        # the realtime parameters (id 0)
    call .Lprogram                      # r9 = seconds, r10 = nanoseconds
    mov rdi, rsi
    cmp r8, qword ptr [rip + .Lblob_start + TSK_DATA_PAGE + TSK_OFF_GENERATION]
    jne .Lgtod_prog_retry
    imul rdx, r10, TSK_USEC_MAGIC       # microseconds = floor(r10 / 1000): r10 < 1e9, where
    shr rdx, TSK_USEC_MAGIC_SHIFT       # this multiply and shift is exact (no correction)
.Lgtod_prog_store:
    mov qword ptr [rdi], r9
    mov qword ptr [rdi + 8], rdx
    xor eax, eax
    ret
.Lgtod_prog_real:
.Lgtod_prog_unselected:
    cmp r8, qword ptr [rip + .Lblob_start + TSK_DATA_PAGE + TSK_OFF_GENERATION]
    jne .Lgtod_prog_retry
    xor eax, eax
    ret
    .cfi_endproc
.size timeskew_fake_gettimeofday, . - timeskew_fake_gettimeofday

# time_t time(time_t *tloc /*rdi*/)
# Two entries share the code after the genuine reading. The inlining one (.Lfake_time_inline,
# the hook's target whenever the injector could relocate it) runs a copy of the whole genuine
# time() in the body slot with tloc = NULL, every `ret` of it turned into a jump to
# .Ltime_body_done: no call and no return on top of the genuine code (time() natively is a
# few ns, a call/ret pair a large part of that). The injector checks that the copy touches no
# stack, writes no register but rax rcx rdx rdi r8-r11 (tloc waits in rsi) and branches only
# inside itself (arch/x86_64/inline.rs). The calling one (.Lfake_time) calls the genuine
# time(NULL) through its stub slot, as every other fake does.
# Fast path: the genuine time(NULL) (one load from vvar), then the parameters.
# Whenever the answer cannot depend on the nanoseconds — realtime not selected, a second after
# the deadline's, or a second before it with a whole-second offset — it is exact: t + offset.sec
# is floor(real + offset) when the offset has no fraction. Otherwise (a fractional offset, or the
# deadline's own second) the slow path reads CLOCK_REALTIME_COARSE, the same xtime seconds plus
# their nanoseconds, through the genuine clock_gettime and computes floor(coarse + offset).
# The fast path is laid out for the common case (selected, whole seconds, deadline not reached,
# tloc NULL): no taken branch besides the call and the returns.
.p2align 4, 0xcc
.type timeskew_fake_time,@function
timeskew_fake_time:
.Lfake_time:
    .cfi_startproc
    push rdi                            # tloc; the push also aligns the stack for the call
    .cfi_adjust_cfa_offset 8
    xor edi, edi                        # genuine time(NULL): *tloc is written once, by us
    call .Lstub_time                    # rax = t, the real seconds
    pop rdi
    .cfi_adjust_cfa_offset -8
    jmp .Ltime_after_genuine
.p2align 4, 0xcc
.Lfake_time_inline:
    mov rsi, rdi                        # tloc, kept where the copy does not write
    xor edi, edi                        # genuine time(NULL): *tloc is written once, by us
.Lbody_time:                            # the copy of the genuine time(); int3 until filled
    .fill TSK_STUB_CAPACITY, 1, 0xcc
.Ltime_body_done:                       # rax = t, the real seconds
    mov rdi, rsi
.Ltime_after_genuine:                   # rax = t, rdi = tloc
    # The summary word (data_page::time_word), stored by the writer after the generation: while
    # its tag is the generation's low 32 bits, t + its seconds is the answer. The word is loaded
    # before the generation (x86 does not reorder loads): a matching pair means the word was
    # written for the generation current at the second load.
    mov r9, qword ptr [rip + .Lblob_start + TSK_DATA_PAGE + TSK_OFF_TIME_WORD]
    mov r8, qword ptr [rip + .Lblob_start + TSK_DATA_PAGE + TSK_OFF_GENERATION]
    cmp r8d, r9d
    jne .Ltime_common                   # stale, or a slot it cannot summarise: read the slot
    sar r9, TSK_TIME_WORD_TAG_BITS
    add rax, r9
    test rdi, rdi
    jnz .Ltime_store_tloc
    ret
.Ltime_common:
    lea r11, [rip + .Lblob_start + TSK_DATA_PAGE]
.Ltime_retry:
    TSK_SELECT_SLOT
    test byte ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_MASK], 1
    jz .Ltime_unselected                # CLOCK_REALTIME not selected
    cmp dword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_FLAGS], 0
    jne .Ltime_flagged                  # needs the nanoseconds (or the syscall)
    mov r9, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_CLOCKS]           # clocks[0].sec
    mov r10, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_CLOCKS + 8]      # clocks[0].nsec
    mov rdx, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_DEADLINES]       # deadlines[0].sec
    cmp r8, qword ptr [r11 + TSK_OFF_GENERATION]
    jne .Ltime_retry
    cmp rax, rdx
    jge .Ltime_deadline_second_or_later
    test r10, r10
    jnz .Ltime_slow                     # fractional offset: the carry depends on the ns
    add rax, r9                         # whole-second offset before the deadline: exact
.Ltime_store:
    test rdi, rdi
    jnz .Ltime_store_tloc
    ret
.Ltime_store_tloc:
    mov qword ptr [rdi], rax
    ret
.Ltime_unselected:
    cmp r8, qword ptr [r11 + TSK_OFF_GENERATION]
    jne .Ltime_retry
    test rdi, rdi                       # realtime not selected: t itself
    jnz .Ltime_store_tloc
    ret
.Ltime_deadline_second_or_later:
    jg .Ltime_store                     # past the deadline's second (flags of cmp rax, rdx)
                                        # the deadline's own second: depends on the ns
.Ltime_slow:                            # rdi = tloc; the fast path's push is popped
    sub rsp, TSK_FRAME
    .cfi_adjust_cfa_offset TSK_FRAME
    mov qword ptr [rsp + 16], rdi       # tloc; [rsp] .. [rsp + 15] is a struct timespec
    mov edi, TSK_CLOCK_REALTIME_COARSE
    mov rsi, rsp
    call .Lstub_clock_gettime
    mov rdi, qword ptr [rsp + 16]
    mov rsi, qword ptr [rsp]            # sec
    mov rdx, qword ptr [rsp + 8]        # nsec
    add rsp, TSK_FRAME
    .cfi_adjust_cfa_offset -TSK_FRAME
    test eax, eax
    jnz .Ltime_syscall
    lea r11, [rip + .Lblob_start + TSK_DATA_PAGE]
.Ltime_slow_retry:
    TSK_SELECT_SLOT
    test byte ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_MASK], 1
    jz .Ltime_slow_unselected
    cmp dword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_FLAGS], 0
    jne .Ltime_coarse                   # published meanwhile: read again, the flagged way
    mov r9, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_CLOCKS]           # clocks[0].sec
    mov r10, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_CLOCKS + 8]      # clocks[0].nsec
    mov rax, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_DEADLINES]       # deadlines[0].sec
    mov rcx, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_DEADLINES + 8]   # deadlines[0].nsec
    cmp r8, qword ptr [r11 + TSK_OFF_GENERATION]
    jne .Ltime_slow_retry
    cmp rsi, rax
    jl .Ltime_slow_shift
    jg .Ltime_slow_done                 # after the deadline: the coarse seconds
    cmp rdx, rcx
    jge .Ltime_slow_done
.Ltime_slow_shift:
    add rsi, r9
    add rdx, r10                        # both in [0, 1e9): at most one carry
    cmp rdx, TSK_NSEC_PER_SEC
    jb .Ltime_slow_done
    add rsi, 1
.Ltime_slow_done:
    mov rax, rsi
    jmp .Ltime_store
.Ltime_slow_unselected:
    cmp r8, qword ptr [r11 + TSK_OFF_GENERATION]
    jne .Ltime_slow_retry
    jmp .Ltime_slow_done
.Ltime_syscall:
    mov eax, TSK_SYS_TIME               # fallback: raw time(tloc), result returned as is
    syscall
    ret

# Flagged (realtime selected, flags != 0, unchecked), reached with the fast path's push popped
# (rsp as at entry), rdi = tloc, rcx = the slot read. The real reading is CLOCK_REALTIME_COARSE,
# with the genuine clock_gettime or, with slow reads, the system call; it stays in the frame
# while the parameters are read (a retry reuses it).
.Ltime_flagged:                         # rax = t, r11 data page, r8 generation
    # The fast case without slow reads, when the seconds decide: t after the window's first
    # second (its own second would need the ns), below its end and the deadline's second; a
    # value gives its seconds, an offset of whole seconds t + those seconds.
    test byte ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_FLAGS], TSK_FLAG_SLOW_READS
    jnz .Ltime_coarse
    cmp rax, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_FAST + TSK_FAST_UNTIL]
    jge .Ltime_coarse
    cmp rax, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_FAST + TSK_FAST_FROM]
    jle .Ltime_coarse
    mov r9, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_FAST + TSK_FAST_PAIR]       # sec
    mov r10, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_FAST + TSK_FAST_PAIR + 8]  # nsec
    mov rdx, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_DEADLINES]       # deadlines[0].sec
    mov esi, dword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_FAST_KIND]
    cmp r8, qword ptr [r11 + TSK_OFF_GENERATION]
    jne .Ltime_retry
    cmp rax, rdx
    jge .Ltime_coarse                   # the deadline's second or later: the coarse way
    cmp esi, TSK_FAST_VALUE
    je .Ltime_fast_value
    test r10, r10
    jnz .Ltime_coarse                   # a fractional offset: the carry depends on the ns
    add rax, r9
    jmp .Ltime_store
.Ltime_fast_value:
    mov rax, r9
    jmp .Ltime_store
.Ltime_coarse:                          # rcx = a slot read (its flags, unchecked)
    sub rsp, TSK_FRAME
    .cfi_adjust_cfa_offset TSK_FRAME
    mov qword ptr [rsp + 16], rdi       # tloc; [rsp] .. [rsp + 15] is a struct timespec
    mov edi, TSK_CLOCK_REALTIME_COARSE
    mov rsi, rsp
    # Unchecked flag: a torn or stale value is harmless, both ways give a real reading.
    test byte ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_FLAGS], TSK_FLAG_SLOW_READS
    jnz .Ltime_flagged_syscall
    call .Lstub_clock_gettime
    jmp .Ltime_flagged_read
.Ltime_flagged_syscall:
    mov eax, TSK_SYS_CLOCK_GETTIME
    syscall
.Ltime_flagged_read:
    test eax, eax
    jz .Ltime_flagged_retry
    mov rdi, qword ptr [rsp + 16]
    add rsp, TSK_FRAME
    .cfi_adjust_cfa_offset -TSK_FRAME
    jmp .Ltime_syscall                  # no reading: the raw time(tloc)
    .cfi_adjust_cfa_offset TSK_FRAME    # (the code below still holds the frame)
.Ltime_flagged_retry:
    lea r11, [rip + .Lblob_start + TSK_DATA_PAGE]
    TSK_SELECT_SLOT
    test byte ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_MASK], 1
    jz .Ltime_flagged_real
    mov rax, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_DEADLINES]
    cmp qword ptr [rsp], rax
    jl .Ltime_flagged_eval
    jg .Ltime_flagged_real
    mov rax, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_DEADLINES + 8]
    cmp qword ptr [rsp + 8], rax
    jge .Ltime_flagged_real
.Ltime_flagged_eval:
    imul r9, qword ptr [rsp], TSK_NSEC_PER_SEC
    add r9, qword ptr [rsp + 8]         # real ns
    xor edi, edi                        # the realtime parameters (id 0)
    call .Lprogram                      # r9 = floor seconds (any flags: constant path too)
    cmp r8, qword ptr [rip + .Lblob_start + TSK_DATA_PAGE + TSK_OFF_GENERATION]
    jne .Ltime_flagged_retry
    mov rax, r9
    jmp .Ltime_flagged_done
.Ltime_flagged_real:
    cmp r8, qword ptr [rip + .Lblob_start + TSK_DATA_PAGE + TSK_OFF_GENERATION]
    jne .Ltime_flagged_retry
    mov rax, qword ptr [rsp]            # the coarse seconds
.Ltime_flagged_done:
    mov rdi, qword ptr [rsp + 16]
    add rsp, TSK_FRAME
    .cfi_adjust_cfa_offset -TSK_FRAME
    jmp .Ltime_store
    .cfi_endproc
.size timeskew_fake_time, . - timeskew_fake_time

# .Lprogram: what the selected clock reads, exactly as data_page::Params::reading (its caller
# has checked the mask and the deadline), then split into (seconds, nanoseconds) by floor.
# In:  rcx = the slot base (slot = rcx + OFF_SLOT0), rdi = clock id (0..31, zero-extended),
#      r9 = the real reading in ns. Called inside a checked read: the caller re-checks the
#      generation afterwards; a torn slot only yields a value that is then thrown away (the
#      segment count is clamped and the divisions are bounded, so it cannot fault or loop).
# Out: r9 = floor(value / 1e9), r10 = value mod 1e9 in [0, 1e9).
# Clobbers rax, rdx, r10, r11, flags; keeps rcx, rsi, rdi, r8. Uses no stack but its return
# address (so needs no alignment); no `div`: divisions are a multiply by a reciprocal
# floor((2^64 - 1) / d) and at most two corrections (data_page::div_by_reciprocal).
.p2align 4, 0xcc
.Lprogram:
    .cfi_startproc
    test byte ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_FLAGS], TSK_FLAG_PROGRAM
    jz .Lprog_offset
    sub r9, qword ptr [rcx + rdi * 8 + TSK_OFF_SLOT0 + TSK_SLOT_OFF_ANCHORS]   # e
    # The segment: the last one whose start <= e among the first min(count, MAX) (at least
    # one); segment 0 when none.
    mov eax, dword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_SEGMENT_COUNT]
    mov edx, TSK_MAX_SEGMENTS
    cmp eax, edx
    cmova eax, edx
    imul eax, eax, TSK_SEGMENT_LEN
    lea r10, [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_SEGMENTS]    # &segments[0]
    lea rdx, [r10 + rax]                                      # &segments[count]
.Lprog_segment_down:
    sub rdx, TSK_SEGMENT_LEN
    cmp rdx, r10
    jbe .Lprog_segment                  # segment 0 (count 0 or 1 included)
    cmp r9, qword ptr [rdx + TSK_SEG_START]
    jl .Lprog_segment_down              # e before this start, signed
    mov r10, rdx
.Lprog_segment:                         # r10 = the segment
    mov rax, r9
    sub rax, qword ptr [r10 + TSK_SEG_START]    # d = e - start (wrapping)
    js .Lprog_before                            # before segment 0's start: its start's value
    # floor(d * rate / 2^RATE_SHIFT) mod 2^64 as d * int(rate) + mulhi(d, frac(rate) << (64 -
    # RATE_SHIFT)): the two products are independent (a shorter chain than a 128-bit product
    # then a double shift) and give the same bits (d >= 0, rate < 2^63).
    mov rdx, qword ptr [r10 + TSK_SEG_RATE]
    mov r11, rdx
    shr r11, TSK_RATE_SHIFT
    shl rdx, 64 - TSK_RATE_SHIFT
    imul r11, rax                               # d * int(rate), low 64 bits
    mul rdx                                     # rdx = floor(d * frac / 2^64)
    add r11, rdx
    add r11, qword ptr [r10 + TSK_SEG_VALUE]    # g(e) without the strobe
    jmp .Lprog_moved
.Lprog_before:
    mov r11, qword ptr [r10 + TSK_SEG_VALUE]
.Lprog_moved:
    mov r10, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_STROBE_PERIOD]
    test r10, r10
    jz .Lprog_base                      # no strobe
    test r9, r9
    js .Lprog_base                      # the strobe runs from e = 0 on
    mov rax, r9
    mul qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_STROBE_RECIP]   # rdx = q <= e / period
    mov rax, rdx
    imul rax, r10
    neg rax
    add rax, r9                         # e - q * period
    cmp rax, r10
    jb .Lprog_strobe
    add rdx, 1
    sub rax, r10
    cmp rax, r10
    jb .Lprog_strobe
    add rdx, 1
.Lprog_strobe:
    test dl, 1
    jz .Lprog_base                      # an even period
    add r11, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_STROBE_DELTA]
.Lprog_base:
    add r11, qword ptr [rcx + rdi * 8 + TSK_OFF_SLOT0 + TSK_SLOT_OFF_BASES]
    mov r9, r11
    jmp .Lprog_round
.Lprog_offset:                          # the constant path: real + offsets[id]
    mov rax, rdi
    shl rax, TSK_CLOCK_ENTRY_SHIFT
    imul r10, qword ptr [rcx + rax + TSK_OFF_SLOT0 + TSK_SLOT_OFF_CLOCKS], TSK_NSEC_PER_SEC
    add r10, qword ptr [rcx + rax + TSK_OFF_SLOT0 + TSK_SLOT_OFF_CLOCKS + 8]
    add r9, r10                         # wrapping, as the model
.Lprog_round:                           # down to a multiple of the resolution, values >= 0
    test byte ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_FLAGS], TSK_FLAG_RESOLUTION
    jz .Lprog_split
    test r9, r9
    js .Lprog_split
    mov r10, qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_RESOLUTION]
    cmp r10, 1
    jbe .Lprog_split
    mov rax, r9
    mul qword ptr [rcx + TSK_OFF_SLOT0 + TSK_SLOT_OFF_RESOLUTION_RECIP]  # rdx = q
    mov rax, rdx
    imul rax, r10
    mov r11, r9
    sub r11, rax                        # value - q * resolution
    cmp r11, r10
    jb .Lprog_rounded
    sub r11, r10
    cmp r11, r10
    jb .Lprog_rounded
    sub r11, r10
.Lprog_rounded:
    sub r9, r11                         # floor(value / resolution) * resolution
.Lprog_split:                           # r9 -> floor(r9 / 1e9), r9 mod 1e9, signed
    test r9, r9
    js .Lprog_split_negative            # rare: a branch keeps the sign out of the chain
    mov rax, TSK_NSEC_RECIP
    mul r9                              # rdx = q <= v / 1e9
    imul rax, rdx, TSK_NSEC_PER_SEC
    mov r10, r9
    sub r10, rax                        # v - q * 1e9
    cmp r10, TSK_NSEC_PER_SEC
    jae .Lprog_split_fix
    mov r9, rdx
    ret
.Lprog_split_fix:
    add rdx, 1
    sub r10, TSK_NSEC_PER_SEC
    cmp r10, TSK_NSEC_PER_SEC
    jb .Lprog_split_fixed
    add rdx, 1
    sub r10, TSK_NSEC_PER_SEC
.Lprog_split_fixed:
    mov r9, rdx
    ret
.Lprog_split_negative:
    mov r11, r9
    sar r11, 63                         # -1
    mov r10, r9
    xor r10, r11                        # u = -v - 1: in [0, 2^63)
    mov rax, TSK_NSEC_RECIP
    mul r10                             # rdx = q <= u / 1e9
    imul rax, rdx, TSK_NSEC_PER_SEC
    sub r10, rax                        # u - q * 1e9
    cmp r10, TSK_NSEC_PER_SEC
    jb .Lprog_split_done
    add rdx, 1
    sub r10, TSK_NSEC_PER_SEC
    cmp r10, TSK_NSEC_PER_SEC
    jb .Lprog_split_done
    add rdx, 1
    sub r10, TSK_NSEC_PER_SEC
.Lprog_split_done:
    # v = -(q * 1e9 + r) - 1: (-q - 1, 1e9 - 1 - r).
    xor rdx, r11
    xor r10, r11
    add r10, TSK_NSEC_PER_SEC
    mov r9, rdx
    ret
    .cfi_endproc

# The membarrier registration helper (ptrace/live/worker.rs `register_in_helper`). The worker
# thread runs clone(CLONE_VM | CLONE_THREAD | ..., no new stack) at this `syscall`, with every
# signal blocked; its own registers and mask are put back at the call's exit stop, so it never
# runs what follows. The new thread starts right after the instruction (rax = 0), inherits the
# blocked mask (no signal of the program can land on it), registers the process for
# core-serializing barriers — one RCU grace period, milliseconds, spent here rather than in a
# thread of the program — and exits with the errno (0: registered). It touches no stack (it
# shares the worker's stack pointer) and no memory.
.p2align 4, 0xcc
.Lregister_helper:
    syscall
    mov eax, TSK_SYS_MEMBARRIER
    mov edi, TSK_MEMBARRIER_REGISTER_SYNC_CORE
    xor esi, esi
    xor edx, edx
    syscall
    neg eax                             # -errno -> errno
    mov edi, eax
    mov eax, TSK_SYS_EXIT
    syscall
    ud2

# Stub slots: filled by the injector; int3 until then.
.p2align 4, 0xcc
.Lstub_clock_gettime:
    .fill TSK_STUB_CAPACITY, 1, 0xcc
.Lstub_gettimeofday:
    .fill TSK_STUB_CAPACITY, 1, 0xcc
.Lstub_time:
    .fill TSK_STUB_CAPACITY, 1, 0xcc
timeskew_fake_end:
.popsection
