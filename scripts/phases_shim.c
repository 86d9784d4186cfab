/* LD_PRELOAD shim for scripts/bench-phases.py: loaded into llvm-jitlink (never into the
   executor: it removes itself from the environment before llvm-jitlink starts one), it
   timestamps (CLOCK_MONOTONIC, seconds) llvm-jitlink's fork, and its read/write/close calls
   on fds >= 3, in memory, and writes them to $PHASES_SHIM_OUT at exit, one event a line:
   "TIME OP FD REQUESTED RESULT" with OP one of S (start), F/f (fork, its child pid in FD),
   w/W (write begins/ends), R (read ended), C (close), E (exit). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS (1 << 16)

struct event { double t; char op; int fd; long n; long r; };
static struct event events[MAX_EVENTS];
static atomic_int count;
static char out_path[4096];
static ssize_t (*real_read)(int, void *, size_t);
static ssize_t (*real_write)(int, const void *, size_t);
static int (*real_close)(int);
static pid_t (*real_fork)(void);

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void record(char op, int fd, long n, long r) {
    int i = atomic_fetch_add(&count, 1);
    if (i < MAX_EVENTS) events[i] = (struct event){now(), op, fd, n, r};
}

__attribute__((constructor)) static void start(void) {
    real_read = (ssize_t (*)(int, void *, size_t))dlsym(RTLD_NEXT, "read");
    real_write = (ssize_t (*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    real_close = (int (*)(int))dlsym(RTLD_NEXT, "close");
    real_fork = (pid_t (*)(void))dlsym(RTLD_NEXT, "fork");
    const char *out = getenv("PHASES_SHIM_OUT");
    if (out) strncpy(out_path, out, sizeof out_path - 1);
    unsetenv("LD_PRELOAD");
    unsetenv("PHASES_SHIM_OUT");
    record('S', 0, 0, 0);
}

__attribute__((destructor)) static void finish(void) {
    record('E', 0, 0, 0);
    if (!out_path[0]) return;
    FILE *f = fopen(out_path, "w");
    if (!f) return;
    int n = count < MAX_EVENTS ? count : MAX_EVENTS;
    for (int i = 0; i < n; i++)
        fprintf(f, "%.6f %c %d %ld %ld\n", events[i].t, events[i].op, events[i].fd,
                events[i].n, events[i].r);
    fclose(f);
}

ssize_t read(int fd, void *buf, size_t n) {
    ssize_t r = real_read(fd, buf, n);
    if (fd >= 3) record('R', fd, (long)n, (long)r);
    return r;
}

ssize_t write(int fd, const void *buf, size_t n) {
    if (fd >= 3) record('w', fd, (long)n, 0);
    ssize_t r = real_write(fd, buf, n);
    if (fd >= 3) record('W', fd, (long)n, (long)r);
    return r;
}

int close(int fd) {
    record('C', fd, 0, 0);
    return real_close(fd);
}

pid_t fork(void) {
    record('F', 0, 0, 0);
    pid_t pid = real_fork();
    if (pid > 0) record('f', pid, 0, 0);
    return pid;
}
