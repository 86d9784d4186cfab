"""Issue 6: warm start. With ``orc-executor serve`` running, a launched ``orc-executor
filedescs=...`` hands its pipes and stdio to a pre-started process; results are identical to
the cold path and to llvm-jitlink-executor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.jitrun import compile_c

LLVM22 = Path("/usr/lib/llvm-22/bin")
EXE = str(Path(sys.executable).parent / "orc-executor")
REF = str(LLVM22 / "llvm-jitlink-executor")

PROG = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
    char line[256];
    int n = 0;
    while (fgets(line, sizeof line, stdin)) n++;
    printf("argc=%d first=%s lines=%d\n", argc, argc ? argv[0] : "-", n);
    fprintf(stderr, "to stderr %d\n", n);
    if (argc && strcmp(argv[0], "abort") == 0) abort();
    return argc * 10 + n;
}
"""


@pytest.fixture(scope="module")
def prog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_c(tmp_path_factory.mktemp("warm"), "p", PROG)


@pytest.fixture(scope="module")
def warm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    sock = tmp_path_factory.mktemp("warmsock") / "warm.sock"
    env = dict(os.environ, ORC_EXECUTOR_WARM_SOCKET=str(sock))
    proc = subprocess.Popen([EXE, "serve", "--warm", "2"], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 15
    while not sock.exists():
        assert proc.poll() is None
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.5)  # let the pool start
    yield dict(env, ORC_TEST_SERVE_PID=str(proc.pid))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert not sock.exists()


def _run(executor: str, obj: Path, args: list[str], stdin: bytes,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    cmd = [str(LLVM22 / "llvm-jitlink"), f"-oop-executor={executor}", str(obj)]
    if args:
        cmd += ["-args", *args]
    return subprocess.run(cmd, input=stdin, capture_output=True, timeout=60, env=env)


@pytest.mark.parametrize("args", [[], ["x"], ["a", "b", "c"]])
def test_warm_matches_reference(prog: Path, warm_server: dict[str, str], args: list[str]) -> None:
    stdin = b"one\ntwo\n"
    ours = _run(EXE, prog, args, stdin, env=warm_server)
    ref = _run(REF, prog, args, stdin)
    assert (ours.stdout, ours.stderr, ours.returncode) == (ref.stdout, ref.stderr, ref.returncode)
    assert ours.returncode == len(args) * 10 + 2
    assert ours.stdout == f"argc={len(args)} first={args[0] if args else '-'} lines=2\n".encode()


def test_warm_abort_is_reported_like_reference(prog: Path, warm_server: dict[str, str]) -> None:
    ours = _run(EXE, prog, ["abort"], b"", env=warm_server)
    ref = _run(REF, prog, ["abort"], b"")
    assert ours.returncode == ref.returncode != 0
    # stdout is a pipe: fully buffered, and abort() does not flush it.
    assert ours.stdout == ref.stdout == b""
    assert b"to stderr 0" in ours.stderr


def test_cold_path_without_server(prog: Path, tmp_path: Path) -> None:
    env = dict(os.environ, ORC_EXECUTOR_WARM_SOCKET=str(tmp_path / "none.sock"))
    ours = _run(EXE, prog, ["q"], b"l\n", env=env)
    assert ours.returncode == 11
    assert ours.stdout == b"argc=1 first=q lines=1\n"


PPID_PROG = r"""
#include <stdio.h>
#include <unistd.h>
int main(void) { printf("%d\n", (int)getppid()); return 0; }
"""


@pytest.fixture(scope="module")
def ppid_prog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_c(tmp_path_factory.mktemp("ppid"), "ppid", PPID_PROG)


def _session_parent(obj: Path, env: dict[str, str]) -> int:
    """The pid of the process whose child ran the JIT'd code (its ``getppid()``)."""
    r = _run(EXE, obj, [], b"", env=env)
    assert r.returncode == 0, r.stderr
    return int(r.stdout)


def _serve_pid(env: dict[str, str]) -> int:
    return int(env["ORC_TEST_SERVE_PID"])  # set by the warm_server fixture


def test_launcher_is_native() -> None:
    """bin/orc-executor is the compiled launcher (orc_executor/launch/launcher.c)."""
    with open(EXE, "rb") as f:
        assert f.read(4) == b"\x7fELF"


def test_warm_session_runs_in_a_server_process(ppid_prog: Path,
                                               warm_server: dict[str, str]) -> None:
    """With the server up, the JIT'd code runs in one of its pre-started processes, forked by
    the server's fork server (zygote), not in the process llvm-jitlink launched."""
    parent = _session_parent(ppid_prog, warm_server)
    cmdline = Path(f"/proc/{parent}/cmdline").read_bytes().split(b"\0")
    assert b"orc_executor.serve.worker" in cmdline and b"--zygote" in cmdline
    assert _parent_of(parent) == _serve_pid(warm_server)


def _parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def test_cold_when_asked_or_when_socket_is_stale(ppid_prog: Path, warm_server: dict[str, str],
                                                 tmp_path: Path) -> None:
    """``ORC_EXECUTOR_COLD=1`` and a socket file nobody listens on both mean a cold start in
    the launched process itself (same pid: the launcher execs Python), with the same output."""
    serve = _serve_pid(warm_server)
    cold = dict(warm_server, ORC_EXECUTOR_COLD="1")
    assert _session_parent(ppid_prog, cold) != serve
    stale = tmp_path / "stale.sock"
    import socket as _socket

    s = _socket.socket(_socket.AF_UNIX)
    s.bind(str(stale))  # bound, never listening: connect() is refused
    try:
        env = dict(os.environ, ORC_EXECUTOR_WARM_SOCKET=str(stale))
        assert _session_parent(ppid_prog, env) != serve
    finally:
        s.close()
