/*
 * The native launcher's part of the warm handover that makes a warm session the same program
 * as a cold one (included by launcher.c; orc_executor/launch/client.py and launch/state.py do
 * the same in Python):
 *
 *   - what a program inherits across fork+exec, sent with the launch: in the JSON header
 *     (`"handover": 1`, `umask`, `nice`, `sigmask` and `sigign`: bit N-1 = signal N,
 *     `rlimits`: [cur, max] per resource 0..RLIM_NLIMITS-1, -1 = RLIM_INFINITY; `cpus`: the
 *     CPU affinity mask in hex, `sched`: [policy, priority], `ioprio`, `personality`), and two fds
 *     after the stdio ones: the working directory (O_PATH) and a memfd holding `environ`
 *     (each entry NUL-terminated, in order; any size);
 *   - the acknowledgement: 'A', the session process's pid (4 bytes, little-endian), and a
 *     pidfd of it (SCM_RIGHTS; absent where the kernel has none);
 *   - then signals this process receives are delivered to the session process.
 */
#ifndef ORC_LAUNCHER_STATE_H
#define ORC_LAUNCHER_STATE_H

#include <poll.h>
#include <sched.h>
#include <sys/personality.h>
#include <sys/wait.h>

extern char **environ;

/* The launch header's largest size (at most handover.MAX_LAUNCH_HEADER: a longer datagram is
   truncated, so refused). */
#define HEADER_MAX 2048

/* The warm handover's constants, the values of orc_executor/serve/handover.py (its
   HANDOVER_VERSION, Control.ACKNOWLEDGE, ACK_SIZE, EXIT_STATUS_SIZE): the unit test
   tests/unit/serve/test_handover.py checks that they agree. */
#define ORC_HANDOVER_VERSION 1
#define ORC_HANDOVER_ACKNOWLEDGE 'A'
#define ORC_HANDOVER_ACK_SIZE 5
#define ORC_HANDOVER_EXIT_STATUS_SIZE 4

/* Signals forwarded to the session process (SIGTSTP and SIGCONT: see on_forwarded). */
static const int forwarded[] = {SIGINT,  SIGTERM,  SIGHUP,  SIGQUIT, SIGUSR1,
                                SIGUSR2, SIGWINCH, SIGCONT, SIGTSTP, SIGALRM};
#define N_FORWARDED (sizeof forwarded / sizeof forwarded[0])

static int session_pidfd = -1;
static pid_t session_pid;

static int append(char *out, size_t size, const char *fmt, unsigned long long a,
                  unsigned long long b) {
    size_t len = strlen(out);
    int n = snprintf(out + len, size - len, fmt, a, b);
    return n > 0 && (size_t)n < size - len;
}

/* Bit N-1 set for each signal N (1..64) whose disposition is SIG_IGN. */
static unsigned long long ignored_signals(void) {
    unsigned long long mask = 0;
    for (int sig = 1; sig <= 64; sig++) {
        struct sigaction sa;
        if (sigaction(sig, NULL, &sa) == 0 && !(sa.sa_flags & SA_SIGINFO) &&
            sa.sa_handler == SIG_IGN)
            mask |= 1ULL << (sig - 1);
    }
    return mask;
}

static long long rlim_json(rlim_t v) { return v == RLIM_INFINITY ? -1 : (long long)v; }

/* Append `, "cpus": "HEX", "sched": [policy, priority], "ioprio": N, "personality": N`. */
static int sched_json(char *out, size_t size) {
    cpu_set_t cpus;
    struct sched_param param;
    char hex[CPU_SETSIZE / 4 + 1];
    size_t n = 0;
    int policy, started = 0;
    long ioprio;
    if (sched_getaffinity(0, sizeof cpus, &cpus) != 0) return 0;
    for (int nib = CPU_SETSIZE / 4 - 1; nib >= 0; nib--) {
        int v = 0;
        for (int b = 3; b >= 0; b--) v = v << 1 | (CPU_ISSET(nib * 4 + b, &cpus) ? 1 : 0);
        if (v || started || nib == 0) {
            hex[n++] = "0123456789abcdef"[v];
            started = 1;
        }
    }
    hex[n] = 0;
    policy = sched_getscheduler(0);
    if (policy < 0 || sched_getparam(0, &param) != 0) return 0;
    ioprio = syscall(SYS_ioprio_get, 1, 0);
    if (ioprio < 0) return 0;
    {
        size_t len = strlen(out);
        int k = snprintf(out + len, size - len,
                         ", \"cpus\": \"%s\", \"sched\": [%d, %d], \"ioprio\": %ld, "
                         "\"personality\": %d", hex, policy, param.sched_priority, ioprio,
                         personality(0xffffffff));
        return k > 0 && (size_t)k < size - len;
    }
}

/* Append `, "handover": 1, "umask": ..., ...` to the header; 0 if it does not fit. */
static int state_json(char *out, size_t size) {
    sigset_t mask;
    unsigned long long blocked = 0;
    mode_t um = umask(0);
    int nice;
    umask(um);
    sigprocmask(SIG_BLOCK, NULL, &mask);
    for (int sig = 1; sig <= 64; sig++)
        if (sigismember(&mask, sig) == 1) blocked |= 1ULL << (sig - 1);
    errno = 0;
    nice = getpriority(PRIO_PROCESS, 0);
    if (errno) return 0;
    {
        size_t len = strlen(out);
        int n = snprintf(out + len, size - len, ", \"handover\": %d, \"umask\": %u, \"nice\": %d",
                         ORC_HANDOVER_VERSION, (unsigned)um, nice);
        if (n <= 0 || (size_t)n >= size - len) return 0;
    }
    if (!append(out, size, ", \"sigmask\": %llu, \"sigign\": %llu", blocked, ignored_signals()))
        return 0;
    if (!sched_json(out, size)) return 0;
    if (!append(out, size, ", \"rlimits\": [", 0, 0)) return 0;
    for (int r = 0; r < RLIM_NLIMITS; r++) {
        struct rlimit rl;
        if (getrlimit(r, &rl) != 0) return 0;
        if (!append(out, size, r ? ", [%lld, %lld]" : "[%lld, %lld]",
                    (unsigned long long)rlim_json(rl.rlim_cur),
                    (unsigned long long)rlim_json(rl.rlim_max)))
            return 0;
    }
    return append(out, size, "]", 0, 0);
}

/* A memfd holding environ (entries NUL-terminated), or -1. */
static int environ_fd(void) {
    size_t total = 0, at = 0;
    char *buf;
    int fd = (int)syscall(SYS_memfd_create, "orc-executor-environ", MFD_CLOEXEC);
    if (fd < 0) return -1;
    for (char **e = environ; e && *e; e++) total += strlen(*e) + 1;
    buf = malloc(total ? total : 1);
    if (!buf) {
        close(fd);
        return -1;
    }
    for (char **e = environ; e && *e; e++) {
        size_t n = strlen(*e) + 1;
        memcpy(buf + at, *e, n);
        at += n;
    }
    at = 0;
    while (at < total) {
        ssize_t n = write(fd, buf + at, total - at);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            free(buf);
            close(fd);
            return -1;
        }
        at += (size_t)n;
    }
    free(buf);
    return fd;
}

static void block_forwarded(sigset_t *old) {
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < N_FORWARDED; i++) sigaddset(&set, forwarded[i]);
    sigprocmask(SIG_BLOCK, &set, old);
}

/* 'A', the pid and (if sent) a pidfd: 1 if the session was acknowledged. */
static int receive_ack(int reply) {
    unsigned char buf[ORC_HANDOVER_ACK_SIZE];
    size_t got = 0;
    while (got < sizeof buf) {
        union {
            char buf[CMSG_SPACE(sizeof(int))];
            struct cmsghdr align;
        } ctrl;
        struct iovec iov = {buf + got, sizeof buf - got};
        struct msghdr msg;
        ssize_t n;
        memset(&msg, 0, sizeof msg);
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctrl.buf;
        msg.msg_controllen = sizeof ctrl.buf;
        n = recvmsg(reply, &msg, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return 0;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
            if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS &&
                cm->cmsg_len == CMSG_LEN(sizeof(int)))
                memcpy(&session_pidfd, CMSG_DATA(cm), sizeof(int));
        got += (size_t)n;
        if (buf[0] != ORC_HANDOVER_ACKNOWLEDGE) return 0;
    }
    session_pid = (pid_t)((uint32_t)buf[1] | (uint32_t)buf[2] << 8 | (uint32_t)buf[3] << 16 |
                          (uint32_t)buf[4] << 24);
    return session_pid > 0;
}

static void send_to_session(int sig) {
#ifdef SYS_pidfd_send_signal
    if (session_pidfd >= 0 && syscall(SYS_pidfd_send_signal, session_pidfd, sig, NULL, 0) == 0)
        return;
#endif
    kill(session_pid, sig);
}

/* The session process's disposition of `sig` from /proc: 0 default, 1 ignored, 2 caught. */
static int session_disposition(int sig) {
    char path[64], buf[4096];
    ssize_t n;
    int fd, result = 0;
    snprintf(path, sizeof path, "/proc/%d/status", (int)session_pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    for (int k = 0; k < 2; k++) {
        const char *key = k ? "\nSigCgt:\t" : "\nSigIgn:\t";
        const char *p = strstr(buf, key);
        if (p && (strtoull(p + strlen(key), NULL, 16) >> (sig - 1)) & 1) result = k + 1;
    }
    return result;
}

static void on_forwarded(int sig) {
    int saved = errno;
    if (sig == SIGTSTP) {
        /* The session process is in a process group of its own with no parent in this
           terminal session (an orphaned group): the kernel discards SIGTSTP's default stop
           there. A program that catches SIGTSTP gets it; otherwise it is stopped (SIGSTOP),
           and so is this launcher, which the shell sees as the stopped job. */
        int d = session_disposition(SIGTSTP);
        if (d == 2)
            send_to_session(SIGTSTP);
        else if (d == 0) {
            send_to_session(SIGSTOP);
            kill(getpid(), SIGSTOP);
        }
    } else {
        send_to_session(sig);
    }
    errno = saved;
}

/* Forward the signals the controller left not ignored, then restore the launch's mask
   (a signal that arrived meanwhile is forwarded now). */
static void forward_signals(const sigset_t *launch_mask) {
    sigset_t unblock;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_forwarded;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    for (size_t i = 0; i < N_FORWARDED; i++) {
        struct sigaction old;
        if (sigaction(forwarded[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN) continue;
        sigaction(forwarded[i], &sa, NULL);
    }
    sigprocmask(SIG_SETMASK, launch_mask, NULL);
    /* The forwarded signals are delivered here even if the controller blocked them: the
       session process's program still has them blocked (it got the mask), as it would. */
    sigemptyset(&unblock);
    for (size_t i = 0; i < N_FORWARDED; i++) sigaddset(&unblock, forwarded[i]);
    sigprocmask(SIG_UNBLOCK, &unblock, NULL);
}

#endif
