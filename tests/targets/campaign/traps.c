// A program with SIGTRAP of its own (F8): a SIGTRAP handler; the main thread and the clock
// worker keep SIGTRAP blocked; unless -1 (single-threaded), an "int3" thread (SIGTRAP not
// blocked) executes int3 in a loop and checks its handler ran exactly once each time.
//   raise  → the main thread unblocks SIGTRAP, raise()s it, blocks it again:
//            "raised handled=N" (N: the main thread's handler runs so far)
//   traps  → "traps executed=.. handled=.. lost=.."  (the int3 thread's counts)
// usage: traps [-1] [-o NS]...
#include "clockcheck.h"

static int single;
static __thread long handled_here;
static atomic_long int3_executed, int3_handled, int3_lost;
static void opt(int o, const char *a) {
    (void)a;
    if (o == '1') single = 1;
}
static void on_trap(int sig) {
    (void)sig;
    handled_here++;
}

static void *int3_loop(void *arg) {
    long i = (long)arg;
    for (unsigned long k = 0;; k++) {
        long before = handled_here;
        atomic_fetch_add(&int3_executed, 1);
        __asm__ volatile("int3");
        if (handled_here != before + 1) {
            atomic_fetch_add(&int3_lost, 1);
            char buf[96];
            int n = snprintf(buf, sizeof buf, "LOST SIGTRAP: handled %ld, expected %ld\n", handled_here, before + 1);
            write(2, buf, n);
        } else {
            atomic_fetch_add(&int3_handled, 1);
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        if ((k & 63) == 0) atomic_fetch_add(&heartbeat[i], 1);
    }
    return NULL;
}

static int trap_command(const char *cmd) {
    char out[128];
    if (!strcmp(cmd, "raise")) {
        sigset_t s;
        sigemptyset(&s);
        sigaddset(&s, SIGTRAP);
        sigprocmask(SIG_UNBLOCK, &s, NULL);
        raise(SIGTRAP);
        sigprocmask(SIG_BLOCK, &s, NULL);
        snprintf(out, sizeof out, "raised handled=%ld\n", handled_here);
    } else if (!strcmp(cmd, "traps")) {
        snprintf(out, sizeof out, "traps executed=%ld handled=%ld lost=%ld\n", atomic_load(&int3_executed),
                 atomic_load(&int3_handled), atomic_load(&int3_lost));
    } else {
        return 0;
    }
    reply(out);
    return 1;
}

int main(int argc, char **argv) {
    parse_offsets(argc, argv, "1", opt);
    crash_handlers(0);
    extra_command = trap_command;
    // SA_NODEFER: SIGTRAP stays unblocked while the handler runs, so a thread's SigBlk in
    // /proc does not flicker with every int3.
    struct sigaction sa = {0};
    sa.sa_handler = on_trap;
    sa.sa_flags = SA_NODEFER;
    sigaction(SIGTRAP, &sa, NULL);
    if (!single && start_workers(1, int3_loop) != 0) return 1;
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGTRAP);
    sigprocmask(SIG_BLOCK, &s, NULL);
    if (!single && start_workers(1, worker) != 0) return 1;
    say_ready();
    serve();
}
