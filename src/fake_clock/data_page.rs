//! The data page: the state of an injection, kept in the target so that any later `timeskew`
//! process can find, update and undo it.
//!
//! The page sits exactly one page above the code page, which reads it RIP-relatively. The
//! offsets below are the one home of the layout: `fake_clock` passes them to its assembly as
//! `global_asm!` operands. All fields are little-endian.
//!
//! ```text
//! 0x000 magic         [u8; 8]  b"TSKWDATA"
//! 0x008 version       u32      LAYOUT_VERSION
//! 0x00c patched       u32      1 while the vDSO jumps are installed, 0 after recover
//! 0x010 generation    u64      bumped by every parameter update; slot = generation & 1
//! 0x018 vdso_base     u64      the vDSO these hooks were built for
//! 0x020 code_addr     u64      the code page
//! 0x028 patch_count   u32
//! 0x030 patches[4]    32 bytes each: addr u64, len u32, pad u32, original [u8; 16]
//! 0x0b0 time_word     u64      time()'s summary of the active slot (see [`time_word`])
//! 0x100 slot 0        SLOT_LEN bytes (see below)
//! 0x800 slot 1
//! slot: 0x00 mask u32 (bit n: clock id n is skewed), 0x04 flags u32 (FLAG_*), 0x08 segment
//!       count u32, 0x0c fast kind u32 (FAST_*), 0x10 gtod_sec i64, 0x18 gtod_usec i64
//!       (0..1e6): clocks[0] in microseconds (with a program: fast[0]'s pair),
//!       0x020 clocks[32]    { sec i64, nsec i64 (0..1e9) }   the offset per clock id; with a
//!             program this area instead holds fast[FAST_CLOCKS] { pair sec i64, pair nsec
//!             i64, from sec i64, from nsec i64, until sec i64 }: clock id n < FAST_CLOCKS
//!             takes the fast case while its real reading is at least (from sec, from nsec)
//!             and its real seconds below until sec
//!       0x220 deadlines[32] { sec i64, nsec i64 (0..1e9) }   the skew of clock id n applies
//!             while its real reading is below deadlines[n]; sec = i64::MAX: no deadline.
//!             gettimeofday and time use deadlines[0]. A zeroed slot passes real time through.
//!       -- the clock program, read only when a flag says so --
//!       0x420 resolution u64 (ns), 0x428 its reciprocal u64 (floor((2^64-1)/resolution))
//!       0x430 strobe period u64 (ns; 0: none), 0x438 its reciprocal, 0x440 strobe delta i64
//!       0x448 segments[4]  { start i64, value i64, rate u64 (fixed point, RATE_SHIFT bits) }
//!       0x4a8 anchors[32]  i64: clock id n's real reading when the program started
//!       0x5a8 bases[32]    i64: what clock id n read then
//! ```
//!
//! The clock program (`FLAG_PROGRAM`): clock id n reads `bases[n] + g(e)` where `e = real −
//! anchors[n]` and `g` is piecewise linear: segment k (the last whose start ≤ e; segment 0
//! before every start) gives `value_k + max(e − start_k, 0)·rate_k`, the product taken in 128
//! bits and shifted down RATE_SHIFT (so before segment 0's start the clock stands at its
//! value). With a strobe, `delta` is added in every odd period of `e ≥ 0`. `FLAG_RESOLUTION`
//! rounds the reading down to a multiple of the resolution; the reciprocals spare the fake a
//! `div`. Without `FLAG_PROGRAM` the reading is real + clocks[n] (the constant offset, the fast
//! path). `FLAG_SLOW_READS` makes the fake take the real reading with the system call instead
//! of the vDSO.
//!
//! The fast case of a program ([`FastCase`], derived here by `encode_slot`, so it cannot
//! disagree with the program): one piece of the program at rate 1 or 0 without a strobe — the
//! first one in force from the switch on — is, for each clock, real time plus a constant
//! (`FAST_OFFSET`: the pair, split as the constant offset is) or a constant (`FAST_VALUE`: the
//! rounded value). While clock n's real reading lies in its window, which the piece covers,
//! the fake adds or stores that pair — no multiply, no split — and takes the exact general path
//! otherwise (the window ends at a whole second, so the last partial second of a piece takes
//! the general path). Decoding recovers offsets_ns as bases − anchors, which is what
//! `target::program::compile` writes.
//!
//! Live updates never tear: the writer fills the *inactive* slot, then bumps `generation` (one
//! aligned word). A reader takes the generation, reads the slot it selects, and retries if the
//! generation changed meanwhile. A writer that dies half-way leaves the active slot intact.
//! After the generation the writer stores `time_word`, tagged with that generation: `time()`
//! answers from it alone when its tag matches the generation (two loads instead of a checked
//! slot read); a stale or missing word (a writer that died before it, or one that does not know
//! it) only sends `time()` to the slot.

use crate::error::{Error, Result};

pub const PAGE_SIZE: u64 = 4096;
pub const DATA_MAGIC: [u8; 8] = *b"TSKWDATA";
pub const LAYOUT_VERSION: u32 = 3;

pub const OFF_MAGIC: usize = 0x000;
pub const OFF_VERSION: usize = 0x008;
pub const OFF_PATCHED: usize = 0x00c;
pub const OFF_GENERATION: usize = 0x010;
pub const OFF_VDSO_BASE: usize = 0x018;
pub const OFF_CODE_ADDR: usize = 0x020;
pub const OFF_PATCH_COUNT: usize = 0x028;
pub const OFF_PATCHES: usize = 0x030;
pub const OFF_TIME_WORD: usize = 0x0b0;
/// Bits of [`time_word`] that hold the generation tag: 32, so a stale word could only match
/// again after 2^32 publications that all skipped it (writers that died before it, or an older
/// timeskew that does not write it); the seconds keep ±2^31 s (68 years), enough for any real
/// skew — a larger one takes the slot path.
pub const TIME_WORD_TAG_BITS: u32 = 32;
const TIME_WORD_TAG_MASK: u64 = (1 << TIME_WORD_TAG_BITS) - 1;
pub const PATCH_RECORD_LEN: usize = 32;
pub const MAX_PATCHES: usize = 4;
/// Longest original byte run we keep per patch: a layout fact (16 of the record's 32 bytes), not
/// the longest window (on x86_64 up to 4 + 15 bytes), which is stored cut to this length.
/// Only the first `Arch::JUMP_LEN` bytes are ever overwritten, and restoring those is enough.
pub const MAX_PATCH_LEN: usize = {
    assert!(<crate::arch::Native as crate::arch::Arch>::JUMP_LEN <= 16);
    16
};

pub const OFF_SLOT0: usize = 0x100;
pub const SLOT_STRIDE: usize = 0x700;
pub const SLOT_OFF_MASK: usize = 0x00;
pub const SLOT_OFF_FLAGS: usize = 0x04;
pub const SLOT_OFF_SEGMENT_COUNT: usize = 0x08;
pub const SLOT_OFF_FAST_KIND: usize = 0x0c;
pub const SLOT_OFF_GTOD_SEC: usize = 0x10;
pub const SLOT_OFF_GTOD_USEC: usize = 0x18;
pub const SLOT_OFF_CLOCKS: usize = 0x20;
pub const CLOCK_ENTRY_LEN: usize = 16;
pub const MAX_CLOCK_ID: usize = 31;
pub const SLOT_OFF_DEADLINES: usize = SLOT_OFF_CLOCKS + (MAX_CLOCK_ID + 1) * CLOCK_ENTRY_LEN;
pub const SLOT_OFF_RESOLUTION: usize = SLOT_OFF_DEADLINES + (MAX_CLOCK_ID + 1) * CLOCK_ENTRY_LEN;
pub const SLOT_OFF_RESOLUTION_RECIP: usize = SLOT_OFF_RESOLUTION + 8;
pub const SLOT_OFF_STROBE_PERIOD: usize = SLOT_OFF_RESOLUTION + 16;
pub const SLOT_OFF_STROBE_RECIP: usize = SLOT_OFF_RESOLUTION + 24;
pub const SLOT_OFF_STROBE_DELTA: usize = SLOT_OFF_RESOLUTION + 32;
pub const SLOT_OFF_SEGMENTS: usize = SLOT_OFF_RESOLUTION + 40;
pub const SEGMENT_LEN: usize = 24;
pub const MAX_SEGMENTS: usize = 4;
pub const SLOT_OFF_ANCHORS: usize = SLOT_OFF_SEGMENTS + MAX_SEGMENTS * SEGMENT_LEN;
pub const SLOT_OFF_BASES: usize = SLOT_OFF_ANCHORS + (MAX_CLOCK_ID + 1) * 8;
pub const SLOT_LEN: usize = SLOT_OFF_BASES + (MAX_CLOCK_ID + 1) * 8;
/// With a program, the clocks area holds the fast entries instead (nothing reads clocks[]
/// then): one per clock id below FAST_CLOCKS, every clock Linux defines (0..=11, TAI last; a
/// higher id fails in the genuine code anyway).
pub const SLOT_OFF_FAST: usize = SLOT_OFF_CLOCKS;
pub const FAST_CLOCKS: usize = 12;
pub const FAST_ENTRY_LEN: usize = 40;
pub const FAST_PAIR: usize = 0;
pub const FAST_FROM: usize = 16;
pub const FAST_UNTIL: usize = 32;
/// The slot's fast kind: no fast case (windows empty).
pub const FAST_NONE: u32 = 0;
/// In its window, clock n reads real + clocks[n].
pub const FAST_OFFSET: u32 = 1;
/// In its window, clock n reads clocks[n].
pub const FAST_VALUE: u32 = 2;
/// The slot's `flags`: the selected clocks follow the program (not the constant offsets).
pub const FLAG_PROGRAM: u32 = 1;
/// The reading is rounded down to a multiple of the resolution.
pub const FLAG_RESOLUTION: u32 = 2;
/// The real reading is taken with the system call, not the vDSO.
pub const FLAG_SLOW_READS: u32 = 4;
/// The program's rates are fixed point with this many fraction bits: a rate ≤ 1000 still fits
/// a signed 64-bit word (the fake's `imul`), and its step, 2^-53, keeps an hour at any rate
/// exact to well under a nanosecond.
pub const RATE_SHIFT: u32 = 53;
/// A rate of exactly 1.
pub const RATE_ONE: u64 = 1 << RATE_SHIFT;
/// The fastest rate a program may hold: 1000 × real speed.
pub const MAX_RATE: u64 = 1000 * RATE_ONE;
/// `expires_ns` value for "no deadline".
pub const NEVER: i64 = i64::MAX;

const NANOS_PER_SEC: i64 = 1_000_000_000;

// The regions must not overlap and must fit the page.
const _: () = assert!(OFF_PATCHES + MAX_PATCHES * PATCH_RECORD_LEN <= OFF_TIME_WORD);
const _: () = assert!(OFF_TIME_WORD + 8 <= OFF_SLOT0 && OFF_TIME_WORD.is_multiple_of(8));
const _: () = assert!(OFF_SLOT0 + SLOT_LEN <= OFF_SLOT0 + SLOT_STRIDE);
const _: () = assert!(OFF_SLOT0 + SLOT_STRIDE + SLOT_LEN <= PAGE_SIZE as usize);
const _: () = assert!(MAX_RATE <= i64::MAX as u64);
const _: () = assert!(SLOT_OFF_ANCHORS == 0x4a8 && SLOT_OFF_BASES == 0x5a8 && SLOT_LEN == 0x6a8);
const _: () = assert!(
    SLOT_OFF_FAST + FAST_CLOCKS * FAST_ENTRY_LEN <= SLOT_OFF_CLOCKS + (MAX_CLOCK_ID + 1) * 16
);

/// One vDSO entry whose first bytes were replaced by a jump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    /// Address of the patched instruction bytes in the target.
    pub addr: u64,
    /// The bytes that were there before (as many as the jump overwrote).
    pub original: Vec<u8>,
}

/// Offsets per clock id, in nanoseconds, which ids are skewed, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub mask: u32,
    pub offsets_ns: [i64; MAX_CLOCK_ID + 1],
    /// Per clock id, the real reading of that clock (as the target sees it) at which the skew
    /// ends by itself — the dead man's switch of `--duration`; [`NEVER`] for no deadline.
    pub expires_ns: [i64; MAX_CLOCK_ID + 1],
    /// The shape, when it is more than the constant offsets above.
    pub program: Option<Program>,
    /// Readings rounded down to a multiple of this many ns; 0: not rounded.
    pub resolution_ns: u64,
    /// Real readings taken with the system call instead of the vDSO.
    pub slow_reads: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            mask: 0,
            offsets_ns: [0; MAX_CLOCK_ID + 1],
            expires_ns: [NEVER; MAX_CLOCK_ID + 1],
            program: None,
            resolution_ns: 0,
            slow_reads: false,
        }
    }
}

/// One piece of a clock program: from `start_ns` (time since the anchor) on, the clock reads
/// `value_ns + (e − start_ns)·rate` on top of its base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub start_ns: i64,
    pub value_ns: i64,
    /// The rate, fixed point ([`RATE_SHIFT`]): [`RATE_ONE`] runs at real speed, 0 stands still.
    pub rate: u64,
}

/// Alternating between the program's value and that value plus `delta_ns`, every `period_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strobe {
    pub period_ns: u64,
    pub delta_ns: i64,
}

/// A clock program: what each selected clock reads as a function of its real reading. The
/// shape (segments, strobe) is shared; each clock has its own anchor (its real reading when
/// the program started) and base (what it read then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// 1 to [`MAX_SEGMENTS`] segments; at `e` the last one whose start is reached is in force,
    /// segment 0 before them all (the starts need not be sorted).
    pub segments: Vec<Segment>,
    pub strobe: Option<Strobe>,
    pub anchors_ns: [i64; MAX_CLOCK_ID + 1],
    pub bases_ns: [i64; MAX_CLOCK_ID + 1],
}

/// `floor((2^64 − 1) / d)`: with it, `floor(x / d)` is `mulhi(x, recip)` plus at most two
/// corrections, which is how the fake divides without `div`.
pub fn reciprocal(d: u64) -> u64 {
    u64::MAX / d.max(1)
}

/// `floor(x / d)` the way the fake computes it (reciprocal multiply, then correction).
pub fn div_by_reciprocal(x: u64, d: u64, recip: u64) -> u64 {
    let mut q = ((x as u128 * recip as u128) >> 64) as u64;
    let mut r = x - q * d;
    while r >= d {
        q += 1;
        r -= d;
    }
    q
}

impl Program {
    /// The segment in force `e` ns after the anchor: the last one starting at or before `e`,
    /// the first one before them all.
    pub fn segment_at(&self, e: i64) -> &Segment {
        self.segments
            .iter()
            .rev()
            .find(|s| s.start_ns <= e)
            .unwrap_or(&self.segments[0])
    }

    /// How far the clock has moved from its base `e` ns after the anchor along the segments,
    /// without the strobe.
    pub fn moved_at(&self, e: i64) -> i64 {
        let s = self.segment_at(e);
        // Before segment 0's start the clock stands at that start's value: a program keeps a
        // few pieces of history, and a reading from before them (a reader preempted for long
        // between taking it and reading the parameters) must not come out lower than what the
        // dropped pieces gave — never lower than any reading made since (rates are never
        // negative, so the value at a start is at least everything before it).
        let d = e.wrapping_sub(s.start_ns).max(0) as i128;
        let moved = ((d * s.rate as i128) >> RATE_SHIFT) as i64;
        s.value_ns.wrapping_add(moved)
    }

    /// `g(e)`: how far the clock has moved from its base `e` ns after the anchor, strobe
    /// included — exactly what the fake computes.
    pub fn shape_at(&self, e: i64) -> i64 {
        let mut g = self.moved_at(e);
        if let Some(strobe) = self.strobe
            && e >= 0
            && div_by_reciprocal(e as u64, strobe.period_ns, reciprocal(strobe.period_ns)) & 1 == 1
        {
            g = g.wrapping_add(strobe.delta_ns);
        }
        g
    }
}

/// The fast case of a program (see the module docs): the piece it covers and, per clock, its
/// window and the pair the fake adds or stores there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastCase {
    /// [`FAST_OFFSET`] or [`FAST_VALUE`].
    pub kind: u32,
    /// The piece: segment `index`, in force for `e` in `[start, until)`.
    pub index: usize,
    pub until: i128,
}

const NS: i128 = NANOS_PER_SEC as i128;

impl FastCase {
    /// The first piece in force from the switch (`e = 0`) on that needs neither a multiply
    /// nor a split: rate 1 (unrounded) or rate 0, no strobe. `None` when there is none.
    pub fn of(p: &Program, resolution_ns: u64) -> Option<FastCase> {
        if p.strobe.is_some() {
            return None;
        }
        let segs = &p.segments[..p.segments.len().clamp(1, MAX_SEGMENTS)];
        let mut best: Option<FastCase> = None;
        for (index, s) in segs.iter().enumerate() {
            let later = &segs[index + 1..];
            // A later segment starting no later shadows this one from its start on.
            if later.iter().any(|j| j.start_ns <= s.start_ns) {
                continue;
            }
            let kind = match s.rate {
                0 => FAST_VALUE,
                RATE_ONE if resolution_ns <= 1 => FAST_OFFSET,
                _ => continue,
            };
            let until = later
                .iter()
                .map(|j| i128::from(j.start_ns))
                .min()
                .unwrap_or(i128::MAX);
            if until > 0 && best.is_none_or(|b| until < b.until) {
                best = Some(FastCase { kind, index, until });
            }
        }
        best
    }

    /// Clock `id`'s window — from a real reading `from` (ns) on, while the real seconds are
    /// below `until` — and its pair: the offset (kind offset) or the value (kind value) in ns.
    /// Inside the window the model gives exactly real + offset, or the value: every
    /// intermediate stays in range (no wrapping), which the window is narrowed to ensure.
    /// `None`: an empty window.
    pub fn for_clock(&self, params: &Params, p: &Program, id: usize) -> Option<(i64, i64, i128)> {
        let s = p.segments[self.index];
        let (anchor, base) = (i128::from(p.anchors_ns[id]), i128::from(p.bases_ns[id]));
        let (min, max) = (i128::from(i64::MIN), i128::from(i64::MAX));
        let start = i128::from(s.start_ns);
        // e = real − anchor and e − start must not overflow, nor real itself.
        let until_e = self.until.min(start + max).min(max);
        let mut lo = (anchor + start).max(min);
        let mut hi = (anchor + until_e).min(max);
        let pair = if self.kind == FAST_OFFSET {
            let c = base + i128::from(s.value_ns) - anchor - start;
            // real + c must not overflow either (the model would wrap).
            lo = lo.max(min - c);
            hi = hi.min(max - c);
            c
        } else {
            i128::from(params.round(p.bases_ns[id].wrapping_add(s.value_ns)))
        };
        // real_sec < until implies real < hi.
        let until = hi.div_euclid(NS);
        (lo < until * NS).then_some((lo as i64, until as i64, pair))
    }
}

/// `v` split into whole `NANOS_PER_SEC` units (floor) and a remainder in `unit`s, for values
/// beyond i64 (a fast offset may lie there; its seconds do not).
fn split_wide(v: i128, unit: i64) -> (i64, i64) {
    let sec = v.div_euclid(NS) as i64;
    let sub = (v.rem_euclid(NS) / (NS / i128::from(unit))) as i64;
    (sec, sub)
}

impl Params {
    /// What clock id `id` reads when its real reading is `real_ns` — the model of the fake:
    /// `None` when the reading passes through untouched (not selected, or past its deadline).
    pub fn reading(&self, id: usize, real_ns: i64) -> Option<i64> {
        if id > MAX_CLOCK_ID || self.mask & (1 << id) == 0 || real_ns >= self.expires_ns[id] {
            return None;
        }
        let value = match &self.program {
            None => real_ns.wrapping_add(self.offsets_ns[id]),
            Some(p) => {
                p.bases_ns[id].wrapping_add(p.shape_at(real_ns.wrapping_sub(p.anchors_ns[id])))
            }
        };
        Some(self.round(value))
    }

    /// The lowest offset from real time clock `id` starts from: its offset, or with a program
    /// the offset at the switch plus a negative strobe delta (rates are never negative, so the
    /// reading only grows from there).
    pub fn lowest_offset(&self, id: usize) -> i64 {
        let strobe_dip = self
            .program
            .as_ref()
            .and_then(|p| p.strobe)
            .map_or(0, |s| s.delta_ns.min(0));
        self.offsets_ns[id].saturating_add(strobe_dip)
    }

    /// `value` rounded down to the resolution (negative values are left alone: never read).
    pub fn round(&self, value: i64) -> i64 {
        if self.resolution_ns <= 1 || value < 0 {
            return value;
        }
        let r = self.resolution_ns;
        (div_by_reciprocal(value as u64, r, reciprocal(r)) * r) as i64
    }

    fn flags(&self) -> u32 {
        let mut f = 0;
        if self.program.is_some() {
            f |= FLAG_PROGRAM;
        }
        if self.resolution_ns > 1 {
            f |= FLAG_RESOLUTION;
        }
        if self.slow_reads {
            f |= FLAG_SLOW_READS;
        }
        f
    }
}

impl Params {
    /// True when no clock has a deadline.
    pub fn is_open_ended(&self) -> bool {
        self.expires_ns.iter().all(|&e| e == NEVER)
    }
}

/// Splits a signed nanosecond offset into whole seconds (floor) and a non-negative remainder,
/// which is what the fake adds; with the remainder in [0, 1e9) one conditional carry suffices.
pub fn split_offset(offset_ns: i64, unit: i64) -> (i64, i64) {
    let sec = offset_ns.div_euclid(NANOS_PER_SEC);
    let sub = offset_ns.rem_euclid(NANOS_PER_SEC) / (NANOS_PER_SEC / unit);
    (sec, sub)
}

impl Params {
    /// Encodes the parameters as one slot.
    pub fn encode_slot(&self) -> [u8; SLOT_LEN] {
        let mut s = [0u8; SLOT_LEN];
        put_u32(&mut s, SLOT_OFF_MASK, self.mask);
        // gettimeofday follows CLOCK_REALTIME (id 0).
        let rt = if self.mask & 1 != 0 {
            self.offsets_ns[0]
        } else {
            0
        };
        let (gsec, gusec) = split_offset(rt, 1_000_000);
        put_u64(&mut s, SLOT_OFF_GTOD_SEC, gsec as u64);
        put_u64(&mut s, SLOT_OFF_GTOD_USEC, gusec as u64);
        for (id, &off) in self.offsets_ns.iter().enumerate() {
            let (sec, nsec) = if self.mask & (1 << id) != 0 {
                split_offset(off, NANOS_PER_SEC)
            } else {
                (0, 0)
            };
            let at = SLOT_OFF_CLOCKS + id * CLOCK_ENTRY_LEN;
            put_u64(&mut s, at, sec as u64);
            put_u64(&mut s, at + 8, nsec as u64);
            let (dsec, dnsec) = match self.expires_ns[id] {
                NEVER => (NEVER, 0),
                e => split_offset(e, NANOS_PER_SEC),
            };
            let at = SLOT_OFF_DEADLINES + id * CLOCK_ENTRY_LEN;
            put_u64(&mut s, at, dsec as u64);
            put_u64(&mut s, at + 8, dnsec as u64);
        }
        put_u32(&mut s, SLOT_OFF_FLAGS, self.flags());
        if let Some(p) = &self.program {
            self.encode_fast(p, &mut s);
        }
        if self.resolution_ns > 1 {
            put_u64(&mut s, SLOT_OFF_RESOLUTION, self.resolution_ns);
            put_u64(
                &mut s,
                SLOT_OFF_RESOLUTION_RECIP,
                reciprocal(self.resolution_ns),
            );
        }
        if let Some(p) = &self.program {
            let count = p.segments.len().clamp(1, MAX_SEGMENTS);
            put_u32(&mut s, SLOT_OFF_SEGMENT_COUNT, count as u32);
            for (k, seg) in p.segments.iter().take(count).enumerate() {
                let at = SLOT_OFF_SEGMENTS + k * SEGMENT_LEN;
                put_u64(&mut s, at, seg.start_ns as u64);
                put_u64(&mut s, at + 8, seg.value_ns as u64);
                put_u64(&mut s, at + 16, seg.rate);
            }
            if let Some(strobe) = p.strobe {
                put_u64(&mut s, SLOT_OFF_STROBE_PERIOD, strobe.period_ns);
                put_u64(&mut s, SLOT_OFF_STROBE_RECIP, reciprocal(strobe.period_ns));
                put_u64(&mut s, SLOT_OFF_STROBE_DELTA, strobe.delta_ns as u64);
            }
            for id in 0..=MAX_CLOCK_ID {
                put_u64(&mut s, SLOT_OFF_ANCHORS + id * 8, p.anchors_ns[id] as u64);
                put_u64(&mut s, SLOT_OFF_BASES + id * 8, p.bases_ns[id] as u64);
            }
        }
        s
    }

    /// With a program, the clocks area holds the fast entries and the gtod pair fast[0]'s
    /// pair in microseconds; an empty window (unselected ids, no fast case) has from =
    /// (i64::MAX, 0) and until = i64::MIN.
    fn encode_fast(&self, p: &Program, s: &mut [u8; SLOT_LEN]) {
        let fast = FastCase::of(p, self.resolution_ns);
        put_u32(s, SLOT_OFF_FAST_KIND, fast.map_or(FAST_NONE, |f| f.kind));
        s[SLOT_OFF_CLOCKS..SLOT_OFF_DEADLINES].fill(0);
        put_u64(s, SLOT_OFF_GTOD_SEC, 0);
        put_u64(s, SLOT_OFF_GTOD_USEC, 0);
        for id in 0..FAST_CLOCKS {
            let window = match fast {
                Some(f) if self.mask & (1 << id) != 0 => f.for_clock(self, p, id),
                _ => None,
            };
            let (from, until, pair) = window.unwrap_or((i64::MAX, i64::MIN, 0));
            let (from_sec, from_nsec) = if window.is_some() {
                split_wide(i128::from(from), NANOS_PER_SEC)
            } else {
                (i64::MAX, 0)
            };
            let (sec, nsec) = split_wide(pair, NANOS_PER_SEC);
            let at = SLOT_OFF_FAST + id * FAST_ENTRY_LEN;
            put_u64(s, at + FAST_PAIR, sec as u64);
            put_u64(s, at + FAST_PAIR + 8, nsec as u64);
            put_u64(s, at + FAST_FROM, from_sec as u64);
            put_u64(s, at + FAST_FROM + 8, from_nsec as u64);
            put_u64(s, at + FAST_UNTIL, until as u64);
            if id == 0 {
                let (sec, usec) = split_wide(pair, 1_000_000);
                put_u64(s, SLOT_OFF_GTOD_SEC, sec as u64);
                put_u64(s, SLOT_OFF_GTOD_USEC, usec as u64);
            }
        }
    }

    /// Decodes a slot written by [`Params::encode_slot`].
    pub fn decode_slot(s: &[u8]) -> Params {
        let mut p = Params {
            mask: get_u32(s, SLOT_OFF_MASK),
            ..Params::default()
        };
        let join = |at: usize| {
            let sec = get_u64(s, at) as i64;
            let nsec = get_u64(s, at + 8) as i64;
            sec.saturating_mul(NANOS_PER_SEC).saturating_add(nsec)
        };
        for id in 0..=MAX_CLOCK_ID {
            p.offsets_ns[id] = join(SLOT_OFF_CLOCKS + id * CLOCK_ENTRY_LEN);
            let at = SLOT_OFF_DEADLINES + id * CLOCK_ENTRY_LEN;
            p.expires_ns[id] = if get_u64(s, at) as i64 == NEVER {
                NEVER
            } else {
                join(at)
            };
        }
        let flags = get_u32(s, SLOT_OFF_FLAGS);
        p.slow_reads = flags & FLAG_SLOW_READS != 0;
        if flags & FLAG_RESOLUTION != 0 {
            p.resolution_ns = get_u64(s, SLOT_OFF_RESOLUTION);
        }
        if flags & FLAG_PROGRAM != 0 {
            let count = (get_u32(s, SLOT_OFF_SEGMENT_COUNT) as usize).clamp(1, MAX_SEGMENTS);
            let segments = (0..count)
                .map(|k| {
                    let at = SLOT_OFF_SEGMENTS + k * SEGMENT_LEN;
                    Segment {
                        start_ns: get_u64(s, at) as i64,
                        value_ns: get_u64(s, at + 8) as i64,
                        rate: get_u64(s, at + 16),
                    }
                })
                .collect();
            let period = get_u64(s, SLOT_OFF_STROBE_PERIOD);
            let mut program = Program {
                segments,
                strobe: (period != 0).then(|| Strobe {
                    period_ns: period,
                    delta_ns: get_u64(s, SLOT_OFF_STROBE_DELTA) as i64,
                }),
                anchors_ns: [0; MAX_CLOCK_ID + 1],
                bases_ns: [0; MAX_CLOCK_ID + 1],
            };
            for id in 0..=MAX_CLOCK_ID {
                program.anchors_ns[id] = get_u64(s, SLOT_OFF_ANCHORS + id * 8) as i64;
                program.bases_ns[id] = get_u64(s, SLOT_OFF_BASES + id * 8) as i64;
                // clocks[] holds the fast case: the offset is what compile writes.
                p.offsets_ns[id] = if p.mask & (1 << id) != 0 {
                    program.bases_ns[id].saturating_sub(program.anchors_ns[id])
                } else {
                    0
                };
            }
            p.program = Some(program);
        }
        p
    }
}

/// Offset of slot `index` (0 or 1) in the data page.
pub fn slot_offset(index: u64) -> usize {
    OFF_SLOT0 + (index as usize & 1) * SLOT_STRIDE
}

/// `time()`'s summary of a slot published as `generation`: `(seconds << 32) | tag`. When the tag
/// is the generation's low 32 bits, `time()` returns the real seconds plus `seconds` — which the
/// slot makes exact: realtime not selected (0), or selected with no flag, a whole-second offset
/// within ±2^31 s and no deadline. Any other slot gets the tag `generation + 2^31`, which
/// never matches, and `time()` reads the slot.
pub fn time_word(slot: &[u8], generation: u64) -> u64 {
    let u32_at = |at: usize| u32::from_le_bytes(slot[at..at + 4].try_into().unwrap());
    let i64_at = |at: usize| i64::from_le_bytes(slot[at..at + 8].try_into().unwrap());
    let tag = generation & TIME_WORD_TAG_MASK;
    let limit = 1i64 << (63 - TIME_WORD_TAG_BITS);
    let seconds = if u32_at(SLOT_OFF_MASK) & 1 == 0 {
        Some(0)
    } else if u32_at(SLOT_OFF_FLAGS) == 0
        && i64_at(SLOT_OFF_CLOCKS + 8) == 0
        && i64_at(SLOT_OFF_DEADLINES) == i64::MAX
    {
        Some(i64_at(SLOT_OFF_CLOCKS)).filter(|s| (-limit..limit).contains(s))
    } else {
        None
    };
    match seconds {
        Some(s) => ((s as u64) << TIME_WORD_TAG_BITS) | tag,
        None => (tag + (1 << (TIME_WORD_TAG_BITS - 1))) & TIME_WORD_TAG_MASK,
    }
}

/// The decoded data page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPage {
    pub patched: bool,
    pub generation: u64,
    pub vdso_base: u64,
    pub code_addr: u64,
    pub patches: Vec<Patch>,
    /// The parameters in the active slot.
    pub params: Params,
}

impl DataPage {
    /// A fresh page: generation 0 selects slot 0, which holds `params`.
    pub fn encode(&self) -> Vec<u8> {
        let mut page = vec![0u8; PAGE_SIZE as usize];
        page[OFF_MAGIC..OFF_MAGIC + 8].copy_from_slice(&DATA_MAGIC);
        put_u32(&mut page, OFF_VERSION, LAYOUT_VERSION);
        put_u32(&mut page, OFF_PATCHED, self.patched as u32);
        put_u64(&mut page, OFF_GENERATION, self.generation);
        put_u64(&mut page, OFF_VDSO_BASE, self.vdso_base);
        put_u64(&mut page, OFF_CODE_ADDR, self.code_addr);
        put_u32(&mut page, OFF_PATCH_COUNT, self.patches.len() as u32);
        page[OFF_PATCHES..OFF_PATCHES + MAX_PATCHES * PATCH_RECORD_LEN]
            .copy_from_slice(&encode_patches(&self.patches));
        let slot = slot_offset(self.generation);
        let bytes = self.params.encode_slot();
        page[slot..slot + SLOT_LEN].copy_from_slice(&bytes);
        put_u64(&mut page, OFF_TIME_WORD, time_word(&bytes, self.generation));
        page
    }

    /// Decodes and validates a data page read from a target at `addr`.
    pub fn decode(pid: i32, addr: u64, page: &[u8]) -> Result<DataPage> {
        let bad = |reason: String| Error::CorruptState { pid, addr, reason };
        if page.len() < PAGE_SIZE as usize {
            return Err(bad(format!("short read ({} bytes)", page.len())));
        }
        if page[OFF_MAGIC..OFF_MAGIC + 8] != DATA_MAGIC {
            return Err(bad("no timeskew magic".into()));
        }
        let version = get_u32(page, OFF_VERSION);
        if version != LAYOUT_VERSION {
            return Err(bad(format!(
                "layout version {version}, this timeskew understands {LAYOUT_VERSION}; \
                 use the timeskew release that injected it"
            )));
        }
        let count = get_u32(page, OFF_PATCH_COUNT) as usize;
        if count > MAX_PATCHES {
            return Err(bad(format!(
                "{count} patch records (at most {MAX_PATCHES})"
            )));
        }
        let mut patches = Vec::with_capacity(count);
        for i in 0..count {
            let at = OFF_PATCHES + i * PATCH_RECORD_LEN;
            let len = get_u32(page, at + 8) as usize;
            if len == 0 || len > MAX_PATCH_LEN {
                return Err(bad(format!("patch {i} has length {len}")));
            }
            patches.push(Patch {
                addr: get_u64(page, at),
                original: page[at + 16..at + 16 + len].to_vec(),
            });
        }
        let generation = get_u64(page, OFF_GENERATION);
        let slot = slot_offset(generation);
        Ok(DataPage {
            patched: get_u32(page, OFF_PATCHED) != 0,
            generation,
            vdso_base: get_u64(page, OFF_VDSO_BASE),
            code_addr: get_u64(page, OFF_CODE_ADDR),
            patches,
            params: Params::decode_slot(&page[slot..slot + SLOT_LEN]),
        })
    }
}

/// The patch table as it is stored at [`OFF_PATCHES`].
pub fn encode_patches(patches: &[Patch]) -> Vec<u8> {
    let mut out = vec![0u8; MAX_PATCHES * PATCH_RECORD_LEN];
    for (i, p) in patches.iter().take(MAX_PATCHES).enumerate() {
        let at = i * PATCH_RECORD_LEN;
        let len = p.original.len().min(MAX_PATCH_LEN);
        put_u64(&mut out, at, p.addr);
        put_u32(&mut out, at + 8, len as u32);
        out[at + 16..at + 16 + len].copy_from_slice(&p.original[..len]);
    }
    out
}

pub(crate) fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn get_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4-byte slice"))
}
pub(crate) fn get_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8-byte slice"))
}

impl crate::skew::Skew {
    /// The data-page parameters: the selected clocks' bits in `mask` and the offset in
    /// `offsets_ns[id]` for each of them (zero elsewhere).
    pub(crate) fn params(&self) -> Params {
        let mut params = Params {
            mask: self.clocks().mask(),
            ..Params::default()
        };
        for clock in self.clocks().iter() {
            params.offsets_ns[clock.id() as usize] = self.offset().as_nanos();
        }
        params
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_word_summarises_only_what_the_seconds_decide() {
        let slot = |mask: u32, offset_ns: i64, deadline: Option<i64>| {
            let mut p = Params {
                mask,
                ..Params::default()
            };
            p.offsets_ns[0] = offset_ns;
            if let Some(d) = deadline {
                p.expires_ns = [d; MAX_CLOCK_ID + 1];
            }
            p.encode_slot()
        };
        let seconds = |w: u64| (w as i64) >> TIME_WORD_TAG_BITS;
        let tag = |w: u64| w & TIME_WORD_TAG_MASK;
        // Valid: tag = generation's low 32 bits, the whole seconds above it (either sign).
        for (offset, want) in [(-600_000_000_000, -600), (3_600_000_000_000, 3600), (0, 0)] {
            let w = time_word(&slot(1, offset, None), 0x1_2345_6789);
            assert_eq!((tag(w), seconds(w)), (0x2345_6789, want), "{offset}");
        }
        // Realtime not selected: 0, whatever clocks[0] holds.
        let w = time_word(&slot(0b10, 1_500_000_000, Some(5)), 7);
        assert_eq!((tag(w), seconds(w)), (7, 0));
        // A fraction, a deadline, a flag, an offset beyond ±2^31 s: a tag that never matches.
        let mut flagged = slot(1, 0, None);
        flagged[SLOT_OFF_FLAGS] = FLAG_SLOW_READS as u8;
        for bad in [
            slot(1, 1_500_000_000, None),
            slot(1, -600_000_000_000, Some(1 << 60)),
            flagged,
        ] {
            for generation in [
                0u64,
                7,
                0x7fff_ffff,
                0x8000_0000,
                0xffff_ffff,
                0x1_0000_0000,
            ] {
                assert_ne!(
                    tag(time_word(&bad, generation)),
                    generation & TIME_WORD_TAG_MASK
                );
            }
        }
        let mut huge = slot(1, 0, None);
        huge[SLOT_OFF_CLOCKS..SLOT_OFF_CLOCKS + 8].copy_from_slice(&(1i64 << 31).to_le_bytes());
        assert_ne!(tag(time_word(&huge, 3)), 3);
        huge[SLOT_OFF_CLOCKS..SLOT_OFF_CLOCKS + 8].copy_from_slice(&(-(1i64 << 31)).to_le_bytes());
        assert_eq!(seconds(time_word(&huge, 3)), -(1 << 31));
        // 2^16 publications without a word no longer bring an old tag back.
        let old = time_word(&slot(1, -600_000_000_000, None), 5);
        assert_ne!(tag(old), 5 + (1 << 16));
    }

    #[test]
    fn split_offset_floors_for_both_signs() {
        assert_eq!(
            split_offset(-1_500_000_000, NANOS_PER_SEC),
            (-2, 500_000_000)
        );
        assert_eq!(split_offset(1_500_000_000, NANOS_PER_SEC), (1, 500_000_000));
        assert_eq!(split_offset(-600 * NANOS_PER_SEC, NANOS_PER_SEC), (-600, 0));
        assert_eq!(split_offset(-1, NANOS_PER_SEC), (-1, 999_999_999));
        assert_eq!(split_offset(-1_500_000_000, 1_000_000), (-2, 500_000));
        assert_eq!(split_offset(-10_000, 1_000_000), (-1, 999_990));
    }

    #[test]
    fn page_round_trips() {
        let mut params = Params {
            mask: 0b11,
            ..Params::default()
        };
        params.offsets_ns[0] = -600 * NANOS_PER_SEC;
        params.offsets_ns[1] = 1_250_000_001;
        params.expires_ns[0] = 1_795_000_000_123_456_789;
        params.expires_ns[1] = -5; // a monotonic reading can be anything; floor-split works
        for generation in [0, 1, 7] {
            let page = DataPage {
                patched: true,
                generation,
                vdso_base: 0x7fff_0000_0000,
                code_addr: 0x7ffe_0000_0000,
                patches: vec![Patch {
                    addr: 0x7fff_0000_0af0,
                    original: vec![0x55, 0x48, 0x89, 0xe5, 0x41],
                }],
                params: params.clone(),
            };
            let bytes = page.encode();
            assert_eq!(DataPage::decode(1, 0, &bytes).unwrap(), page);
        }
    }

    fn program() -> Program {
        let mut p = Program {
            segments: vec![
                Segment {
                    start_ns: 0,
                    value_ns: 0,
                    rate: 0,
                },
                Segment {
                    start_ns: 10 * NANOS_PER_SEC,
                    value_ns: 0,
                    rate: RATE_ONE,
                },
            ],
            strobe: Some(Strobe {
                period_ns: 250_000_000,
                delta_ns: -3 * NANOS_PER_SEC,
            }),
            anchors_ns: [0; MAX_CLOCK_ID + 1],
            bases_ns: [0; MAX_CLOCK_ID + 1],
        };
        p.anchors_ns[1] = 5_000 * NANOS_PER_SEC;
        p.bases_ns[1] = 5_600 * NANOS_PER_SEC;
        p
    }

    #[test]
    fn programs_round_trip() {
        let mut params = Params {
            mask: 0b10,
            program: Some(program()),
            resolution_ns: 15_000_000,
            slow_reads: true,
            ..Params::default()
        };
        // As compile writes it (the slot keeps bases and anchors, not this).
        params.offsets_ns[1] = 600 * NANOS_PER_SEC;
        let page = DataPage {
            patched: true,
            generation: 3,
            vdso_base: 0,
            code_addr: 0,
            patches: vec![],
            params,
        };
        assert_eq!(DataPage::decode(1, 0, &page.encode()).unwrap(), page);
    }

    #[test]
    fn the_model_follows_the_segments_strobe_and_resolution() {
        let mut params = Params {
            mask: 0b10,
            program: Some(program()),
            ..Params::default()
        };
        let anchor = 5_000 * NANOS_PER_SEC;
        let base = 5_600 * NANOS_PER_SEC;
        // Suspended for 10 s: stands at the base (strobe: odd quarter seconds add -3 s).
        assert_eq!(params.reading(1, anchor), Some(base));
        assert_eq!(params.reading(1, anchor + 100_000_000), Some(base));
        assert_eq!(
            params.reading(1, anchor + 300_000_000),
            Some(base - 3 * NANOS_PER_SEC)
        );
        assert_eq!(
            params.reading(1, anchor + 9_900_000_000),
            Some(base - 3 * NANOS_PER_SEC)
        );
        // Then runs on, 10 s behind.
        assert_eq!(
            params.reading(1, anchor + 12 * NANOS_PER_SEC),
            Some(base + 2 * NANOS_PER_SEC)
        );
        // Before the anchor: segment 0 (frozen).
        assert_eq!(params.reading(1, anchor - NANOS_PER_SEC), Some(base));
        // Unselected and expired clocks pass through.
        assert_eq!(params.reading(0, anchor), None);
        params.expires_ns[1] = anchor + NANOS_PER_SEC;
        assert_eq!(params.reading(1, anchor + NANOS_PER_SEC), None);
        // Resolution rounds down.
        params.program = None;
        params.offsets_ns[1] = 7;
        params.expires_ns[1] = NEVER;
        params.resolution_ns = 1_000_000;
        assert_eq!(params.reading(1, 2_999_999_999), Some(3_000_000_000));
        assert_eq!(params.reading(1, 2_999_999_990), Some(2_999_000_000));
    }

    #[test]
    fn rates_are_exact_to_a_nanosecond_over_an_hour() {
        let hour = 3_600 * NANOS_PER_SEC;
        for (num, den) in [
            (2i128, 1i128),
            (1, 2),
            (1_000_500, 1_000_000),
            (999_950, 1_000_000),
            (1000, 1),
            (1, 3),
        ] {
            let rate = ((num << RATE_SHIFT) + den / 2) / den;
            let p = Program {
                segments: vec![Segment {
                    start_ns: 0,
                    value_ns: 0,
                    rate: rate as u64,
                }],
                strobe: None,
                anchors_ns: [0; MAX_CLOCK_ID + 1],
                bases_ns: [0; MAX_CLOCK_ID + 1],
            };
            for e in [1, 999, NANOS_PER_SEC, hour / 7, hour] {
                let exact = e as i128 * num / den;
                let got = p.shape_at(e) as i128;
                assert!(
                    (got - exact).abs() <= 1,
                    "{num}/{den} at {e}: {got} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn reciprocal_division_is_exact() {
        for d in [
            1u64,
            2,
            3,
            1000,
            999_999_937,
            1_000_000_000,
            3_600_000_000_000,
            u64::MAX / 3,
        ] {
            let r = reciprocal(d);
            for x in [
                0u64,
                1,
                d - 1,
                d,
                d + 1,
                12_345_678_901_234,
                i64::MAX as u64,
                u64::MAX,
            ] {
                assert_eq!(div_by_reciprocal(x, d, r), x / d, "{x} / {d}");
            }
        }
    }

    #[test]
    fn decode_rejects_foreign_pages() {
        let page = vec![0u8; PAGE_SIZE as usize];
        assert!(matches!(
            DataPage::decode(1, 0x1000, &page),
            Err(Error::CorruptState { .. })
        ));
        let mut page = DataPage {
            patched: false,
            generation: 0,
            vdso_base: 0,
            code_addr: 0,
            patches: vec![],
            params: Params::default(),
        }
        .encode();
        put_u32(&mut page, OFF_VERSION, 99);
        let err = DataPage::decode(1, 0x1000, &page).unwrap_err().to_string();
        assert!(err.contains("layout version 99"), "{err}");
    }
}
