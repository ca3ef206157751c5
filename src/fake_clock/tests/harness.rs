//! The in-process machinery: the genuine vDSO of this process, a code page plus data page
//! mapped here ([`Injected`]), the fakes called through function pointers, scripted
//! stand-ins for the genuine functions, and checks that bracket a fake reading between two
//! genuine ones.

use super::model::*;
use crate::arch::{Arch, Entry, Native, PerEntry};
use crate::fake_clock::data_page::{self as layout, DataPage, Params};
use crate::fake_clock::{FakeBlob, blob};
use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

pub(super) type ClockGettimeFn = extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int;
pub(super) type GettimeofdayFn =
    extern "C" fn(*mut libc::timeval, *mut libc::c_void) -> libc::c_int;
pub(super) type TimeFn = extern "C" fn(*mut libc::time_t) -> libc::time_t;

/// The page size, `data_page::PAGE_SIZE` as a `usize`: the code page is one page and the data
/// page follows it ([`crate::fake_clock::DATA_PAGE_OFFSET`]).
pub(super) const PAGE: usize = layout::PAGE_SIZE as usize;

// ---- the genuine vDSO of this process --------------------------------------------------

pub(super) struct Genuine {
    pub(super) clock_gettime: usize,
    pub(super) gettimeofday: usize,
    pub(super) time: usize,
}

pub(super) fn genuine() -> &'static Genuine {
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

pub(super) fn genuine_clock_gettime() -> ClockGettimeFn {
    // SAFETY: the address is the vDSO's __vdso_clock_gettime, which has this C signature.
    unsafe { std::mem::transmute::<usize, ClockGettimeFn>(genuine().clock_gettime) }
}

pub(super) fn genuine_gettimeofday() -> GettimeofdayFn {
    // SAFETY: the address is the vDSO's __vdso_gettimeofday, which has this C signature.
    unsafe { std::mem::transmute::<usize, GettimeofdayFn>(genuine().gettimeofday) }
}

pub(super) fn genuine_time() -> TimeFn {
    // SAFETY: the address is the vDSO's __vdso_time, which has this C signature.
    unsafe { std::mem::transmute::<usize, TimeFn>(genuine().time) }
}

pub(super) fn cg(f: ClockGettimeFn, id: libc::clockid_t) -> (libc::c_int, libc::timespec) {
    let mut ts = libc::timespec {
        tv_sec: 0x5555_5555,
        tv_nsec: 0x6666_6666,
    };
    let r = f(id, &mut ts);
    (r, ts)
}

pub(super) fn now(id: libc::clockid_t) -> i128 {
    let (r, ts) = cg(genuine_clock_gettime(), id);
    assert_eq!(r, 0, "genuine clock_gettime({id}) failed");
    ts_ns(&ts)
}

pub(super) fn gtod(f: GettimeofdayFn) -> (libc::c_int, libc::timeval) {
    let mut tv = libc::timeval {
        tv_sec: 0x5555_5555,
        tv_usec: 0x6666_6666,
    };
    let r = f(&mut tv, std::ptr::null_mut());
    (r, tv)
}

pub(super) fn now_us() -> i128 {
    let (r, tv) = gtod(genuine_gettimeofday());
    assert_eq!(r, 0, "genuine gettimeofday failed");
    tv_us(&tv)
}

pub(super) fn ts_ns(ts: &libc::timespec) -> i128 {
    ts.tv_sec as i128 * NS + ts.tv_nsec as i128
}

pub(super) fn tv_us(tv: &libc::timeval) -> i128 {
    tv.tv_sec as i128 * US + tv.tv_usec as i128
}

/// `jmp qword ptr [rip+0]` followed by the absolute target.
pub(super) fn abs_jump(target: usize) -> Vec<u8> {
    let mut v = vec![0xff, 0x25, 0, 0, 0, 0];
    v.extend_from_slice(&(target as u64).to_le_bytes());
    v
}

/// The clocks the vDSO reads itself (the others are system calls): what the tests on the
/// genuine vDSO go through.
pub(super) const VDSO_CLOCKS: [libc::clockid_t; 7] = [
    libc::CLOCK_REALTIME,
    libc::CLOCK_MONOTONIC,
    libc::CLOCK_MONOTONIC_RAW,
    libc::CLOCK_REALTIME_COARSE,
    libc::CLOCK_MONOTONIC_COARSE,
    libc::CLOCK_BOOTTIME,
    libc::CLOCK_TAI,
];

pub(super) fn data_page(p: &Params) -> Vec<u8> {
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

/// The two pages of an [`Injected`], mapped with libc (memmap2 cannot place a mapping near
/// the vDSO), unmapped on drop.
struct Pages(*mut u8);

impl Pages {
    /// Two fresh rw- pages; with `near`, within 1.9 GiB of that address, below it first (the
    /// copy of the genuine `time()` must reach the vvar pages with 32-bit displacements). The
    /// first 256 MiB below the vDSO were once all taken in CI (the test process's libraries,
    /// thread stacks and malloc arenas sit there): hence the wider search.
    fn map(near: Option<usize>) -> Pages {
        let tries: Vec<Option<usize>> = match near {
            Some(at) => (1..1900)
                .map(|mib| at.checked_sub(mib << 20))
                .chain((1..1900).map(|mib| at.checked_add(mib << 20)))
                .filter(|a| a.is_some_and(|a| a < (1usize << 47)))
                .collect(),
            None => vec![None],
        };
        for hint in tries {
            let flags = libc::MAP_PRIVATE
                | libc::MAP_ANONYMOUS
                | if hint.is_some() {
                    libc::MAP_FIXED_NOREPLACE
                } else {
                    0
                };
            // SAFETY: an anonymous private mapping; MAP_FIXED_NOREPLACE never replaces an
            // existing mapping (it fails with EEXIST instead).
            let at = unsafe {
                libc::mmap(
                    hint.unwrap_or(0) as *mut libc::c_void,
                    2 * PAGE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    flags,
                    -1,
                    0,
                )
            };
            if at != libc::MAP_FAILED {
                return Pages(at.cast());
            }
        }
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        panic!("cannot map the code and data pages (near {near:x?}); this process's maps:\n{maps}");
    }
}

// SAFETY: the pages are plain memory shared by every thread of this process; the harness
// writes the data page only through atomics (`Injected::word`) and never writes the code page
// after it turned r-x.
unsafe impl Send for Pages {}
// SAFETY: as for Send.
unsafe impl Sync for Pages {}

impl Drop for Pages {
    fn drop(&mut self) {
        // SAFETY: the two pages this value mapped; no pointer into them outlives the Injected
        // that owns it.
        unsafe { libc::munmap(self.0.cast(), 2 * PAGE) };
    }
}

/// A code page (r-x) built from the blob plus its data page (rw-), mapped in this process.
pub(super) struct Injected {
    /// Both pages, the code page first, the data page one page above it. Dropping it unmaps
    /// both (no function pointer into them outlives `self`: they are only used while `self`
    /// is borrowed).
    pages: Pages,
    pub(super) blob: FakeBlob,
    /// Where the hook of `time()` would jump: the inlining fake when the page holds a copy of
    /// the genuine `time()`, else the calling one.
    time_detour: usize,
}

impl Injected {
    /// Maps the pages, writes the code page with the given stubs and the data page image.
    /// The code page goes rw- → r-x, never writable and executable at once.
    pub(super) fn with_stubs(
        stub_cg: &[u8],
        stub_gtod: &[u8],
        stub_time: &[u8],
        data: &[u8],
    ) -> Injected {
        Self::build(PerEntry([stub_cg, stub_gtod, stub_time]), data, false)
    }

    /// `with_stubs`, plus (`inline`) the copy of this process's genuine `time()` in the body
    /// slot, the pages then placed near the vDSO.
    fn build(stubs: PerEntry<&[u8]>, data: &[u8], inline: bool) -> Injected {
        assert_eq!(data.len(), PAGE);
        let blob = blob();
        let near = inline.then(|| genuine().time & !(PAGE - 1));
        let pages = Pages::map(near);
        let code_addr = pages.0 as u64;
        let body = inline.then(|| {
            let image = crate::vdso::VdsoImage::of_current_process().expect("own vDSO");
            let plans = Native::plan_hooks(&image).expect("hook plans of the own vDSO");
            Native::build_body(
                &plans[Entry::Time],
                code_addr + blob.time_body as u64,
                blob.stub_capacity,
                code_addr + blob.time_body_done as u64,
            )
            .expect("a copy of this vDSO's time()")
        });
        let code = blob.code_page(stubs, body.as_deref()).expect("code page");
        let time_detour = blob.detour(Entry::Time, &code);
        // SAFETY: pages.0 .. + 2 * PAGE is the rw- mapping just made, not aliased by anything;
        // `code` and `data` are page-sized buffers that do not overlap it. The code page turns
        // r-x only after it is written.
        unsafe {
            std::ptr::copy_nonoverlapping(code.as_ptr(), pages.0, PAGE);
            std::ptr::copy_nonoverlapping(data.as_ptr(), pages.0.add(PAGE), PAGE);
            assert_eq!(
                libc::mprotect(pages.0.cast(), PAGE, libc::PROT_READ | libc::PROT_EXEC),
                0,
                "mprotect r-x of the code page"
            );
        }
        Injected {
            pages,
            blob,
            time_detour,
        }
    }

    /// Stubs that jump to the genuine vDSO functions, and `time()` inlined: the copy of the
    /// genuine one in the body slot, as an injection into this process would do.
    pub(super) fn with_vdso(p: &Params) -> Injected {
        let g = genuine();
        Self::build(
            PerEntry([
                &abs_jump(g.clock_gettime),
                &abs_jump(g.gettimeofday),
                &abs_jump(g.time),
            ]),
            &data_page(p),
            true,
        )
    }

    /// Stubs that jump to the scripted stand-ins below (`time()` through its calling fake).
    pub(super) fn scripted(p: &Params) -> Injected {
        Self::with_stubs(
            &abs_jump(scripted_clock_gettime as *const () as usize),
            &abs_jump(scripted_gettimeofday as *const () as usize),
            &abs_jump(scripted_time as *const () as usize),
            &data_page(p),
        )
    }

    /// Whether `time()` runs the copy of the genuine one (the inlining fake).
    pub(super) fn time_is_inline(&self) -> bool {
        self.time_detour == self.blob.time_inline
    }

    pub(super) fn addr(&self, off: usize) -> usize {
        self.pages.0 as usize + off
    }

    pub(super) fn clock_gettime(&self) -> ClockGettimeFn {
        // SAFETY: the fake clock_gettime of a complete code page that stays mapped r-x
        // while self lives; it follows the C ABI with this signature.
        unsafe {
            std::mem::transmute::<usize, ClockGettimeFn>(
                self.addr(self.blob.entries[Entry::ClockGettime]),
            )
        }
    }

    pub(super) fn gettimeofday(&self) -> GettimeofdayFn {
        // SAFETY: as for clock_gettime.
        unsafe {
            std::mem::transmute::<usize, GettimeofdayFn>(
                self.addr(self.blob.entries[Entry::Gettimeofday]),
            )
        }
    }

    pub(super) fn time(&self) -> TimeFn {
        // SAFETY: as for clock_gettime.
        unsafe { std::mem::transmute::<usize, TimeFn>(self.addr(self.time_detour)) }
    }

    /// The aligned 8-byte word at `off` in the data page.
    pub(super) fn word(&self, off: usize) -> &AtomicU64 {
        assert!(off.is_multiple_of(8) && off + 8 <= PAGE);
        // SAFETY: in bounds of the rw data page, 8-aligned, valid while self lives; this
        // process writes the data page only through these atomics once it is shared.
        unsafe { AtomicU64::from_ptr(self.pages.0.add(PAGE + off).cast()) }
    }

    /// Publishes `p` exactly as state/data_page.rs prescribes: fill the inactive slot, then bump
    /// the generation with one aligned store.
    pub(super) fn publish(&self, p: &Params) {
        self.publish_raw(&p.encode_slot());
    }

    pub(super) fn publish_raw(&self, slot_bytes: &[u8]) {
        let next = self.publish_raw_without_time_word(slot_bytes);
        self.word(layout::OFF_TIME_WORD)
            .store(layout::time_word(slot_bytes, next), Ordering::Release);
    }

    /// The slot and the generation only, as a writer that died before `time()`'s summary (or
    /// an older timeskew) leaves them; the new generation.
    pub(super) fn publish_raw_without_time_word(&self, slot_bytes: &[u8]) -> u64 {
        let generation = self.word(layout::OFF_GENERATION);
        let next = generation.load(Ordering::Relaxed).wrapping_add(1);
        self.write_slot(next, slot_bytes);
        generation.store(next, Ordering::Release);
        next
    }

    pub(super) fn write_slot(&self, generation: u64, slot_bytes: &[u8]) {
        let at = layout::slot_offset(generation);
        for (i, w) in slot_bytes.chunks_exact(8).enumerate() {
            let v = u64::from_le_bytes(w.try_into().unwrap());
            self.word(at + 8 * i).store(v, Ordering::Relaxed);
        }
    }
}

// ---- scripted stand-ins for the genuine functions --------------------------------------

/// What the scripted stand-ins return, and what they saw. `calls` counts the
/// clock_gettime and gettimeofday stand-ins, `time_calls` the time stand-in, so a test can
/// tell which path a fake took.
#[derive(Clone, Copy, Default)]
pub(super) struct Script {
    pub(super) ret: libc::c_int,
    pub(super) sec: i64,
    pub(super) sub: i64,
    pub(super) calls: u32,
    pub(super) time_calls: u32,
    pub(super) last_id: libc::clockid_t,
    pub(super) last_ptr: usize,
    pub(super) last_tz: usize,
    pub(super) last_tloc: usize,
}

thread_local! {
    pub(super) static SCRIPT: Cell<Script> = Cell::new(Script::default());
}

pub(super) fn script(ret: libc::c_int, sec: i64, sub: i64) {
    SCRIPT.set(Script {
        ret,
        sec,
        sub,
        ..Script::default()
    });
}

/// Writes the scripted value (even when it returns an error, so that "untouched" can be
/// checked against a value the fake might have shifted).
extern "C" fn scripted_clock_gettime(id: libc::clockid_t, ts: *mut libc::timespec) -> libc::c_int {
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

extern "C" fn scripted_gettimeofday(tv: *mut libc::timeval, tz: *mut libc::c_void) -> libc::c_int {
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

// ---- against the genuine vDSO ------------------------------------------------------------

/// Fake reading bracketed by two genuine readings, compared exactly.
pub(super) fn check_clock(inj: &Injected, id: libc::clockid_t, off: i64) {
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

pub(super) fn check_gtod(inj: &Injected, off_us: i128) {
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

pub(super) fn check_time(inj: &Injected, off: i64) {
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
