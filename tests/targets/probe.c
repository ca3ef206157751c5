/* A statically linked test target (built twice: against glibc with `cc -static` and against
 * musl with `musl-gcc -static`). Speaks the line protocol of examples/probe.rs:
 *   prints `ready pid=<pid>` once running, then answers per stdin line
 *   now  -> now realtime=<ns> monotonic=<ns> gtod=<us> time=<s> raw_syscall=<ns> ticks=<n>
 *   quit -> exits 0
 * realtime/monotonic go through libc's clock_gettime (and so the vDSO), gtod through
 * gettimeofday, time through time(); raw_syscall is syscall(SYS_clock_gettime, REALTIME), which
 * bypasses the vDSO: the known gap, reported so the tests can document it. ticks counts the
 * rounds of a thread sleeping 10 ms at a time with nanosleep (a relative sleep): it shows
 * whether the program's timed waits keep working under the skew. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static long long ns(clockid_t c) {
    struct timespec t;
    if (clock_gettime(c, &t) != 0)
        return -1;
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static long long raw_ns(void) {
    struct timespec t;
    if (syscall(SYS_clock_gettime, CLOCK_REALTIME, &t) != 0)
        return -1;
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static long long ticks;

static void *ticker(void *arg) {
    (void)arg;
    for (;;) {
        struct timespec d = {0, 10000000};
        nanosleep(&d, NULL);
        __atomic_add_fetch(&ticks, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

int main(void) {
    char line[256];
    pthread_t tick;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (pthread_create(&tick, NULL, ticker, NULL) != 0) {
        perror("pthread_create");
        return 1;
    }
    printf("ready pid=%d\n", (int)getpid());
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\r\n")] = 0;
        if (strcmp(line, "now") == 0) {
            struct timeval tv;
            gettimeofday(&tv, NULL);
            long long rt = ns(CLOCK_REALTIME), mono = ns(CLOCK_MONOTONIC);
            long long gtod = (long long)tv.tv_sec * 1000000LL + tv.tv_usec;
            long long t = (long long)time(NULL);
            printf("now realtime=%lld monotonic=%lld gtod=%lld time=%lld raw_syscall=%lld "
                   "ticks=%lld\n",
                   rt, mono, gtod, t, raw_ns(), __atomic_load_n(&ticks, __ATOMIC_RELAXED));
        } else if (strcmp(line, "quit") == 0) {
            return 0;
        } else {
            printf("error unknown command \"%s\"\n", line);
        }
    }
    return 0;
}
