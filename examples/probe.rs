//! A throwaway target for tests and benchmarks: reads its clocks through libc (and so through
//! the vDSO) on request, while optional spinner threads hammer the clocks and check every value.
//!
//! Protocol: prints `ready pid=<pid> threads=<n>` once every thread runs, then answers one line
//! per command read on stdin:
//! - `now`    → `now realtime=<ns> monotonic=<ns> raw=<ns> rcoarse=<ns> mcoarse=<ns> boottime=<ns> tai=<ns> gtod=<us> time=<s> cputime=<ns>`
//! - `stats`  → `stats calls=<n> anomalies=<n> max_gap_us=<n> sleep_errors=<n> sleeps=<n> usr1=<n> backwards=<n>`
//!   `backwards_max_ns=<n> backwards_from=<ns>` (`backwards`: a spinner's CLOCK_MONOTONIC read
//!   less than its previous reading; the largest such step and the reading it stepped back from)
//! - `reset`  → clears the maximum gap, answers `reset`
//! - `churn`  → `churn threads=<n> realtime=<ns>`: short-lived threads so far, and the realtime
//!   the latest one read
//! - `bench <iterations>` → `bench clock_gettime=<ns/call> gettimeofday=<ns> time=<ns> syscall=<ns>`
//! - `floor <iterations>` → `floor constant=<ns/call> rate=<ns> resolution=<ns>`: the genuine
//!   `clock_gettime(CLOCK_REALTIME)` followed by the same arithmetic the fake does for a
//!   constant offset, a rate and a resolution, written in Rust and compiled here — what exact
//!   evaluation after the genuine call costs at least on this machine, with no hook involved
//! - `quit`   → exits 0
//!
//! Options: `--threads N` spinners, `--idle-threads N` (threads blocked in a futex: present
//! for the attach, but using no CPU), `--sleeper` (a thread looping in clock_nanosleep),
//! `--churn` (a thread creating and ending threads continuously), `--seccomp-deny-mmap` (mmap
//! fails with EPERM from then on), `--unmap-vdso` (no vDSO; then only `stats` is safe).

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

static CALLS: AtomicU64 = AtomicU64::new(0);
static ANOMALIES: AtomicU64 = AtomicU64::new(0);
static MAX_GAP_NS: AtomicU64 = AtomicU64::new(0);
static SLEEPS: AtomicU64 = AtomicU64::new(0);
static SLEEP_ERRORS: AtomicU64 = AtomicU64::new(0);
static USR1: AtomicU64 = AtomicU64::new(0);
/// Times a spinner saw CLOCK_MONOTONIC read less than its previous reading in that thread.
static BACKWARDS: AtomicU64 = AtomicU64::new(0);
/// The largest such step, in ns, and the monotonic reading it stepped back from.
static BACKWARDS_MAX_NS: AtomicU64 = AtomicU64::new(0);
static BACKWARDS_FROM: AtomicU64 = AtomicU64::new(0);
/// Threads that have started running their body (their stacks and arenas exist by then).
static STARTED: AtomicU64 = AtomicU64::new(0);
/// Short-lived threads started so far by `--churn`, and the realtime the latest one read.
static CHURNED: AtomicU64 = AtomicU64::new(0);
static CHURN_REALTIME: AtomicU64 = AtomicU64::new(0);

/// Spawns a thread and counts it as started once its body runs.
fn start(body: fn()) {
    std::thread::spawn(move || {
        // Make the runtime finish setting the thread up (its handle, its malloc arena) before
        // we count it: otherwise the memory map still changes after `ready`.
        let _ = std::thread::current();
        drop(std::hint::black_box(vec![0u8; 64]));
        STARTED.fetch_add(1, Relaxed);
        body()
    });
}

fn ts(clock: libc::clockid_t) -> (i64, i64, i32) {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: t is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(clock, &mut t) };
    (t.tv_sec, t.tv_nsec, rc)
}

fn ns(clock: libc::clockid_t) -> i128 {
    let (s, n, _) = ts(clock);
    s as i128 * 1_000_000_000 + n as i128
}

fn gtod() -> (i64, i64) {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    // SAFETY: tv is a valid timeval; a null timezone is allowed.
    unsafe { libc::gettimeofday(&mut tv, std::ptr::null_mut()) };
    (tv.tv_sec, tv.tv_usec)
}

fn time_s() -> i64 {
    // SAFETY: time accepts a null pointer.
    unsafe { libc::time(std::ptr::null_mut()) }
}

/// Hammers every clock API and checks each value is well-formed; tracks the longest gap between
/// two consecutive reads (how long this thread was stopped).
fn spin() {
    let mut last = ns(libc::CLOCK_MONOTONIC_RAW);
    let mut last_mono = ns(libc::CLOCK_MONOTONIC);
    loop {
        let mono = ns(libc::CLOCK_MONOTONIC);
        if mono < last_mono {
            BACKWARDS.fetch_add(1, Relaxed);
            if BACKWARDS_MAX_NS.fetch_max((last_mono - mono) as u64, Relaxed)
                < (last_mono - mono) as u64
            {
                BACKWARDS_FROM.store(last_mono as u64, Relaxed);
            }
        }
        last_mono = mono;
        for clock in [libc::CLOCK_REALTIME, libc::CLOCK_MONOTONIC] {
            let (_, nsec, rc) = ts(clock);
            if rc != 0 || !(0..1_000_000_000).contains(&nsec) {
                ANOMALIES.fetch_add(1, Relaxed);
            }
        }
        let (_, usec) = gtod();
        if !(0..1_000_000).contains(&usec) {
            ANOMALIES.fetch_add(1, Relaxed);
        }
        if time_s() <= 0 {
            ANOMALIES.fetch_add(1, Relaxed);
        }
        CALLS.fetch_add(1, Relaxed);
        let now = ns(libc::CLOCK_MONOTONIC_RAW);
        MAX_GAP_NS.fetch_max((now - last) as u64, Relaxed);
        last = now;
    }
}

/// Sleeps in clock_nanosleep repeatedly; an EINTR or a short sleep means a restarted syscall
/// was broken.
fn sleeper() {
    loop {
        let req = libc::timespec {
            tv_sec: 0,
            tv_nsec: 20_000_000,
        };
        // Measured on MONOTONIC_RAW: the tests skew MONOTONIC itself.
        let start = ns(libc::CLOCK_MONOTONIC_RAW);
        // SAFETY: req is valid; no remainder wanted.
        let rc =
            unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, 0, &req, std::ptr::null_mut()) };
        let slept = ns(libc::CLOCK_MONOTONIC_RAW) - start;
        if rc != 0 || slept < 20_000_000 {
            eprintln!("probe: clock_nanosleep returned {rc} after {slept} ns");
            SLEEP_ERRORS.fetch_add(1, Relaxed);
        }
        SLEEPS.fetch_add(1, Relaxed);
    }
}

/// Creates and ends threads continuously; each reads CLOCK_REALTIME once.
fn churn() {
    loop {
        let t = std::thread::spawn(|| {
            CHURN_REALTIME.store(ns(libc::CLOCK_REALTIME) as u64, Relaxed);
        });
        let _ = t.join();
        CHURNED.fetch_add(1, Relaxed);
    }
}

/// Unmaps this process's vDSO (after which the libc clock calls must not be used).
fn unmap_vdso() {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps.lines().find(|l| l.ends_with("[vdso]")).unwrap();
    let (range, _) = line.split_once(' ').unwrap();
    let (s, e) = range.split_once('-').unwrap();
    let (s, e) = (
        usize::from_str_radix(s, 16).unwrap(),
        usize::from_str_radix(e, 16).unwrap(),
    );
    // SAFETY: nothing in this process reads the clock through the vDSO afterwards.
    assert_eq!(unsafe { libc::munmap(s as *mut libc::c_void, e - s) }, 0);
}

extern "C" fn on_usr1(_: libc::c_int) {
    USR1.fetch_add(1, Relaxed);
}

fn deny_mmap() {
    // BPF: if arch != x86_64 allow; if nr == mmap return EPERM; else allow.
    let filter = [
        bpf_stmt(0x20, 4), // ld [4] (arch)
        bpf_jump(0x15, 0xC000_003E, 1, 0),
        bpf_stmt(0x06, 0x7fff_0000), // ret ALLOW
        bpf_stmt(0x20, 0),           // ld [0] (nr)
        bpf_jump(0x15, libc::SYS_mmap as u32, 0, 1),
        bpf_stmt(0x06, 0x0005_0000 | libc::EPERM as u32), // ret ERRNO(EPERM)
        bpf_stmt(0x06, 0x7fff_0000),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl with a valid filter program that outlives the call.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog),
            0
        );
    }
}

fn bpf_stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn bpf_jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

fn bench(iterations: u64) -> String {
    let per_call = |f: &dyn Fn()| {
        let start = Instant::now();
        for _ in 0..iterations {
            f();
        }
        start.elapsed().as_nanos() as f64 / iterations as f64
    };
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let tp = &mut t as *mut libc::timespec;
    let cgt = per_call(&|| {
        // SAFETY: tp points at a live timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, tp) };
    });
    let gt = per_call(&|| {
        gtod();
    });
    let tm = per_call(&|| {
        time_s();
    });
    let sc = per_call(&|| {
        // SAFETY: the raw syscall writes only the timespec at tp.
        unsafe { libc::syscall(libc::SYS_clock_gettime, libc::CLOCK_REALTIME, tp) };
    });
    format!("bench clock_gettime={cgt:.1} gettimeofday={gt:.1} time={tm:.1} syscall={sc:.1}")
}

/// The `floor` command: per call, the genuine clock_gettime then the leanest exact evaluation
/// of three shapes — the parameters go through `black_box` so that nothing is folded, and the
/// result too, so that nothing is dropped.
fn floor(iterations: u64) -> String {
    use std::hint::black_box;
    const NS: i64 = 1_000_000_000;
    let per_call = |f: &dyn Fn(i64, i64) -> (i64, i64)| {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let start = Instant::now();
        for _ in 0..iterations {
            // SAFETY: t is a live timespec.
            unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut t) };
            black_box(f(t.tv_sec, t.tv_nsec));
        }
        start.elapsed().as_nanos() as f64 / iterations as f64
    };
    let (off_sec, off_nsec) = (black_box(-600i64), black_box(123_456_789i64));
    let constant = per_call(&|sec, nsec| {
        let n = nsec + off_nsec;
        if n >= NS {
            (sec + off_sec + 1, n - NS)
        } else {
            (sec + off_sec, n)
        }
    });
    // A rate of 2 from an anchor a second ago (data_page's fixed point, 53 fraction bits),
    // then the split into (sec, nsec): unsigned, one segment, no clamp — leaner than the
    // model, which the fake must follow for any program.
    const UNS: u64 = NS as u64;
    let anchor = black_box(now_ns() as u64 - UNS);
    let (rate, value) = (black_box(2u64 << 53), black_box(anchor));
    let rate_cost = per_call(&|sec, nsec| {
        let d = (sec as u64 * UNS + nsec as u64).wrapping_sub(anchor);
        let v = ((u128::from(d) * u128::from(rate)) >> 53) as u64 + value;
        ((v / UNS) as i64, (v % UNS) as i64)
    });
    let (resolution, offset) = (black_box(15_000_000u64), black_box(600 * UNS));
    let resolution_cost = per_call(&|sec, nsec| {
        let v = sec as u64 * UNS + nsec as u64 - offset;
        let v = v - v % resolution;
        ((v / UNS) as i64, (v % UNS) as i64)
    });
    format!("floor constant={constant:.1} rate={rate_cost:.1} resolution={resolution_cost:.1}")
}

fn now_ns() -> i64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: t is a live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut t) };
    t.tv_sec * 1_000_000_000 + t.tv_nsec
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = args
        .iter()
        .position(|a| a == "--threads")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(0);
    let action = on_usr1 as extern "C" fn(libc::c_int);
    // SAFETY: installing a handler that only touches an atomic.
    unsafe { libc::signal(libc::SIGUSR1, action as libc::sighandler_t) };
    for _ in 0..threads {
        start(spin);
    }
    let idle: usize = args
        .iter()
        .position(|a| a == "--idle-threads")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(0);
    for _ in 0..idle {
        start(|| {
            loop {
                std::thread::park();
            }
        });
    }
    let sleeping = args.iter().any(|a| a == "--sleeper");
    if sleeping {
        start(sleeper);
    }
    let churning = args.iter().any(|a| a == "--churn");
    if churning {
        start(churn);
    }
    // Wait until every thread has really started, so an attach finds them all and the memory
    // map no longer changes by itself.
    let all = (threads + idle + sleeping as usize + churning as usize) as u64;
    while STARTED.load(Relaxed) < all || CALLS.load(Relaxed) < threads as u64 * 10 {
        std::thread::yield_now();
    }
    if args.iter().any(|a| a == "--seccomp-deny-mmap") {
        deny_mmap();
    }
    if args.iter().any(|a| a == "--unmap-vdso") {
        unmap_vdso();
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "ready pid={} threads={threads}", std::process::id()).unwrap();
    out.flush().unwrap();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else {
            // A read that fails (EINTR from a broken syscall restart) is a bug we want to see.
            eprintln!("probe: stdin read failed: {line:?}");
            std::process::exit(3);
        };
        let reply = match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["now"] => {
                let (gs, gu) = gtod();
                format!(
                    "now realtime={} monotonic={} raw={} rcoarse={} mcoarse={} boottime={} tai={} gtod={} time={} cputime={}",
                    ns(libc::CLOCK_REALTIME),
                    ns(libc::CLOCK_MONOTONIC),
                    ns(libc::CLOCK_MONOTONIC_RAW),
                    ns(libc::CLOCK_REALTIME_COARSE),
                    ns(libc::CLOCK_MONOTONIC_COARSE),
                    ns(libc::CLOCK_BOOTTIME),
                    ns(libc::CLOCK_TAI),
                    gs as i128 * 1_000_000 + gu as i128,
                    time_s(),
                    ns(libc::CLOCK_PROCESS_CPUTIME_ID),
                )
            }
            ["stats"] => format!(
                "stats calls={} anomalies={} max_gap_us={} sleep_errors={} sleeps={} usr1={} \
                 backwards={} backwards_max_ns={} backwards_from={}",
                CALLS.load(Relaxed),
                ANOMALIES.load(Relaxed),
                MAX_GAP_NS.load(Relaxed) / 1000,
                SLEEP_ERRORS.load(Relaxed),
                SLEEPS.load(Relaxed),
                USR1.load(Relaxed),
                BACKWARDS.load(Relaxed),
                BACKWARDS_MAX_NS.load(Relaxed),
                BACKWARDS_FROM.load(Relaxed),
            ),
            ["churn"] => format!(
                "churn threads={} realtime={}",
                CHURNED.load(Relaxed),
                CHURN_REALTIME.load(Relaxed)
            ),
            ["reset"] => {
                MAX_GAP_NS.store(0, Relaxed);
                "reset".to_string()
            }
            ["bench", n] => bench(n.parse().unwrap_or(1_000_000)),
            ["floor", n] => floor(n.parse().unwrap_or(1_000_000)),
            ["quit"] => return,
            _ => format!("error unknown command {line:?}"),
        };
        writeln!(out, "{reply}").unwrap();
        out.flush().unwrap();
    }
}
