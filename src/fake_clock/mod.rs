//! The fake clock: the image of the code page that replaces the vDSO's time functions.
//!
//! The blob is written in assembly (`fake_clock/x86_64.S`) and linked into this binary between
//! the symbols `timeskew_fake_start` and `timeskew_fake_end`. It is position independent: the
//! injector copies it verbatim to offset 0 of a fresh page in the target and maps the data page
//! (see [`crate::fake_clock::data_page`]) exactly [`DATA_PAGE_OFFSET`] bytes above it, where the
//! fakes find it RIP-relatively. The assembly's layout constants are `global_asm!` operands
//! taken from the Rust side, so the two cannot disagree.
//!
//! Each fake calls the genuine vDSO function through a *stub slot* inside the blob. The injector
//! fills a slot with the instructions that its jump displaced from the vDSO entry (relocated for
//! the slot's final address, `code_addr + stub_*`) followed by a jump back to the rest of the
//! genuine function; calling the slot then behaves exactly like calling the genuine function.
//! There is one slot per hooked entry. The fake `time()` calls the genuine `time()` (one load
//! from vvar) and answers from it whenever the nanoseconds cannot matter; for a fractional
//! offset, or in the second of a deadline, it reads `CLOCK_REALTIME_COARSE` through the
//! `clock_gettime` slot instead.
//!
//! Every fake applies the skew of clock id n only while the real reading is below the slot's
//! `deadlines[n]` ([`crate::fake_clock::data_page`]); `gettimeofday` and `time` use `deadlines[0]`.
//!
//! A slot's `flags` (data page v2 on) send the selected clocks off the constant-offset path:
//! with `FLAG_PROGRAM` or `FLAG_RESOLUTION` the reading is evaluated exactly as
//! `data_page::Params::reading` (one routine in the blob, no `div`), except inside a clock's
//! fast-case window (v3, `data_page::FastCase`), where a precomputed offset or value is added
//! or stored as on the constant path; with `FLAG_SLOW_READS` the real reading is taken again
//! with the system call, after the genuine call (a look before it would cost every call). `time`
//! then reads `CLOCK_REALTIME_COARSE` (genuine or syscall), unless the fast
//! case decides from the seconds alone.
//!
//! Header of the blob (all little-endian, read with `from_le_bytes`), [`HEADER_LEN`] bytes:
//!
//! ```text
//! 0x00 magic [u8; 8] = "TSKFAKE1"
//! 0x08 u32 offset of the fake clock_gettime      0x0c u32 offset of the fake gettimeofday
//! 0x10 u32 offset of the fake time               0x14 u32 offset of the clock_gettime stub slot
//! 0x18 u32 offset of the gettimeofday stub slot  0x1c u32 stub slot capacity in bytes
//! 0x20 u32 offset of the time stub slot          0x24 u32 offset of the registration helper
//! 0x28 u32 offset of the inlining fake time      0x2c u32 offset of the time body slot
//! 0x30 u32 offset where the time body continues
//! ```
//!
//! `time()` has a second entry, the *inlining* one: the injector copies the whole genuine
//! `time()` into the body slot (relocated, each `ret` a jump to where the body continues) and
//! the hook jumps there instead of to the calling fake, so no call and return are added to a
//! function that natively costs a few nanoseconds. [`FakeBlob::detour`] tells from a code
//! page which entry it serves.
//!
//! The registration helper is not a fake: it is where a thread made in the target by the live
//! path (`ptrace/live/worker.rs`) registers the process for membarrier and exits.

use crate::arch::{Entry, PerEntry};
pub(crate) mod data_page;

// The assembly's data-page offsets, page size, stub capacity, header length, clock id and
// syscall number are these operands: Rust is their one home, the `.S` only names them.
#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    include_str!("x86_64.S"),
    DATA_PAGE = const DATA_PAGE_OFFSET,
    OFF_GENERATION = const data_page::OFF_GENERATION,
    OFF_SLOT0 = const data_page::OFF_SLOT0,
    OFF_TIME_WORD = const data_page::OFF_TIME_WORD,
    TIME_WORD_TAG_BITS = const data_page::TIME_WORD_TAG_BITS,
    SLOT_STRIDE = const data_page::SLOT_STRIDE,
    SLOT_OFF_MASK = const data_page::SLOT_OFF_MASK,
    SLOT_OFF_GTOD_SEC = const data_page::SLOT_OFF_GTOD_SEC,
    SLOT_OFF_GTOD_USEC = const data_page::SLOT_OFF_GTOD_USEC,
    SLOT_OFF_CLOCKS = const data_page::SLOT_OFF_CLOCKS,
    SLOT_OFF_DEADLINES = const data_page::SLOT_OFF_DEADLINES,
    CLOCK_ENTRY_SHIFT = const data_page::CLOCK_ENTRY_LEN.trailing_zeros(),
    MAX_CLOCK_ID = const data_page::MAX_CLOCK_ID,
    STUB_CAPACITY = const STUB_CAPACITY,
    CLOCK_REALTIME_COARSE = const libc::CLOCK_REALTIME_COARSE,
    SYS_TIME = const libc::SYS_time,
    SYS_CLOCK_GETTIME = const libc::SYS_clock_gettime,
    SYS_GETTIMEOFDAY = const libc::SYS_gettimeofday,
    SYS_MEMBARRIER = const libc::SYS_membarrier,
    SYS_EXIT = const libc::SYS_exit,
    MEMBARRIER_REGISTER_SYNC_CORE = const libc::MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE,
    SLOT_OFF_FLAGS = const data_page::SLOT_OFF_FLAGS,
    FLAG_PROGRAM = const data_page::FLAG_PROGRAM,
    FLAG_RESOLUTION = const data_page::FLAG_RESOLUTION,
    FLAG_SLOW_READS = const data_page::FLAG_SLOW_READS,
    SLOT_OFF_SEGMENT_COUNT = const data_page::SLOT_OFF_SEGMENT_COUNT,
    SLOT_OFF_RESOLUTION = const data_page::SLOT_OFF_RESOLUTION,
    SLOT_OFF_RESOLUTION_RECIP = const data_page::SLOT_OFF_RESOLUTION_RECIP,
    SLOT_OFF_STROBE_PERIOD = const data_page::SLOT_OFF_STROBE_PERIOD,
    SLOT_OFF_STROBE_RECIP = const data_page::SLOT_OFF_STROBE_RECIP,
    SLOT_OFF_STROBE_DELTA = const data_page::SLOT_OFF_STROBE_DELTA,
    SLOT_OFF_SEGMENTS = const data_page::SLOT_OFF_SEGMENTS,
    SEGMENT_LEN = const data_page::SEGMENT_LEN,
    SEG_START = const SEG_START,
    SEG_VALUE = const SEG_VALUE,
    SEG_RATE = const SEG_RATE,
    MAX_SEGMENTS = const data_page::MAX_SEGMENTS,
    SLOT_OFF_ANCHORS = const data_page::SLOT_OFF_ANCHORS,
    SLOT_OFF_BASES = const data_page::SLOT_OFF_BASES,
    SLOT_OFF_FAST_KIND = const data_page::SLOT_OFF_FAST_KIND,
    SLOT_OFF_FAST = const data_page::SLOT_OFF_FAST,
    FAST_PAIR = const data_page::FAST_PAIR,
    FAST_FROM = const data_page::FAST_FROM,
    FAST_UNTIL = const data_page::FAST_UNTIL,
    FAST_CLOCKS = const data_page::FAST_CLOCKS,
    FAST_OFFSET = const data_page::FAST_OFFSET,
    FAST_VALUE = const data_page::FAST_VALUE,
    RATE_SHIFT = const data_page::RATE_SHIFT,
    NSEC_PER_SEC = const NSEC_PER_SEC,
    NSEC_RECIP = const NSEC_RECIP,
    NSEC_PER_USEC = const NSEC_PER_USEC,
    USEC_MAGIC = const USEC_MAGIC,
    USEC_MAGIC_SHIFT = const USEC_MAGIC_SHIFT,
);

/// Nanoseconds per second and per microsecond: the fakes convert between (sec, nsec),
/// (sec, usec) and nanoseconds with these.
pub(crate) const NSEC_PER_SEC: u64 = 1_000_000_000;
pub(crate) const NSEC_PER_USEC: u64 = 1_000;
/// `data_page::reciprocal` of 1e9 (computed here because that function is not `const`; a test
/// checks they agree): the fakes divide by 1e9 without `div`.
pub(crate) const NSEC_RECIP: u64 = u64::MAX / NSEC_PER_SEC;
/// Nanoseconds below a second to microseconds, `floor(n / 1000)`, as `n * USEC_MAGIC >>
/// USEC_MAGIC_SHIFT`: exact for every `n < 1e9` without a correction step (the assertion below
/// is the proof's condition), so gettimeofday's last division is one multiply and a shift.
pub(crate) const USEC_MAGIC_SHIFT: u32 = 38;
pub(crate) const USEC_MAGIC: u64 = (1 << USEC_MAGIC_SHIFT) / NSEC_PER_USEC + 1;
/// Offsets of a segment's fields (`start`, `value`, `rate`) inside its
/// [`data_page::SEGMENT_LEN`] bytes, as `data_page::Params::encode_slot` writes them (a test
/// checks it).
pub(crate) const SEG_START: usize = 0;
pub(crate) const SEG_VALUE: usize = 8;
pub(crate) const SEG_RATE: usize = 16;

// What the assembly assumes about these values beyond the values themselves: it reads the
// generation as one aligned 8-byte word; it indexes both tables with one shift (entries of a
// power-of-two size) by ids 0..=MAX_CLOCK_ID, bit n of a u32 mask, and the entries lie inside a
// slot. (gettimeofday and time test bit 0 in the first byte of the little-endian mask.)
const _: () = {
    assert!(data_page::OFF_GENERATION.is_multiple_of(8));
    // time() compares the tag as a 32-bit register (`cmp r8d, r9d`).
    assert!(data_page::TIME_WORD_TAG_BITS == 32);
    assert!(data_page::CLOCK_ENTRY_LEN.is_power_of_two());
    assert!(data_page::MAX_CLOCK_ID < 32);
    let table = (data_page::MAX_CLOCK_ID + 1) * data_page::CLOCK_ENTRY_LEN;
    assert!(data_page::SLOT_OFF_CLOCKS + table <= data_page::SLOT_OFF_DEADLINES);
    assert!(data_page::SLOT_OFF_DEADLINES + table <= data_page::SLOT_LEN);
    // The flags word sits right after the mask; the fakes test single flag bits as bytes.
    assert!(data_page::SLOT_OFF_FLAGS == data_page::SLOT_OFF_MASK + 4);
    assert!(data_page::FLAG_PROGRAM < 256 && data_page::FLAG_RESOLUTION < 256);
    assert!(data_page::FLAG_SLOW_READS < 256);
    // Anchors and bases: 8-byte entries indexed by id * 8; segments with 8-byte fields inside
    // the slot; the rate splits into an integer part and a fraction of 64 - RATE_SHIFT bits.
    assert!(
        data_page::SLOT_OFF_ANCHORS + (data_page::MAX_CLOCK_ID + 1) * 8
            <= data_page::SLOT_OFF_BASES
    );
    assert!(data_page::SLOT_OFF_BASES + (data_page::MAX_CLOCK_ID + 1) * 8 <= data_page::SLOT_LEN);
    assert!(SEG_RATE + 8 <= data_page::SEGMENT_LEN && SEG_VALUE + 8 <= SEG_RATE);
    assert!(
        data_page::SLOT_OFF_SEGMENTS + data_page::MAX_SEGMENTS * data_page::SEGMENT_LEN
            <= data_page::SLOT_OFF_ANCHORS
    );
    assert!(data_page::RATE_SHIFT > 0 && data_page::RATE_SHIFT < 64);
    // The fast entries are indexed by id * 5 * 8 (one lea and a scaled index).
    assert!(data_page::FAST_ENTRY_LEN == 40);
    assert!(data_page::FAST_PAIR + 16 <= data_page::FAST_FROM);
    assert!(data_page::FAST_FROM + 16 <= data_page::FAST_UNTIL);
    assert!(data_page::FAST_UNTIL + 8 <= data_page::FAST_ENTRY_LEN);
    assert!(data_page::FAST_CLOCKS >= 1 && data_page::FAST_CLOCKS <= data_page::MAX_CLOCK_ID + 1);
    assert!(data_page::MAX_RATE <= i64::MAX as u64);
    // Immediates: 1e9 fits a sign-extended imm32 (imul, cmp, and).
    assert!(NSEC_PER_SEC <= i32::MAX as u64);
    // USEC_MAGIC = 2^s / 1000 + e / 1000 with 0 < e < 1000: n * USEC_MAGIC / 2^s exceeds n /
    // 1000 by n * e / (1000 * 2^s), below 1 / 1000 while n * e < 2^s, so the floor is exact
    // for every n < 1e9; the product stays below 2^63 (a signed imm32 `imul`).
    let excess = USEC_MAGIC * NSEC_PER_USEC - (1 << USEC_MAGIC_SHIFT);
    assert!(excess > 0 && excess < NSEC_PER_USEC);
    assert!((NSEC_PER_SEC as u128) * (excess as u128) < (1u128 << USEC_MAGIC_SHIFT));
    assert!(USEC_MAGIC <= i32::MAX as u64);
    assert!((NSEC_PER_SEC as u128) * (USEC_MAGIC as u128) < (1u128 << 63));
};

/// Distance from the start of the code page to the data page the fakes read: the data page
/// directly follows the code page.
pub const DATA_PAGE_OFFSET: u64 = data_page::PAGE_SIZE;

/// Size of the code page [`FakeBlob::code_page`] builds: one page.
pub const CODE_PAGE_LEN: usize = data_page::PAGE_SIZE as usize;

/// Magic at offset 0 of the blob.
pub const BLOB_MAGIC: [u8; 8] = *b"TSKFAKE1";

/// Length of the blob header.
pub const HEADER_LEN: usize = 0x34;

/// Bytes in each stub slot (the header's `stub_capacity`, `TSK_STUB_CAPACITY` in the assembly).
pub const STUB_CAPACITY: usize = 64;

/// Byte that fills the unused parts of the code page and of the stub slots (`int3`).
pub const FILL_BYTE: u8 = 0xcc;

/// The fake-clock blob and where things are inside it. All offsets are relative to the start
/// of the blob, which is also the start of the code page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FakeBlob {
    /// The blob as assembled, header included, stub slots still filled with `int3`.
    pub bytes: &'static [u8],
    /// Offset of each fake (`clock_gettime(clockid_t, struct timespec *)`,
    /// `gettimeofday(struct timeval *, struct timezone *)`, `time(time_t *)`): the jump target
    /// of its vDSO entry.
    pub entries: PerEntry<usize>,
    /// Offset of the slot that must receive the displaced prologue of each vDSO entry.
    pub stubs: PerEntry<usize>,
    /// Bytes available in each stub slot.
    pub stub_capacity: usize,
    /// Offset of the membarrier registration helper's `syscall` instruction.
    pub register_helper: usize,
    /// Offset of the inlining fake `time()`: it runs the body slot, then the same code as the
    /// calling fake.
    pub time_inline: usize,
    /// Offset of the slot (of [`FakeBlob::stub_capacity`] bytes) that receives the copy of the
    /// whole genuine `time()`.
    pub time_body: usize,
    /// Offset where the body continues: every `ret` of the copy becomes a jump here.
    pub time_body_done: usize,
}

/// Length of the registration helper, from its `syscall` to its `ud2` (the bytes compared
/// before a thread is sent there: the page may hold another version's code).
pub const REGISTER_HELPER_LEN: usize = 31;

/// The built-in fake-clock blob with its header parsed and checked.
///
/// # Panics
/// Only if the blob assembled from `fake_clock/x86_64.S` is malformed, i.e. on a build bug
/// (the tests check it).
pub fn blob() -> FakeBlob {
    parse(raw_blob()).expect("the built-in fake clock blob (fake_clock/x86_64.S) is malformed")
}

/// The bytes between the two linker symbols that delimit the blob.
fn raw_blob() -> &'static [u8] {
    unsafe extern "C" {
        safe static timeskew_fake_start: u8;
        safe static timeskew_fake_end: u8;
    }
    let start = &raw const timeskew_fake_start;
    let end = &raw const timeskew_fake_end;
    let len = (end as usize)
        .checked_sub(start as usize)
        .expect("timeskew_fake_end lies before timeskew_fake_start");
    // SAFETY: both symbols are defined by fake_clock/x86_64.S in the same section
    // (.text.timeskew_fake, never split by the linker), start before end, so
    // [start, start + len) is one contiguous, initialised range of the loaded image. It is
    // mapped readable (text is r-x) for the life of the process and nothing writes to it, so a
    // shared 'static slice over it is sound.
    unsafe { core::slice::from_raw_parts(start, len) }
}

fn read_u32(bytes: &[u8], at: usize) -> Result<usize, String> {
    bytes
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(|b: [u8; 4]| u32::from_le_bytes(b) as usize)
        .ok_or_else(|| format!("header field at {at:#x} lies past the end of the blob"))
}

/// Parses and validates a blob header.
fn parse(bytes: &'static [u8]) -> Result<FakeBlob, String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!(
            "blob is {} bytes, shorter than its header",
            bytes.len()
        ));
    }
    if bytes.len() > CODE_PAGE_LEN {
        return Err(format!(
            "blob is {} bytes, larger than the {CODE_PAGE_LEN}-byte code page",
            bytes.len()
        ));
    }
    if bytes[..8] != BLOB_MAGIC {
        return Err(format!("bad magic {:02x?}", &bytes[..8]));
    }
    let b = FakeBlob {
        bytes,
        entries: PerEntry([
            read_u32(bytes, 0x08)?,
            read_u32(bytes, 0x0c)?,
            read_u32(bytes, 0x10)?,
        ]),
        stubs: PerEntry([
            read_u32(bytes, 0x14)?,
            read_u32(bytes, 0x18)?,
            read_u32(bytes, 0x20)?,
        ]),
        stub_capacity: read_u32(bytes, 0x1c)?,
        register_helper: read_u32(bytes, 0x24)?,
        time_inline: read_u32(bytes, 0x28)?,
        time_body: read_u32(bytes, 0x2c)?,
        time_body_done: read_u32(bytes, 0x30)?,
    };
    let helper_end = b.register_helper.checked_add(REGISTER_HELPER_LEN);
    if b.register_helper < HEADER_LEN || helper_end.is_none_or(|e| e > bytes.len()) {
        return Err(format!(
            "registration helper {:#x} outside the blob",
            b.register_helper
        ));
    }
    for (entry, &at) in b.entries.iter() {
        if at < HEADER_LEN || at >= bytes.len() {
            return Err(format!(
                "{} entry {at:#x} outside the blob's code",
                entry.name()
            ));
        }
    }
    if b.stub_capacity == 0 {
        return Err("stub slot capacity is 0".into());
    }
    for (entry, &slot) in b.stubs.iter() {
        let end = slot.checked_add(b.stub_capacity);
        if slot < HEADER_LEN || end.is_none_or(|e| e > bytes.len()) {
            return Err(format!(
                "{} stub slot {slot:#x}+{:#x} outside the blob",
                entry.name(),
                b.stub_capacity
            ));
        }
    }
    if b.time_inline < HEADER_LEN || b.time_inline >= bytes.len() {
        return Err(format!(
            "inlining time entry {:#x} outside the blob's code",
            b.time_inline
        ));
    }
    let body_end = b.time_body.checked_add(b.stub_capacity);
    if b.time_body < HEADER_LEN || body_end.is_none_or(|e| e > b.time_body_done) {
        return Err(format!(
            "time body slot {:#x}+{:#x} outside the blob or past where it continues ({:#x})",
            b.time_body, b.stub_capacity, b.time_body_done
        ));
    }
    if b.time_body_done >= bytes.len() {
        return Err(format!(
            "the time body continues at {:#x}, outside the blob",
            b.time_body_done
        ));
    }
    let mut slots: Vec<(&str, usize)> = b.stubs.iter().map(|(e, &at)| (e.name(), at)).collect();
    slots.push(("time body", b.time_body));
    for (i, (a, x)) in slots.iter().enumerate() {
        for (c, y) in &slots[i + 1..] {
            if x.abs_diff(*y) < b.stub_capacity {
                return Err(format!("the {a} and {c} stub slots overlap"));
            }
        }
    }
    Ok(b)
}

impl FakeBlob {
    /// Builds the code page image: the blob at offset 0 with each entry's stub written into
    /// its slot, and `int3` everywhere else.
    ///
    /// Each stub must already be relocated for its final address in the target
    /// (`code_addr + self.stubs[entry]`) and end in a jump back into the genuine vDSO function.
    /// A stub must be non-empty (an empty slot would trap) and at most
    /// [`FakeBlob::stub_capacity`] bytes long.
    ///
    /// `time_body`, when given, is the copy of the whole genuine `time()` for the body slot
    /// (relocated for `code_addr + self.time_body`, its rets jumping to `self.time_body_done`);
    /// without it the slot keeps its `int3` and the hook must target the calling fake.
    pub fn code_page(
        &self,
        stubs: PerEntry<&[u8]>,
        time_body: Option<&[u8]>,
    ) -> Result<Vec<u8>, String> {
        let mut page = vec![FILL_BYTE; CODE_PAGE_LEN];
        page[..self.bytes.len()].copy_from_slice(self.bytes);
        for (entry, &stub) in stubs.iter() {
            let (name, slot) = (entry.name(), self.stubs[entry]);
            if stub.is_empty() {
                return Err(format!("the {name} stub is empty"));
            }
            if stub.len() > self.stub_capacity {
                return Err(format!(
                    "the {name} stub is {} bytes, its slot holds {}",
                    stub.len(),
                    self.stub_capacity
                ));
            }
            page[slot..slot + stub.len()].copy_from_slice(stub);
        }
        if let Some(body) = time_body {
            if body.is_empty() || body.len() > self.stub_capacity {
                return Err(format!(
                    "the time body is {} bytes, its slot holds 1 to {}",
                    body.len(),
                    self.stub_capacity
                ));
            }
            page[self.time_body..self.time_body + body.len()].copy_from_slice(body);
        }
        Ok(page)
    }

    /// Offset of the fake an entry's hook jumps to in `page` (a code page built by
    /// [`FakeBlob::code_page`]): the inlining `time()` when the page holds a body, else the
    /// entry's own fake.
    pub fn detour(&self, entry: Entry, page: &[u8]) -> usize {
        let has_body = page.get(self.time_body).is_some_and(|&b| b != FILL_BYTE);
        if entry == Entry::Time && has_body {
            self.time_inline
        } else {
            self.entries[entry]
        }
    }
}

#[cfg(test)]
mod tests;
