// The target of tests/live_patch.rs and benches/stops.rs: threads reading the clocks while
// timeskew changes the code under them, each reading checked against the real clock.
//
//   -s N   spinners: clock_gettime(REALTIME, MONOTONIC), gettimeofday and time() in turn, each
//          bracketed by raw clock_gettime system calls (never the vDSO): a reading must equal
//          real time, or real time plus the offset given with -o (both allowed at any moment);
//          CLOCK_MONOTONIC must be exactly real. Each spinner keeps its longest gap between two
//          iterations (a stop of that thread, or the scheduler).
//   -i N   idle threads, blocked in read() on a pipe that never gets data.
//   -t     a thread taking a 10 kHz timer signal whose handler reads and checks the clock.
//   -o NS  the realtime offset timeskew will inject.
//   -m     a seccomp filter failing membarrier() with EPERM (every thread, before any starts).
//   -b     the first idle thread blocks SIGTRAP.
//   -g     SIGTRAP ignored (SIG_IGN) in the whole process.
// stdin: "stats" → "stats iters=.. bad=.. maxgap_ns=.. timer=.. timer_bad=.. threads=..";
//        "reset" → gaps forgotten; "tids" → "tids idle=a,b spin=c,d timer=e".
// Prints "ready pid=N" once every thread runs.
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static long long offset_ns;
static atomic_long iters, bad, timer_hits, timer_bad, started;
static atomic_llong maxgap;
static int idle_pipe[2];
static int block_trap;
static pid_t tids_spin[4096], tids_idle[4096], tid_timer;
static atomic_int n_spin, n_idle;

static long long raw_ns(clockid_t c) {
    struct timespec t;
    syscall(SYS_clock_gettime, c, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

// v read between raw readings a and b (same clock, ns), with `res` of rounding slack.
static int fits(long long v, long long a, long long b, long long res, int skewable) {
    if (v >= a - res && v <= b) return 1;
    if (skewable && v - offset_ns >= a - res && v - offset_ns <= b) return 1;
    return 0;
}

static void report_bad(const char *what, long long v, long long a, long long b) {
    char buf[160];
    int n = snprintf(buf, sizeof buf, "BAD %s v=%lld a=%lld b=%lld\n", what, v, a, b);
    write(2, buf, n);
}

static int check_once(int k) {
    struct timespec t;
    struct timeval tv;
    long long a, b, v;
    switch (k & 3) {
    case 0:
        a = raw_ns(CLOCK_REALTIME);
        clock_gettime(CLOCK_REALTIME, &t);
        b = raw_ns(CLOCK_REALTIME);
        v = t.tv_sec * 1000000000LL + t.tv_nsec;
        if (t.tv_nsec < 0 || t.tv_nsec >= 1000000000L || !fits(v, a, b, 0, 1)) {
            report_bad("clock_gettime(REALTIME)", v, a, b);
            return 0;
        }
        return 1;
    case 1:
        a = raw_ns(CLOCK_MONOTONIC);
        clock_gettime(CLOCK_MONOTONIC, &t);
        b = raw_ns(CLOCK_MONOTONIC);
        v = t.tv_sec * 1000000000LL + t.tv_nsec;
        if (!fits(v, a, b, 0, 0)) {
            report_bad("clock_gettime(MONOTONIC)", v, a, b);
            return 0;
        }
        return 1;
    case 2:
        a = raw_ns(CLOCK_REALTIME);
        gettimeofday(&tv, NULL);
        b = raw_ns(CLOCK_REALTIME);
        v = tv.tv_sec * 1000000000LL + tv.tv_usec * 1000LL;
        if (tv.tv_usec < 0 || tv.tv_usec >= 1000000 || !fits(v, a, b, 1000, 1)) {
            report_bad("gettimeofday", v, a, b);
            return 0;
        }
        return 1;
    default:
        // time() follows the coarse clock: a tick (≤ 4 ms) behind, rounded down to seconds.
        a = raw_ns(CLOCK_REALTIME_COARSE);
        v = (long long)time(NULL) * 1000000000LL;
        b = raw_ns(CLOCK_REALTIME);
        if (!fits(v, a, b, 1000000000LL, 1)) {
            report_bad("time", v, a, b);
            return 0;
        }
        return 1;
    }
}

static void *spinner(void *arg) {
    (void)arg;
    tids_spin[atomic_fetch_add(&n_spin, 1)] = gettid();
    atomic_fetch_add(&started, 1);
    long long last = raw_ns(CLOCK_MONOTONIC);
    for (int k = 0;; k++) {
        if (!check_once(k)) atomic_fetch_add(&bad, 1);
        long long now = raw_ns(CLOCK_MONOTONIC);
        long long gap = now - last;
        last = now;
        long long m = atomic_load(&maxgap);
        while (gap > m && !atomic_compare_exchange_weak(&maxgap, &m, gap)) {
        }
        atomic_fetch_add(&iters, 1);
    }
    return NULL;
}

static void *idler(void *arg) {
    (void)arg;
    int k = atomic_fetch_add(&n_idle, 1);
    if (block_trap && k == 0) {
        sigset_t trap;
        sigemptyset(&trap);
        sigaddset(&trap, SIGTRAP);
        pthread_sigmask(SIG_BLOCK, &trap, NULL);
    }
    tids_idle[k] = gettid();
    atomic_fetch_add(&started, 1);
    char c;
    for (;;) read(idle_pipe[0], &c, 1);
    return NULL;
}

static void on_timer(int sig) {
    (void)sig;
    int e = errno;
    static int k;
    if (!check_once(k++ & 2)) atomic_fetch_add(&timer_bad, 1);
    atomic_fetch_add(&timer_hits, 1);
    errno = e;
}

static void *timer_thread(void *arg) {
    (void)arg;
    tid_timer = gettid();
    struct sigevent ev = {0};
    ev.sigev_notify = SIGEV_THREAD_ID;
    ev.sigev_signo = SIGRTMIN + 1;
    ev._sigev_un._tid = gettid();
    timer_t timer;
    if (timer_create(CLOCK_MONOTONIC, &ev, &timer) != 0) abort();
    struct itimerspec its = {{0, 100000}, {0, 100000}};
    if (timer_settime(timer, 0, &its, NULL) != 0) abort();
    atomic_fetch_add(&started, 1);
    for (;;) pause();
    return NULL;
}

static void deny_membarrier(void) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_membarrier, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof f / sizeof f[0], f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) abort();
}

static void list(char *out, size_t len, pid_t *t, int n) {
    size_t at = strlen(out);
    for (int i = 0; i < n && at + 16 < len; i++) at += snprintf(out + at, len - at, "%s%d", i ? "," : "", t[i]);
}

int main(int argc, char **argv) {
    int spin = 0, idle = 0, timer = 0, opt;
    while ((opt = getopt(argc, argv, "s:i:to:mbg")) != -1) {
        if (opt == 's') spin = atoi(optarg);
        if (opt == 'i') idle = atoi(optarg);
        if (opt == 't') timer = 1;
        if (opt == 'o') offset_ns = atoll(optarg);
        if (opt == 'm') deny_membarrier();
        if (opt == 'b') block_trap = 1;
        if (opt == 'g') signal(SIGTRAP, SIG_IGN);
    }
    if (pipe(idle_pipe)) return 1;
    struct sigaction sa = {0};
    sa.sa_handler = on_timer;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGRTMIN + 1, &sa, NULL);
    // The timer's signal goes to its own thread only.
    sigset_t rt;
    sigemptyset(&rt);
    sigaddset(&rt, SIGRTMIN + 1);
    pthread_sigmask(SIG_BLOCK, &rt, NULL);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    pthread_t th;
    for (int i = 0; i < spin; i++)
        if (pthread_create(&th, &attr, spinner, NULL)) return 1;
    for (int i = 0; i < idle; i++)
        if (pthread_create(&th, &attr, idler, NULL)) return 1;
    if (timer) {
        pthread_sigmask(SIG_UNBLOCK, &rt, NULL);
        if (pthread_create(&th, &attr, timer_thread, NULL)) return 1;
        pthread_sigmask(SIG_BLOCK, &rt, NULL);
    }
    while (atomic_load(&started) < spin + idle + timer) usleep(1000);
    printf("ready pid=%d\n", getpid());
    fflush(stdout);
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        char out[65536];
        if (!strncmp(line, "stats", 5)) {
            snprintf(out, sizeof out, "stats iters=%ld bad=%ld maxgap_ns=%lld timer=%ld timer_bad=%ld\n",
                     atomic_load(&iters), atomic_load(&bad), atomic_load(&maxgap), atomic_load(&timer_hits),
                     atomic_load(&timer_bad));
        } else if (!strncmp(line, "reset", 5)) {
            atomic_store(&maxgap, 0);
            snprintf(out, sizeof out, "reset\n");
        } else if (!strncmp(line, "tids", 4)) {
            snprintf(out, sizeof out, "tids idle=");
            list(out, sizeof out, tids_idle, atomic_load(&n_idle));
            strcat(out, " spin=");
            list(out, sizeof out, tids_spin, atomic_load(&n_spin));
            snprintf(out + strlen(out), sizeof out - strlen(out), " timer=%d\n", tid_timer);
        } else {
            snprintf(out, sizeof out, "error\n");
        }
        fputs(out, stdout);
        fflush(stdout);
    }
    return 0;
}
