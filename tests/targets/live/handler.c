/* A thread interrupted inside a hook window by a signal whose handler then blocks for good
 * (tests/live_patch.rs). Prints "ready pid=N entry=0xADDR" — the vDSO's clock_gettime, which
 * the main thread then calls without pause; SIGUSR1 prints "handler" and pauses forever. The
 * test walks the thread into the entry's first bytes with ptrace before sending SIGUSR1, so
 * the signal frame on the handler's stack holds an address inside the window. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);

static void on_usr1(int sig) {
    static const char msg[] = "handler\n";
    (void)sig;
    if (write(1, msg, sizeof msg - 1) < 0)
        _exit(1);
    for (;;)
        pause();
}

int main(void) {
    void *vdso = dlopen("linux-vdso.so.1", RTLD_NOW | RTLD_NOLOAD);
    clock_gettime_fn entry = NULL;
    if (vdso)
        *(void **)&entry = dlsym(vdso, "__vdso_clock_gettime");
    if (!entry) {
        fprintf(stderr, "no __vdso_clock_gettime: %s\n", dlerror());
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    if (sigaction(SIGUSR1, &sa, NULL) != 0)
        return 1;
    printf("ready pid=%d entry=%p\n", getpid(), *(void **)&entry);
    fflush(stdout);
    struct timespec ts;
    for (;;)
        entry(CLOCK_REALTIME, &ts);
}
