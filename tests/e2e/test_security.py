"""Issue 20: what any peer may do to the executor and the daemon is bounded (uid checks that
cannot be silently skipped, slots silent peers cannot keep, chaos), end to end with
llvm-jitlink 22 and raw sockets."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
import trio

from orc_executor.controller import Controller
from orc_executor.io.spec import TcpAddress, UnixAddress
from orc_executor.protocol import names
from orc_executor.protocol.names import SimpleExecutorMemoryManager as mm
from orc_executor.serve.daemon import Daemon
from orc_executor.serve.options import DaemonOptions, ServeOptions
from tests.e2e.test_daemon import ECHO_C, EXE, _free_port, _jitlink_connect, _stop, _wait_listening
from tests.support.jitrun import compile_c


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_c(tmp_path_factory.mktemp("security"), "echo", ECHO_C)


@pytest.mark.parametrize("args", [
    ["--listen", "127.0.0.1:0"],
    ["--listen", ":0"],
    ["--listen", "{tmp}/x.sock", "--once"],
    ["listen=127.0.0.1:0"],
    ["--connect", "127.0.0.1:1"],
])
def test_allow_uid_is_a_usage_error_where_no_uid_is_checked(tmp_path: Path,
                                                            args: list[str]) -> None:
    """``--allow-uid`` with anything but a daemon on a unix socket is refused at once (a TCP
    peer has no uid the kernel vouches for), never silently ignored."""
    argv = [EXE, *(a.format(tmp=tmp_path) for a in args), "--allow-uid", str(os.getuid())]
    r = subprocess.run(argv, capture_output=True, timeout=30)
    assert r.returncode == 2, r.stderr
    assert b"--allow-uid needs a daemon on a unix socket" in r.stderr
    assert r.stdout == b""


def test_daemon_refuses_allow_uid_on_tcp() -> None:
    with pytest.raises(ValueError, match="unix socket"):
        Daemon(TcpAddress("127.0.0.1", 0), ServeOptions(), DaemonOptions(allow_uid=0))
    Daemon(UnixAddress("/nonexistent/x.sock"), ServeOptions(), DaemonOptions(allow_uid=0))


# ---- time: silent, slow and half-open peers ------------------------------------------------


def _silent(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    return s


def _slowloris(port: int, stop: threading.Event) -> threading.Thread:
    """A peer that sends a CallWrapper header one byte every 0.3 s (never a message)."""
    def run() -> None:
        with socket.create_connection(("127.0.0.1", port)) as s:
            header = struct.pack("<4Q", 64, 3, 1, 0x1000)
            for b in header:
                if stop.wait(0.3):
                    return
                try:
                    s.send(bytes([b]))
                except OSError:
                    return
            stop.wait()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_silent_and_slowloris_peers_cannot_keep_a_real_controller_out(echo: Path) -> None:
    """``--max-sessions 3`` with two silent connections and a slowloris one holding every
    slot: a real llvm-jitlink still gets a session at once (the daemon ends the session that
    has waited longest for its controller's first message); before, it waited for them."""
    port = _free_port()
    proc = subprocess.Popen(
        [EXE, "--listen", f"127.0.0.1:{port}", "--max-sessions", "3", "--warm", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    stop = threading.Event()
    try:
        _wait_listening(port, proc)
        silent = [_silent(port), _silent(port)]
        slow = _slowloris(port, stop)
        time.sleep(1.5)  # all three hold their slots, Setup sent
        t0 = time.monotonic()
        r = _jitlink_connect(port, echo, "real", "2", "40")
        elapsed = time.monotonic() - t0
        assert r.returncode == 42, r.stderr
        assert elapsed < 4.0, f"llvm-jitlink took {elapsed:.1f}s"
        # Again, with the slots refilled by the silent peers' ends.
        r = _jitlink_connect(port, echo, "again", "1")
        assert r.returncode == 1, r.stderr
    finally:
        stop.set()
        rc, err, out = _stop(proc)
        for s in silent:
            s.close()
        slow.join(5)
    assert rc == 0, err
    assert "evicted: its controller sent no message" in err
    assert out.decode().splitlines() == ["session real sum=42", "session again sum=1"]
    assert "Traceback" not in err


async def _listen_once(*args: str) -> tuple[trio.Process, trio.SocketStream, int]:
    """``orc-executor listen=127.0.0.1:PORT ARGS`` (one TCP session, stock behaviour) and a
    connection to it."""
    port = _free_port()
    proc = await trio.lowlevel.open_process(
        [EXE, f"listen=127.0.0.1:{port}", *args], stderr=subprocess.PIPE)
    with trio.fail_after(10):
        while True:
            try:
                return proc, await trio.open_tcp_stream("127.0.0.1", port), port
            except OSError:
                await trio.sleep(0.05)


async def _stderr_of(proc: trio.Process) -> str:
    assert proc.stderr is not None
    chunks = []
    while data := await proc.stderr.receive_some(1 << 16):
        chunks.append(data)
    return b"".join(chunks).decode()


@pytest.mark.parametrize("peer", ["silent", "slowloris"])
async def test_handshake_timeout_closes_a_peer_that_sends_no_message(peer: str) -> None:
    proc, stream, _port = await _listen_once("--handshake-timeout", "0.5")
    t0 = trio.current_time()
    with trio.fail_after(10):
        data = await stream.receive_some(1 << 16)  # Setup
        assert data
        while True:
            if peer == "slowloris":
                with trio.move_on_after(0.2):
                    got = await stream.receive_some(1 << 16)
                    if not got:
                        break
                try:
                    await stream.send_all(b"\x40")
                except trio.BrokenResourceError:
                    break
            elif not await stream.receive_some(1 << 16):
                break
        closed_after = trio.current_time() - t0
        assert await proc.wait() == 1
    err = await _stderr_of(proc)
    assert "no message from the controller within 0.5s of Setup" in err
    assert 0.4 < closed_after < 3, closed_after
    assert "Traceback" not in err


async def test_idle_timeout_closes_a_controller_that_went_silent() -> None:
    """A controller that holds memory and then says nothing (nothing in flight) is closed
    after ``--idle-timeout``; its socket has TCP keepalive (a half-open peer is found by the
    kernel within ~2 minutes)."""
    proc, stream, port = await _listen_once("--idle-timeout", "1.5")
    async with Controller.over(stream) as c:
        inst = c.symbol(mm.instance)
        assert await c.call(mm.reserve, names.RESERVE, inst, 4096)
        t0 = trio.current_time()
        for _ in range(10):  # the timer shown is the retransmit one until our ACK arrives
            ss = subprocess.run(["ss", "-tno", "state", "established", f"( sport = :{port} )"],
                                capture_output=True, text=True, timeout=10).stdout
            if "keepalive" in ss:
                break
            await trio.sleep(0.05)
        assert "keepalive" in ss, ss
        with trio.fail_after(10):
            await c.eof.wait()
        assert 1.2 < trio.current_time() - t0 < 5
    with trio.fail_after(10):
        assert await proc.wait() == 1
    err = await _stderr_of(proc)
    assert "no message from the controller for 1.5s with nothing in flight" in err
