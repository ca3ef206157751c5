// A process that is itself a ptrace tracer: it forks a child that PTRACE_TRACEMEs and follows
// it with PTRACE_SYSCALL, as strace does (the child loops: clock_gettime + a 1 ms nanosleep).
// A clock-checking worker and a command thread run beside the tracing main thread;
// "tracer" → "tracer child=PID stops=N ended=0|1".
// usage: tracer [-o NS]...
#include "clockcheck.h"
#include <sys/ptrace.h>
#include <sys/wait.h>

static atomic_long stops;
static atomic_int ended;
static pid_t child;

static int tracer_command(const char *cmd) {
    if (strcmp(cmd, "tracer") != 0) return 0;
    char out[128];
    snprintf(out, sizeof out, "tracer child=%d stops=%ld ended=%d\n", child, atomic_load(&stops), atomic_load(&ended));
    reply(out);
    return 1;
}

static void *server(void *a) {
    (void)a;
    serve();
    return NULL;
}

int main(int argc, char **argv) {
    parse_offsets(argc, argv, "", NULL);
    child = fork();
    if (child == 0) {
        ptrace(PTRACE_TRACEME, 0, 0, 0);
        raise(SIGSTOP);
        for (;;) {
            struct timespec ts, d = {0, 1000000};
            clock_gettime(CLOCK_REALTIME, &ts);
            nanosleep(&d, NULL);
        }
    }
    crash_handlers(1);
    extra_command = tracer_command;
    int st;
    if (waitpid(child, &st, 0) != child) return 1;
    ptrace(PTRACE_SETOPTIONS, child, 0, PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL);
    if (start_workers(1, worker) != 0) return 1;
    say_ready();
    pthread_t t;
    pthread_create(&t, NULL, server, NULL);
    for (;;) {
        ptrace(PTRACE_SYSCALL, child, 0, 0);
        if (waitpid(child, &st, 0) < 0 || WIFEXITED(st) || WIFSIGNALED(st)) {
            atomic_store(&ended, 1);
            for (;;) pause();
        }
        atomic_fetch_add(&stops, 1);
    }
}
