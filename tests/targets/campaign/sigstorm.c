// Signal storm: -t N (default 4) clock-checking workers; a 10 kHz ITIMER_REAL whose SIGALRM
// handler runs the clock checks; and a "window" thread that only calls clock_gettime, hit by a
// thread-directed POSIX timer (SIGRTMIN, 1 kHz) whose handler busy-waits ~500 µs and then runs
// the clock checks: most of the time that handler has interrupted the thread inside
// __vdso_clock_gettime, which is where F5 crashed. Both handlers block both signals.
// usage: sigstorm [-t N] [-i ITIMER_US] [-o NS]... [-m NS]...
#include "clockcheck.h"

static int nthreads = 4, itimer_us = 100;
static atomic_long rt_signals;
static void opt(int o, const char *a) {
    if (o == 't') nthreads = atoi(a);
    if (o == 'i') itimer_us = atoi(a);
}

static void on_alarm(int sig) {
    (void)sig;
    int e = errno;
    check_once(1);
    errno = e;
}

static void on_rt(int sig) {
    (void)sig;
    int e = errno;
    int64_t end = raw_ns(CLOCK_MONOTONIC) + 500000;
    while (raw_ns(CLOCK_MONOTONIC) < end) {
    }
    check_once(1);
    atomic_fetch_add(&rt_signals, 1);
    errno = e;
}

static void *window(void *arg) {
    long i = (long)arg;
    struct sigevent ev = {0};
    ev.sigev_notify = SIGEV_THREAD_ID;
    ev.sigev_signo = SIGRTMIN;
    ev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
    timer_t t;
    if (timer_create(CLOCK_MONOTONIC, &ev, &t) != 0) {
        perror("timer_create");
        exit(1);
    }
    struct itimerspec its = {{0, 1000000}, {0, 1000000}};
    timer_settime(t, 0, &its, NULL);
    for (unsigned long k = 0;; k++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        if ((k & 255) == 0) atomic_fetch_add(&heartbeat[i], 1);
    }
    return NULL;
}

static int rt_command(const char *cmd) {
    if (strcmp(cmd, "signals") != 0) return 0;
    char out[64];
    snprintf(out, sizeof out, "signals rt=%ld\n", atomic_load(&rt_signals));
    reply(out);
    return 1;
}

int main(int argc, char **argv) {
    parse_offsets(argc, argv, "t:i:", opt);
    crash_handlers(1);
    extra_command = rt_command;
    struct sigaction sa = {0};
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGALRM);
    sigaddset(&sa.sa_mask, SIGRTMIN);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    sa.sa_handler = on_rt;
    sigaction(SIGRTMIN, &sa, NULL);
    if (start_workers(nthreads, worker) != 0 || start_workers(1, window) != 0) return 1;
    struct itimerval it = {{0, itimer_us}, {0, itimer_us}};
    setitimer(ITIMER_REAL, &it, NULL);
    say_ready();
    serve();
}
