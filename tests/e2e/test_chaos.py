"""Issue 20, chaos: controllers killed mid-call and mid-initialize, a controller that stops
reading, connection floods, many sequential sessions and SIGTERM while sessions run —
with llvm-jitlink 22 and raw sockets against launched executors and the daemon."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from orc_executor.controller import decode_setup
from orc_executor.protocol.framing import FrameDecoder, Message, Opcode, encode_header
from orc_executor.protocol.orc_types import ExecutorAddrRange, FinalizeRequest, SegFinalizeRequest
from tests.e2e.test_daemon import (
    ECHO_C,
    EXE,
    LLVM22,
    _free_port,
    _jitlink_connect,
    _stop,
    _wait_listening,
)
from tests.support.harness import (
    BOOT,
    INITIALIZE_SIG,
    MEM_READ_BUFFERS_SIG,
    MM_INITIALIZE,
    MM_INSTANCE,
    MM_RELEASE,
    MM_RESERVE,
    RELEASE_SIG,
    RESERVE_SIG,
    _clean_env,
)
from tests.support.jitrun import compile_c

MIB = 1 << 20

SLEEPER_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    usleep(argc > 0 ? atoi(argv[0]) * 1000 : 1500000);
    printf("slept %s\n", argc > 0 ? argv[0] : "-");
    return 7;
}
"""


@pytest.fixture(scope="module")
def objs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("chaos")
    return {"echo": compile_c(tmp, "echo", ECHO_C), "sleeper": compile_c(tmp, "sleeper", SLEEPER_C)}


def _status_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise AssertionError(name)


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return False


class RawController:
    """A blocking controller on a socket: Setup, then calls one at a time or raw bytes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.settimeout(30)
        self.decoder = FrameDecoder(1 << 31)
        setup = self.next()
        assert setup.opcode == Opcode.SETUP
        self.symbols = decode_setup(setup.payload).symbols
        self.seq = 0

    def next(self) -> Message:
        while (msg := self.decoder.next_message()) is None:
            data = self.sock.recv(1 << 16)
            if not data:
                raise EOFError
            self.decoder.feed(data)
        return msg

    def call(self, name: str, payload: bytes) -> bytes:
        self.seq += 1
        self.sock.sendall(encode_header(Opcode.CALL_WRAPPER, self.seq, self.symbols[name],
                                        len(payload)) + payload)
        msg = self.next()
        assert (msg.opcode, msg.seq) == (Opcode.RESULT, self.seq)
        return bytes(msg.payload)

    def reserve(self, size: int) -> int:
        inst = self.symbols[MM_INSTANCE]
        base = RESERVE_SIG.ret.decode(self.call(MM_RESERVE, RESERVE_SIG.encode_args(inst, size)))
        assert isinstance(base, int) and base
        return base

    def abort(self) -> None:
        """Close with a reset (no FIN), as a killed peer on another host may."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def test_killed_llvm_jitlink_mid_call_leaves_no_executor(objs: dict[str, Path]) -> None:
    """llvm-jitlink killed (SIGKILL) while the JIT'd program runs in its launched executor:
    the executor sees EOF, lets the running call finish (it cannot be interrupted) and
    exits; nothing is left behind."""
    p = subprocess.Popen([str(LLVM22 / "llvm-jitlink"), f"-oop-executor={EXE}",
                          str(objs["sleeper"]), "-args", "1000"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_clean_env())
    deadline = time.monotonic() + 20
    executor = None
    while time.monotonic() < deadline and executor is None:
        kids = _children(p.pid)
        executor = kids[0] if kids else None
        time.sleep(0.05)
    assert executor is not None, "no executor started"
    time.sleep(1.0)  # linked and running (or still linking: either way mid-call)
    p.kill()
    p.wait()
    assert _wait_gone(executor, 10), "the executor outlived its killed controller"


def test_daemon_survives_chaos_and_still_serves(objs: dict[str, Path]) -> None:
    """On one daemon: a controller reset mid-64 MiB initialize, one that stops reading 300
    pipelined 256 KiB Results, llvm-jitlink killed mid-run, a flood of 100 connections
    opened and closed at once. Afterwards a real llvm-jitlink session gets the right
    answer, the daemon's RSS and fds are where they were, and SIGTERM stops it cleanly."""
    port = _free_port()
    proc = subprocess.Popen(
        [EXE, "--listen", f"127.0.0.1:{port}", "--max-sessions", "4", "--warm", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        _wait_listening(port, proc)
        assert _jitlink_connect(port, objs["echo"], "first", "3").returncode == 3
        rss0 = _status_field(proc.pid, "VmRSS")
        fds0 = len(os.listdir(f"/proc/{proc.pid}/fd"))

        # Reset in the middle of a 64 MiB initialize's content.
        c = RawController(socket.create_connection(("127.0.0.1", port)))
        base = c.reserve(64 * MIB)
        head = INITIALIZE_SIG.encode_args(
            c.symbols[MM_INSTANCE], FinalizeRequest([SegFinalizeRequest(3, base, 64 * MIB, b"")],
                                                    []))
        n = 64 * MIB
        frame_head = head[:-16] + n.to_bytes(8, "little")  # content length, content follows
        size = len(frame_head) + n + 8
        c.sock.sendall(encode_header(Opcode.CALL_WRAPPER, 99, c.symbols[MM_INITIALIZE], size)
                       + frame_head + bytes(8 * MIB))
        c.abort()

        # A controller that stops reading its Results.
        r = RawController(socket.create_connection(("127.0.0.1", port)))
        rbase = r.reserve(256 << 10)
        r.call(MM_INITIALIZE, INITIALIZE_SIG.encode_args(
            r.symbols[MM_INSTANCE],
            FinalizeRequest([SegFinalizeRequest(3, rbase, 256 << 10, b"")], [])))
        args = MEM_READ_BUFFERS_SIG.encode_args([ExecutorAddrRange(rbase, rbase + (256 << 10))])
        tag = r.symbols[BOOT + "mem_read_buffers_wrapper"]
        r.sock.setblocking(False)
        frames = b"".join(encode_header(Opcode.CALL_WRAPPER, 1000 + i, tag, len(args)) + args
                          for i in range(300))
        try:
            r.sock.send(frames)
        except BlockingIOError:
            pass

        # llvm-jitlink killed mid-run.
        p = subprocess.Popen([str(LLVM22 / "llvm-jitlink"),
                              f"-oop-executor-connect=127.0.0.1:{port}",
                              str(objs["sleeper"]), "-args", "800"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(0.6)
        p.kill()
        p.wait()

        # A flood.
        def touch(_: int) -> None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5):
                    pass
            except OSError:
                pass

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(touch, range(100)))
        r.abort()

        t0 = time.monotonic()
        res = _jitlink_connect(port, objs["echo"], "after", "2", "40")
        assert res.returncode == 42, res.stderr
        assert time.monotonic() - t0 < 20
        time.sleep(1.0)
        rss1 = _status_field(proc.pid, "VmRSS")
        fds1 = len(os.listdir(f"/proc/{proc.pid}/fd"))
        assert rss1 - rss0 < 8 * 1024, (rss0, rss1)  # KiB
        assert fds1 <= fds0 + 2, (fds0, fds1)
    finally:
        t0 = time.monotonic()
        rc, err, out = _stop(proc)
    assert rc == 0, err
    assert time.monotonic() - t0 < 15, err
    assert "session 1 ended: exit 0" in err
    assert "Traceback" not in err
    assert "session first sum=3" in out.decode() and "session after sum=42" in out.decode()


SESSIONS = int(os.environ.get("ORC_EXECUTOR_CHAOS_SESSIONS", "200"))


def test_sequential_daemon_sessions_keep_rss_fds_and_threads_flat(tmp_path: Path) -> None:
    """``ORC_EXECUTOR_CHAOS_SESSIONS`` (200 in CI; 1000 by hand) sessions one after another
    on a unix-socket daemon, each a reserve and release: after the first 50 the daemon's
    RSS, open fds, threads and child processes stay flat."""
    path = str(tmp_path / "d.sock")
    # The log goes to a file: two lines a session would fill a pipe nobody reads meanwhile
    # (64 KiB: ~480 sessions), and then block the daemon and its sessions.
    log = open(tmp_path / "daemon.log", "w+b")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([EXE, "--listen", path, "--warm", "2"],
                            stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(path):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)

        def session() -> None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            c = RawController(s)
            base = c.reserve(1 << 16)
            assert c.call(MM_RELEASE, RELEASE_SIG.encode_args(c.symbols[MM_INSTANCE],
                                                              [base])) == b"\x00"
            s.close()

        def sample() -> tuple[int, int, int, int]:
            time.sleep(0.5)  # the last session's process has exited and been replaced
            return (_status_field(proc.pid, "VmRSS"), len(os.listdir(f"/proc/{proc.pid}/fd")),
                    _status_field(proc.pid, "Threads"), len(_children(proc.pid)))

        failure: BaseException | None = None
        done = 0
        try:
            for _ in range(50):
                session()
                done += 1
            rss0, fds0, threads0, kids0 = sample()
            t0 = time.monotonic()
            for _ in range(50, SESSIONS):
                session()
                done += 1
            elapsed = time.monotonic() - t0
            rss1, fds1, threads1, kids1 = sample()
        except Exception as e:  # reported with the daemon's log below
            failure = e
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=40)
        log.seek(0)
        err = log.read().decode()
        log.close()
    assert failure is None, (f"session {done + 1}: {failure!r}", err[-4000:])
    assert rc == 0, err
    assert err.count("ended: exit 0") == SESSIONS
    assert rss1 - rss0 < 4 * 1024, (rss0, rss1)  # KiB
    assert fds1 <= fds0 and threads1 <= threads0 and kids1 <= kids0, (
        (fds0, threads0, kids0), (fds1, threads1, kids1))
    print(f"{SESSIONS - 50} sessions in {elapsed:.1f}s; RSS {rss0} -> {rss1} KiB")


def test_sigterm_while_sessions_run_lets_them_finish(objs: dict[str, Path]) -> None:
    """SIGTERM while three llvm-jitlink sessions run their programs: they finish with their
    own output and status, then the daemon exits 0."""
    port = _free_port()
    proc = subprocess.Popen([EXE, "--listen", f"127.0.0.1:{port}", "--warm", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_listening(port, proc)
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(_jitlink_connect, port, objs["sleeper"], str(1000 + 100 * i))
                   for i in range(3)]
        deadline = time.monotonic() + 20
        while proc.stderr is not None and time.monotonic() < deadline:
            if len(_children(proc.pid)) >= 4:  # the sessions' processes (and the zygote)
                break
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        results = [f.result(timeout=60) for f in futures]
    out, err = proc.communicate(timeout=40)
    assert proc.returncode == 0, err
    for r in results:
        assert r.returncode == 7, r.stderr
    assert sorted(out.decode().splitlines()) == [f"slept {1000 + 100 * i}" for i in range(3)]
    assert b"SIGTERM" in err and b"Traceback" not in err
