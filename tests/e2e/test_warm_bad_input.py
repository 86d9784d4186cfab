"""Bad input on the warm path (issue 22): a launch the server cannot take is refused at once
and the launcher starts cold with its fds intact — a malformed datagram, a launch from an
older launcher (another handover version), a server that dies with the launch in its queue.
None holds a launch up for longer than it takes the server to look at it."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orc_executor.io.fdpass import fds_ancillary
from orc_executor.launch import state as launch_state
from orc_executor.serve.handover import HANDOVER_VERSION
from tests.e2e.test_warm_handover import (
    ECHO_C,
    EXE,
    Run,
    Server,
    _check_echo,
    _children,
    _cmdline,
    _jitlink,
)
from tests.support.jitrun import compile_c

#: Seconds a refused launch may wait for its answer (the refusal itself takes well under a
#: millisecond; the bound only allows for a loaded machine).
REFUSAL_BOUND = 1.0

#: The Python launcher (:mod:`orc_executor.launch.client`, the console script).
PY_LAUNCHER = str(Path(sys.executable).parent / "orc-executor-py")

RECVMSG = 47  # x86_64 syscall number: the launcher waits for the acknowledgement


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_c(tmp_path_factory.mktemp("bad_input"), "echo", ECHO_C)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path)
    yield s
    s.stop()


def _launch_header(**changes: object) -> bytes:
    """A header as a launcher of this version writes it, with ``changes`` (``None``: left
    out)."""
    header = json.loads(f'{{"kind": "fdpair", "stdio": true, "controller_pid": {os.getpid()}, '
                        f'"llvm_version": null, "machine": "{os.uname().machine}"'
                        f'{launch_state.state_header()}}}')
    header.update(changes)
    return json.dumps({k: v for k, v in header.items() if v is not None}).encode()


def _refusal_time(server: Server, data: bytes) -> float:
    """Send one launch with ``data`` as its header and the fds a launcher sends; the seconds
    until the reply socket closed unanswered. Checks that this process's fds still work."""
    mine, theirs = socket.socketpair()
    r, w = os.pipe()
    cwd, env = launch_state.state_fds()
    try:
        mine.settimeout(10)
        t0 = time.monotonic()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as launch:
            launch.sendmsg([data], fds_ancillary([theirs.fileno(), r, w, 0, 1, 2, cwd, env]),
                           0, str(server.sock))
        theirs.close()
        assert mine.recv(16) == b"", "the launch was acknowledged"
        elapsed = time.monotonic() - t0
        os.write(w, b"still ours")  # the launcher's fds are intact
        assert os.read(r, 16) == b"still ours"
        return elapsed
    finally:
        mine.close()
        theirs.close()
        for fd in (r, w, cwd, env):
            os.close(fd)


@pytest.mark.parametrize(("what", "data"), [
    ("not JSON", b"\x00\xff{"),
    ("no header object", b"[]"),
    ("an older launcher (no state)", _launch_header(handover=None, umask=None)),
    ("an older launcher (version 0)", _launch_header(handover=HANDOVER_VERSION - 1)),
    ("a newer launcher", _launch_header(handover=HANDOVER_VERSION + 1)),
    ("another kind", _launch_header(kind="socket")),
    ("malformed state", _launch_header(rlimits="unlimited")),
])
def test_a_bad_launch_is_refused_at_once_with_the_launchers_fds_intact(
        server: Server, echo: Path, what: str, data: bytes) -> None:
    elapsed = _refusal_time(server, data)
    assert elapsed < REFUSAL_BOUND, f"{what}: refused after {elapsed * 1e3:.1f} ms"
    server.wait_idle(2)  # the refusing worker is still ready
    r = _jitlink(EXE, echo, ["4"], server.env)
    _pid, parent = _check_echo(r, ["4"])
    assert parent == server.zygote()  # served warm


def test_a_launch_of_this_version_is_taken(server: Server) -> None:
    """The control for the refusals above: the same launch, unchanged, is acknowledged."""
    mine, theirs = socket.socketpair()
    a, b = socket.socketpair()
    cwd, env = launch_state.state_fds()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as launch:
            launch.sendmsg([_launch_header(stdio=False)], fds_ancillary(
                [theirs.fileno(), b.fileno(), b.fileno(), cwd, env]), 0, str(server.sock))
        theirs.close()
        b.close()
        mine.settimeout(10)
        assert mine.recv(1) == b"A"
    finally:
        a.close()  # the session sees EOF and ends
        mine.close()
        for fd in (cwd, env):
            os.close(fd)


def _waiting_for_ack(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/syscall").read_text().split()[0] == str(RECVMSG)
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="syscall number of x86_64")
@pytest.mark.parametrize("launcher", ["native", "python"])
def test_server_dying_mid_handover_means_a_cold_start(server: Server, echo: Path,
                                                      launcher: str) -> None:
    """The ready workers are stopped, so the launch waits in the warm socket's queue; the
    server, its fork server and its workers are then killed (SIGKILL). The queued launch goes
    with the socket, its reply socket closes, and the launcher runs the session cold, in its
    own process, with the program's output and status."""
    victims = [server.proc.pid, server.zygote(), *server.workers()]
    assert None not in victims
    for pid in server.workers():
        os.kill(pid, signal.SIGSTOP)
    exe = EXE if launcher == "native" else PY_LAUNCHER
    result: list[Run] = []
    t = threading.Thread(target=lambda: result.append(_jitlink(exe, echo, ["6"], server.env)))
    t.start()
    try:
        deadline = time.monotonic() + 30
        waiting: int | None = None
        while waiting is None:
            assert time.monotonic() < deadline, "the launcher did not wait for its answer"
            for jitlink in _children(os.getpid()):
                for kid in _children(jitlink):
                    if b"orc" in _cmdline(kid) and _waiting_for_ack(kid):
                        waiting = kid
            time.sleep(0.01)
    finally:
        for victim in victims:
            assert victim is not None
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
        t.join(timeout=60)
    server.proc.wait(timeout=10)
    r = result[0]
    _pid, parent = _check_echo(r, ["6"])
    assert parent == r.pid  # cold: in the process llvm-jitlink started
    assert b"Traceback" not in r.stderr
