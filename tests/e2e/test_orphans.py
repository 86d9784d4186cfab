"""Issue 20, finding 10: a ``serve`` or ``--listen`` daemon killed with SIGKILL leaves no
process behind: its fork server (zygote), its idle workers and the session processes still
running JIT'd code all end (the zygote at EOF on its control socket, the processes it forked
by ``PR_SET_PDEATHSIG`` when it ends). Driven by llvm-jitlink 22 with a program that waits."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.jitrun import compile_c
from tests.support.procs import alive, parent_of, start_serve

LLVM22 = Path("/usr/lib/llvm-22/bin")
EXE = str(Path(sys.executable).parent / "orc-executor")

# Writes its pid to the file argv[0] names, then waits far longer than any test.
WAIT_C = r"""
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    FILE *f = fopen(argv[0], "w");
    if (!f) return 1;
    fprintf(f, "%d\n", (int)getpid());
    fclose(f);
    sleep(600);
    return 0;
}
"""


@pytest.fixture(scope="module")
def wait_obj(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_c(tmp_path_factory.mktemp("orphans"), "wait", WAIT_C)


def descendants(root: int) -> set[int]:
    """Every process below ``root`` now."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            ppid = parent_of(int(entry))
            if ppid is not None:
                parents[int(entry)] = ppid
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def _wait_for_pid_file(path: Path, controller: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 30
    while True:
        try:
            text = path.read_text()
            if text.endswith("\n"):
                return int(text)
        except FileNotFoundError:
            pass
        assert controller.poll() is None, controller.stderr.read() if controller.stderr else ""
        assert time.monotonic() < deadline, "the program did not start"
        time.sleep(0.05)


def _assert_all_end(pids: set[int], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        left = {p for p in pids if alive(p)}
        if not left:
            return
        if time.monotonic() > deadline:
            cmds = {p: Path(f"/proc/{p}/cmdline").read_bytes() for p in left}
            pytest.fail(f"left behind after SIGKILL of the server: {cmds}")
        time.sleep(0.05)


def _kill_and_check(server: subprocess.Popen[bytes], session_pid: int) -> None:
    tree = descendants(server.pid)
    assert session_pid in tree  # the JIT'd program runs in a process the server started
    assert len(tree) >= 3  # the zygote, the session and at least one ready worker
    server.kill()
    server.wait()
    try:
        _assert_all_end(tree)
    finally:
        for p in tree:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_sigkill_of_serve_ends_its_zygote_workers_and_sessions(wait_obj: Path,
                                                               tmp_path: Path) -> None:
    sock = tmp_path / "warm.sock"
    env = dict(os.environ, ORC_EXECUTOR_WARM_SOCKET=str(sock), ORC_EXECUTOR_AUTO_SERVE="0")
    server = start_serve(sock, env, "--warm", "2")
    controller = None
    try:
        pid_file = tmp_path / "pid"
        controller = subprocess.Popen(
            [str(LLVM22 / "llvm-jitlink"), f"-oop-executor={EXE}", str(wait_obj),
             "-args", str(pid_file)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        session = _wait_for_pid_file(pid_file, controller)
        assert parent_of(session) != controller.pid  # warm: not the launched process
        _kill_and_check(server, session)
    finally:
        server.kill()
        server.wait()
        if controller is not None:
            controller.kill()
            controller.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sigkill_of_daemon_ends_its_zygote_workers_and_sessions(wait_obj: Path,
                                                                tmp_path: Path) -> None:
    port = _free_port()
    daemon = subprocess.Popen([EXE, "--listen", f"127.0.0.1:{port}", "--warm", "2"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    controller = None
    try:
        pid_file = tmp_path / "pid"
        deadline = time.monotonic() + 20
        while True:  # llvm-jitlink fails to connect until the daemon listens
            controller = subprocess.Popen(
                [str(LLVM22 / "llvm-jitlink"), f"-oop-executor-connect=127.0.0.1:{port}",
                 str(wait_obj), "-args", str(pid_file)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            time.sleep(0.3)
            if controller.poll() is None or pid_file.exists():
                break
            assert daemon.poll() is None and time.monotonic() < deadline
        session = _wait_for_pid_file(pid_file, controller)
        _kill_and_check(daemon, session)
    finally:
        daemon.kill()
        daemon.wait()
        if controller is not None:
            controller.kill()
            controller.wait()
