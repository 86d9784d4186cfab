"""The warm handover's edge cases: ready session processes receive launches on the warm
socket themselves; the launcher lets go of its fds only after a session process acknowledged
the session, and otherwise starts cold. Concurrent launchers, a dying worker, a session
killed by a signal, server shutdown and a killed server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from orc_executor.controller import Controller
from orc_executor.io.fdpass import ANCILLARY_SPACE, fds_ancillary, fds_received
from orc_executor.protocol import names
from orc_executor.protocol.names import SimpleExecutorMemoryManager as mm
from orc_executor.protocol.orc_types import FinalizeRequest, SegFinalizeRequest
from tests.support.jitrun import compile_c
from tests.support.procs import alive

LLVM22 = Path("/usr/lib/llvm-22/bin")
EXE = str(Path(sys.executable).parent / "orc-executor")
REF = str(LLVM22 / "llvm-jitlink-executor")

ECHO_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long sum = 0;
    for (int i = 0; i < argc; i++) sum += atol(argv[i]);
    printf("sum=%ld pid=%d parent=%d\n", sum, (int)getpid(), (int)getppid());
    return (int)(sum % 100);
}
"""

PRIORITY_C = r"""
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
    pid_t tid = (pid_t)syscall(SYS_gettid);
    printf("policy=%d nice=%d\n", sched_getscheduler(tid), getpriority(PRIO_PROCESS, tid));
    return 0;
}
"""

EXITS_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void bye(int status, void *arg) { printf(" bye %d", status); (void)arg; }
int main(int argc, char **argv) {
    if (argc > 0 && argv[0][0] == 'f') {  /* a forked child that exits on its own */
        pid_t child = fork();
        if (child == 0) exit(3);
        waitpid(child, NULL, 0);
        printf("parent");
        return 5;
    }
    /* A handler in JIT'd code runs only while that code is mapped: here, exit() inside main
       (at the session's end it would be gone: both executors die of SIGSEGV). atexit is not
       exported by libc.so, so llvm-jitlink cannot link it. */
    on_exit(bye, NULL);
    printf("exiting");  /* no newline: flushed by exit */
    exit(7);
}
"""

CRASH_C = r"""
int main(void) { volatile int *p = (int *)16; return *p; }
"""


@pytest.fixture(scope="module")
def objs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("handover")
    out = {}
    for name, src in {"echo": ECHO_C, "crash": CRASH_C, "priority": PRIORITY_C,
                      "exits": EXITS_C}.items():
        out[name] = compile_c(tmp, name, src)
    # The pure-Python launcher (orc_executor.launch.client), as a controller would start it.
    py = tmp / "orc-executor-py"
    py.write_text(f"#!/bin/sh\nexec {sys.executable} -m orc_executor \"$@\"\n")
    py.chmod(0o755)
    out["py-launcher"] = py
    return out


class Server:
    """An ``orc-executor serve`` of this test's own."""

    def __init__(self, tmp: Path, warm: int = 2) -> None:
        self.sock = tmp / "warm.sock"
        self.env = dict(os.environ, ORC_EXECUTOR_WARM_SOCKET=str(self.sock))
        self.proc = subprocess.Popen([EXE, "serve", "--warm", str(warm)], env=self.env,
                                     stderr=subprocess.PIPE)
        self.warm = warm
        try:
            deadline = time.monotonic() + 15
            while not self.sock.exists():
                assert self.proc.poll() is None
                assert time.monotonic() < deadline
                time.sleep(0.02)
            self.wait_idle(warm)
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise

    def zygote(self) -> int | None:
        kids = _children(self.proc.pid)
        return next((p for p in kids if b"--zygote" in _cmdline(p)), None)

    def workers(self) -> list[int]:
        zygote = self.zygote()
        return [] if zygote is None else _children(zygote)

    def idle_workers(self) -> list[int]:
        """Workers still holding the warm socket (ready, no session yet)."""
        return [p for p in self.workers() if _holds_listener(p, str(self.sock))]

    def wait_idle(self, n: int, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while len(self.idle_workers()) < n:
            assert time.monotonic() < deadline, "the pool did not fill"
            time.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path)
    yield s
    s.stop()


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _listening_inodes(path: str) -> set[str]:
    inodes = set()
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 8 and parts[7] == path:
            inodes.add(parts[6])
    return inodes


def _holds_listener(pid: int, path: str) -> bool:
    inodes = _listening_inodes(path)
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


@dataclass
class Run:
    """One llvm-jitlink run: its outcome and its pid (the parent of a cold executor)."""

    returncode: int
    stdout: bytes
    stderr: bytes
    pid: int


def _jitlink(executor: str, obj: Path, args: list[str], env: dict[str, str]) -> Run:
    cmd = [str(LLVM22 / "llvm-jitlink"), f"-oop-executor={executor}", str(obj)]
    if args:
        cmd += ["-args", *args]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as p:
        out, err = p.communicate(timeout=60)
    return Run(p.returncode, out, err, p.pid)


def _check_echo(r: Run, args: list[str]) -> tuple[int, int]:
    """Check the session's result; the pid that ran the JIT'd code, and its parent's."""
    total = sum(int(a) for a in args)
    assert r.returncode == total % 100, r.stderr
    line = r.stdout.decode()
    assert line.startswith(f"sum={total} pid="), line
    pid, parent = line.split("pid=")[1].split(" parent=")
    return int(pid), int(parent)


@pytest.mark.parametrize("launcher", ["native", "python"])
def test_one_hop_from_launcher_to_session_process(objs: dict[str, Path], server: Server,
                                                  launcher: str) -> None:
    """Both launchers reach a ready process forked by the zygote."""
    exe = EXE if launcher == "native" else str(objs["py-launcher"])
    _pid, parent = _check_echo(_jitlink(exe, objs["echo"], ["3", "4"], server.env), ["3", "4"])
    assert parent == server.zygote()


@pytest.mark.parametrize("launcher", ["native", "python"])
def test_no_acknowledgement_means_cold_start(objs: dict[str, Path], tmp_path: Path,
                                             launcher: str) -> None:
    """Something receives the launch on the warm socket, takes the fds and closes them
    without the ``A``: the launcher still has its fds and runs the session cold, in its own
    process."""
    path = tmp_path / "fake.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    seen: list[int] = []

    def fake_server() -> None:
        _msg, anc, _flags, _addr = listener.recvmsg(4096, ANCILLARY_SPACE)
        fds = fds_received(anc)
        seen.append(len(fds))
        for fd in fds:
            os.close(fd)

    t = threading.Thread(target=fake_server)
    t.start()
    exe = EXE if launcher == "native" else str(objs["py-launcher"])
    env = dict(os.environ, ORC_EXECUTOR_WARM_SOCKET=str(path))
    try:
        r = _jitlink(exe, objs["echo"], ["5"], env)
    finally:
        t.join(timeout=10)
        listener.close()
    # the reply socket, in, out, stdin, stdout, stderr, working directory, environ
    assert seen == [8]
    _pid, parent = _check_echo(r, ["5"])
    assert parent == r.pid  # in the process llvm-jitlink started


def test_malformed_launches_are_refused_and_the_pool_stays_ready(objs: dict[str, Path],
                                                                 server: Server) -> None:
    """Datagrams on the warm socket that are no launch (no fds, a reply fd that is not a
    socket, a reply socket of no one, a truncated message, an unusable header) are turned
    away with their fds closed; the ready processes stay ready and serve the next launch."""
    a, b = socket.socketpair()
    lonely = socket.socket(socket.AF_UNIX)  # connected to no one
    r, w = os.pipe()
    bad = [
        (b"{}", []),  # no reply socket at all
        (b"{}", [r]),  # the reply fd is a pipe
        (b'{"kind": "fdpair", "stdio": false}', [lonely.fileno(), r, w]),
        (b"x" * 10000, [b.fileno(), r, w]),  # truncated
        (b"not json", [b.fileno(), r, w]),
        (b'{"kind": "fdpair", "stdio": true}', [b.fileno(), r, w]),  # stdio without its fds
    ]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as launch:
        for data, fds in bad:
            launch.sendmsg([data], fds_ancillary(fds), 0, str(server.sock))
    b.close()
    lonely.close()
    os.close(r)
    os.close(w)
    a.settimeout(10)
    assert a.recv(1) == b""  # every copy of b was closed, unanswered
    a.close()
    server.wait_idle(2)
    _pid, parent = _check_echo(_jitlink(EXE, objs["echo"], ["7"], server.env), ["7"])
    assert parent == server.zygote()


def test_refused_header_goes_cold_like_a_cold_start(objs: dict[str, Path],
                                                    server: Server) -> None:
    """An unsupported ``ORC_EXECUTOR_LLVM_VERSION`` is refused by the session process (no
    acknowledgement): the cold path reports it exactly as without a server."""
    warm = _jitlink(EXE, objs["echo"], [], dict(server.env, ORC_EXECUTOR_LLVM_VERSION="7"))
    cold = _jitlink(EXE, objs["echo"], [],
                    dict(server.env, ORC_EXECUTOR_LLVM_VERSION="7", ORC_EXECUTOR_COLD="1"))
    assert warm.returncode == cold.returncode != 0
    assert b"unsupported LLVM version" in cold.stderr
    assert warm.stderr.count(b"unsupported LLVM version") == cold.stderr.count(
        b"unsupported LLVM version")
    server.wait_idle(2)  # the refusing worker stays ready


def test_concurrent_launchers(objs: dict[str, Path], server: Server) -> None:
    """Twelve launches at once on a pool of two: every one is served warm (waiting on the
    socket until a process is ready), each by its own process."""
    argsets = [[str(i), str(i * 7)] for i in range(12)]
    with ThreadPoolExecutor(len(argsets)) as ex:
        results = list(ex.map(lambda a: _jitlink(EXE, objs["echo"], a, server.env), argsets))
    pids = [_check_echo(r, a) for r, a in zip(results, argsets, strict=True)]
    assert len({pid for pid, _ in pids}) == len(pids)
    assert {parent for _, parent in pids} == {server.zygote()}
    server.wait_idle(2)


@pytest.mark.parametrize("warm", [1, 2])
def test_pool_refills_while_a_session_runs(tmp_path: Path, warm: int) -> None:
    """A taken worker is replaced while its session is still open: at once when it was the
    last ready one (a pool of one), else after the server's refill delay (the replacement
    waits so that its fork does not compete with the session's first calls)."""
    server = Server(tmp_path, warm=warm)
    try:
        async def main() -> None:
            c = await Controller.launch([EXE], env=server.env)
            async with c:
                await _run_code(c, b"\x31\xc0\xc3")  # the session is live and answering
                deadline = time.monotonic() + 15
                while len(server.idle_workers()) < warm:
                    assert time.monotonic() < deadline, "the pool was not refilled"
                    await trio.sleep(0.05)
                assert c.process is not None and c.process.poll() is None

        trio.run(main)
    finally:
        assert server.stop() == 0


def test_jit_code_runs_at_normal_priority(objs: dict[str, Path], server: Server) -> None:
    """Workers that refill the pool get ready at the lowest CPU priority, but the JIT'd code
    (on the session's thread) runs at the policy and nice value the reference executor
    gives it, in the first processes of the pool and in the refilled ones alike."""
    ref = _jitlink(REF, objs["priority"], [], server.env)
    assert ref.returncode == 0 and ref.stdout.startswith(b"policy=0 nice=0"), ref
    for _ in range(4):  # a pool of two: the later sessions run in refilled processes
        ours = _jitlink(EXE, objs["priority"], [], server.env)
        assert (ours.returncode, ours.stdout, ours.stderr) == (
            ref.returncode, ref.stdout, ref.stderr)
        server.wait_idle(2)


@pytest.mark.parametrize("args", [["fork"], ["exit"]])
def test_executor_exit_status_matches_reference(objs: dict[str, Path], server: Server,
                                                tmp_path: Path, args: list[str]) -> None:
    """The launcher exits with the status the reference executor process exits with, now
    that a session process sends it itself as it exits: ``exit(7)`` inside the JIT'd main
    (after its exit handlers ran and stdout was flushed), and a JIT'd program whose forked
    child calls ``exit(3)`` (the child must not report its own status for the session)."""
    status_file = tmp_path / "status"
    results = {}
    for name, exe in {"ours": EXE, "ref": REF}.items():
        wrapper = tmp_path / f"{name}.sh"
        wrapper.write_text(f'#!/bin/sh\n"{exe}" "$@"\necho $? > "{status_file}"\n')
        wrapper.chmod(0o755)
        run = _jitlink(str(wrapper), objs["exits"], args, server.env)
        deadline = time.monotonic() + 10
        while not status_file.exists() or not status_file.read_text().strip():
            assert time.monotonic() < deadline, "the executor did not exit"
            time.sleep(0.01)
        results[name] = (run.returncode, run.stdout, run.stderr, status_file.read_text())
        status_file.unlink()
    assert results["ours"] == results["ref"]
    assert results["ref"][3].strip() == ("0" if args == ["fork"] else "7")


def test_killed_idle_worker_is_replaced(objs: dict[str, Path], server: Server) -> None:
    victim = server.idle_workers()[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while victim in server.idle_workers() or len(server.idle_workers()) < 2:
        assert time.monotonic() < deadline, "no replacement"
        time.sleep(0.05)
    _check_echo(_jitlink(EXE, objs["echo"], ["1"], server.env), ["1"])


def test_crash_matches_reference(objs: dict[str, Path], server: Server) -> None:
    ours = _jitlink(EXE, objs["crash"], [], server.env)
    ref = _jitlink(REF, objs["crash"], [], server.env)
    assert ours.returncode == ref.returncode != 0
    server.wait_idle(2)


async def _run_code(c: Controller, code: bytes) -> None:
    """Initialize one page of ``code`` and run it as main (no result expected back if it
    kills the process)."""
    inst = c.symbol(mm.instance)
    base = await c.call(mm.reserve, names.RESERVE, inst, 4096)
    req = FinalizeRequest([SegFinalizeRequest(5, base, 4096, code)], [])
    await c.call(mm.initialize, names.INITIALIZE, inst, req)
    with trio.move_on_after(10):
        await c.call_raw(c.symbol(names.Bootstrap.run_as_main),
                         names.RUN_AS_MAIN.encode_args(base, []))


def test_launcher_mirrors_a_signal(server: Server) -> None:
    """A session process killed by a signal (``ud2``: SIGILL): the launcher the controller
    started ends by the same signal (the status comes from the zygote via the server)."""

    async def main() -> int | None:
        c = await Controller.launch([EXE], env=server.env)
        async with c:
            try:
                await _run_code(c, b"\x0f\x0b")
            except Exception:
                pass
        return await c.wait_exit()

    assert trio.run(main) == -signal.SIGILL


def test_stop_waits_for_running_sessions(server: Server) -> None:
    """SIGTERM while a session runs: the socket goes away at once (new launches start cold),
    the session goes on, its launcher still gets the exit status, then the server exits 0."""

    async def main() -> tuple[int | None, bool]:
        c = await Controller.launch([EXE], env=server.env)
        async with c:
            server.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            while server.sock.exists():
                assert time.monotonic() < deadline
                await trio.sleep(0.02)
            await _run_code(c, b"\x31\xc0\xc3")  # xor eax, eax; ret
            running = server.proc.poll() is None
        return await c.wait_exit(), running

    rc, running_meanwhile = trio.run(main)
    assert rc == 0
    assert running_meanwhile
    assert server.stop() == 0


def test_killed_server_leaves_nothing_behind(objs: dict[str, Path], tmp_path: Path) -> None:
    """SIGKILL to the server: the zygote and the idle workers notice and exit; the socket
    file left behind is stale, so launches start cold."""
    s = Server(tmp_path)
    zygote, idle = s.zygote(), s.idle_workers()
    assert zygote is not None
    s.proc.kill()
    s.proc.wait()
    deadline = time.monotonic() + 10
    while any(alive(p) for p in [zygote, *idle]):
        assert time.monotonic() < deadline, "processes left behind"
        time.sleep(0.05)
    assert s.sock.exists()
    r = _jitlink(EXE, objs["echo"], ["2"], s.env)
    _pid, parent = _check_echo(r, ["2"])
    assert parent == r.pid
