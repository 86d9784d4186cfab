/*
 * orc-executor's native launcher: the program controllers start as `orc-executor`.
 *
 * A controller launches its executor once per session (`llvm-jitlink -oop-executor=...`
 * starts `orc-executor filedescs=IN,OUT`), so the start-up time of that process is paid on
 * every run. A Python interpreter alone needs ~15 ms to start; this launcher needs well under
 * one. It does what `orc_executor/launch.py` does on its warm path, in C:
 *
 *   - if the command line is a pipe-style launch (`filedescs=IN,OUT`, `pipe:adopt=IN,OUT`,
 *     `socket:adopt=FD`, `fd=FD`, `IN OUT`) and `orc-executor serve` is listening on the warm
 *     socket (`$ORC_EXECUTOR_WARM_SOCKET`, else `$XDG_RUNTIME_DIR/orc-executor/warm.sock`, else
 *     `/tmp/orc-executor-UID/warm.sock`, a unix datagram socket), it hands the protocol fds
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
 *     `$ORC_EXECUTOR_PYTHON`, or `python3` on PATH, with `-P -m orc_executor.launch --cold`.
 *
 * The wire format of the handover is the one `orc_executor.worker` (accept mode) reads. One
 * datagram (not a connection, then the fds) so that no ready process wakes before the launch
 * is complete: woken by a connect, they preempted this launcher before its sendmsg.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "launcher_state.h"

static int parse_int(const char *s, int *out) {
    char *end;
    long v;
    if (!*s) return 0;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || v < 0 || v > INT_MAX) return 0;
    *out = (int)v;
    return 1;
}

static int parse_pair(const char *s, int fds[2]) {
    char buf[64];
    char *comma;
    if (strlen(s) >= sizeof buf) return 0;
    strcpy(buf, s);
    comma = strchr(buf, ',');
    if (!comma) return 0;
    *comma = 0;
    return parse_int(buf, &fds[0]) && parse_int(comma + 1, &fds[1]);
}

/* The protocol fds a pipe-style command line names (1 = found), as launch._pipe_fds. */
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

static int warm_socket_path(char *out, size_t size) {
    const char *env = getenv("ORC_EXECUTOR_WARM_SOCKET");
    const char *runtime = getenv("XDG_RUNTIME_DIR");
    int n;
    if (env && *env)
        n = snprintf(out, size, "%s", env);
    else if (runtime && *runtime)
        n = snprintf(out, size, "%s/orc-executor/warm.sock", runtime);
    else
        n = snprintf(out, size, "/tmp/orc-executor-%u/warm.sock", (unsigned)getuid());
    return n > 0 && (size_t)n < size;
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
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
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
    unsigned char status[4];
    size_t got = 0;
    int32_t value;
    sigset_t launch_mask;

    if (getenv("ORC_EXECUTOR_COLD") && *getenv("ORC_EXECUTOR_COLD")) return -1;
    if (!pipe_fds(argc, argv, fds)) return -1;
    if (!warm_socket_path(path, sizeof path)) return -1;
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
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, path, strlen(path));

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
    args[k++] = "orc_executor.launch";
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

int main(int argc, char **argv) {
    int status = try_warm(argc, argv);
    if (status >= 0) return status;
    exec_python(argc, argv);
    return 127;
}
