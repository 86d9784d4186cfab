/*
 * orc-executor's native launcher: the program controllers start as `orc-executor`.
 *
 * A controller launches its executor once per session (`llvm-jitlink -oop-executor=...`
 * starts `orc-executor filedescs=IN,OUT`), so the start-up time of that process is paid on
 * every run, and a Python interpreter's start is much slower than this launcher's (figures:
 * scripts/bench-notes.md). It does what `orc_executor/launch/client.py` does on its warm
 * path, in C:
 *
 *   - if the command line is a pipe-style launch (`filedescs=IN,OUT`, `pipe:adopt=IN,OUT`,
 *     `socket:adopt=FD`, `fd=FD`, `IN OUT`) and `orc-executor serve` is listening on the warm
 *     socket (`$ORC_EXECUTOR_WARM_SOCKET`, else `warm-VERSION-HASH.sock` in
 *     `$XDG_RUNTIME_DIR/orc-executor/`, else in `/tmp/orc-executor-UID/`, a unix datagram
 *     socket, in a directory verified to be this user's alone: warm_address), it hands the protocol fds
 *     and stdin/stdout/stderr to one of the server's ready session processes in one datagram
 *     (SCM_RIGHTS: first one end of a socketpair for the reply, then the fds; the data is a
 *     JSON header naming the controller's pid, `$ORC_EXECUTOR_LLVM_VERSION`, `uname -m` and this
 *     process's state: launcher_state.h), which a ready process receives itself; once that
 *     process acknowledges the session on the reply socket (`A`, its pid and a pidfd) it
 *     forwards signals to it (launcher_state.h), closes its copies, waits for the session's exit status (4 bytes, little-endian,
 *     signed: negative = killed by that signal; written by the server) and ends the same way;
 *   - otherwise (no server, no acknowledgement, `ORC_EXECUTOR_COLD` set, any other command
 *     line) it execs the Python entry point in this same process (same pid, same fds): the
 *     interpreter next to this file (`python3`/`python` in the same directory, as in a venv's bin/), or
 *     `$ORC_EXECUTOR_PYTHON`, or `python3` on PATH, with `-P -m orc_executor --cold`.
 *     When no server answered, it first starts one in the background (start_server), for
 *     the next launches.
 *
 * The wire format of the handover is the one `orc_executor.serve.worker` (accept mode) reads
 * (`orc_executor/serve/handover.py` decodes it; its constants: ORC_HANDOVER_* in
 * launcher_state.h). One
 * datagram (not a connection, then the fds) so that no ready process wakes before the launch
 * is complete: woken by a connect, they preempted this launcher before its sendmsg.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "launcher_state.h"

/* ASCII decimal digits up to `stop` (no sign, no space), at most INT_MAX, as
   io/spec.py's parse_fd: where `stop` is, or NULL. */
static const char *parse_digits(const char *s, char stop, int *out) {
    long long v = 0;
    if (*s < '0' || *s > '9') return NULL;
    for (; *s >= '0' && *s <= '9'; s++) {
        v = v * 10 + (*s - '0');
        if (v > INT_MAX) return NULL;
    }
    if (*s != stop) return NULL;
    *out = (int)v;
    return s;
}

static int parse_int(const char *s, int *out) {
    return parse_digits(s, 0, out) != NULL;
}

static int parse_pair(const char *s, int fds[2]) {
    const char *comma = parse_digits(s, ',', &fds[0]);
    return comma && parse_int(comma + 1, &fds[1]);
}

/* The protocol fds a pipe-style command line names (1 = found), as io/spec.py's pipe_fds
   (tests/unit/io/test_spec.py runs both over the same command lines). */
static int pipe_fds(int argc, char **argv, int fds[2]) {
    const char *rest[8];
    int n = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "debug") || !strncmp(argv[i], "test-", 5)) continue;
        if (argv[i][0] == '-') return 0; /* an option: the full CLI decides */
        if (n == 8) return 0;
        rest[n++] = argv[i];
    }
    if (n == 0 || n > 2) return 0;
    if (!strncmp(rest[0], "filedescs=", 10)) return n == 1 && parse_pair(rest[0] + 10, fds);
    if (!strncmp(rest[0], "pipe:adopt=", 11)) return n == 1 && parse_pair(rest[0] + 11, fds);
    if (!strncmp(rest[0], "socket:adopt=", 13)) {
        if (n != 1 || !parse_int(rest[0] + 13, &fds[0])) return 0;
        fds[1] = fds[0];
        return 1;
    }
    if (!strncmp(rest[0], "fd=", 3)) {
        if (n != 1 || !parse_int(rest[0] + 3, &fds[0])) return 0;
        fds[1] = fds[0];
        return 1;
    }
    return n == 2 && parse_int(rest[0], &fds[0]) && parse_int(rest[1], &fds[1]);
}

/* ---- the warm socket: its name, its directory verified ----------------------------------- */

#ifndef ORC_EXECUTOR_VERSION
#define ORC_EXECUTOR_VERSION "0"
#endif

/* The installation this launcher belongs to: FNV-1a (64 bits) of the real path of its own
   directory (a venv's bin/), as orc_executor.launch.warmdir.install_hash computes it. */
static unsigned long long install_hash(void) {
    char self[PATH_MAX];
    unsigned long long h = 14695981039346656037ULL;
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    char *slash;
    if (n <= 0) return 0;
    self[n] = 0;
    slash = strrchr(self, '/');
    if (slash && slash != self) *slash = 0;
    for (const char *p = self; *p; p++) {
        h ^= (unsigned char)*p;
        h *= 1099511628211ULL;
    }
    return h;
}

/* $ORC_EXECUTOR_WARM_SOCKET, else DIR/warm-VERSION-HASH.sock in $XDG_RUNTIME_DIR/orc-executor
   or /tmp/orc-executor-UID: one server per user and per installation. */
static int warm_socket_path(char *out, size_t size) {
    const char *env = getenv("ORC_EXECUTOR_WARM_SOCKET");
    const char *runtime = getenv("XDG_RUNTIME_DIR");
    char name[96];
    int n;
    snprintf(name, sizeof name, "warm-%s-%016llx.sock", ORC_EXECUTOR_VERSION, install_hash());
    if (env && *env)
        n = snprintf(out, size, "%s", env);
    else if (runtime && *runtime)
        n = snprintf(out, size, "%s/orc-executor/%s", runtime, name);
    else
        n = snprintf(out, size, "/tmp/orc-executor-%u/%s", (unsigned)getuid(), name);
    return n > 0 && (size_t)n < size;
}

enum { WARM_DIR_MISSING = -1, WARM_DIR_UNSAFE = -2 };

/* Split `path` into its directory (into dir) and its file name (returned). */
static const char *split_path(const char *path, char *dir, size_t size) {
    const char *slash = strrchr(path, '/');
    size_t n;
    if (!slash) {
        snprintf(dir, size, ".");
        return path;
    }
    n = slash == path ? 1 : (size_t)(slash - path);
    if (n >= size) n = size - 1;
    memcpy(dir, path, n);
    dir[n] = 0;
    return slash + 1;
}

static int warm_dir_refused(const char *dir, const char *why) {
    fprintf(stderr, "orc-executor: warning: not using the warm socket directory %s: %s; "
            "starting cold\n", dir, why);
    return WARM_DIR_UNSAFE;
}

/* Open the warm socket's directory without following a symbolic link and check the opened
   directory itself (fstat): a directory, owned by this user, no access for group or others.
   Returns its fd (close-on-exec), WARM_DIR_MISSING, or WARM_DIR_UNSAFE after a warning on
   stderr (`quiet`: none). A socket file there must be a socket of this user too. */
static int open_warm_dir(const char *path, int quiet) {
    char dir[PATH_MAX], why[96];
    const char *name = split_path(path, dir, sizeof dir);
    struct stat st;
    int dfd = open(dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) {
        if (errno == ENOENT) return WARM_DIR_MISSING;
        snprintf(why, sizeof why, "%s", errno == ENOTDIR || errno == ELOOP
                 ? "a symbolic link or not a directory" : strerror(errno));
    } else if (fstat(dfd, &st) < 0) {
        snprintf(why, sizeof why, "%s", strerror(errno));
    } else if (st.st_uid != getuid()) {
        snprintf(why, sizeof why, "owned by uid %u, not by this user (uid %u)",
                 (unsigned)st.st_uid, (unsigned)getuid());
    } else if (st.st_mode & 077) {
        snprintf(why, sizeof why, "mode %04o (must be 0700)", (unsigned)(st.st_mode & 07777));
    } else if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
               (!S_ISSOCK(st.st_mode) || st.st_uid != getuid())) {
        snprintf(why, sizeof why, "%s is not a socket of this user", name);
    } else {
        return dfd;
    }
    if (dfd >= 0) close(dfd);
    return quiet ? WARM_DIR_UNSAFE : warm_dir_refused(dir, why);
}

/* Set when no server answered at a usable warm socket: main starts one (start_server). */
static char server_socket[PATH_MAX];
static int server_wanted;

/* The address to send a launch to: the warm socket, reached through the verified directory's
   fd (/proc/self/fd/N/NAME: a directory swapped after the check is never used, and the path
   may be longer than a socket address). 0: start
   cold (the directory is missing or unsafe; server_wanted set when a server may start). */
static int warm_address(struct sockaddr_un *addr) {
    char path[PATH_MAX], dir[PATH_MAX];
    const char *name;
    int dfd, n;
    if (!warm_socket_path(path, sizeof path)) return 0;
    dfd = open_warm_dir(path, 0);
    if (dfd == WARM_DIR_UNSAFE) return 0;
    snprintf(server_socket, sizeof server_socket, "%s", path);
    if (dfd == WARM_DIR_MISSING) {
        server_wanted = 1;
        return 0;
    }
    name = split_path(path, dir, sizeof dir);
    memset(addr, 0, sizeof *addr);
    addr->sun_family = AF_UNIX;
    /* dfd stays open (close-on-exec) for the send */
    n = snprintf(addr->sun_path, sizeof addr->sun_path, "/proc/self/fd/%d/%s", dfd, name);
    return n > 0 && (size_t)n < sizeof addr->sun_path;
}

/* Append `value` as a JSON string (or null) to out; 0 if it does not fit. */
static int json_str(char *out, size_t size, const char *value) {
    size_t len = strlen(out);
    if (!value || !*value) {
        if (len + 5 > size) return 0;
        strcpy(out + len, "null");
        return 1;
    }
    if (len + 1 >= size) return 0;
    out[len++] = '"';
    for (const char *p = value; *p; p++) {
        if ((unsigned char)*p < 0x20) continue; /* never valid in a version string */
        if (*p == '"' || *p == '\\') {
            if (len + 1 >= size) return 0;
            out[len++] = '\\';
        }
        if (len + 1 >= size) return 0;
        out[len++] = *p;
    }
    if (len + 2 > size) return 0;
    out[len++] = '"';
    out[len] = 0;
    return 1;
}

/* -1: go cold; otherwise the status to exit with (after mirroring a signal). */
static int try_warm(int argc, char **argv) {
    int fds[2];
    struct sockaddr_un addr;
    char header[HEADER_MAX];
    struct utsname uts;
    int sock, pair[2], reply, handed[8], cwd, env;
    struct msghdr msg;
    struct iovec iov;
    union {
        char buf[CMSG_SPACE(sizeof handed)];
        struct cmsghdr align;
    } ctrl;
    struct cmsghdr *cm;
    unsigned char status[ORC_HANDOVER_EXIT_STATUS_SIZE];
    size_t got = 0;
    int32_t value;
    sigset_t launch_mask;

    if (getenv("ORC_EXECUTOR_COLD") && *getenv("ORC_EXECUTOR_COLD")) return -1;
    if (!pipe_fds(argc, argv, fds)) return -1;
    if (!warm_address(&addr)) return -1;
    snprintf(header, sizeof header,
             "{\"kind\": \"fdpair\", \"stdio\": true, \"controller_pid\": %d, \"llvm_version\": ",
             (int)getppid());
    if (!json_str(header, sizeof header - 2, getenv("ORC_EXECUTOR_LLVM_VERSION"))) return -1;
    /* The machine this launcher runs on: a server of another architecture (e.g. a native one
       next to an emulated one) refuses the session, and the cold path runs. */
    if (uname(&uts) == 0) {
        if (strlen(header) + 14 >= sizeof header) return -1;
        strcat(header, ", \"machine\": ");
        if (!json_str(header, sizeof header - 2, uts.machine)) return -1;
    }
    /* Everything a program inherits across exec, taken before anything here changes it. */
    if (!state_json(header, sizeof header - 2)) return -1;
    strcat(header, "}");
    cwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (cwd < 0) return -1;
    env = environ_fd();
    if (env < 0) {
        close(cwd);
        return -1;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0) {
        close(cwd);
        close(env);
        return -1;
    }
    reply = pair[0];
    sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0) {
        close(pair[0]);
        close(pair[1]);
        close(cwd);
        close(env);
        return -1;
    }

    handed[0] = pair[1];
    handed[1] = fds[0];
    handed[2] = fds[1];
    handed[3] = 0;
    handed[4] = 1;
    handed[5] = 2;
    handed[6] = cwd;
    handed[7] = env;
    iov.iov_base = header;
    iov.iov_len = strlen(header);
    memset(&msg, 0, sizeof msg);
    memset(&ctrl, 0, sizeof ctrl);
    msg.msg_name = &addr;
    msg.msg_namelen = sizeof addr;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctrl.buf;
    msg.msg_controllen = sizeof ctrl.buf;
    cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof handed);
    memcpy(CMSG_DATA(cm), handed, sizeof handed);
    /* Signals to forward wait (blocked) until the session process is known. */
    block_forwarded(&launch_mask);
    if (sendmsg(sock, &msg, MSG_NOSIGNAL) < 0) { /* no server there: a stale socket file */
        if (errno == ECONNREFUSED || errno == ENOENT) server_wanted = 1;
        close(sock);
        close(pair[0]);
        close(pair[1]);
        close(cwd);
        close(env);
        sigprocmask(SIG_SETMASK, &launch_mask, NULL);
        return -1;
    }
    close(sock);
    close(cwd);
    close(env);
    close(pair[1]); /* the session process's end now: EOF here if it goes away unanswered */
    /* Wait for the session process to acknowledge the session (one byte 'A', its pid, and a
       pidfd of it). Anything else (the reply socket closed: no process could take it, the
       server is stopping, the launch was refused) means nothing was started, and the cold
       path runs with our fds and signal mask intact. */
    if (!receive_ack(reply)) {
        close(reply);
        sigprocmask(SIG_SETMASK, &launch_mask, NULL);
        return -1;
    }
    /* The session process owns the pipes now: drop ours so EOF reaches the controller
       when that process ends. */
    close(fds[0]);
    if (fds[1] != fds[0]) close(fds[1]);
    forward_signals(&launch_mask);

    while (got < sizeof status) {
        ssize_t n = recv(reply, status + got, sizeof status - got, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(reply);
    if (got < sizeof status) {
        static const char msg_gone[] = "orc-executor: the warm server went away during the session\n";
        if (write(2, msg_gone, sizeof msg_gone - 1) < 0) { /* nothing more to report */ }
        return 1;
    }
    value = (int32_t)((uint32_t)status[0] | (uint32_t)status[1] << 8 |
                      (uint32_t)status[2] << 16 | (uint32_t)status[3] << 24);
    if (value < 0) { /* mirror a session killed by a signal */
        sigset_t one;
        signal(-value, SIG_DFL);
        sigemptyset(&one);
        sigaddset(&one, -value);
        sigprocmask(SIG_UNBLOCK, &one, NULL);
        kill(getpid(), -value);
        return 128 - value;
    }
    return value & 0xff;
}

static int executable(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

static void exec_python(int argc, char **argv) {
    char self[PATH_MAX], python[PATH_MAX + 16], ignored[32];
    const char *env = getenv("ORC_EXECUTOR_PYTHON");
    char **args = calloc((size_t)argc + 6, sizeof *args);
    ssize_t n;
    int k = 0;
    if (!args) {
        perror("orc-executor");
        _exit(1);
    }
    python[0] = 0;
    if (env && *env) {
        snprintf(python, sizeof python, "%s", env);
    } else if ((n = readlink("/proc/self/exe", self, sizeof self - 1)) > 0) {
        char *slash;
        self[n] = 0;
        slash = strrchr(self, '/');
        if (slash) {
            *slash = 0;
            snprintf(python, sizeof python, "%s/python3", self);
            if (!executable(python)) snprintf(python, sizeof python, "%s/python", self);
            if (!executable(python)) python[0] = 0;
        }
    }
    args[k++] = python[0] ? python : "python3";
    args[k++] = "-P"; /* never the working directory on sys.path (orc_executor/interpreter.py) */
    args[k++] = "-m";
    args[k++] = "orc_executor";
    args[k++] = "--cold";
    /* The signals the controller left ignored: the interpreter sets SIGPIPE and SIGXFSZ to
       SIG_IGN itself at start-up, so the cold path learns their dispositions from here. */
    snprintf(ignored, sizeof ignored, "--ignored=%llx", (unsigned long long)ignored_signals());
    args[k++] = ignored;
    for (int i = 1; i < argc; i++) args[k++] = argv[i];
    args[k] = NULL;
    if (python[0])
        execv(python, args);
    else
        execvp("python3", args);
    fprintf(stderr, "orc-executor: cannot start the Python interpreter %s: %s\n", args[0],
            strerror(errno));
    _exit(127);
}

/* ---- a server on demand ----------------------------------------------------------------- */

/* DIR/NAME with NAME's ".sock" replaced by `ext` (or `ext` appended), as
   orc_executor.launch.warmdir.sibling: the server's lock and log files. */
static int sibling(const char *name, const char *ext, char *out, size_t size) {
    size_t len = strlen(name);
    int n;
    if (len > 5 && !strcmp(name + len - 5, ".sock")) len -= 5;
    n = snprintf(out, size, "%.*s%s", (int)len, name, ext);
    return n > 0 && (size_t)n < size;
}

static void close_fds_from(int lowest) {
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)lowest, ~0U, 0) == 0) return;
#endif
    for (long fd = lowest, max = sysconf(_SC_OPEN_MAX); fd < max && fd < 65536; fd++)
        close((int)fd);
}

/* Wait until process `pid` has ended, at most `ms` milliseconds. */
static void wait_for_exit(pid_t pid, int ms) {
    struct pollfd pfd;
#ifdef SYS_pidfd_open
    pfd.fd = (int)syscall(SYS_pidfd_open, pid, 0);
#else
    pfd.fd = -1;
#endif
    if (pfd.fd >= 0) {
        pfd.events = POLLIN;
        while (poll(&pfd, 1, ms) < 0 && errno == EINTR) {
        }
        close(pfd.fd);
        return;
    }
    for (int waited = 0; waited < ms && kill(pid, 0) == 0; waited += 10) usleep(10000);
}

/* In the detached process: take the server lock (else another server is starting or
   running: exit), put stdin/stdout on /dev/null and stderr on the log beside the socket,
   drop every other fd, wait for the session that started us to end (at most a second: the
   server's start-up does not compete with it for the CPU), and exec
   `orc-executor serve --auto` with the lock as fd 3. */
static void become_server(pid_t launcher) {
    char dir[PATH_MAX], lock_name[PATH_MAX], log_name[PATH_MAX];
    const char *name = split_path(server_socket, dir, sizeof dir);
    char *args[] = {"orc-executor", "serve", "--auto", "--socket", server_socket, "--lock-fd",
                    "3", NULL};
    struct stat st;
    sigset_t none;
    int null, dfd, lock, log;
    null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0) _exit(1);
    if (!sibling(name, ".lock", lock_name, sizeof lock_name) ||
        !sibling(name, ".log", log_name, sizeof log_name))
        _exit(1);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) _exit(1);
    dfd = open_warm_dir(server_socket, 1);
    if (dfd < 0) _exit(1);
    lock = openat(dfd, lock_name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (lock < 0 || flock(lock, LOCK_EX | LOCK_NB) < 0) _exit(0); /* one is starting */
    if (ftruncate(lock, 0) == 0) dprintf(lock, "%d\n", (int)getpid()); /* the server's pid */
    log = openat(dfd, log_name, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (log >= 0 && fstat(log, &st) == 0 && st.st_size > (1 << 20) && ftruncate(log, 0) < 0) {
        /* keep appending */
    }
    if ((log >= 0 && dup2(log, 2) < 0) || dup2(lock, 3) < 0) _exit(1);
    close_fds_from(4);
    if (chdir("/") < 0) _exit(1);
    umask(077);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP) signal(sig, SIG_DFL);
    wait_for_exit(launcher, 1000);
    execv("/proc/self/exe", args);
    _exit(127);
}

/* Start `orc-executor serve --auto` in the background, fully detached (its own session, no
   fd of ours, not our child: the intermediate process exits at once and is reaped here), so
   the next launches are warm. Off with ORC_EXECUTOR_AUTO_SERVE=0. */
static void start_server(void) {
    const char *env = getenv("ORC_EXECUTOR_AUTO_SERVE");
    pid_t pid, launcher = getpid();
    int status;
    if (env && !strcmp(env, "0")) return;
    pid = fork();
    if (pid < 0) return;
    if (pid == 0) {
        if (setsid() < 0 || fork() != 0) _exit(0);
        become_server(launcher);
    }
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
}

int main(int argc, char **argv) {
    int status = try_warm(argc, argv);
    if (status >= 0) return status;
    if (server_wanted) start_server();
    exec_python(argc, argv);
    return 127;
}
