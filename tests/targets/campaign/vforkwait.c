// A thread in an uninterruptible wait: the main thread vforks a child that sleeps -s SECONDS
// before it execs /bin/true, so the main thread sits in the kernel's vfork wait ("D"), again
// and again. -t N clock-checking workers; a ticker thread timestamps a tight loop and reports
// the longest gap ("gap" → "gap max_us=N", which also resets it). Commands are served by a
// thread of their own (the main thread is busy vforking).
// usage: vforkwait [-s SECONDS] [-t N] [-o NS]...
#include "clockcheck.h"
#include <sys/prctl.h>
#include <sys/wait.h>

static int seconds = 3, nthreads = 1;
static atomic_long max_gap_ns;
static void opt(int o, const char *a) {
    if (o == 's') seconds = atoi(a);
    if (o == 't') nthreads = atoi(a);
}

static void *ticker(void *a) {
    (void)a;
    int64_t last = raw_ns(CLOCK_MONOTONIC);
    for (;;) {
        int64_t now = raw_ns(CLOCK_MONOTONIC);
        int64_t gap = now - last;
        if (gap > atomic_load(&max_gap_ns)) atomic_store(&max_gap_ns, gap);
        last = now;
    }
    return NULL;
}

static int gap_command(const char *cmd) {
    if (strcmp(cmd, "gap") != 0) return 0;
    char out[64];
    snprintf(out, sizeof out, "gap max_us=%ld\n", atomic_exchange(&max_gap_ns, 0) / 1000);
    reply(out);
    return 1;
}

static void *server(void *a) {
    (void)a;
    serve();
    return NULL;
}

int main(int argc, char **argv) {
    parse_offsets(argc, argv, "s:t:", opt);
    crash_handlers(1);
    extra_command = gap_command;
    if (start_workers(nthreads, worker) != 0) return 1;
    pthread_t t;
    pthread_create(&t, NULL, ticker, NULL);
    say_ready();
    pthread_create(&t, NULL, server, NULL);
    char *args[] = {"true", NULL};
    for (;;) {
        pid_t c = vfork();
        if (c == 0) {
            syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
            struct timespec d = {seconds, 0};
            syscall(SYS_nanosleep, &d, NULL);
            syscall(SYS_execve, "/bin/true", args, NULL);
            syscall(SYS_exit, 127);
        }
        if (c > 0) waitpid(c, NULL, 0);
    }
}
