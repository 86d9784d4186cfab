"""Issue 21, items 1 and 4: a warm session is the same program as a cold one. Whatever a
JIT'd program can observe of what it inherits across fork+exec (working directory,
environment, umask, resource limits, signal mask, ignored signals, nice) is the same with
``orc-executor serve`` running (native and Python launchers), started cold, and with
``llvm-jitlink-executor``; so are a relative-path file write, a ``dlopen`` through
``LD_LIBRARY_PATH``, a SIGINT to the controller's process group caught by the program, and
the end of the session when the launcher is killed. All driven by llvm-jitlink 22."""

from __future__ import annotations

import os
import resource
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orc_executor.native.api import lib
from tests.e2e.test_warm_handover import Server, _children
from tests.support.jitrun import compile_c, compile_shared
from tests.support.procs import alive

LLVM22 = Path("/usr/lib/llvm-22/bin")
EXE = str(Path(sys.executable).parent / "orc-executor")
REF = str(LLVM22 / "llvm-jitlink-executor")

#: Prints everything a program inherits across exec, one item per line; writes its first
#: argument (a relative path) with the same text; ``ppid=`` last (the one line that differs).
PROBE_C = r"""
#define _GNU_SOURCE
#include <locale.h>
#include <sched.h>
#include <signal.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
extern char **environ;
static void report(FILE *out) {
    char cwd[4096];
    uint64_t hash = 1469598103934665603ULL;
    size_t count = 0, bytes = 0;
    mode_t um = umask(0);
    sigset_t mask;
    umask(um);
    fprintf(out, "cwd=%s\n", getcwd(cwd, sizeof cwd) ? cwd : "?");
    for (char **e = environ; *e; e++) {
        for (const char *p = *e; *p; p++) hash = (hash ^ (unsigned char)*p) * 1099511628211ULL;
        hash = (hash ^ 0xff) * 1099511628211ULL;
        count++;
        bytes += strlen(*e) + 1;
    }
    fprintf(out, "environ: %zu entries, %zu bytes, hash %016llx\n", count, bytes,
            (unsigned long long)hash);
    for (const char *const *v = (const char *const[]){"PROBE_VAR", "HOME", "PATH", "TZ",
                                                       "LD_LIBRARY_PATH", NULL}; *v; v++)
        fprintf(out, "getenv(%s)=%s\n", *v, getenv(*v) ? getenv(*v) : "(unset)");
    fprintf(out, "umask=%03o\n", (unsigned)um);
    for (int r = 0; r < RLIM_NLIMITS; r++) {
        struct rlimit rl;
        getrlimit(r, &rl);
        fprintf(out, "rlimit[%d]=%lld,%lld\n", r, (long long)rl.rlim_cur,
                (long long)rl.rlim_max);
    }
    sigprocmask(SIG_BLOCK, NULL, &mask);
    fprintf(out, "blocked:");
    for (int s = 1; s < 65; s++) if (sigismember(&mask, s) == 1) fprintf(out, " %d", s);
    fprintf(out, "\ndispositions:");
    for (int s = 1; s < 65; s++) {
        struct sigaction sa;
        if (sigaction(s, NULL, &sa) != 0) continue;
        fprintf(out, " %d:%s", s, sa.sa_handler == SIG_IGN ? "ign"
                               : sa.sa_handler == SIG_DFL ? "dfl" : "handler");
    }
    fprintf(out, "\nnice=%d\n", getpriority(PRIO_PROCESS, 0));
    fprintf(out, "locale=%s\n", setlocale(LC_ALL, NULL));
    cpu_set_t cpus;
    sched_getaffinity(0, sizeof cpus, &cpus);
    fprintf(out, "cpus:");
    for (int c = 0; c < CPU_SETSIZE; c++) if (CPU_ISSET(c, &cpus)) fprintf(out, " %d", c);
    struct sched_param param;
    sched_getparam(0, &param);
    fprintf(out, "\nsched=%d,%d ioprio=%ld personality=%#x timerslack=%d\n",
            sched_getscheduler(0), param.sched_priority, syscall(SYS_ioprio_get, 1, 0),
            personality(0xffffffff), prctl(PR_GET_TIMERSLACK));
    FILE *oom = fopen("/proc/self/oom_score_adj", "r");
    int adj = -9999;
    if (oom) { if (fscanf(oom, "%d", &adj) != 1) adj = -9998; fclose(oom); }
    fprintf(out, "oom_score_adj=%d\n", adj);
    time_t t = 86400 * 180;
    struct tm tm;
    localtime_r(&t, &tm);
    fprintf(out, "localtime=%d:%02d %s\n", tm.tm_hour, tm.tm_min, tm.tm_zone);
}
int main(int argc, char **argv) {
    report(stdout);
    if (argc > 0) {
        FILE *f = fopen(argv[0], "w");  /* relative to the working directory */
        if (!f) { perror(argv[0]); return 2; }
        report(f);
        fclose(f);
    }
    printf("ppid=%d\n", (int)getppid());
    return 0;
}
"""

#: dlopen through LD_LIBRARY_PATH.
DLOPEN_C = r"""
#include <dlfcn.h>
#include <stdio.h>
#include <unistd.h>
int main(void) {
    void *h = dlopen("libprobe_dl.so", RTLD_NOW);
    if (!h) { printf("dlopen failed\n"); return 1; }
    int (*value)(void) = (int (*)(void))dlsym(h, "probe_value");
    printf("probe_value=%d\n", value ? value() : -1);
    printf("ppid=%d\n", (int)getppid());
    return 0;
}
"""

LIB_C = "int probe_value(void) { return 4242; }\n"

#: What runs at exit: exit handlers (libc functions, with heap arguments: the JIT'd code is
#: unmapped by then), an unflushed line on stdout, a file left open with buffered content
#: and, given a library's path, that library's destructor.
EXIT_C = r"""
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int __cxa_atexit(void (*fn)(void *), void *arg, void *dso);
int main(int argc, char **argv) {
    if (argc > 1 && !dlopen(argv[1], RTLD_NOW)) { printf("dlopen failed\n"); return 2; }
    FILE *out = fopen("left-open.txt", "w");
    fprintf(out, "written, never closed\n");
    __cxa_atexit((void (*)(void *))puts, strdup("exit handler: puts"), NULL);
    __cxa_atexit((void (*)(void *))perror, strdup("exit handler: perror"), NULL);
    printf("main done, no newline");
    return 5;
}
"""

LIB_DESTRUCTOR_C = r"""
#include <stdio.h>
__attribute__((destructor)) static void bye(void) { printf("library destructor\n"); }
"""

#: Waits in pause() for SIGINT; its handler reports it and ends the process. (Returning from
#: main instead, with the controller gone, leaves llvm-jitlink-executor 22 hanging forever.)
SIGNAL_C = r"""
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static void on_signal(int sig) {
    char msg[] = "handled 0\n";
    msg[8] = (char)('0' + sig % 10);
    write(1, msg, sizeof msg - 1);
    _exit(3);
}
int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    for (;;) pause();
}
"""

#: Catches the signal its first argument names (unless the second is "default"), waits in
#: pause(); its handler reports the signal and ends the process.
SIGNALS_C = r"""
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static void on_signal(int sig) {
    char msg[] = "handled 00\n";
    msg[8] = (char)('0' + sig / 10);
    msg[9] = (char)('0' + sig % 10);
    write(1, msg, sizeof msg - 1);
    _exit(3);
}
int main(int argc, char **argv) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    if (argc < 2 || strcmp(argv[1], "default")) sigaction(atoi(argv[0]), &sa, NULL);
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    for (;;) pause();
}
"""

#: Writes to stdout until that fails; reports how on stderr.
PIPE_C = r"""
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(void) {
    char buf[4096];
    memset(buf, 'x', sizeof buf);
    for (int i = 0; i < 100000; i++) {
        if (write(1, buf, sizeof buf) < 0) {
            fprintf(stderr, "write: %s\n", strerror(errno));
            return 4;
        }
    }
    return 0;
}
"""

#: Waits until killed.
SLEEP_C = r"""
#include <stdio.h>
#include <unistd.h>
int main(void) {
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    for (;;) pause();
}
"""

IOPRIO_IDLE = 3 << 13  # ionice -c3

MODES = ["cold", "warm", "cold-py", "warm-py"]


@pytest.fixture(scope="module")
def objs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("state")
    out = {name: compile_c(tmp, name, src) for name, src in
           {"probe": PROBE_C, "dlopen": DLOPEN_C, "signal": SIGNAL_C, "sleep": SLEEP_C,
            "signals": SIGNALS_C, "pipe": PIPE_C, "exit": EXIT_C}.items()}
    libdir = tmp / "lib"
    libdir.mkdir()
    compile_shared(tmp, "probe_dl", LIB_C, libdir)
    out["libdir"] = libdir
    out["libdtor"] = compile_shared(tmp, "dtor", LIB_DESTRUCTOR_C, libdir)
    py = tmp / "orc-executor-py"
    py.write_text(f"#!/bin/sh\nexec {sys.executable} -m orc_executor.launch.client \"$@\"\n")
    py.chmod(0o755)
    out["py-launcher"] = py
    ref = tmp / "ref-sh"
    ref.write_text(f"#!/bin/sh\nexec {REF} \"$@\"\n")
    ref.chmod(0o755)
    out["ref-sh"] = ref
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("statesock"))
    yield s
    s.stop()


def _executor(mode: str, objs: dict[str, Path]) -> str:
    return {"ref": REF, "ref-py": str(objs["ref-sh"]), "cold": EXE, "warm": EXE}.get(
        mode, str(objs["py-launcher"]))


def _ref(mode: str) -> str:
    """The reference run ``mode`` is compared with: the Python launcher runs through
    ``/bin/sh``, which adds to the environment, so its reference does too."""
    return "ref-py" if mode.endswith("-py") else "ref"


def _env(mode: str, server: Server, extra: dict[str, str]) -> dict[str, str]:
    """The environment of a ``mode`` run and of its reference (alike: the reference ignores
    ``ORC_EXECUTOR_COLD``)."""
    env = dict(server.env, **extra)
    if mode.startswith("cold"):
        env["ORC_EXECUTOR_COLD"] = "1"
    return env


def _unusual_state() -> None:
    """In the controller's process, before exec (so in everything it launches): state no
    server process has."""
    os.umask(0o027)
    os.nice(3)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 777), hard))
    resource.setrlimit(resource.RLIMIT_CORE, (12345 * 1024, resource.RLIM_INFINITY))
    resource.setrlimit(resource.RLIMIT_CPU, (3600, resource.RLIM_INFINITY))
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 30, resource.RLIM_INFINITY))
    signal.pthread_sigmask(signal.SIG_SETMASK, {signal.SIGUSR1, signal.SIGRTMIN + 3})
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    if lib.orc_set_ioprio(IOPRIO_IDLE) != 0:
        os._exit(99)


def _jitlink(mode: str, objs: dict[str, Path], obj: str, env: dict[str, str], cwd: Path,
             args: list[str] | None = None,
             preexec: Callable[[], None] | None = None) -> tuple[int, str, int]:
    cmd = [str(LLVM22 / "llvm-jitlink"), f"-oop-executor={_executor(mode, objs)}",
           str(objs[obj])]
    if args:
        cmd += ["-args", *args]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd,
                          preexec_fn=preexec) as p:
        out, err = p.communicate(timeout=60)
    assert p.returncode == 0 or obj != "probe", err
    return p.returncode, out.decode(), p.pid


def _differences(ours: tuple[int, str], ref: tuple[int, str]) -> list[str]:
    """The lines (and status) that differ, ours first."""
    import difflib

    out = [f"status {ours[0]} != {ref[0]}"] if ours[0] != ref[0] else []
    return out + [line for line in difflib.ndiff(ours[1].splitlines(), ref[1].splitlines())
                  if line[:1] in "+-"]


def _split_ppid(out: str) -> tuple[str, int]:
    rest, _, last = out.rstrip("\n").rpartition("\n")
    assert last.startswith("ppid="), out
    return rest, int(last[5:])


def _check_where(mode: str, ppid: int, controller: int, server: Server) -> None:
    """The program ran where ``mode`` says: in the controller's child, or in a warm process."""
    if mode.startswith("warm"):
        assert ppid == server.zygote(), "not served warm"
    else:
        assert ppid == controller


@pytest.mark.parametrize("mode", MODES)
def test_probe_sees_the_launching_process_state(objs: dict[str, Path], server: Server,
                                                tmp_path: Path, mode: str) -> None:
    """Every item the probe prints (and writes through a relative path) is the reference's,
    with a working directory, environment (over 300 KB, with a time zone), umask, limits,
    blocked and ignored signals and nice value that differ from the server's."""
    big = {f"PROBE_BIG{i}": chr(65 + i) * 100_000 for i in range(3)}
    extra = dict(big, PROBE_VAR="héllo wörld", TZ="Asia/Kolkata", HOME=str(tmp_path))
    results = {}
    for m in (_ref(mode), mode):
        work = tmp_path / "work dir"  # the same for both: /bin/sh puts it in $PWD
        work.mkdir(exist_ok=True)
        rc, out, pid = _jitlink(m, objs, "probe", _env(mode, server, extra), work,
                                ["out.txt"], _unusual_state)
        text, ppid = _split_ppid(out)
        _check_where(m, ppid, pid, server)
        written = (work / "out.txt").read_text()
        assert written == text + "\n"
        results[m] = (rc, text.replace(f"/{m}/", "/M/"))
    assert _differences(results[mode], results[_ref(mode)]) == []
    text = results[_ref(mode)][1]
    for line in ("umask=027", "nice=3", "getenv(PROBE_VAR)=héllo wörld", "localtime=5:30 IST",
                 f"cpus: {min(os.sched_getaffinity(0))}", "locale=C",
                 f"rlimit[{resource.RLIMIT_CORE}]={12345 * 1024},-1",
                 f"blocked: {int(signal.SIGUSR1)} {int(signal.SIGRTMIN) + 3}"):
        assert line in text.splitlines(), line
    assert f" {int(signal.SIGTTOU)}:ign" in text and f" {int(signal.SIGPIPE)}:dfl" in text
    assert f"sched={os.SCHED_BATCH},0 ioprio={IOPRIO_IDLE} " in text


@pytest.mark.parametrize("mode", MODES)
def test_probe_default_state(objs: dict[str, Path], server: Server, tmp_path: Path,
                             mode: str) -> None:
    """And with the state a shell gives (nothing changed)."""
    results = {}
    for m in (_ref(mode), mode):
        rc, out, pid = _jitlink(m, objs, "probe", _env(mode, server, {}), tmp_path)
        text, ppid = _split_ppid(out)
        _check_where(m, ppid, pid, server)
        results[m] = (rc, text)
    assert _differences(results[mode], results[_ref(mode)]) == []


@pytest.mark.parametrize("mode", MODES)
def test_dlopen_through_ld_library_path(objs: dict[str, Path], server: Server, tmp_path: Path,
                                        mode: str) -> None:
    """The loader reads LD_LIBRARY_PATH once, at start-up: a launch whose value differs from
    the server's starts cold (and finds the library, as the reference does)."""
    env = {"LD_LIBRARY_PATH": str(objs["libdir"])}
    results = {}
    for m in (_ref(mode), mode):
        rc, out, pid = _jitlink(m, objs, "dlopen", _env(mode, server, env), tmp_path)
        text, ppid = _split_ppid(out)
        assert ppid == pid  # cold, even with the server running
        results[m] = (rc, text)
    assert results[mode] == results[_ref(mode)] == (0, "probe_value=4242")


@pytest.mark.parametrize("launcher", ["warm", "warm-py"])
def test_dlopen_warm_with_the_servers_ld_library_path(objs: dict[str, Path], tmp_path: Path,
                                                      launcher: str) -> None:
    """A server started with the same LD_LIBRARY_PATH serves the launch warm."""
    lib = str(objs["libdir"])
    old = os.environ.get("LD_LIBRARY_PATH")
    os.environ["LD_LIBRARY_PATH"] = lib
    try:
        s = Server(tmp_path)
    finally:
        if old is None:
            del os.environ["LD_LIBRARY_PATH"]
        else:
            os.environ["LD_LIBRARY_PATH"] = old
    try:
        rc, out, _pid = _jitlink(launcher, objs, "dlopen", s.env, tmp_path)
        text, ppid = _split_ppid(out)
        assert ppid == s.zygote()
        assert (rc, text) == (0, "probe_value=4242")
    finally:
        s.stop()


def _read_line(stream: object, timeout: float) -> str:
    fd = stream.fileno()  # type: ignore[attr-defined]
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        assert select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0], data
        chunk = os.read(fd, 1)
        assert chunk, data
        data += chunk
    return data.decode()


def _start(mode: str, objs: dict[str, Path], obj: str, server: Server, env_mode: str,
           args: list[str] | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """llvm-jitlink in a process group of its own (in this session: not orphaned, so job
    control applies), once the program said ``ready PID``."""
    cmd = [str(LLVM22 / "llvm-jitlink"), f"-oop-executor={_executor(mode, objs)}",
           str(objs[obj])]
    if args:
        cmd += ["-args", *args]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=_env(env_mode, server, {}), process_group=0)
    line = _read_line(p.stdout, 30)
    assert line.startswith("ready "), line
    return p, int(line.split()[1])


@pytest.mark.parametrize("mode", MODES)
def test_sigint_to_the_process_group_reaches_the_program(objs: dict[str, Path], server: Server,
                                                         mode: str) -> None:
    """Ctrl-C (SIGINT to the controller's process group) while the program waits in
    pause() with a handler: the handler runs, as with the reference; same output and
    controller status, and nothing keeps running."""
    results = {}
    for m in (_ref(mode), mode):
        p, program = _start(m, objs, "signal", server, mode)
        os.killpg(p.pid, signal.SIGINT)
        out, _err = p.communicate(timeout=30)  # EOF: every process holding stdout is gone
        p.wait()
        results[m] = (p.returncode, out.decode())
        deadline = time.monotonic() + 5
        while alive(program):
            assert time.monotonic() < deadline, "the program's process outlived the session"
            time.sleep(0.02)
    assert results[mode] == results[_ref(mode)]
    assert results[mode][1] == f"handled {int(signal.SIGINT)}\n"


SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
           signal.SIGUSR2, signal.SIGWINCH, signal.SIGALRM, signal.SIGTSTP]
#: (signal, what the program does with it); SIGWINCH's default action is nothing (the program
#: would wait on), SIGTSTP's is a stop (test_job_control).
SIGNAL_CASES = [(sig, action) for sig in SIGNALS for action in ("handled", "default")
                if action == "handled" or sig not in (signal.SIGWINCH, signal.SIGTSTP)]


@pytest.mark.parametrize(("sig", "action"), SIGNAL_CASES,
                         ids=[f"{s.name}-{a}" for s, a in SIGNAL_CASES])
@pytest.mark.parametrize("mode", ["warm", "warm-py", "cold"])
def test_signals_to_the_executor_process_reach_the_program(
        objs: dict[str, Path], server: Server, mode: str, sig: signal.Signals,
        action: str) -> None:
    """A signal sent to the executor process the controller started: caught by the
    program's handler, or its default action (the launcher ends by the same signal), as
    with the reference: same output and controller status, and nothing keeps running."""
    results = {}
    for m in (_ref(mode), mode):
        p, program = _start(m, objs, "signals", server, mode, [str(int(sig)), action])
        kids = _children(p.pid)
        assert len(kids) == 1
        os.kill(kids[0], sig)
        out, _err = p.communicate(timeout=30)
        results[m] = (p.returncode, out.decode())
        deadline = time.monotonic() + 5
        while alive(program):
            assert time.monotonic() < deadline, "the program's process outlived the session"
            time.sleep(0.02)
    assert results[mode] == results[_ref(mode)]
    if action == "handled":
        assert results[mode][1] == f"handled {int(sig):02d}\n"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _wait_state(pid: int, stopped: bool) -> None:
    deadline = time.monotonic() + 5
    while (_state(pid) == "T") != stopped:
        assert time.monotonic() < deadline, f"{pid} is {_state(pid)}"
        time.sleep(0.01)


@pytest.mark.parametrize("mode", ["warm", "warm-py", "cold"])
def test_job_control(objs: dict[str, Path], server: Server, mode: str) -> None:
    """SIGTSTP to the executor process (the program leaves it at its default): the program
    stops, and so does the process the controller started; SIGCONT resumes both; the
    program then still gets the next signal, as with the reference."""
    results = {}
    for m in (_ref(mode), mode):
        p, program = _start(m, objs, "signals", server, mode, [str(int(signal.SIGUSR1)), "x"])
        (executor,) = _children(p.pid)
        os.kill(executor, signal.SIGTSTP)
        _wait_state(program, True)
        _wait_state(executor, True)
        os.kill(executor, signal.SIGCONT)
        _wait_state(program, False)
        _wait_state(executor, False)
        os.kill(executor, signal.SIGUSR1)
        out, _err = p.communicate(timeout=30)
        results[m] = (p.returncode, out.decode())
    assert results[mode] == results[_ref(mode)] == (1, f"handled {int(signal.SIGUSR1)}\n")


@pytest.mark.parametrize("mode", MODES)
def test_sigkill_of_the_launcher_ends_the_session(objs: dict[str, Path], server: Server,
                                                  mode: str) -> None:
    """SIGKILL of the executor process the controller started: the program's process is gone
    at once, and the controller reports it as it reports the reference's."""
    results = {}
    for m in (_ref(mode), mode):
        p, program = _start(m, objs, "sleep", server, mode)
        kids = _children(p.pid)
        assert len(kids) == 1
        os.kill(kids[0], signal.SIGKILL)
        deadline = time.monotonic() + 2
        while alive(program):
            assert time.monotonic() < deadline, "the program's process outlived its launcher"
            time.sleep(0.01)
        out, _err = p.communicate(timeout=30)
        results[m] = (p.returncode, out.decode())
    assert results[mode] == results[_ref(mode)]


CLANG_REPL = LLVM22 / "clang-repl"
ORC_RT = Path("/usr/lib/llvm-22/lib/clang/22/lib/linux/liborc_rt-x86_64.a")


@pytest.mark.parametrize("mode", ["cold", "warm"])
def test_program_output_comes_before_the_controllers_last_words(server: Server,
                                                                mode: str) -> None:
    """clang-repl: ``printf("A\\n")`` then ``%quit``, stdout a pipe: ``A`` comes before the
    REPL's final newline (C stdio is flushed as the controller hangs up). The reference's
    exit races the REPL's newline: either order, the same bytes."""
    script = b'#include <stdio.h>\nprintf("A\\n");\n%quit\n'

    def repl(executor: str) -> bytes:
        r = subprocess.run([str(CLANG_REPL), f"--oop-executor={executor}",
                            f"--orc-runtime={ORC_RT}"], input=script, capture_output=True,
                           timeout=120, env=_env(mode, server, {}))
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert sorted(repl(REF)) == sorted(b"A\n\n")
    for _ in range(3):
        assert repl(EXE) == b"A\n\n"


@pytest.mark.parametrize("mode", ["warm", "warm-py"])
def test_other_personality_starts_cold(objs: dict[str, Path], server: Server, tmp_path: Path,
                                       mode: str) -> None:
    """``setarch -R`` (no address space randomization) cannot apply to a running process: the
    launch starts cold, and the program sees what the reference sees."""
    results = {}
    for m in (_ref(mode), mode):
        cmd = ["setarch", "-R", str(LLVM22 / "llvm-jitlink"),
               f"-oop-executor={_executor(m, objs)}", str(objs["probe"])]
        r = subprocess.run(cmd, capture_output=True, timeout=60, env=_env(mode, server, {}),
                           cwd=tmp_path)
        text, ppid = _split_ppid(r.stdout.decode())
        assert ppid != server.zygote()  # cold
        results[m] = (r.returncode, text)
    assert _differences(results[mode], results[_ref(mode)]) == []
    assert "personality=0x40000 " in results[mode][1]


def test_launches_with_bad_state_are_refused(objs: dict[str, Path], server: Server) -> None:
    """Launches whose state is missing (an older launcher), malformed or unusable are
    refused unanswered (their launchers start cold); the pool stays ready."""
    import json
    import socket

    from orc_executor.io.fdpass import fds_ancillary

    good = json.loads('{"kind": "fdpair", "stdio": false' + _state_header() + "}")
    env_fd = os.memfd_create("env")
    os.write(env_fd, b"A=1\0")
    cwd_fd = os.open("/", os.O_PATH)
    r, w = os.pipe()
    bad: list[tuple[dict[str, object], int]] = [
        ({k: v for k, v in good.items() if k != "handover"}, cwd_fd),  # an older launcher
        (dict(good, umask="022"), cwd_fd),
        (dict(good, rlimits=[[1, 2, 3]]), cwd_fd),
        (dict(good, cpus="zz"), cwd_fd),
        (dict(good, sched=[0]), cwd_fd),
        (dict(good, nice=99), cwd_fd),
        (dict(good, personality=good["personality"] ^ 0x40000), cwd_fd),  # type: ignore[operator]
        (good, r),  # the working directory is a pipe
    ]
    for header, cwd in bad:
        a, b = socket.socketpair()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as launch:
            launch.sendmsg([json.dumps(header).encode()],
                           fds_ancillary([b.fileno(), r, w, cwd, env_fd]), 0, str(server.sock))
        b.close()
        a.settimeout(10)
        assert a.recv(1) == b"", header  # closed unanswered: no 'A'
        a.close()
    for fd in (env_fd, cwd_fd, r, w):
        os.close(fd)
    server.wait_idle(2)
    _rc, out, _pid = _jitlink("warm", objs, "probe", server.env, Path("/"))
    assert _split_ppid(out)[1] == server.zygote()


def _state_header() -> str:
    from orc_executor.launch.state import state_header

    return state_header()


@pytest.mark.parametrize("library", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_what_runs_at_exit(objs: dict[str, Path], server: Server, tmp_path: Path, mode: str,
                           library: bool) -> None:
    """Exit handlers, the last flush of C stdio (stdout and a file left open) and the
    destructor of a library the program opened run at the executor's exit, in the same
    order, with the same errno, as under the reference: a session process lets go of its
    fds early only once nothing is left that could write (orc_release_fds)."""
    results = {}
    for m in (_ref(mode), mode):
        cwd = tmp_path / m
        cwd.mkdir()
        cmd = [str(LLVM22 / "llvm-jitlink"), f"-oop-executor={_executor(m, objs)}",
               str(objs["exit"])]
        if library:
            cmd += ["-args", "exit", str(objs["libdtor"])]
        p = subprocess.run(cmd, capture_output=True, env=_env(mode, server, {}), cwd=cwd,
                           timeout=60)
        results[m] = (p.returncode, p.stdout, p.stderr, (cwd / "left-open.txt").read_bytes())
    assert results[mode] == results[_ref(mode)]
    assert results[mode] == (
        5, b"main done, no newlineexit handler: puts\n"
        + (b"library destructor\n" if library else b""),
        b"exit handler: perror: Success\n", b"written, never closed\n")


@pytest.mark.parametrize("mode", MODES)
def test_writing_to_a_closed_pipe(objs: dict[str, Path], server: Server, mode: str) -> None:
    """The program writes to stdout after its reader went away: SIGPIPE at its default
    action ends it, as the reference (the interpreter ignores SIGPIPE at start-up; a session
    process gives the program the controller's disposition)."""
    results = {}
    for m in (_ref(mode), mode):
        r, w = os.pipe()
        os.close(r)
        with subprocess.Popen([str(LLVM22 / "llvm-jitlink"), f"-oop-executor={_executor(m, objs)}",
                               str(objs["pipe"])], stdout=w, stderr=subprocess.PIPE,
                              env=_env(mode, server, {})) as p:
            os.close(w)
            _out, err = p.communicate(timeout=60)
        results[m] = (p.returncode, b"write:" in err)
    assert results[mode] == results[_ref(mode)]
    assert not results[mode][1]  # never saw EPIPE: SIGPIPE ended it


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
@pytest.mark.parametrize("mode", ["cold", "warm"])
def test_signal_between_calls_has_its_default_action(server: Server, mode: str,
                                                     sig: signal.Signals) -> None:
    """A signal that arrives while no program code runs (the session open, between calls)
    ends the executor by that signal, as it ends the reference: no thread of ours keeps it
    blocked then. (Driven by the package's controller: llvm-jitlink leaves no such pause.)"""
    import trio

    from orc_executor.controller import Controller
    from orc_executor.protocol import names
    from orc_executor.protocol.names import SimpleExecutorMemoryManager as mm

    async def status(exe: str) -> int | None:
        c = await Controller.launch([exe], env=_env(mode, server, {}))
        async with c:
            inst = c.symbol(mm.instance)
            await c.call(mm.reserve, names.RESERVE, inst, 4096)
            assert c.process is not None
            c.process.send_signal(sig)
            return await c.wait_exit()

    # The executors inherit this process's disposition (exec keeps SIG_IGN, as under nohup):
    # the default action is what is compared.
    previous = signal.signal(sig, signal.SIG_DFL)
    try:
        assert trio.run(status, REF) == trio.run(status, EXE) == -sig
    finally:
        signal.signal(sig, previous)
