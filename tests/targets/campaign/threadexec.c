// A non-main thread execs this program again every ~2 ms (the kernel's de_thread path: the
// exec'ing thread takes over the process id, every other thread vanishes), N times. Two more
// threads spin on clock_gettime. The first image says "ready pid=N" on stdout.
// usage: threadexec N [quiet]
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static char **av;
static int n;

static void *spin(void *a) {
    (void)a;
    for (;;) {
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
    }
    return NULL;
}

static void *execer(void *a) {
    (void)a;
    struct timespec d = {0, 2000000};
    nanosleep(&d, NULL);
    char buf[16];
    snprintf(buf, sizeof buf, "%d", n - 1);
    execl("/proc/self/exe", av[0], buf, "quiet", (char *)NULL);
    perror("exec");
    exit(2);
}

int main(int argc, char **argv) {
    av = argv;
    n = argc > 1 ? atoi(argv[1]) : 1000000;
    if (argc <= 2) {
        printf("ready pid=%d\n", getpid());
        fflush(stdout);
    }
    if (n <= 0) return 0;
    pthread_t t;
    pthread_create(&t, NULL, spin, NULL);
    pthread_create(&t, NULL, spin, NULL);
    pthread_create(&t, NULL, execer, NULL);
    for (;;) {
        struct timespec t2;
        clock_gettime(CLOCK_REALTIME, &t2);
    }
}
