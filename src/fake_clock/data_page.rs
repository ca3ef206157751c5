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
//! 0x100 slot 0        SLOT_LEN bytes (see below)
//! 0x580 slot 1
//! slot: 0x00 mask u32 (bit n: clock id n is skewed), 0x04 pad u32, 0x08 reserved u64,
//!       0x10 gtod_sec i64, 0x18 gtod_usec i64 (0..1e6),
//!       0x020 clocks[32]    { sec i64, nsec i64 (0..1e9) }   the offset per clock id
//!       0x220 deadlines[32] { sec i64, nsec i64 (0..1e9) }   the skew of clock id n applies
//!             while its real reading is below deadlines[n]; sec = i64::MAX: no deadline.
//!             gettimeofday and time use deadlines[0]. A zeroed slot passes real time through.
//! ```
//!
//! Live updates never tear: the writer fills the *inactive* slot, then bumps `generation` (one
//! aligned word). A reader takes the generation, reads the slot it selects, and retries if the
//! generation changed meanwhile. A writer that dies half-way leaves the active slot intact.

use crate::error::{Error, Result};

pub const PAGE_SIZE: u64 = 4096;
pub const DATA_MAGIC: [u8; 8] = *b"TSKWDATA";
pub const LAYOUT_VERSION: u32 = 1;

pub const OFF_MAGIC: usize = 0x000;
pub const OFF_VERSION: usize = 0x008;
pub const OFF_PATCHED: usize = 0x00c;
pub const OFF_GENERATION: usize = 0x010;
pub const OFF_VDSO_BASE: usize = 0x018;
pub const OFF_CODE_ADDR: usize = 0x020;
pub const OFF_PATCH_COUNT: usize = 0x028;
pub const OFF_PATCHES: usize = 0x030;
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
pub const SLOT_STRIDE: usize = 0x480;
pub const SLOT_OFF_MASK: usize = 0x00;
pub const SLOT_OFF_GTOD_SEC: usize = 0x10;
pub const SLOT_OFF_GTOD_USEC: usize = 0x18;
pub const SLOT_OFF_CLOCKS: usize = 0x20;
pub const CLOCK_ENTRY_LEN: usize = 16;
pub const MAX_CLOCK_ID: usize = 31;
pub const SLOT_OFF_DEADLINES: usize = SLOT_OFF_CLOCKS + (MAX_CLOCK_ID + 1) * CLOCK_ENTRY_LEN;
pub const SLOT_LEN: usize = SLOT_OFF_DEADLINES + (MAX_CLOCK_ID + 1) * CLOCK_ENTRY_LEN;
/// `expires_ns` value for "no deadline".
pub const NEVER: i64 = i64::MAX;

const NANOS_PER_SEC: i64 = 1_000_000_000;

// The regions must not overlap and must fit the page.
const _: () = assert!(OFF_PATCHES + MAX_PATCHES * PATCH_RECORD_LEN <= OFF_SLOT0);
const _: () = assert!(OFF_SLOT0 + SLOT_LEN <= OFF_SLOT0 + SLOT_STRIDE);
const _: () = assert!(OFF_SLOT0 + SLOT_STRIDE + SLOT_LEN <= PAGE_SIZE as usize);

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
}

impl Default for Params {
    fn default() -> Self {
        Params {
            mask: 0,
            offsets_ns: [0; MAX_CLOCK_ID + 1],
            expires_ns: [NEVER; MAX_CLOCK_ID + 1],
        }
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
        s
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
        p
    }
}

/// Offset of slot `index` (0 or 1) in the data page.
pub fn slot_offset(index: u64) -> usize {
    OFF_SLOT0 + (index as usize & 1) * SLOT_STRIDE
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
        page[slot..slot + SLOT_LEN].copy_from_slice(&self.params.encode_slot());
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
