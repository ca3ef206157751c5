// Process and thread creation storms around the clock checks of clockcheck.h:
//   -f RATE  fork() a child per 1/RATE s that checks its clocks for 5 ms and exits with 3 if a
//            check failed (counted as child_errors), with the signal if it crashed (child_crashes)
//   -v RATE  vfork() + execve /bin/true;   -S RATE  posix_spawn /bin/true
//   -T RATE  pthread_create + join of a thread that checks its clocks once
//   -t N     clock-checking workers (default 1)
// "storms" → "storms forks=.. vforks=.. spawns=.. threads=.. child_errors=.. child_crashes=.."
#include "clockcheck.h"
#include <spawn.h>
#include <sys/wait.h>

extern char **environ;
static long fork_rate, vfork_rate, spawn_rate, thread_rate;
static int nthreads = 1;
static atomic_long forks, vforks, spawns, threads, child_errors, child_crashes;

static void opt(int o, const char *a) {
    if (o == 'f') fork_rate = atol(a);
    if (o == 'v') vfork_rate = atol(a);
    if (o == 'S') spawn_rate = atol(a);
    if (o == 'T') thread_rate = atol(a);
    if (o == 't') nthreads = atoi(a);
}

static void pace(long per_sec, int64_t *next) {
    int64_t now = raw_ns(CLOCK_MONOTONIC);
    *next += 1000000000LL / per_sec;
    if (*next > now) {
        struct timespec d = {0, *next - now};
        syscall(SYS_nanosleep, &d, NULL);
    } else {
        *next = now;
    }
}

static void count_child(int st) {
    if (WIFEXITED(st) && WEXITSTATUS(st) == 3) atomic_fetch_add(&child_errors, 1);
    if (WIFSIGNALED(st)) atomic_fetch_add(&child_crashes, 1);
}

static void *fork_storm(void *a) {
    (void)a;
    int64_t next = 0;
    for (;;) {
        pid_t c = fork();
        if (c == 0) {
            long before = atomic_load(&errors) + atomic_load(&regbad);
            int64_t end = raw_ns(CLOCK_MONOTONIC) + 5000000;
            do check_once(0);
            while (raw_ns(CLOCK_MONOTONIC) < end);
            _exit(atomic_load(&errors) + atomic_load(&regbad) != before ? 3 : 0);
        }
        if (c > 0) atomic_fetch_add(&forks, 1);
        int st;
        pid_t w;
        while ((w = waitpid(-1, &st, WNOHANG)) > 0) count_child(st);
        pace(fork_rate, &next);
    }
    return NULL;
}

// vfork + exec in a function of its own: the child never returns from it.
static __attribute__((noinline)) pid_t vfork_exec_true(void) {
    char *argv[] = {"true", NULL};
    pid_t c = vfork();
    if (c == 0) {
        execve("/bin/true", argv, environ);
        _exit(127);
    }
    return c;
}

static void *vfork_storm(void *a) {
    (void)a;
    int64_t next = 0;
    for (;;) {
        pid_t c = vfork_exec_true();
        if (c > 0) {
            atomic_fetch_add(&vforks, 1);
            int st;
            if (waitpid(c, &st, 0) == c) count_child(st);
        }
        pace(vfork_rate, &next);
    }
    return NULL;
}

static void *spawn_storm(void *a) {
    (void)a;
    int64_t next = 0;
    char *argv[] = {"true", NULL};
    for (;;) {
        pid_t c;
        if (posix_spawn(&c, "/bin/true", NULL, NULL, argv, environ) == 0) {
            atomic_fetch_add(&spawns, 1);
            int st;
            if (waitpid(c, &st, 0) == c) count_child(st);
        }
        pace(spawn_rate, &next);
    }
    return NULL;
}

static void *one(void *a) {
    (void)a;
    check_once(0);
    return NULL;
}

static void *thread_storm(void *a) {
    (void)a;
    int64_t next = 0;
    for (;;) {
        pthread_t t;
        if (pthread_create(&t, NULL, one, NULL) == 0) {
            pthread_join(t, NULL);
            atomic_fetch_add(&threads, 1);
        }
        pace(thread_rate, &next);
    }
    return NULL;
}

static int storms_command(const char *cmd) {
    if (strcmp(cmd, "storms") != 0) return 0;
    char out[256];
    snprintf(out, sizeof out, "storms forks=%ld vforks=%ld spawns=%ld threads=%ld child_errors=%ld child_crashes=%ld\n",
             atomic_load(&forks), atomic_load(&vforks), atomic_load(&spawns), atomic_load(&threads),
             atomic_load(&child_errors), atomic_load(&child_crashes));
    reply(out);
    return 1;
}

int main(int argc, char **argv) {
    parse_offsets(argc, argv, "f:v:S:T:t:", opt);
    crash_handlers(1);
    extra_command = storms_command;
    if (start_workers(nthreads, worker) != 0) return 1;
    pthread_t t;
    if (fork_rate) pthread_create(&t, NULL, fork_storm, NULL);
    if (vfork_rate) pthread_create(&t, NULL, vfork_storm, NULL);
    if (spawn_rate) pthread_create(&t, NULL, spawn_storm, NULL);
    if (thread_rate) pthread_create(&t, NULL, thread_storm, NULL);
    say_ready();
    serve();
}
