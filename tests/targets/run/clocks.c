// A target for `timeskew run` (tests/run.rs): prints what its clocks say, then starts a program
// in one of the ways libc and the kernel offer. Built with `cc -static` and `musl-gcc -static`.
//
//   clocks                     print "self realtime=S gtod=S time=S" and exit 0
//   clocks fork                … and a forked child (no exec) prints "child …" too
//   clocks vfork CMD ARGS      … then vfork() + execvp(CMD)
//   clocks spawn CMD ARGS      … then posix_spawnp(CMD) (clone with CLONE_VM|CLONE_VFORK)
//   clocks thread-exec CMD …   … then execvp(CMD) from a second thread (the pid stays the same)
//   clocks signals             … then "ready"; "got-int" for every SIGINT delivered (no merging
//                              by a shell's trap logic), "got-term" and exit 3 on SIGTERM
//   clocks leaderless CMD …    prints nothing at first: the main thread exits (a zombie leader,
//                              listed until the process ends), a second thread says "ready"
//                              once it is one;
//                              for each line on stdin it prints its clocks ("thread …") and
//                              runs CMD (fork + execvp), and exits 0 at end of input
//   clocks shared-vm           prints nothing at first, then "ready pid=P"; for each line on
//                              stdin: "share" makes a second *process* sharing this one's memory
//                              (clone(CLONE_VM), not a thread) that reads the clock in a loop,
//                              and says "shared child=C" once it has; "unshare" kills and reaps
//                              it ("unshared", or "died early" if it had died by itself); any
//                              other line prints both readings ("parent=S child=S", the child's
//                              taken after the line came; 0 before "share"); at end of
//                              input the child is killed and reaped, exit 0
//   clocks vfork-child         prints nothing at first: vfork()s a child that says "ready pid=P
//                              child=C" and reads stdin until its end (its parent waiting in the
//                              kernel all along, sharing its memory), then exits; exit 0
//   clocks ppoll               prints nothing at first: blocks SIGUSR1, says "ready pid=P", then
//                              waits for stdin in ppoll() with a *temporary* mask that blocks
//                              SIGUSR2 instead (the kernel's saved-mask path); for each line it
//                              prints its clocks ("ppoll …") and its own mask ("mask=HEX", the
//                              first word of the set); exit 0 at end of input
//   clocks reexec              prints nothing at first: says "ready pid=P", then execs itself
//                              (`clocks reexec again`, the pid the same) without pause, about
//                              every millisecond, until killed
//
// Exit status: the started program's, 0 for clocks/fork.
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;
static char **cmd;

static void print_clocks(const char *who) {
    struct timespec ts;
    struct timeval tv;
    clock_gettime(CLOCK_REALTIME, &ts);
    gettimeofday(&tv, NULL);
    printf("%s realtime=%lld gtod=%lld time=%lld\n", who, (long long)ts.tv_sec,
           (long long)tv.tv_sec, (long long)time(NULL));
    fflush(stdout);
}

static int wait_for(pid_t pid) {
    int status;
    if (waitpid(pid, &status, 0) != pid) {
        perror("waitpid");
        return 120;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void say(const char *text) {
    ssize_t ignored = write(1, text, strlen(text));
    (void)ignored;
}

static void on_int(int sig) {
    (void)sig;
    say("got-int\n");
}

static void on_term(int sig) {
    (void)sig;
    say("got-term\n");
    _exit(3);
}

static void *leaderless(void *leader) {
    // Ready once the main thread is a zombie: its /proc state says so.
    char path[64], stat[512];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)(long)leader);
    for (;;) {
        FILE *f = fopen(path, "r");
        size_t n = f ? fread(stat, 1, sizeof stat - 1, f) : 0;
        if (f) {
            fclose(f);
        }
        stat[n] = 0;
        char *end = strrchr(stat, ')');
        if (end && end[1] == ' ' && (end[2] == 'Z' || end[2] == 'X')) {
            break;
        }
        usleep(1000);
    }
    say("ready\n");
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        print_clocks("thread");
        pid_t pid = fork();
        if (pid == 0) {
            execvp(cmd[0], cmd);
            _exit(127);
        }
        wait_for(pid);
    }
    exit(0);
}

static volatile long long shared_reading;
static volatile long shared_reads;

static int read_the_clock_forever(void *unused) {
    (void)unused;
    for (;;) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        shared_reading = ts.tv_sec;
        shared_reads++;
    }
    return 0;
}

static int shared_vm(void) {
    static char stack[1 << 16];
    pid_t child = 0;
    printf("ready pid=%d\n", getpid());
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (!strcmp(line, "share\n") && child == 0) {
            child = clone(read_the_clock_forever, stack + sizeof stack, CLONE_VM | SIGCHLD, NULL);
            if (child < 0) {
                perror("clone");
                return 1;
            }
            while (shared_reads == 0) {
                usleep(1000);
            }
            printf("shared child=%d\n", child);
        } else if (!strcmp(line, "unshare\n") && child != 0) {
            kill(child, SIGKILL);
            printf(wait_for(child) == 128 + SIGKILL ? "unshared\n" : "died early\n");
            child = 0;
            shared_reading = 0;
        } else {
            // The child's reading taken since this line came: two more reads (one in flight
            // may have started before).
            long since = shared_reads;
            while (child != 0 && shared_reads < since + 2) {
                usleep(100);
            }
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            printf("parent=%lld child=%lld\n", (long long)ts.tv_sec, shared_reading);
        }
        fflush(stdout);
    }
    if (child == 0) {
        return 0;
    }
    kill(child, SIGKILL);
    return wait_for(child) == 128 + SIGKILL ? 0 : 1;
}

static void *exec_from_thread(void *unused) {
    (void)unused;
    execvp(cmd[0], cmd);
    perror("execvp");
    _exit(127);
}

static int ppoll_loop(void) {
    sigset_t usual, during;
    sigemptyset(&usual);
    sigaddset(&usual, SIGUSR1);
    sigemptyset(&during);
    sigaddset(&during, SIGUSR2);
    pthread_sigmask(SIG_SETMASK, &usual, NULL);
    printf("ready pid=%d\n", getpid());
    fflush(stdout);
    char line[256];
    for (;;) {
        struct pollfd in = {.fd = 0, .events = POLLIN};
        int n = ppoll(&in, 1, NULL, &during);
        if (n < 0) {
            perror("ppoll");
            return 1;
        }
        if (!fgets(line, sizeof line, stdin)) {
            return 0;
        }
        print_clocks("ppoll");
        sigset_t now;
        pthread_sigmask(SIG_SETMASK, NULL, &now);
        unsigned long long word = 0;
        for (int sig = 1; sig <= 64; sig++) {
            if (sigismember(&now, sig) == 1) {
                word |= 1ULL << (sig - 1);
            }
        }
        printf("mask=%llx\n", word);
        fflush(stdout);
    }
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "clocks";
    cmd = argv + 2;
    if (!strcmp(mode, "leaderless") && argc > 2) {
        pthread_t thread;
        pthread_create(&thread, NULL, leaderless, (void *)(long)getpid());
        pthread_exit(NULL);
    }
    if (!strcmp(mode, "ppoll")) {
        return ppoll_loop();
    }
    if (!strcmp(mode, "reexec")) {
        if (argc < 3) {
            printf("ready pid=%d\n", getpid());
            fflush(stdout);
        }
        for (volatile long i = 0; i < 300000; i++) {
        }
        char *again[] = {argv[0], "reexec", "again", NULL};
        execv("/proc/self/exe", again);
        return 1;
    }
    if (!strcmp(mode, "shared-vm")) {
        return shared_vm();
    }
    if (!strcmp(mode, "vfork-child")) {
        pid_t parent = getpid();
        pid_t pid = vfork();
        if (pid == 0) {
            // Only async-signal-safe calls in a vfork child: format by hand, write, read.
            char text[64];
            int n = snprintf(text, sizeof text, "ready pid=%d child=%d\n", parent, getpid());
            if (write(1, text, n) != n) {
                _exit(1);
            }
            char buf[64];
            while (read(0, buf, sizeof buf) > 0) {
            }
            _exit(0);
        }
        return wait_for(pid);
    }
    print_clocks("self");
    if (!strcmp(mode, "clocks")) {
        return 0;
    }
    if (!strcmp(mode, "fork")) {
        pid_t pid = fork();
        if (pid == 0) {
            print_clocks("child");
            _exit(0);
        }
        return wait_for(pid);
    }
    if (!strcmp(mode, "signals")) {
        signal(SIGINT, on_int);
        signal(SIGTERM, on_term);
        say("ready\n");
        for (;;) {
            pause();
        }
    }
    if (argc < 3) {
        fprintf(stderr, "usage: %s [clocks|fork|vfork|spawn|thread-exec|leaderless] [CMD ARGS...]\n", argv[0]);
        return 2;
    }
    if (!strcmp(mode, "vfork")) {
        pid_t pid = vfork();
        if (pid == 0) {
            execvp(cmd[0], cmd);
            _exit(127);
        }
        return wait_for(pid);
    }
    if (!strcmp(mode, "spawn")) {
        pid_t pid;
        int err = posix_spawnp(&pid, cmd[0], NULL, NULL, cmd, environ);
        if (err) {
            fprintf(stderr, "posix_spawnp: %s\n", strerror(err));
            return 127;
        }
        return wait_for(pid);
    }
    if (!strcmp(mode, "thread-exec")) {
        pthread_t thread;
        pthread_create(&thread, NULL, exec_from_thread, NULL);
        pthread_join(thread, NULL);
        return 126;
    }
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
}
