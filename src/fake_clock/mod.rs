//! The fake clock: the image of the code page that replaces the vDSO's time functions.
//!
//! The blob is written in assembly (`fake_clock/x86_64.S`) and linked into this binary between
//! the symbols `timeskew_fake_start` and `timeskew_fake_end`. It is position independent: the
//! injector copies it verbatim to offset 0 of a fresh page in the target and maps the data page
//! (see [`crate::state::data_page`]) exactly [`DATA_PAGE_OFFSET`] bytes above it, where the fakes find it
//! RIP-relatively.
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
//! `deadlines[n]` ([`crate::state::data_page`]); `gettimeofday` and `time` use `deadlines[0]`.
//!
//! Header of the blob (all little-endian, read with `from_le_bytes`), [`HEADER_LEN`] bytes:
//!
//! ```text
//! 0x00 magic [u8; 8] = "TSKFAKE1"
//! 0x08 u32 offset of the fake clock_gettime      0x0c u32 offset of the fake gettimeofday
//! 0x10 u32 offset of the fake time               0x14 u32 offset of the clock_gettime stub slot
//! 0x18 u32 offset of the gettimeofday stub slot  0x1c u32 stub slot capacity in bytes
//! 0x20 u32 offset of the time stub slot
//! ```

use crate::arch::PerEntry;

#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(include_str!("x86_64.S"));

/// Distance from the start of the code page to the data page the fakes read: the data page
/// directly follows the code page.
pub const DATA_PAGE_OFFSET: u64 = crate::state::data_page::PAGE_SIZE;

/// Size of the code page [`FakeBlob::code_page`] builds: one page.
pub const CODE_PAGE_LEN: usize = crate::state::data_page::PAGE_SIZE as usize;

/// Magic at offset 0 of the blob.
pub const BLOB_MAGIC: [u8; 8] = *b"TSKFAKE1";

/// Length of the blob header.
pub const HEADER_LEN: usize = 0x24;

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
}

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
    };
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
    let slots: Vec<_> = b.stubs.iter().collect();
    for (i, (a, x)) in slots.iter().enumerate() {
        for (c, y) in &slots[i + 1..] {
            if x.abs_diff(**y) < b.stub_capacity {
                return Err(format!(
                    "the {} and {} stub slots overlap",
                    a.name(),
                    c.name()
                ));
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
    pub fn code_page(&self, stubs: PerEntry<&[u8]>) -> Result<Vec<u8>, String> {
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
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    //! Everything below runs the blob for real, in this process: two anonymous pages (code
    //! r-x, data rw-), stub slots that jump to this process's genuine vDSO functions (or to
    //! scripted stand-ins), and the fakes called through `extern "C"` function pointers.
    //! Expected values come from the reference model `model_*` (layout.rs's semantics, in
    //! i128 nanoseconds), never from the assembly's own arithmetic.

    use super::*;
    use crate::arch::Entry;
    use crate::state::data_page::{self as layout, DataPage, Params};
    use std::cell::Cell;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    type ClockGettimeFn = extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int;
    type GettimeofdayFn = extern "C" fn(*mut libc::timeval, *mut libc::c_void) -> libc::c_int;
    type TimeFn = extern "C" fn(*mut libc::time_t) -> libc::time_t;

    const NS: i128 = 1_000_000_000;
    const US: i128 = 1_000_000;
    const HOUR_NS: i64 = 3600 * 1_000_000_000;
    const CENTURY_NS: i64 = 100 * 31_557_600 * 1_000_000_000; // 100 Julian years
    const PAGE: usize = crate::state::data_page::PAGE_SIZE as usize;

    // ---- the genuine vDSO of this process --------------------------------------------------

    struct Genuine {
        clock_gettime: usize,
        gettimeofday: usize,
        time: usize,
    }

    fn genuine() -> &'static Genuine {
        static G: OnceLock<Genuine> = OnceLock::new();
        G.get_or_init(|| {
            // SAFETY: dlopen with RTLD_NOLOAD only looks up an already loaded object (glibc
            // registers the vDSO under this name); both arguments are valid C strings.
            let h = unsafe {
                libc::dlopen(
                    c"linux-vdso.so.1".as_ptr(),
                    libc::RTLD_LAZY | libc::RTLD_NOLOAD,
                )
            };
            assert!(
                !h.is_null(),
                "this process has no vDSO loaded as linux-vdso.so.1"
            );
            let sym = |name: &std::ffi::CStr| {
                // SAFETY: h is a live handle, name a valid C string.
                let p = unsafe { libc::dlsym(h, name.as_ptr()) };
                assert!(!p.is_null(), "vDSO has no {name:?}");
                p as usize
            };
            Genuine {
                clock_gettime: sym(c"__vdso_clock_gettime"),
                gettimeofday: sym(c"__vdso_gettimeofday"),
                time: sym(c"__vdso_time"),
            }
        })
    }

    fn genuine_clock_gettime() -> ClockGettimeFn {
        // SAFETY: the address is the vDSO's __vdso_clock_gettime, which has this C signature.
        unsafe { std::mem::transmute::<usize, ClockGettimeFn>(genuine().clock_gettime) }
    }

    fn genuine_gettimeofday() -> GettimeofdayFn {
        // SAFETY: the address is the vDSO's __vdso_gettimeofday, which has this C signature.
        unsafe { std::mem::transmute::<usize, GettimeofdayFn>(genuine().gettimeofday) }
    }

    fn genuine_time() -> TimeFn {
        // SAFETY: the address is the vDSO's __vdso_time, which has this C signature.
        unsafe { std::mem::transmute::<usize, TimeFn>(genuine().time) }
    }

    fn cg(f: ClockGettimeFn, id: libc::clockid_t) -> (libc::c_int, libc::timespec) {
        let mut ts = libc::timespec {
            tv_sec: 0x5555_5555,
            tv_nsec: 0x6666_6666,
        };
        let r = f(id, &mut ts);
        (r, ts)
    }

    fn now(id: libc::clockid_t) -> i128 {
        let (r, ts) = cg(genuine_clock_gettime(), id);
        assert_eq!(r, 0, "genuine clock_gettime({id}) failed");
        ts_ns(&ts)
    }

    fn gtod(f: GettimeofdayFn) -> (libc::c_int, libc::timeval) {
        let mut tv = libc::timeval {
            tv_sec: 0x5555_5555,
            tv_usec: 0x6666_6666,
        };
        let r = f(&mut tv, std::ptr::null_mut());
        (r, tv)
    }

    fn now_us() -> i128 {
        let (r, tv) = gtod(genuine_gettimeofday());
        assert_eq!(r, 0, "genuine gettimeofday failed");
        tv_us(&tv)
    }

    fn ts_ns(ts: &libc::timespec) -> i128 {
        ts.tv_sec as i128 * NS + ts.tv_nsec as i128
    }

    fn tv_us(tv: &libc::timeval) -> i128 {
        tv.tv_sec as i128 * US + tv.tv_usec as i128
    }

    /// `jmp qword ptr [rip+0]` followed by the absolute target.
    fn abs_jump(target: usize) -> Vec<u8> {
        let mut v = vec![0xff, 0x25, 0, 0, 0, 0];
        v.extend_from_slice(&(target as u64).to_le_bytes());
        v
    }

    fn params(mask: u32, offsets: &[(usize, i64)]) -> Params {
        let mut p = Params {
            mask,
            ..Params::default()
        };
        for &(id, off) in offsets {
            p.offsets_ns[id] = off;
        }
        p
    }

    /// `p` with the given deadlines (`expires_ns`, real nanoseconds of that clock).
    fn with_deadlines(mut p: Params, deadlines: &[(usize, i64)]) -> Params {
        for &(id, d) in deadlines {
            p.expires_ns[id] = d;
        }
        p
    }

    // ---- the reference model: what a fake must return for a real reading -------------------

    /// clock_gettime(id): shifted while selected and the real reading is below the deadline.
    fn model_clock(real_ns: i128, p: &Params, id: usize) -> i128 {
        if p.mask & (1 << id) != 0 && real_ns < p.expires_ns[id] as i128 {
            real_ns + p.offsets_ns[id] as i128
        } else {
            real_ns
        }
    }

    /// gettimeofday: follows CLOCK_REALTIME (mask bit 0, deadlines[0]), the offset floored to
    /// microseconds, the real reading compared as `tv_usec * 1000` nanoseconds.
    fn model_gtod(real_us: i128, p: &Params) -> i128 {
        if p.mask & 1 != 0 && real_us * 1000 < p.expires_ns[0] as i128 {
            real_us + (p.offsets_ns[0] as i128).div_euclid(1000)
        } else {
            real_us
        }
    }

    /// time: floor(coarse + offset) while realtime is selected and the coarse reading is below
    /// deadlines[0]; the coarse seconds otherwise.
    fn model_time(coarse_ns: i128, p: &Params) -> i64 {
        model_clock(coarse_ns, p, 0).div_euclid(NS) as i64
    }

    /// Whether time() must take its slow path (read CLOCK_REALTIME_COARSE) for real seconds
    /// `t`: realtime selected, not past the deadline's second, and either in that second or
    /// with a fractional offset.
    fn time_needs_slow_path(t: i64, p: &Params) -> bool {
        let dsec = match p.expires_ns[0] {
            layout::NEVER => i64::MAX,
            e => e.div_euclid(1_000_000_000),
        };
        p.mask & 1 != 0 && t <= dsec && (t == dsec || p.offsets_ns[0] % 1_000_000_000 != 0)
    }

    fn data_page(p: &Params) -> Vec<u8> {
        DataPage {
            patched: true,
            generation: 0,
            vdso_base: 0,
            code_addr: 0,
            patches: vec![],
            params: p.clone(),
        }
        .encode()
    }

    // ---- the harness -------------------------------------------------------------------------

    /// A code page (r-x) built from the blob plus its data page (rw-), mapped in this process.
    struct Injected {
        base: *mut u8,
        blob: FakeBlob,
    }

    // SAFETY: the mapping is owned by the value and freed only in Drop; the data page is only
    // written through atomics (or before the value is shared), the code page is read-only.
    unsafe impl Send for Injected {}
    // SAFETY: as above.
    unsafe impl Sync for Injected {}

    impl Injected {
        /// Maps the pages, writes the code page with the given stubs and the data page image,
        /// then makes the code page r-x (never writable and executable at once).
        fn with_stubs(stub_cg: &[u8], stub_gtod: &[u8], stub_time: &[u8], data: &[u8]) -> Injected {
            assert_eq!(data.len(), PAGE);
            let blob = blob();
            let code = blob
                .code_page(PerEntry([stub_cg, stub_gtod, stub_time]))
                .expect("code page");
            // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    2 * PAGE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(base, libc::MAP_FAILED, "mmap failed");
            let base = base as *mut u8;
            // SAFETY: base..base+2*PAGE is our fresh rw mapping; the sources are page-sized
            // buffers that do not overlap it.
            unsafe {
                std::ptr::copy_nonoverlapping(code.as_ptr(), base, PAGE);
                std::ptr::copy_nonoverlapping(data.as_ptr(), base.add(PAGE), PAGE);
            }
            // SAFETY: changes the protection of the first page of our own mapping only.
            let r = unsafe {
                libc::mprotect(
                    base as *mut libc::c_void,
                    PAGE,
                    libc::PROT_READ | libc::PROT_EXEC,
                )
            };
            assert_eq!(r, 0, "mprotect r-x failed");
            Injected { base, blob }
        }

        /// Stubs that jump to the genuine vDSO functions.
        fn with_vdso(p: &Params) -> Injected {
            let g = genuine();
            Self::with_stubs(
                &abs_jump(g.clock_gettime),
                &abs_jump(g.gettimeofday),
                &abs_jump(g.time),
                &data_page(p),
            )
        }

        /// Stubs that jump to the scripted stand-ins below.
        fn scripted(p: &Params) -> Injected {
            Self::with_stubs(
                &abs_jump(scripted_clock_gettime as *const () as usize),
                &abs_jump(scripted_gettimeofday as *const () as usize),
                &abs_jump(scripted_time as *const () as usize),
                &data_page(p),
            )
        }

        fn addr(&self, off: usize) -> usize {
            self.base as usize + off
        }

        fn clock_gettime(&self) -> ClockGettimeFn {
            // SAFETY: the fake clock_gettime of a complete code page that stays mapped r-x
            // while self lives; it follows the C ABI with this signature.
            unsafe {
                std::mem::transmute::<usize, ClockGettimeFn>(
                    self.addr(self.blob.entries[Entry::ClockGettime]),
                )
            }
        }

        fn gettimeofday(&self) -> GettimeofdayFn {
            // SAFETY: as for clock_gettime.
            unsafe {
                std::mem::transmute::<usize, GettimeofdayFn>(
                    self.addr(self.blob.entries[Entry::Gettimeofday]),
                )
            }
        }

        fn time(&self) -> TimeFn {
            // SAFETY: as for clock_gettime.
            unsafe {
                std::mem::transmute::<usize, TimeFn>(self.addr(self.blob.entries[Entry::Time]))
            }
        }

        /// The aligned 8-byte word at `off` in the data page.
        fn word(&self, off: usize) -> &AtomicU64 {
            assert!(off.is_multiple_of(8) && off + 8 <= PAGE);
            // SAFETY: in bounds of the rw data page, 8-aligned, valid while self lives; this
            // process writes the data page only through these atomics once it is shared.
            unsafe { AtomicU64::from_ptr(self.base.add(PAGE + off) as *mut u64) }
        }

        /// Publishes `p` exactly as layout.rs prescribes: fill the inactive slot, then bump the
        /// generation with one aligned store.
        fn publish(&self, p: &Params) {
            self.publish_raw(&p.encode_slot());
        }

        fn publish_raw(&self, slot_bytes: &[u8]) {
            let generation = self.word(layout::OFF_GENERATION);
            let next = generation.load(Ordering::Relaxed).wrapping_add(1);
            self.write_slot(next, slot_bytes);
            generation.store(next, Ordering::Release);
        }

        fn write_slot(&self, generation: u64, slot_bytes: &[u8]) {
            let at = layout::slot_offset(generation);
            for (i, w) in slot_bytes.chunks_exact(8).enumerate() {
                let v = u64::from_le_bytes(w.try_into().unwrap());
                self.word(at + 8 * i).store(v, Ordering::Relaxed);
            }
        }
    }

    impl Drop for Injected {
        fn drop(&mut self) {
            // SAFETY: unmaps exactly the mapping created in with_stubs; no function pointer
            // into it outlives self (they are only used while self is borrowed).
            unsafe { libc::munmap(self.base as *mut libc::c_void, 2 * PAGE) };
        }
    }

    // ---- scripted stand-ins for the genuine functions --------------------------------------

    /// What the scripted stand-ins return, and what they saw. `calls` counts the
    /// clock_gettime and gettimeofday stand-ins, `time_calls` the time stand-in, so a test can
    /// tell which path a fake took.
    #[derive(Clone, Copy, Default)]
    struct Script {
        ret: libc::c_int,
        sec: i64,
        sub: i64,
        calls: u32,
        time_calls: u32,
        last_id: libc::clockid_t,
        last_ptr: usize,
        last_tz: usize,
        last_tloc: usize,
    }

    thread_local! {
        static SCRIPT: Cell<Script> = Cell::new(Script::default());
    }

    fn script(ret: libc::c_int, sec: i64, sub: i64) {
        SCRIPT.set(Script {
            ret,
            sec,
            sub,
            ..Script::default()
        });
    }

    /// Writes the scripted value (even when it returns an error, so that "untouched" can be
    /// checked against a value the fake might have shifted).
    extern "C" fn scripted_clock_gettime(
        id: libc::clockid_t,
        ts: *mut libc::timespec,
    ) -> libc::c_int {
        let mut s = SCRIPT.get();
        s.calls += 1;
        s.last_id = id;
        s.last_ptr = ts as usize;
        SCRIPT.set(s);
        // SAFETY: the fakes pass a valid timespec pointer (the caller's or their own).
        unsafe {
            (*ts).tv_sec = s.sec;
            (*ts).tv_nsec = s.sub;
        }
        s.ret
    }

    extern "C" fn scripted_gettimeofday(
        tv: *mut libc::timeval,
        tz: *mut libc::c_void,
    ) -> libc::c_int {
        let mut s = SCRIPT.get();
        s.calls += 1;
        s.last_ptr = tv as usize;
        s.last_tz = tz as usize;
        SCRIPT.set(s);
        if !tv.is_null() {
            // SAFETY: non-null tv pointers come from the test and are valid.
            unsafe {
                (*tv).tv_sec = s.sec;
                (*tv).tv_usec = s.sub;
            }
        }
        s.ret
    }

    /// The genuine time(): returns the scripted seconds (the same xtime seconds the scripted
    /// clock_gettime returns for CLOCK_REALTIME_COARSE), storing them if `tloc` is non-null.
    extern "C" fn scripted_time(tloc: *mut libc::time_t) -> libc::time_t {
        let mut s = SCRIPT.get();
        s.time_calls += 1;
        s.last_tloc = tloc as usize;
        SCRIPT.set(s);
        if !tloc.is_null() {
            // SAFETY: a non-null tloc would come from the caller and be valid.
            unsafe { *tloc = s.sec };
        }
        s.sec
    }

    // ---- header, page building, ABI constants ----------------------------------------------

    #[test]
    fn fake_clock_asm_constants_match_layout() {
        unsafe extern "C" {
            safe static timeskew_fake_abi: [u64; 12];
        }
        let t = &timeskew_fake_abi;
        let expected = [
            DATA_PAGE_OFFSET,
            layout::OFF_GENERATION as u64,
            layout::OFF_SLOT0 as u64,
            layout::SLOT_STRIDE as u64,
            layout::SLOT_OFF_MASK as u64,
            layout::SLOT_OFF_GTOD_SEC as u64,
            layout::SLOT_OFF_GTOD_USEC as u64,
            layout::SLOT_OFF_CLOCKS as u64,
            layout::SLOT_OFF_DEADLINES as u64,
            layout::CLOCK_ENTRY_LEN as u64,
            layout::MAX_CLOCK_ID as u64,
        ];
        assert_eq!(t[0], expected.len() as u64, "timeskew_fake_abi entry count");
        assert_eq!(
            &t[1..],
            &expected[..],
            "fake_clock/x86_64.S .set constants differ from src/layout.rs"
        );
        assert_eq!(DATA_PAGE_OFFSET, layout::PAGE_SIZE);
        // The asm reads the generation as one aligned 8-byte word; the clock and deadline
        // entries it indexes (id <= 31, both tables with the same shift) lie inside a slot;
        // the mask's bit 0 is in the slot's first byte (gettimeofday and time test that byte).
        const {
            assert!(layout::OFF_GENERATION.is_multiple_of(8));
            assert!(layout::SLOT_OFF_CLOCKS + (layout::MAX_CLOCK_ID + 1) * 16 <= layout::SLOT_LEN);
            assert!(
                layout::SLOT_OFF_DEADLINES + (layout::MAX_CLOCK_ID + 1) * 16 <= layout::SLOT_LEN
            );
            assert!(layout::SLOT_OFF_DEADLINES >= layout::SLOT_OFF_CLOCKS + 32 * 16);
            assert!(layout::CLOCK_ENTRY_LEN == 16);
        };
    }

    #[test]
    fn fake_clock_header_is_valid() {
        let b = blob();
        assert_eq!(&b.bytes[..8], b"TSKFAKE1");
        assert_eq!(HEADER_LEN, 0x24);
        assert_eq!(b.stub_capacity, 64);
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
        bad[0x1c..0x20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(leak(bad)).is_err());
        assert!(parse(leak(good[..0x10].to_vec())).is_err());
        assert!(parse(leak(good[..0x22].to_vec())).is_err());
        assert!(parse(leak(vec![0xcc; 5000])).is_err());
    }

    #[test]
    fn fake_clock_code_page_places_stubs() {
        let b = blob();
        let s1 = [1u8, 2, 3];
        let s2 = vec![7u8; 64];
        let s3 = [9u8; 10];
        let page = b.code_page(PerEntry([&s1, &s2, &s3])).unwrap();
        assert_eq!(page.len(), 4096);
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

        let err = b.code_page(PerEntry([&[0x90; 65], &s1, &s3])).unwrap_err();
        assert!(err.contains("clock_gettime stub is 65 bytes"), "{err}");
        let err = b.code_page(PerEntry([&s1, &[0x90; 65], &s3])).unwrap_err();
        assert!(err.contains("gettimeofday stub is 65 bytes"), "{err}");
        let err = b.code_page(PerEntry([&s1, &s3, &[0x90; 65]])).unwrap_err();
        assert!(err.contains("time stub is 65 bytes"), "{err}");
        assert!(
            b.code_page(PerEntry([&[], &s1, &s3]))
                .unwrap_err()
                .contains("empty")
        );
        let err = b.code_page(PerEntry([&s1, &s3, &[]])).unwrap_err();
        assert!(err.contains("time stub is empty"), "{err}");
    }

    /// Static proof of position independence: every RIP-relative operand in the code points at
    /// the data page (blob start + 4096) and every branch stays inside the blob.
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
        let (mut rip_rel, mut calls, mut syscalls) = (0, 0, 0);
        for insn in &mut d {
            assert_ne!(
                insn.code(),
                Code::INVALID,
                "undecodable byte at {:#x}",
                insn.ip()
            );
            if insn.is_ip_rel_memory_operand() {
                assert_eq!(
                    insn.ip_rel_memory_address(),
                    base + DATA_PAGE_OFFSET,
                    "{insn}"
                );
                rip_rel += 1;
            }
            if insn.is_jcc_short_or_near() || insn.is_jmp_short_or_near() || insn.is_call_near() {
                let t = insn.near_branch_target();
                assert!(
                    t >= base && t < base + b.bytes.len() as u64,
                    "branch leaves the blob: {insn}"
                );
                if insn.is_call_near() {
                    assert!(
                        b.stubs.values().contains(&((t - base) as usize)),
                        "call to something other than a stub slot: {insn}"
                    );
                    calls += 1;
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
        assert_eq!(rip_rel, 4, "one data-page lea per checked read");
        assert_eq!(calls, 4, "one stub call per fake, two in time()");
        assert_eq!(syscalls, 1, "only time()'s fallback makes a syscall");
    }

    // ---- exact arithmetic against scripted genuine values ----------------------------------

    const OFFSETS: [i64; 10] = [
        -600 * 1_000_000_000,
        2 * HOUR_NS,
        -1_500_000_000,
        999_999_999,
        -1,
        CENTURY_NS,
        -CENTURY_NS,
        0,
        1,
        -999_999_999,
    ];

    fn expected_ns(real: i128, off: i64) -> (i64, i64) {
        let t = real + off as i128;
        (t.div_euclid(NS) as i64, t.rem_euclid(NS) as i64)
    }

    #[test]
    fn fake_clock_scripted_clock_gettime_is_exact() {
        let reals = [
            (1_700_000_000i64, 0i64),
            (1_700_000_000, 1),
            (1_700_000_000, 499_999_999),
            (1_700_000_000, 500_000_000),
            (1_700_000_000, 999_999_999),
            (0, 0),
            (5, 999_999_999),
        ];
        for off in OFFSETS {
            for id in [0, 1, 7, 11, 31] {
                let inj = Injected::scripted(&params(1 << id, &[(id as usize, off)]));
                for &(sec, nsec) in &reals {
                    script(0, sec, nsec);
                    let (r, ts) = cg(inj.clock_gettime(), id);
                    assert_eq!(r, 0);
                    let s = SCRIPT.get();
                    assert_eq!(
                        (s.calls, s.last_id),
                        (1, id),
                        "genuine called once with the id"
                    );
                    let want = expected_ns(sec as i128 * NS + nsec as i128, off);
                    assert_eq!(
                        (ts.tv_sec, ts.tv_nsec),
                        want,
                        "id {id} real {sec}.{nsec:09} offset {off} ns"
                    );
                }
            }
        }
    }

    #[test]
    fn fake_clock_scripted_errors_pass_through() {
        let all = params(
            u32::MAX,
            &(0..32).map(|i| (i, 1_234_567_891)).collect::<Vec<_>>(),
        );
        let inj = Injected::scripted(&all);
        for ret in [-22, -14, -1, 1] {
            script(ret, 123, 456);
            let (r, ts) = cg(inj.clock_gettime(), 0);
            assert_eq!(r, ret);
            assert_eq!(
                (ts.tv_sec, ts.tv_nsec),
                (123, 456),
                "output shifted after an error"
            );

            script(ret, 123, 456);
            let (r, tv) = gtod(inj.gettimeofday());
            assert_eq!(r, ret);
            assert_eq!(
                (tv.tv_sec, tv.tv_usec),
                (123, 456),
                "output shifted after an error"
            );
        }
        // Selected ids above 31 and negative ids are never shifted, even if the mask bit that
        // `id & 31` would pick is set.
        for id in [32, 33, 63, 100, -1, -2, -6, i32::MIN] {
            script(0, 123, 456);
            let (r, ts) = cg(inj.clock_gettime(), id);
            assert_eq!(r, 0);
            assert_eq!((ts.tv_sec, ts.tv_nsec), (123, 456), "clock id {id} shifted");
            assert_eq!(SCRIPT.get().last_id, id);
        }
    }

    #[test]
    fn fake_clock_scripted_gettimeofday_is_exact() {
        for off in OFFSETS {
            let inj = Injected::scripted(&params(1, &[(0, off)]));
            let off_us = (off as i128).div_euclid(1000);
            for (sec, usec) in [
                (1_700_000_000i64, 0i64),
                (1_700_000_000, 1),
                (1_700_000_000, 999_999),
                (3, 500_000),
            ] {
                script(0, sec, usec);
                let mut tv = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 0,
                };
                let mut tz = [0u8; 8];
                let r = inj.gettimeofday()(&mut tv, tz.as_mut_ptr().cast());
                assert_eq!(r, 0);
                let s = SCRIPT.get();
                assert_eq!(s.last_ptr, &raw mut tv as usize, "tv passed through");
                assert_eq!(s.last_tz, tz.as_ptr() as usize, "tz passed through");
                let t = sec as i128 * US + usec as i128 + off_us;
                assert_eq!(
                    (tv.tv_sec as i128, tv.tv_usec as i128),
                    (t.div_euclid(US), t.rem_euclid(US)),
                    "real {sec}.{usec:06} offset {off} ns"
                );
            }
            // tv == NULL (with and without tz): nothing to shift, no crash, genuine result.
            for tz in [std::ptr::null_mut(), 8usize as *mut libc::c_void] {
                script(0, 0, 0);
                let r = inj.gettimeofday()(std::ptr::null_mut(), tz);
                assert_eq!(r, 0);
                assert_eq!(SCRIPT.get().last_tz, tz as usize);
                assert_eq!(SCRIPT.get().calls, 1);
            }
        }
        // Realtime not selected: gettimeofday untouched even with gtod fields set in the slot.
        let mut slot = params(0b10, &[(1, 5 * 1_000_000_000)]).encode_slot();
        slot[layout::SLOT_OFF_GTOD_SEC..][..8].copy_from_slice(&77i64.to_le_bytes());
        slot[layout::SLOT_OFF_GTOD_USEC..][..8].copy_from_slice(&5i64.to_le_bytes());
        let inj = Injected::scripted(&Params::default());
        inj.publish_raw(&slot);
        script(0, 1000, 999_999);
        let (r, tv) = gtod(inj.gettimeofday());
        assert_eq!((r, tv.tv_sec, tv.tv_usec), (0, 1000, 999_999));
    }

    /// time(): the exact floor of coarse + offset on both paths. A whole-second offset takes the
    /// fast path (the genuine time() alone, no clock_gettime); a fractional one reads
    /// CLOCK_REALTIME_COARSE. The stand-ins count their calls, so the path taken is checked.
    #[test]
    fn fake_clock_scripted_time_is_floor_of_coarse_plus_offset() {
        for off in OFFSETS {
            let p = params(1, &[(0, off)]);
            let inj = Injected::scripted(&p);
            let slow = off % 1_000_000_000 != 0;
            for (sec, nsec) in [
                (1_700_000_000i64, 0i64),
                (1_700_000_000, 499_999_999),
                (1_700_000_000, 500_000_000),
                (1_700_000_000, 999_999_999),
                (0, 0),
                (-1, 999_999_999),
            ] {
                let want = expected_ns(sec as i128 * NS + nsec as i128, off).0;
                assert_eq!(want, model_time(sec as i128 * NS + nsec as i128, &p));
                assert_eq!(time_needs_slow_path(sec, &p), slow);
                script(0, sec, nsec);
                assert_eq!(
                    inj.time()(std::ptr::null_mut()),
                    want,
                    "real {sec}.{nsec:09} offset {off}"
                );
                let s = SCRIPT.get();
                assert_eq!(s.time_calls, 1, "genuine time() called once");
                assert_eq!(
                    s.last_tloc, 0,
                    "genuine time() gets NULL, never the caller's tloc"
                );
                assert_eq!(
                    s.calls,
                    slow as u32,
                    "offset {off}: {} path expected",
                    if slow { "slow" } else { "fast" }
                );
                if slow {
                    assert_eq!(s.last_id, libc::CLOCK_REALTIME_COARSE);
                }
                script(0, sec, nsec);
                let mut t: libc::time_t = 42;
                assert_eq!(inj.time()(&mut t), want);
                assert_eq!(t, want, "*tloc");
                assert_eq!(SCRIPT.get().last_tloc, 0);
            }
        }
        // Realtime not selected: the genuine seconds, unshifted, even with clocks[0] non-zero
        // (also fractional: the fast path must not look at the offset at all).
        for nsec in [0i64, 5] {
            let mut slot = params(0b10, &[(1, 5 * 1_000_000_000)]).encode_slot();
            slot[layout::SLOT_OFF_CLOCKS..][..8].copy_from_slice(&77i64.to_le_bytes());
            slot[layout::SLOT_OFF_CLOCKS + 8..][..8].copy_from_slice(&nsec.to_le_bytes());
            let inj = Injected::scripted(&Params::default());
            inj.publish_raw(&slot);
            script(0, 1000, 999_999_999);
            assert_eq!(inj.time()(std::ptr::null_mut()), 1000);
            assert_eq!((SCRIPT.get().calls, SCRIPT.get().time_calls), (0, 1));
        }
    }

    #[test]
    fn fake_clock_time_falls_back_to_the_time_syscall() {
        // A fractional offset forces the slow path, whose clock_gettime fails.
        let inj = Injected::scripted(&params(1, &[(0, 3 * HOUR_NS + 1)]));
        script(-22, 1, 2);
        // SAFETY: time(NULL) has no preconditions.
        let before = unsafe { libc::time(std::ptr::null_mut()) };
        let mut t: libc::time_t = 0;
        let got = inj.time()(&mut t);
        // SAFETY: as above.
        let after = unsafe { libc::time(std::ptr::null_mut()) };
        assert!(
            before <= got && got <= after,
            "{before} <= {got} <= {after}"
        );
        assert_eq!(t, got);
        assert_eq!((SCRIPT.get().calls, SCRIPT.get().time_calls), (1, 1));
        // The same failure on the fast path is never seen: clock_gettime is not called.
        let inj = Injected::scripted(&params(1, &[(0, 3 * HOUR_NS)]));
        script(-22, 1, 2);
        assert_eq!(inj.time()(std::ptr::null_mut()), 1 + 3 * 3600);
        assert_eq!((SCRIPT.get().calls, SCRIPT.get().time_calls), (0, 1));
    }

    // ---- deadlines (the dead man's switch), exact against scripted genuine values ----------

    /// Deadlines around the scripted real value 1000.5 s, as `expires_ns`.
    const REAL_SEC: i64 = 1000;
    const REAL_NSEC: i64 = 500_000_000;
    const REAL_NS: i64 = REAL_SEC * 1_000_000_000 + REAL_NSEC;
    const DEADLINES: [i64; 14] = [
        layout::NEVER,
        i64::MAX - 1, // a real deadline far away, not "none"
        REAL_NS + 3600 * 1_000_000_000,
        (REAL_SEC + 1) * 1_000_000_000, // the next second
        REAL_NS + 1,                    // same second, one nanosecond later
        REAL_NS + 999,                  // same second, below the next microsecond
        REAL_NS + 1000,
        REAL_NS, // exactly at the deadline: expired
        REAL_NS - 1,
        REAL_SEC * 1_000_000_000, // same second, its start
        REAL_SEC * 1_000_000_000 - 1,
        0,
        -5,
        i64::MIN,
    ];

    #[test]
    fn fake_clock_scripted_clock_gettime_deadlines_are_exact() {
        for off in [2 * HOUR_NS + 250_000_000, -600 * 1_000_000_000, -1] {
            for id in [0usize, 1, 5, 7, 31] {
                for d in DEADLINES {
                    // Every other clock's deadline is in the past: only deadlines[id] counts.
                    let others: Vec<_> = (0..32).filter(|&i| i != id).map(|i| (i, 0)).collect();
                    let p = with_deadlines(params(1 << id, &[(id, off)]), &others);
                    let p = with_deadlines(p, &[(id, d)]);
                    let inj = Injected::scripted(&p);
                    for (sec, nsec) in [
                        (REAL_SEC, REAL_NSEC),
                        (REAL_SEC, REAL_NSEC + 1),
                        (REAL_SEC, REAL_NSEC - 1),
                        (REAL_SEC, 0),
                        (REAL_SEC, 999_999_999),
                        (REAL_SEC - 1, 999_999_999),
                        (REAL_SEC + 1, 0),
                        (-1, 999_999_999),
                        (-5, 0),
                    ] {
                        script(0, sec, nsec);
                        let (r, ts) = cg(inj.clock_gettime(), id as libc::clockid_t);
                        assert_eq!(r, 0);
                        let real = sec as i128 * NS + nsec as i128;
                        let want = model_clock(real, &p, id);
                        assert_eq!(
                            ts_ns(&ts),
                            want,
                            "id {id} real {sec}.{nsec:09} offset {off} deadline {d}"
                        );
                        assert!((0..1_000_000_000).contains(&ts.tv_nsec));
                    }
                }
            }
        }
    }

    #[test]
    fn fake_clock_scripted_gettimeofday_deadlines_are_exact() {
        for off in [2 * HOUR_NS + 250_000_000, -600 * 1_000_000_000, -1] {
            for d in DEADLINES {
                // gettimeofday follows deadlines[0] alone.
                let others: Vec<_> = (1..32).map(|i| (i, 0)).collect();
                let p = with_deadlines(params(0b11, &[(0, off), (1, off)]), &others);
                let p = with_deadlines(p, &[(0, d)]);
                let inj = Injected::scripted(&p);
                for (sec, usec) in [
                    (REAL_SEC, 500_000i64),
                    (REAL_SEC, 500_001),
                    (REAL_SEC, 499_999),
                    (REAL_SEC, 0),
                    (REAL_SEC, 999_999),
                    (REAL_SEC - 1, 999_999),
                    (REAL_SEC + 1, 0),
                    (-5, 0),
                ] {
                    script(0, sec, usec);
                    let (r, tv) = gtod(inj.gettimeofday());
                    assert_eq!(r, 0);
                    let want = model_gtod(sec as i128 * US + usec as i128, &p);
                    assert_eq!(
                        tv_us(&tv),
                        want,
                        "real {sec}.{usec:06} offset {off} deadline {d}"
                    );
                    assert!((0..1_000_000).contains(&tv.tv_usec));
                }
            }
        }
    }

    #[test]
    fn fake_clock_scripted_time_deadlines_are_exact_and_take_the_right_path() {
        for off in [
            -600 * 1_000_000_000,
            2 * HOUR_NS,
            2 * HOUR_NS + 600_000_000,
            -1,
            0,
        ] {
            for d in DEADLINES {
                let others: Vec<_> = (1..32).map(|i| (i, 0)).collect();
                let p = with_deadlines(params(0b11, &[(0, off), (1, off)]), &others);
                let p = with_deadlines(p, &[(0, d)]);
                let inj = Injected::scripted(&p);
                for (sec, nsec) in [
                    (REAL_SEC, REAL_NSEC),
                    (REAL_SEC, REAL_NSEC - 1),
                    (REAL_SEC, 0),
                    (REAL_SEC, 999_999_999),
                    (REAL_SEC - 1, 999_999_999),
                    (REAL_SEC + 1, 0),
                    (-1, 999_999_999),
                ] {
                    script(0, sec, nsec);
                    let got = inj.time()(std::ptr::null_mut());
                    let want = model_time(sec as i128 * NS + nsec as i128, &p);
                    let what = format!("real {sec}.{nsec:09} offset {off} deadline {d}");
                    assert_eq!(got, want, "{what}");
                    let s = SCRIPT.get();
                    let slow = time_needs_slow_path(sec, &p);
                    assert_eq!((s.time_calls, s.calls), (1, slow as u32), "{what}: path");
                }
            }
        }
    }

    // ---- against the genuine vDSO ------------------------------------------------------------

    /// Fake reading bracketed by two genuine readings, compared exactly.
    fn check_clock(inj: &Injected, id: libc::clockid_t, off: i64) {
        let g1 = now(id);
        let (r, ts) = cg(inj.clock_gettime(), id);
        let g2 = now(id);
        assert_eq!(r, 0, "fake clock_gettime({id}) failed");
        assert!(
            (0..1_000_000_000).contains(&ts.tv_nsec),
            "tv_nsec {}",
            ts.tv_nsec
        );
        let f = ts_ns(&ts);
        assert!(
            g1 + off as i128 <= f && f <= g2 + off as i128,
            "clock {id} offset {off}: fake {f} not in [{}, {}] (delta {} ns)",
            g1 + off as i128,
            g2 + off as i128,
            f - g1
        );
    }

    fn check_gtod(inj: &Injected, off_us: i128) {
        let g1 = now_us();
        let (r, tv) = gtod(inj.gettimeofday());
        let g2 = now_us();
        assert_eq!(r, 0);
        assert!(
            (0..1_000_000).contains(&tv.tv_usec),
            "tv_usec {}",
            tv.tv_usec
        );
        let f = tv_us(&tv);
        assert!(
            g1 + off_us <= f && f <= g2 + off_us,
            "gettimeofday offset {off_us} us: {f} not in [{}, {}]",
            g1 + off_us,
            g2 + off_us
        );
    }

    fn check_time(inj: &Injected, off: i64) {
        let t1 = genuine_time()(std::ptr::null_mut());
        let c1 = now(libc::CLOCK_REALTIME_COARSE);
        let mut t: libc::time_t = 0;
        let got = inj.time()(&mut t);
        let got_null = inj.time()(std::ptr::null_mut());
        let c2 = now(libc::CLOCK_REALTIME_COARSE);
        let t2 = genuine_time()(std::ptr::null_mut());
        let lo = (c1 + off as i128).div_euclid(NS) as i64;
        let hi = (c2 + off as i128).div_euclid(NS) as i64;
        assert_eq!(t, got, "*tloc differs from the return value");
        if off == 0 {
            assert!(t1 <= got && got <= t2, "time() {got} not in [{t1}, {t2}]");
        }
        for v in [got, got_null] {
            assert!(
                lo <= v && v <= hi,
                "time() offset {off}: {v} not in [{lo}, {hi}]"
            );
        }
    }

    #[test]
    fn fake_clock_vdso_offsets() {
        let clocks = [
            libc::CLOCK_REALTIME,
            libc::CLOCK_MONOTONIC,
            libc::CLOCK_MONOTONIC_RAW,
            libc::CLOCK_REALTIME_COARSE,
            libc::CLOCK_MONOTONIC_COARSE,
            libc::CLOCK_BOOTTIME,
            libc::CLOCK_TAI,
        ];
        for off in OFFSETS {
            let mut mask = 0;
            let mut offs = vec![];
            for &c in &clocks {
                mask |= 1 << c;
                offs.push((c as usize, off));
            }
            let inj = Injected::with_vdso(&params(mask, &offs));
            for _ in 0..3 {
                for &c in &clocks {
                    check_clock(&inj, c, off);
                }
                check_gtod(&inj, (off as i128).div_euclid(1000));
                check_time(&inj, off);
            }
        }
    }

    #[test]
    fn fake_clock_vdso_normalises_over_many_calls() {
        for off in [-1, 999_999_999, -1_500_000_000, 1] {
            let inj = Injected::with_vdso(&params(0b11, &[(0, off), (1, off)]));
            let (f, g) = (inj.clock_gettime(), inj.gettimeofday());
            let mut last_mono = i128::MIN;
            for _ in 0..100_000 {
                for id in [libc::CLOCK_REALTIME, libc::CLOCK_MONOTONIC] {
                    let (r, ts) = cg(f, id);
                    assert_eq!(r, 0);
                    assert!(
                        (0..1_000_000_000).contains(&ts.tv_nsec),
                        "tv_nsec {}",
                        ts.tv_nsec
                    );
                    if id == libc::CLOCK_MONOTONIC {
                        let v = ts_ns(&ts);
                        assert!(v >= last_mono, "fake monotonic went backwards");
                        last_mono = v;
                    }
                }
                let (r, tv) = gtod(g);
                assert_eq!(r, 0);
                assert!(
                    (0..1_000_000).contains(&tv.tv_usec),
                    "tv_usec {}",
                    tv.tv_usec
                );
            }
        }
    }

    #[test]
    fn fake_clock_vdso_unselected_clocks_are_untouched() {
        // Poison every unselected entry (encode_slot would zero them) so that a fake that
        // ignored the mask would visibly shift them.
        let poison = |mask: u32, off: i64| {
            let mut slot =
                params(mask, &(0..32).map(|i| (i, off)).collect::<Vec<_>>()).encode_slot();
            for id in 0..32 {
                if mask & (1 << id) == 0 {
                    let at = layout::SLOT_OFF_CLOCKS + id * 16;
                    slot[at..at + 8].copy_from_slice(&3600i64.to_le_bytes());
                    slot[at + 8..at + 16].copy_from_slice(&1i64.to_le_bytes());
                }
            }
            if mask & 1 == 0 {
                slot[layout::SLOT_OFF_GTOD_SEC..][..8].copy_from_slice(&3600i64.to_le_bytes());
                slot[layout::SLOT_OFF_GTOD_USEC..][..8].copy_from_slice(&1i64.to_le_bytes());
            }
            slot
        };
        let off = -600 * 1_000_000_000;
        let rt = libc::CLOCK_REALTIME;
        let mono = libc::CLOCK_MONOTONIC;
        let boot = libc::CLOCK_BOOTTIME;
        let all = [
            rt,
            mono,
            libc::CLOCK_MONOTONIC_RAW,
            libc::CLOCK_REALTIME_COARSE,
            libc::CLOCK_MONOTONIC_COARSE,
            boot,
            libc::CLOCK_TAI,
        ];
        for mask in [
            1u32 << rt,
            1 << mono,
            (1 << mono) | (1 << boot),
            0,
            1 << libc::CLOCK_TAI,
        ] {
            let inj = Injected::with_vdso(&Params::default());
            inj.publish_raw(&poison(mask, off));
            for &c in &all {
                let want = if mask & (1 << c) != 0 { off } else { 0 };
                check_clock(&inj, c, want);
            }
            let rt_off = if mask & 1 != 0 { off } else { 0 };
            check_gtod(&inj, (rt_off as i128).div_euclid(1000));
            check_time(&inj, rt_off);
        }
    }

    #[test]
    fn fake_clock_vdso_cpu_time_clocks_are_not_shifted() {
        let inj = Injected::with_vdso(&params(
            u32::MAX,
            &(0..32)
                .map(|i| (i, 1000 * 1_000_000_000))
                .collect::<Vec<_>>(),
        ));
        let mut proc_clock: libc::clockid_t = 0;
        // SAFETY: valid out pointer; pid 0 is this process.
        assert_eq!(unsafe { libc::clock_getcpuclockid(0, &mut proc_clock) }, 0);
        let mut thread_clock: libc::clockid_t = 0;
        // SAFETY: valid out pointer; pthread_self is a live thread.
        let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut thread_clock) };
        assert_eq!(rc, 0);
        assert!(
            proc_clock < 0 && thread_clock < 0,
            "{proc_clock} {thread_clock}"
        );
        for id in [proc_clock, thread_clock] {
            for _ in 0..100 {
                check_clock(&inj, id, 0);
            }
        }
        // The static CPU-time ids (2, 3) are ordinary ids for the mask: selected, they shift.
        check_clock(&inj, libc::CLOCK_THREAD_CPUTIME_ID, 1000 * 1_000_000_000);
    }

    #[test]
    fn fake_clock_vdso_invalid_ids_return_the_genuine_error() {
        let inj = Injected::with_vdso(&params(
            u32::MAX,
            &(0..32)
                .map(|i| (i, 1000 * 1_000_000_000))
                .collect::<Vec<_>>(),
        ));
        for id in [100, -1, 20, 31, 32, i32::MAX] {
            let (gr, gts) = cg(genuine_clock_gettime(), id);
            let (fr, fts) = cg(inj.clock_gettime(), id);
            assert_ne!(gr, 0, "clock id {id} unexpectedly valid");
            assert_eq!(fr, gr, "clock id {id}: fake returned {fr}, genuine {gr}");
            assert_eq!((fts.tv_sec, fts.tv_nsec), (gts.tv_sec, gts.tv_nsec));
            assert_eq!(
                (fts.tv_sec, fts.tv_nsec),
                (0x5555_5555, 0x6666_6666),
                "sentinel touched"
            );
        }
    }

    #[test]
    fn fake_clock_vdso_gettimeofday_null_arguments() {
        let off = 2 * HOUR_NS + 250_000_000;
        let inj = Injected::with_vdso(&params(1, &[(0, off)]));
        // struct timezone { int tz_minuteswest; int tz_dsttime; }
        let mut tz = [77i32; 2];
        let mut gtz = [99i32; 2];
        let tzp = (&raw mut tz).cast::<libc::c_void>();
        assert_eq!(inj.gettimeofday()(std::ptr::null_mut(), tzp), 0);
        assert_eq!(
            genuine_gettimeofday()(std::ptr::null_mut(), (&raw mut gtz).cast()),
            0
        );
        assert_eq!(tz, gtz, "tz filled like the genuine one");
        assert_eq!(
            inj.gettimeofday()(std::ptr::null_mut(), std::ptr::null_mut()),
            0
        );
        // tv with tz, tv with NULL tz.
        let g1 = now_us();
        let mut tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        assert_eq!(inj.gettimeofday()(&mut tv, tzp), 0);
        let g2 = now_us();
        let f = tv_us(&tv);
        let off_us = off as i128 / 1000;
        assert!(g1 + off_us <= f && f <= g2 + off_us);
        check_gtod(&inj, off_us);
        // Realtime not selected.
        let inj = Injected::with_vdso(&params(0b10, &[(1, off)]));
        check_gtod(&inj, 0);
        check_time(&inj, 0);
        check_clock(&inj, libc::CLOCK_MONOTONIC, off);
    }

    #[test]
    fn fake_clock_vdso_time_floor_semantics() {
        for off in [
            -1_500_000_000,
            1_500_000_000,
            -600 * 1_000_000_000,
            999_999_999,
            -1,
            2 * HOUR_NS,
            CENTURY_NS,
            -CENTURY_NS,
        ] {
            let inj = Injected::with_vdso(&params(1, &[(0, off)]));
            for _ in 0..50 {
                check_time(&inj, off);
            }
        }
    }

    const VDSO_CLOCKS: [libc::clockid_t; 7] = [
        libc::CLOCK_REALTIME,
        libc::CLOCK_MONOTONIC,
        libc::CLOCK_MONOTONIC_RAW,
        libc::CLOCK_REALTIME_COARSE,
        libc::CLOCK_MONOTONIC_COARSE,
        libc::CLOCK_BOOTTIME,
        libc::CLOCK_TAI,
    ];

    /// Each clock against its own deadline, in its own time: far ahead or none → shifted, just
    /// or long passed → genuine. The other clocks' deadlines are set the other way round, so
    /// a fake that looked at the wrong entry would be caught.
    #[test]
    fn fake_clock_vdso_deadlines_per_clock() {
        // Fractional (time() takes its slow path) and whole seconds (its fast path).
        for off in [HOUR_NS + 1, -600 * 1_000_000_000] {
            for &c in &VDSO_CLOCKS {
                let cu = c as usize;
                for (ahead, shifted) in [
                    (Some(HOUR_NS), true),
                    (None, true),
                    (Some(-1_000_000_000), false),
                    (Some(-HOUR_NS), false),
                ] {
                    let mask = VDSO_CLOCKS.iter().fold(0u32, |m, &k| m | 1 << k);
                    let offs: Vec<_> = VDSO_CLOCKS.iter().map(|&k| (k as usize, off)).collect();
                    let mut p = params(mask, &offs);
                    for &k in &VDSO_CLOCKS {
                        // The others: expired if this one runs, running if this one expired.
                        let n = now(k) as i64;
                        p.expires_ns[k as usize] = if shifted { n - HOUR_NS } else { n + HOUR_NS };
                    }
                    p.expires_ns[cu] = match ahead {
                        Some(d) => now(c) as i64 + d,
                        None => layout::NEVER,
                    };
                    let inj = Injected::with_vdso(&p);
                    let want = if shifted { off } else { 0 };
                    for _ in 0..3 {
                        check_clock(&inj, c, want);
                    }
                    if c == libc::CLOCK_REALTIME {
                        check_gtod(&inj, (want as i128).div_euclid(1000));
                        check_time(&inj, want);
                    } else if c == libc::CLOCK_REALTIME_COARSE {
                        // gettimeofday and time follow deadlines[0] (CLOCK_REALTIME), not
                        // CLOCK_REALTIME_COARSE's, set the other way round here.
                        let rt = if shifted { 0 } else { off };
                        check_gtod(&inj, (rt as i128).div_euclid(1000));
                        check_time(&inj, rt);
                    }
                }
            }
        }
    }

    /// Realtime's deadline passed while monotonic's has not, and the other way round.
    #[test]
    fn fake_clock_vdso_one_deadline_passed_the_other_not() {
        let off = 2 * HOUR_NS;
        let (rt, mono) = (libc::CLOCK_REALTIME, libc::CLOCK_MONOTONIC);
        for rt_passed in [true, false] {
            let dir = |passed: bool| if passed { -1_000_000_000 } else { HOUR_NS };
            let p = with_deadlines(
                params(0b11, &[(0, off), (1, off)]),
                &[
                    (0, now(rt) as i64 + dir(rt_passed)),
                    (1, now(mono) as i64 + dir(!rt_passed)),
                ],
            );
            let inj = Injected::with_vdso(&p);
            let (rt_off, mono_off) = if rt_passed { (0, off) } else { (off, 0) };
            for _ in 0..10 {
                check_clock(&inj, rt, rt_off);
                check_clock(&inj, mono, mono_off);
                check_gtod(&inj, rt_off as i128 / 1000);
                check_time(&inj, rt_off);
            }
        }
    }

    /// A data page of zeros (generation 0, slot 0 all zero), and a slot whose mask and offsets
    /// are set but whose deadline table is zeros: every fake returns the genuine time.
    #[test]
    fn fake_clock_vdso_zeroed_page_and_zeroed_deadlines_pass_real_time() {
        let g = genuine();
        let zero = Injected::with_stubs(
            &abs_jump(g.clock_gettime),
            &abs_jump(g.gettimeofday),
            &abs_jump(g.time),
            &[0u8; PAGE],
        );
        let all: Vec<_> = (0..32).map(|i| (i, 1000 * 1_000_000_000 + 1)).collect();
        let mut slot = params(u32::MAX, &all).encode_slot();
        slot[layout::SLOT_OFF_DEADLINES..].fill(0);
        let deadlines_zero = Injected::with_vdso(&Params::default());
        deadlines_zero.publish_raw(&slot);
        let mut whole = params(u32::MAX, &all).encode_slot();
        whole[layout::SLOT_OFF_DEADLINES..].fill(0);
        for i in 0..32 {
            // Whole seconds, so that time() could take its fast path.
            whole[layout::SLOT_OFF_CLOCKS + 16 * i + 8..][..8].fill(0);
        }
        let deadlines_zero_whole = Injected::with_vdso(&Params::default());
        deadlines_zero_whole.publish_raw(&whole);
        for inj in [&zero, &deadlines_zero, &deadlines_zero_whole] {
            for _ in 0..3 {
                for &c in &VDSO_CLOCKS {
                    check_clock(inj, c, 0);
                }
                check_gtod(inj, 0);
                check_time(inj, 0);
            }
        }
    }

    /// The deadline passes while we watch, inside one realtime second: clock_gettime and
    /// gettimeofday compare nanoseconds (microseconds × 1000), time() runs its slow path
    /// (its seconds equal the deadline's). Each reading is bracketed by genuine readings;
    /// below the deadline it must be shifted, at or after it genuine, and once genuine it stays
    /// genuine.
    #[test]
    fn fake_clock_vdso_deadline_passes_within_a_second() {
        // A run is inconclusive (and repeated) only when preemption kept it from observing
        // both sides of a deadline; a wrong reading fails at once.
        for _attempt in 0..10 {
            if deadline_passes_within_a_second() {
                return;
            }
        }
        panic!("10 runs never watched every deadline pass (the machine is too busy?)");
    }

    /// One run of [`fake_clock_vdso_deadline_passes_within_a_second`]: false if inconclusive.
    fn deadline_passes_within_a_second() -> bool {
        let off = HOUR_NS; // whole seconds: time() is slow only because of the deadline
        let (rt, mono, coarse) = (
            libc::CLOCK_REALTIME,
            libc::CLOCK_MONOTONIC,
            libc::CLOCK_REALTIME_COARSE,
        );
        // Start early in a second so that the deadline (now + 100 ms) and the 60 ms watched
        // after it stay inside the same second.
        while now(rt).rem_euclid(NS) > 300_000_000 {
            std::thread::sleep(Duration::from_millis(20));
        }
        let d_rt = now(rt) as i64 + 100_000_000;
        let d_mono = now(mono) as i64 + 100_000_000;
        let p = with_deadlines(
            params(0b11, &[(0, off), (1, off)]),
            &[(0, d_rt), (1, d_mono)],
        );
        let inj = Injected::with_vdso(&p);
        // Judges one reading f taken between genuine readings lo and hi: 1 if it is shifted,
        // which only a reading below the deadline may be, 0 if genuine, which only a reading
        // at or after the deadline may be.
        let judge = |what: &str, f: i128, (lo, hi): (i128, i128), off: i128, below, above| {
            if below && lo + off <= f && f <= hi + off {
                1
            } else if above && lo <= f && f <= hi {
                0
            } else {
                panic!(
                    "{what}: {f} is neither shifted (below the deadline: {below}) nor genuine \
                     (at or after it: {above}) within [{lo}, {hi}], offset {off}"
                )
            }
        };
        let names = ["realtime", "monotonic", "gettimeofday", "time"];
        let mut last = [1u8; 4];
        let mut seen = [[0u32; 2]; 4];
        let end = d_rt as i128 + 60_000_000;
        let mut time_in_deadline_second = 0;
        loop {
            let g1 = now(rt);
            let (r, ts) = cg(inj.clock_gettime(), rt);
            let g2 = now(rt);
            assert_eq!(r, 0);
            if g1 > end {
                break;
            }
            let d = d_rt as i128;
            let o = off as i128;
            let k = [
                judge(names[0], ts_ns(&ts), (g1, g2), o, g1 < d, g2 >= d),
                {
                    let g1 = now(mono);
                    let (r, ts) = cg(inj.clock_gettime(), mono);
                    let g2 = now(mono);
                    assert_eq!(r, 0);
                    let d = d_mono as i128;
                    judge(names[1], ts_ns(&ts), (g1, g2), o, g1 < d, g2 >= d)
                },
                {
                    let g1 = now_us();
                    let (r, tv) = gtod(inj.gettimeofday());
                    let g2 = now_us();
                    assert_eq!(r, 0);
                    let (below, above) = (g1 * 1000 < d, g2 * 1000 >= d);
                    judge(names[2], tv_us(&tv), (g1, g2), o / 1000, below, above)
                },
                {
                    let c1 = now(coarse);
                    let t = inj.time()(std::ptr::null_mut()) as i128;
                    let c2 = now(coarse);
                    let secs = (c1.div_euclid(NS), c2.div_euclid(NS));
                    if secs.0 == d.div_euclid(NS) && secs.1 == secs.0 {
                        time_in_deadline_second += 1;
                    }
                    judge(names[3], t, secs, o / NS, c1 < d, c2 >= d)
                },
            ];
            for (i, &k) in k.iter().enumerate() {
                assert!(
                    k <= last[i],
                    "{}: shifted again after the deadline",
                    names[i]
                );
                last[i] = k;
                seen[i][k as usize] += 1;
            }
        }
        seen.iter().all(|s| s[0] > 0 && s[1] > 0) && time_in_deadline_second > 0
    }

    /// The same blob copied to two different addresses, alive at once, each with its own data
    /// page: each copy must read its own page.
    #[test]
    fn fake_clock_copies_at_two_addresses() {
        let a = Injected::with_vdso(&params(0b11, &[(0, HOUR_NS), (1, HOUR_NS)]));
        let b = Injected::with_vdso(&params(0b11, &[(0, -HOUR_NS - 1), (1, -HOUR_NS - 1)]));
        assert_ne!(a.base, b.base);
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

    /// A writer that never finishes (garbage in the inactive slot, generation untouched) does
    /// not disturb readers, and any generation value selects its slot by parity.
    #[test]
    fn fake_clock_dead_writer_and_generation_parity() {
        let off = -600 * 1_000_000_000;
        let inj = Injected::with_vdso(&params(0b11, &[(0, off), (1, off)]));
        inj.write_slot(1, &[0x5a; layout::SLOT_LEN]);
        for _ in 0..10 {
            check_clock(&inj, libc::CLOCK_REALTIME, off);
            check_clock(&inj, libc::CLOCK_MONOTONIC, off);
            check_gtod(&inj, off as i128 / 1000);
            check_time(&inj, off);
        }
        for generation in [1u64, 2, u64::MAX, u64::MAX - 1] {
            let o = generation as i64 & 0xffff;
            inj.write_slot(generation, &params(0b10, &[(1, o)]).encode_slot());
            inj.word(layout::OFF_GENERATION)
                .store(generation, Ordering::Release);
            check_clock(&inj, libc::CLOCK_MONOTONIC, o);
            check_clock(&inj, libc::CLOCK_REALTIME, 0);
        }
    }

    /// Live updates: a writer flips between two parameter sets while readers check that every
    /// value corresponds to one set or the other, never a mix of the two.
    #[test]
    fn fake_clock_live_update_never_tears() {
        // (sec, nsec) splits: A = (1000, 250e6), B = (-1001, 750e6); in microseconds for
        // gettimeofday likewise. A torn read yields +1000.75 s or -1000.75 s, half a second
        // away from either set.
        let a_off: i64 = 1000 * 1_000_000_000 + 250_000_000;
        let b_off: i64 = -a_off;
        let set_a = params(0b11, &[(0, a_off), (1, a_off)]);
        let set_b = params(0b11, &[(0, b_off), (1, b_off)]);
        let inj = Injected::with_vdso(&set_a);
        let stop = AtomicBool::new(false);
        let flips = AtomicU64::new(0);
        let run_for = Duration::from_millis(1500);
        // The fake read f lies in [g1 + off, g2 + off] for the set it used.
        let within = |f: i128, g1: i128, g2: i128, off: i64, unit: i128| {
            let off = (off as i128).div_euclid(unit);
            g1 + off <= f && f <= g2 + off
        };

        let reader = || {
            let (mut seen_a, mut seen_b, mut samples) = (0u64, 0u64, 0u64);
            let deadline = Instant::now() + run_for;
            let (f, g) = (inj.clock_gettime(), inj.gettimeofday());
            while Instant::now() < deadline {
                for id in [libc::CLOCK_MONOTONIC, libc::CLOCK_REALTIME] {
                    let g1 = now(id);
                    let (r, ts) = cg(f, id);
                    let g2 = now(id);
                    assert_eq!(r, 0);
                    assert!((0..1_000_000_000).contains(&ts.tv_nsec));
                    if g2 - g1 > 100_000_000 {
                        continue; // preempted for long: the bracket is too wide to judge
                    }
                    let v = ts_ns(&ts);
                    if within(v, g1, g2, a_off, 1) {
                        seen_a += 1;
                    } else if within(v, g1, g2, b_off, 1) {
                        seen_b += 1;
                    } else {
                        panic!(
                            "torn read on clock {id}: fake - genuine = {} ns, \
                             expected {a_off} or {b_off}",
                            v - g1
                        );
                    }
                    samples += 1;
                }
                let g1 = now_us();
                let (r, tv) = gtod(g);
                let g2 = now_us();
                assert_eq!(r, 0);
                assert!((0..1_000_000).contains(&tv.tv_usec));
                let v = tv_us(&tv);
                if g2 - g1 <= 100_000 {
                    assert!(
                        within(v, g1, g2, a_off, 1000) || within(v, g1, g2, b_off, 1000),
                        "torn gettimeofday: fake - genuine = {} us",
                        v - g1
                    );
                    samples += 1;
                }
            }
            (seen_a, seen_b, samples)
        };

        let results = std::thread::scope(|s| {
            let writer = s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    inj.publish(&set_b);
                    inj.publish(&set_a);
                    flips.fetch_add(2, Ordering::Relaxed);
                }
            });
            let readers: Vec<_> = (0..2).map(|_| s.spawn(reader)).collect();
            let results: Vec<_> = readers.into_iter().map(|r| r.join()).collect();
            stop.store(true, Ordering::Relaxed); // also when a reader failed
            writer.join().unwrap();
            results
        });
        let (mut seen_a, mut seen_b, mut samples) = (0, 0, 0);
        for r in results {
            let (a, b, n) = r.unwrap_or_else(|e| std::panic::resume_unwind(e));
            seen_a += a;
            seen_b += b;
            samples += n;
        }
        let flips = flips.load(Ordering::Relaxed);
        assert!(flips > 1000, "writer flipped only {flips} times");
        assert!(samples > 10_000, "only {samples} samples");
        assert!(
            seen_a > 0 && seen_b > 0,
            "saw A {seen_a} times, B {seen_b} times: the updates were not observed"
        );
    }

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

        /// Calls `f(a0, a1)` with rbx, rbp, r12-r15 set to sentinels; returns (rax, rsp before
        /// the call, whether all sentinels survived).
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

    // ---- genuine functions that use every freedom the C ABI gives them -------------------

    /// clock_gettime stand-in: writes 1000.5 s, then returns 0 in eax with garbage in the upper
    /// half of rax, every other caller-saved register overwritten and its red zone scribbled
    /// over. A fake that kept anything in a caller-saved register across the call, or looked
    /// at more than eax, would go wrong.
    #[unsafe(naked)]
    extern "C" fn hostile_clock_gettime(
        _id: libc::clockid_t,
        _ts: *mut libc::timespec,
    ) -> libc::c_int {
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
    extern "C" fn hostile_gettimeofday(
        _tv: *mut libc::timeval,
        _tz: *mut libc::c_void,
    ) -> libc::c_int {
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

    // ---- deterministic interleavings: a writer lapping the reader at every instruction ----

    /// State shared with the SIGTRAP handler (async-signal-safe: atomics only).
    static TRACE_LO: AtomicUsize = AtomicUsize::new(0);
    static TRACE_HI: AtomicUsize = AtomicUsize::new(0);
    static TRACE_DATA: AtomicUsize = AtomicUsize::new(0);
    static TRACE_AT: AtomicUsize = AtomicUsize::new(usize::MAX);
    static TRACE_STEPS: AtomicUsize = AtomicUsize::new(0);
    static TRACE_MODE: AtomicUsize = AtomicUsize::new(0);
    static TRACE_VARIANT: AtomicUsize = AtomicUsize::new(0);

    const MODE_FULL_LAP: usize = 1;
    const MODE_DEAD_WRITER: usize = 2;

    /// Offsets of parameter set `n` for CLOCK_REALTIME and CLOCK_MONOTONIC: every set has
    /// distinct sub-second digits, and sets n and n + 2 differ in whether time() carries, so
    /// any mix of two sets' fields gives a value no single set gives.
    fn lap_offset(n: i64) -> i64 {
        let carry = matches!(n % 4, 1 | 2);
        10 * n * 1_000_000_000 + if carry { 600_000_000 } else { 100_000_000 } + n * 1000
    }

    /// Kinds of offsets the lap sets use (see [`lap_params`]).
    const LAP_OFFSET_KINDS: usize = 4;
    /// Kinds of deadlines the lap sets use (see [`lap_params`]).
    const LAP_DEADLINE_KINDS: usize = 7;
    const LAP_VARIANTS: usize = LAP_OFFSET_KINDS * LAP_DEADLINE_KINDS;

    /// Parameter set `n` (0, 1 or 2) of lap `variant`, for CLOCK_REALTIME and CLOCK_MONOTONIC,
    /// whose stand-ins read 1000.5 s. Each variant makes the sets differ so that any mix of
    /// two sets' fields that a misplaced generation check could produce gives a value that
    /// neither set gives, in at least one variant:
    /// - offsets: [`lap_offset`] (distinct sub-second digits, time() carries differently); set
    ///   0 whole seconds and set 2 fractional, or the reverse (time()'s fast path reads the
    ///   offset's nanoseconds to decide, a torn pair takes the wrong path); all whole seconds
    ///   (time()'s fast path throughout);
    /// - deadlines: none; set 0 expired and the others running, or the reverse, decided by
    ///   the seconds (time()'s fast path) or, inside the real second, by the nanoseconds
    ///   (time()'s slow path); both running but with a different (sec, nsec) such that a torn
    ///   pair (1000, 0) has expired.
    fn lap_params(n: i64, variant: usize) -> Params {
        const S: i64 = 1_000_000_000;
        let whole = (10 * n + 3) * S;
        let off = match variant % LAP_OFFSET_KINDS {
            0 => lap_offset(n) + 5 * S, // + 5 s: set 0 never reads as real time
            1 if n == 2 => whole + 600_000_000,
            2 if n == 0 => whole + 600_000_000,
            _ => whole,
        };
        let first = n == 0;
        let pick = |set0: i64, others: i64| if first { set0 } else { others };
        let deadline = match variant / LAP_OFFSET_KINDS {
            0 => layout::NEVER,
            1 => pick(999 * S, 1001 * S),
            2 => pick(1001 * S, 999 * S),
            3 => pick(REAL_NS, REAL_NS + 1),
            4 => pick(REAL_NS + 1, REAL_NS),
            5 => pick(REAL_NS + 1, 1001 * S),
            _ => pick(1001 * S, REAL_NS + 1),
        };
        with_deadlines(
            params(0b11, &[(0, off), (1, off)]),
            &[(0, deadline), (1, deadline)],
        )
    }

    fn lap_slot(n: i64) -> [u8; layout::SLOT_LEN] {
        lap_params(n, TRACE_VARIANT.load(Ordering::Relaxed)).encode_slot()
    }

    fn data_word(data: usize, off: usize) -> &'static AtomicU64 {
        // SAFETY: `data` is the base of a live, rw data page (the test keeps the mapping alive
        // while tracing) and off is 8-aligned and in bounds.
        unsafe { AtomicU64::from_ptr((data + off) as *mut u64) }
    }

    fn trace_write_slot(data: usize, generation: u64, slot: &[u8]) {
        let at = layout::slot_offset(generation);
        for (i, w) in slot.chunks_exact(8).enumerate() {
            let v = u64::from_le_bytes(w.try_into().unwrap());
            data_word(data, at + 8 * i).store(v, Ordering::Relaxed);
        }
    }

    /// What the writer does between two instructions of the reader.
    fn trace_writer(data: usize) {
        let generation = data_word(data, layout::OFF_GENERATION);
        match TRACE_MODE.load(Ordering::Relaxed) {
            MODE_FULL_LAP => {
                // Two complete publications: set 1 into slot 1, then set 2 into slot 0, the
                // slot the reader may be reading.
                trace_write_slot(data, 1, &lap_slot(1));
                generation.store(1, Ordering::Release);
                trace_write_slot(data, 2, &lap_slot(2));
                generation.store(2, Ordering::Release);
            }
            MODE_DEAD_WRITER => {
                // Publishes set 1, then dies half-way through writing set 2 into slot 0: the
                // mask word is cleared (as if set 2 selected nothing) and only the
                // whole-second words of the offsets and deadlines are written; the generation
                // is never bumped to 2.
                trace_write_slot(data, 1, &lap_slot(1));
                generation.store(1, Ordering::Release);
                let two = lap_slot(2);
                let slot0 = layout::slot_offset(0);
                data_word(data, slot0 + layout::SLOT_OFF_MASK).store(0, Ordering::Relaxed);
                for at in [
                    layout::SLOT_OFF_GTOD_SEC,
                    layout::SLOT_OFF_CLOCKS,
                    layout::SLOT_OFF_CLOCKS + 16,
                    layout::SLOT_OFF_DEADLINES,
                    layout::SLOT_OFF_DEADLINES + 16,
                ] {
                    let v = u64::from_le_bytes(two[at..at + 8].try_into().unwrap());
                    data_word(data, slot0 + at).store(v, Ordering::Relaxed);
                }
            }
            _ => {}
        }
    }

    extern "C" fn on_sigtrap(_: libc::c_int, _: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid ucontext_t to an SA_SIGINFO handler.
        let rip = unsafe {
            (*(ctx as *const libc::ucontext_t)).uc_mcontext.gregs[libc::REG_RIP as usize]
        } as usize;
        if rip < TRACE_LO.load(Ordering::Relaxed) || rip >= TRACE_HI.load(Ordering::Relaxed) {
            return;
        }
        let step = TRACE_STEPS.fetch_add(1, Ordering::Relaxed);
        if step == TRACE_AT.load(Ordering::Relaxed) {
            trace_writer(TRACE_DATA.load(Ordering::Relaxed));
        }
    }

    /// Calls `f(a0, a1)` with the trap flag set: SIGTRAP after every instruction.
    fn call_single_stepped(f: usize, a0: usize, a1: usize) -> u64 {
        let ret: u64;
        // SAFETY: calls a fake in the live test code page with valid arguments; the flags are
        // restored (TF cleared) before the block ends; the stack is balanced.
        unsafe {
            std::arch::asm!(
                "pushfq",
                "or qword ptr [rsp], 0x100",
                "popfq",
                "call {f}",
                "pushfq",
                "and qword ptr [rsp], -0x101",
                "popfq",
                f = in(reg) f,
                in("rdi") a0,
                in("rsi") a1,
                lateout("rax") ret,
                clobber_abi("C"),
            );
        }
        ret
    }

    /// Single-steps each fake and, in separate runs, lets a writer lap it (or die half-way)
    /// at every instruction boundary of the fake, for every lap variant (offsets and deadlines
    /// chosen so that every field read inside the checked read matters). Every result must be
    /// exactly what one of the published parameter sets gives; a missing or misplaced
    /// generation re-check shows up as a mix.
    #[test]
    fn fake_clock_writer_at_every_instruction_never_tears() {
        // SAFETY: installs a SIGTRAP handler that only touches atomics (the previous one is
        // restored at the end); no other test uses SIGTRAP (it would otherwise kill the
        // process), and the handler ignores traps outside the test's code page.
        let previous = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            let mut previous: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigtrap as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut sa.sa_mask);
            assert_eq!(libc::sigaction(libc::SIGTRAP, &sa, &mut previous), 0);
            previous
        };
        // Genuine stand-ins as machine code in the slots: they return 1000.5 s / 1000.5 s /
        // 1000 s.
        // mov qword ptr [rsi], 1000; mov qword ptr [rsi+8], 500000000; xor eax, eax; ret
        let cg_stub = [
            0x48, 0xc7, 0x06, 0xe8, 0x03, 0, 0, 0x48, 0xc7, 0x46, 0x08, 0x00, 0x65, 0xcd, 0x1d,
            0x31, 0xc0, 0xc3,
        ];
        // mov qword ptr [rdi], 1000; mov qword ptr [rdi+8], 500000; xor eax, eax; ret
        let gtod_stub = [
            0x48, 0xc7, 0x07, 0xe8, 0x03, 0, 0, 0x48, 0xc7, 0x47, 0x08, 0x20, 0xa1, 0x07, 0x00,
            0x31, 0xc0, 0xc3,
        ];
        // mov eax, 1000; ret
        let time_stub = [0xb8, 0xe8, 0x03, 0, 0, 0xc3];
        let inj = Injected::with_stubs(
            &cg_stub,
            &gtod_stub,
            &time_stub,
            &data_page(&Params::default()),
        );
        let data = inj.addr(PAGE);
        TRACE_LO.store(inj.addr(0), Ordering::Relaxed);
        TRACE_HI.store(inj.addr(PAGE), Ordering::Relaxed);
        TRACE_DATA.store(data, Ordering::Relaxed);

        let real_ns = 1000 * NS + 500_000_000;
        let real_us = 1000 * US + 500_000;
        let reset = || {
            trace_write_slot(data, 0, &lap_slot(0));
            trace_write_slot(data, 1, &[0; layout::SLOT_LEN]);
            data_word(data, layout::OFF_GENERATION).store(0, Ordering::Release);
        };
        // Outputs, only accessed through these addresses (the stand-ins overwrite them fully
        // on every call).
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let mut tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        let ts_ptr = &raw mut ts as usize;
        let tv_ptr = &raw mut tv as usize;
        let cases: [(&str, usize, usize, usize); 4] = [
            (
                "clock_gettime(REALTIME)",
                inj.blob.entries[Entry::ClockGettime],
                0,
                ts_ptr,
            ),
            (
                "clock_gettime(MONOTONIC)",
                inj.blob.entries[Entry::ClockGettime],
                1,
                ts_ptr,
            ),
            (
                "gettimeofday",
                inj.blob.entries[Entry::Gettimeofday],
                tv_ptr,
                0,
            ),
            ("time", inj.blob.entries[Entry::Time], 0, 0),
        ];
        let mut total_steps = 0;
        for variant in 0..LAP_VARIANTS {
            TRACE_VARIANT.store(variant, Ordering::Relaxed);
            for mode in [MODE_FULL_LAP, MODE_DEAD_WRITER] {
                TRACE_MODE.store(mode, Ordering::Relaxed);
                // The sets a reader may legitimately return: the one before the writer ran,
                // and the last one the writer completely published.
                let allowed = [0, if mode == MODE_FULL_LAP { 2 } else { 1 }];
                for (name, entry, a0, a1) in cases {
                    let f = inj.addr(entry);
                    let run = |at: usize| -> i128 {
                        reset();
                        TRACE_AT.store(at, Ordering::Relaxed);
                        TRACE_STEPS.store(0, Ordering::Relaxed);
                        let r = call_single_stepped(f, a0, a1);
                        match name {
                            "time" => r as i64 as i128,
                            "gettimeofday" => {
                                assert_eq!(r as i32, 0);
                                // SAFETY: tv_ptr points at the live local `tv`.
                                tv_us(unsafe { &*(tv_ptr as *const libc::timeval) })
                            }
                            _ => {
                                assert_eq!(r as i32, 0);
                                // SAFETY: ts_ptr points at the live local `ts`.
                                ts_ns(unsafe { &*(ts_ptr as *const libc::timespec) })
                            }
                        }
                    };
                    let expect = |n: i64| -> i128 {
                        let p = lap_params(n, variant);
                        match name {
                            "time" => model_time(real_ns, &p) as i128,
                            "gettimeofday" => model_gtod(real_us, &p),
                            "clock_gettime(MONOTONIC)" => model_clock(real_ns, &p, 1),
                            _ => model_clock(real_ns, &p, 0),
                        }
                    };
                    let what = format!("{name}, lap variant {variant}, writer mode {mode}");
                    let (a, b) = (allowed[0], allowed[1]);
                    assert_ne!(
                        expect(a),
                        expect(b),
                        "{what}: the sets are indistinguishable"
                    );
                    let undisturbed = run(usize::MAX);
                    let steps = TRACE_STEPS.load(Ordering::Relaxed);
                    assert_eq!(undisturbed, expect(0), "{what}: single-stepped result");
                    assert!((10..200).contains(&steps), "{what}: {steps} steps traced");
                    total_steps += steps;
                    let (mut old, mut new) = (0, 0);
                    for at in 0..steps {
                        let got = run(at);
                        assert!(
                            TRACE_STEPS.load(Ordering::Relaxed) > at,
                            "{what}: the writer never ran"
                        );
                        if got == expect(a) {
                            old += 1;
                        } else if got == expect(b) {
                            new += 1;
                        } else {
                            panic!(
                                "{what}, at instruction {at}: got {got}, expected {} (set {a}) \
                                 or {} (set {b})",
                                expect(a),
                                expect(b),
                            );
                        }
                    }
                    assert!(old > 0 && new > 0, "{what}: old {old}, new {new}");
                }
            }
        }
        assert!(total_steps > 0);
        TRACE_HI.store(0, Ordering::Relaxed);
        // SAFETY: restores the disposition saved above.
        let rc = unsafe { libc::sigaction(libc::SIGTRAP, &previous, std::ptr::null_mut()) };
        assert_eq!(rc, 0);
    }
}
