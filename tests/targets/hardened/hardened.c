/* A hardened test target for tests/hardened.rs: a process that locks itself down the way
 * sandboxes and systemd units do, then serves the probe line protocol.
 *
 *   hardened POLICY [SYSCALL]
 *     none                            no policy (control)
 *     kill_process|kill_thread|trap|trap_nohandler|errno|user_notif  SYSCALL (mmap|mprotect):
 *                                     a seccomp filter on every thread (TSYNC) giving SYSCALL
 *                                     that action; user_notif is answered (CONTINUE) by a
 *                                     supervisor thread of this process
 *     mdwe_filter                     like systemd's MemoryDenyWriteExecute=: mmap with
 *                                     PROT_WRITE|PROT_EXEC, mprotect/pkey_mprotect with
 *                                     PROT_EXEC fail with EPERM
 *     mdwe_prctl                      prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN)
 *     strict                          single-threaded, SECCOMP_MODE_STRICT, blocked in read():
 *                                     answers each line "<word> strict=1" with write()
 *     strict_worker                   main thread normal; a worker thread in strict mode
 *                                     blocked in read() on a pipe
 *
 * Prints `ready pid=<pid>` once the policy is in place, then per stdin line:
 *   now  -> now realtime=<ns> sigsys=<n> notified=<n> threads=<n>
 *   quit -> exits 0
 * Everything that allocates or maps (stdio buffers, thread stacks) is done before the policy,
 * so the target itself never makes the calls it forbids. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef PR_SET_MDWE
#define PR_SET_MDWE 65
#define PR_MDWE_REFUSE_EXEC_GAIN 1
#endif

static volatile long sigsys_count, notified;
static int threads = 1;
static char out_buf[4096], in_buf[4096];

static void die(const char *what) {
    fprintf(stderr, "hardened: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void on_sigsys(int sig, siginfo_t *si, void *ctx) {
    (void)sig; (void)si; (void)ctx;
    __atomic_add_fetch(&sigsys_count, 1, __ATOMIC_RELAXED);
}

static long long realtime_ns(void) {
    struct timespec t;
    if (clock_gettime(CLOCK_REALTIME, &t) != 0)
        return -1;
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* A second thread reading the clock, so that the process is multi-threaded like most. */
static void *ticker(void *arg) {
    (void)arg;
    for (;;) {
        struct timespec d = {0, 10000000};
        realtime_ns();
        nanosleep(&d, NULL);
    }
    return NULL;
}

static int notify_pipe[2];

static void *supervisor(void *arg) {
    (void)arg;
    int fd;
    if (read(notify_pipe[0], &fd, sizeof fd) != sizeof fd)
        return NULL;
    for (;;) {
        struct seccomp_notif req;
        struct seccomp_notif_resp resp;
        memset(&req, 0, sizeof req);
        if (ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV, &req) < 0) {
            if (errno == EINTR || errno == ENOENT)
                continue;
            return NULL;
        }
        __atomic_add_fetch(&notified, 1, __ATOMIC_RELAXED);
        memset(&resp, 0, sizeof resp);
        resp.id = req.id;
        resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
        ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, &resp);
    }
}

static int seccomp_filter(struct sock_filter *f, unsigned short len, unsigned flags) {
    struct sock_fprog prog = {len, f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        die("PR_SET_NO_NEW_PRIVS");
    int r = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
    if (r < 0)
        die("seccomp(SECCOMP_SET_MODE_FILTER)");
    if (r > 0 && !(flags & SECCOMP_FILTER_FLAG_NEW_LISTENER)) {
        fprintf(stderr, "hardened: thread %d could not take the filter\n", r);
        exit(1);
    }
    return r;
}

static void on_call(int nr, unsigned action, unsigned flags, int *listener) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, action),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    int r = seccomp_filter(f, sizeof f / sizeof f[0], flags);
    if (listener)
        *listener = r;
}

#define ARG_LO(i) (offsetof(struct seccomp_data, args) + 8 * (i))
#define ARG_HI(i) (offsetof(struct seccomp_data, args) + 8 * (i) + 4)

static void mdwe_filter(void) {
    const unsigned wx = PROT_WRITE | PROT_EXEC;
    const unsigned eperm = SECCOMP_RET_ERRNO | EPERM;
    struct sock_filter f[] = {
        /* 0 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        /* 1 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        /* 2 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        /* 3 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        /* 4 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_mmap, 0, 6),
        /* 5 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_HI(2)),
        /* 6 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 3),
        /* 7 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(2)),
        /* 8 */ BPF_STMT(BPF_ALU | BPF_AND | BPF_K, wx),
        /* 9 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, wx, 6, 0),
        /* 10 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        /* 11 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_mprotect, 1, 0),
        /* 12 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_pkey_mprotect, 0, 2),
        /* 13 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(2)),
        /* 14 */ BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, PROT_EXEC, 1, 0),
        /* 15 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        /* 16 */ BPF_STMT(BPF_RET | BPF_K, eperm),
    };
    seccomp_filter(f, sizeof f / sizeof f[0], SECCOMP_FILTER_FLAG_TSYNC);
}

/* Strict mode allows read, write, exit and rt_sigreturn only: raw calls, no stdio. */
static void strict_serve(void) {
    char line[256];
    size_t n = 0;
    for (;;) {
        char c;
        long r = syscall(SYS_read, 0, &c, 1);
        if (r <= 0)
            syscall(SYS_exit, 0);
        if (c != '\n' && n < sizeof line - 16) {
            line[n++] = c;
            continue;
        }
        size_t w = 0;
        while (w < n && line[w] != ' ')
            w++;
        memcpy(line + w, " strict=1\n", 10);
        syscall(SYS_write, 1, line, w + 10);
        n = 0;
    }
}

static int strict_block[2], strict_ready[2];

static void *strict_worker(void *arg) {
    (void)arg;
    char c = 1;
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0) != 0)
        c = 0;
    syscall(SYS_write, strict_ready[1], &c, 1);
    for (;;)
        if (syscall(SYS_read, strict_block[0], &c, 1) <= 0)
            syscall(SYS_exit, 0);
    return NULL;
}

int main(int argc, char **argv) {
    const char *policy = argc > 1 ? argv[1] : "none";
    const char *call = argc > 2 ? argv[2] : "mmap";
    int nr = strcmp(call, "mprotect") == 0 ? SYS_mprotect : SYS_mmap;
    setvbuf(stdout, out_buf, _IOLBF, sizeof out_buf);
    setvbuf(stdin, in_buf, _IOFBF, sizeof in_buf);

    if (strcmp(policy, "strict") == 0) {
        char ready[64];
        int n = snprintf(ready, sizeof ready, "ready pid=%d\n", (int)getpid());
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0) != 0)
            die("PR_SET_SECCOMP strict");
        syscall(SYS_write, 1, ready, n);
        strict_serve();
    }

    if (strcmp(policy, "trap_nohandler") != 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_sigsys;
        sa.sa_flags = SA_SIGINFO;
        sigaction(SIGSYS, &sa, NULL);
    }
    pthread_t t;
    if (pthread_create(&t, NULL, ticker, NULL) != 0)
        die("pthread_create ticker");
    threads++;
    if (strcmp(policy, "user_notif") == 0) {
        if (pipe(notify_pipe) != 0)
            die("pipe");
        if (pthread_create(&t, NULL, supervisor, NULL) != 0)
            die("pthread_create supervisor");
        threads++;
    }
    if (strcmp(policy, "strict_worker") == 0) {
        if (pipe(strict_block) != 0 || pipe(strict_ready) != 0)
            die("pipe");
        if (pthread_create(&t, NULL, strict_worker, NULL) != 0)
            die("pthread_create strict worker");
        threads++;
        char c = 0;
        if (read(strict_ready[0], &c, 1) != 1 || c != 1) {
            fprintf(stderr, "hardened: the worker could not enter strict mode\n");
            return 1;
        }
    }

    if (strcmp(policy, "none") == 0 || strcmp(policy, "strict_worker") == 0) {
    } else if (strcmp(policy, "kill_process") == 0) {
        on_call(nr, SECCOMP_RET_KILL_PROCESS, SECCOMP_FILTER_FLAG_TSYNC, NULL);
    } else if (strcmp(policy, "kill_thread") == 0) {
        on_call(nr, SECCOMP_RET_KILL_THREAD, SECCOMP_FILTER_FLAG_TSYNC, NULL);
    } else if (strcmp(policy, "trap") == 0 || strcmp(policy, "trap_nohandler") == 0) {
        on_call(nr, SECCOMP_RET_TRAP, SECCOMP_FILTER_FLAG_TSYNC, NULL);
    } else if (strcmp(policy, "errno") == 0) {
        on_call(nr, SECCOMP_RET_ERRNO | EPERM, SECCOMP_FILTER_FLAG_TSYNC, NULL);
    } else if (strcmp(policy, "user_notif") == 0) {
        /* Every thread, the supervisor included, under the filter: TSYNC with a listener
         * needs TSYNC_ESRCH (Linux 5.7). */
        int fd;
        on_call(nr, SECCOMP_RET_USER_NOTIF,
                SECCOMP_FILTER_FLAG_TSYNC | SECCOMP_FILTER_FLAG_TSYNC_ESRCH |
                    SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &fd);
        if (write(notify_pipe[1], &fd, sizeof fd) != sizeof fd)
            die("write");
    } else if (strcmp(policy, "mdwe_filter") == 0) {
        mdwe_filter();
    } else if (strcmp(policy, "mdwe_prctl") == 0) {
        if (prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0)
            die("prctl(PR_SET_MDWE)");
    } else {
        fprintf(stderr, "hardened: unknown policy %s\n", policy);
        return 2;
    }

    /* Prove the W^X policies are in force: a writable page may not become executable. */
    if (strcmp(policy, "mdwe_filter") == 0 || strcmp(policy, "mdwe_prctl") == 0) {
        void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            die("mmap");
        if (mprotect(p, 4096, PROT_READ | PROT_EXEC) == 0) {
            fprintf(stderr, "hardened: %s is not in force\n", policy);
            return 1;
        }
        munmap(p, 4096);
    }

    realtime_ns();
    printf("ready pid=%d policy=%s call=%s\n", (int)getpid(), policy, call);
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\r\n")] = 0;
        if (strcmp(line, "now") == 0) {
            printf("now realtime=%lld sigsys=%ld notified=%ld threads=%d\n", realtime_ns(),
                   __atomic_load_n(&sigsys_count, __ATOMIC_RELAXED),
                   __atomic_load_n(&notified, __ATOMIC_RELAXED), threads);
        } else if (strcmp(line, "quit") == 0) {
            return 0;
        } else {
            printf("error unknown command \"%s\"\n", line);
        }
    }
    return 0;
}
