"""Issue 4: transports and the daemon, end to end with llvm-jitlink 22 and the package
controller (for the transports LLVM 22 cannot use: unix sockets, adopted sockets,
connect-back)."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import trio

from orc_executor.controller import Controller
from orc_executor.protocol import names
from orc_executor.protocol.names import SimpleExecutorMemoryManager as mm
from tests.e2e.test_warm_state import EXIT_C, LIB_DESTRUCTOR_C  # (their pipe launches)
from tests.support.harness import proc_stat
from tests.support.jitrun import compile_c, compile_shared

LLVM22 = Path("/usr/lib/llvm-22/bin")
EXE = str(Path(sys.executable).parent / "orc-executor")

ECHO_C = r"""
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    long sum = 0;
    for (int i = 0; i < argc; i++) sum += atol(argv[i]);
    printf("session %s sum=%ld\n", argc ? argv[0] : "-", sum);
    return (int)(sum % 100);
}
"""

CRASH_C = r"""
#include <stdio.h>
int main(void) { fflush(stdout); volatile int *p = (int *)16; return *p; }
"""


@pytest.fixture(scope="module")
def objs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("daemon")
    return {"echo": compile_c(tmp, "echo", ECHO_C), "crash": compile_c(tmp, "crash", CRASH_C)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    # Poll /proc/net/tcp rather than connecting (a probe connection would become a session).
    deadline = time.monotonic() + timeout
    hexport = f":{port:04X}"
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(hexport) and fields[3] == "0A":
                return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {port}")


@pytest.fixture
def daemon() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = _free_port()
    proc = subprocess.Popen(
        [EXE, "--listen", f"127.0.0.1:{port}", "--max-sessions", "40", "--warm", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _wait_listening(port, proc)
    yield port, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _jitlink_connect(port: int, obj: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    cmd = [str(LLVM22 / "llvm-jitlink"), f"-oop-executor-connect=127.0.0.1:{port}", str(obj)]
    if args:
        cmd += ["-args", *args]
    return subprocess.run(cmd, capture_output=True, timeout=60)


def _jitlink_reference(obj: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    cmd = [str(LLVM22 / "llvm-jitlink"),
           f"-oop-executor={LLVM22 / 'llvm-jitlink-executor'}", str(obj)]
    if args:
        cmd += ["-args", *args]
    return subprocess.run(cmd, capture_output=True, timeout=60)


def _stop(proc: subprocess.Popen[bytes]) -> tuple[int, str, bytes]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=40)
    return proc.returncode, err.decode(), out


def test_daemon_serves_sessions_in_turn_and_stops_on_sigterm(
    daemon: tuple[int, subprocess.Popen[bytes]], objs: dict[str, Path]
) -> None:
    port, proc = daemon
    for i in range(3):
        r = _jitlink_connect(port, objs["echo"], f"s{i}", str(i), "40")
        ref = _jitlink_reference(objs["echo"], f"s{i}", str(i), "40")
        assert r.returncode == ref.returncode == 40 + i
        assert r.stderr == ref.stderr == b""
    rc, err, out = _stop(proc)
    assert rc == 0
    # The program's output goes to the daemon's stdout, as with llvm-jitlink-executor listen=.
    assert out.decode().splitlines() == [f"session s{i} sum={40 + i}" for i in range(3)]
    for i in range(1, 4):
        assert f"session {i} started" in err
        assert f"session {i} ended: exit 0" in err
    assert "SIGTERM" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("library", [False, True])
def test_daemon_session_runs_what_runs_at_exit(tmp_path: Path, library: bool) -> None:
    """A daemon's session process ends as the reference ends a pipe session (the reference's
    own listen= mode never ends a session it cannot tell is over): exit handlers, the last
    flush of C stdio and a library's destructor, their output on the daemon's stdout and
    stderr, the file in the daemon's working directory."""
    obj = compile_c(tmp_path, "exit", EXIT_C)
    args = ["exit"]
    if library:
        args.append(str(compile_shared(tmp_path, "dtor", LIB_DESTRUCTOR_C)))
    ref_dir, ours_dir = tmp_path / "ref", tmp_path / "ours"
    ref_dir.mkdir()
    ours_dir.mkdir()
    ref = subprocess.run([str(LLVM22 / "llvm-jitlink"),
                          f"-oop-executor={LLVM22 / 'llvm-jitlink-executor'}", str(obj),
                          "-args", *args], capture_output=True, timeout=60, cwd=ref_dir)
    port = _free_port()
    proc = subprocess.Popen([EXE, "--listen", f"127.0.0.1:{port}"], cwd=ours_dir,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_listening(port, proc)
        r = _jitlink_connect(port, obj, *args)
        # The session ends when the controller has released everything and gone quiet
        # (idle close); the file's buffered line is written as its process exits.
        left_open = ours_dir / "left-open.txt"
        deadline = time.monotonic() + 20
        while not (left_open.exists() and left_open.stat().st_size):
            assert time.monotonic() < deadline, "the session process did not exit"
            time.sleep(0.05)
    finally:
        rc, err, out = _stop(proc)
    assert ref.returncode == r.returncode == 5
    assert rc == 0  # stopped cleanly by SIGTERM
    assert out == ref.stdout == (b"main done, no newlineexit handler: puts\n"
                                 + (b"library destructor\n" if library else b""))
    assert ref.stderr.decode() == "exit handler: perror: Success\n"
    assert ref.stderr.decode() in err
    assert ((ours_dir / "left-open.txt").read_bytes() == (ref_dir / "left-open.txt").read_bytes()
            == b"written, never closed\n")


def test_one_worker_thread_per_session_is_enough_for_llvm_jitlink(objs: dict[str, Path]
                                                                    ) -> None:
    """``--max-concurrent-calls 1``: run_as_main takes the session's only worker thread, and
    every other call of llvm-jitlink's sessions is answered without one; the results match
    llvm-jitlink-executor's."""
    port = _free_port()
    proc = subprocess.Popen(
        [EXE, "--listen", f"127.0.0.1:{port}", "--max-concurrent-calls", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    _wait_listening(port, proc)
    try:
        for i in range(2):
            r = _jitlink_connect(port, objs["echo"], f"m{i}", str(i), "7")
            ref = _jitlink_reference(objs["echo"], f"m{i}", str(i), "7")
            assert r.returncode == ref.returncode == 7 + i
            assert r.stderr == ref.stderr == b""
            assert ref.stdout == f"session m{i} sum={7 + i}\n".encode()
    finally:
        rc, err, out = _stop(proc)
    assert rc == 0, err
    assert out.decode().splitlines() == [f"session m{i} sum={7 + i}" for i in range(2)]
    assert "Traceback" not in err


def test_load_32_controllers_with_one_crash(
    daemon: tuple[int, subprocess.Popen[bytes]], objs: dict[str, Path]
) -> None:
    port, proc = daemon
    n = 32

    def one(i: int) -> subprocess.CompletedProcess[bytes]:
        if i == 7:
            return _jitlink_connect(port, objs["crash"])
        return _jitlink_connect(port, objs["echo"], f"c{i}", str(i), str(1000 * i))

    t0 = time.monotonic()
    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(one, range(n)))
    elapsed = time.monotonic() - t0
    for i, r in enumerate(results):
        if i == 7:
            assert r.returncode != 0  # the crashing session only
            continue
        assert r.returncode == (1001 * i) % 100, (i, r)
        assert r.stderr == b""
    assert elapsed < 60
    # Still serving afterwards.
    r = _jitlink_connect(port, objs["echo"], "after", "5")
    assert r.returncode == 5
    rc, err, out = _stop(proc)
    assert rc == 0
    lines = sorted(out.decode().splitlines())
    expected = sorted([f"session c{i} sum={1001 * i}" for i in range(n) if i != 7]
                      + ["session after sum=5"])
    assert lines == expected
    assert "killed by SIGSEGV" in err
    assert err.count("ended: exit 0") == n


def test_non_loopback_listen_needs_allow_remote() -> None:
    r = subprocess.run([EXE, "--listen", "0.0.0.0:0"], capture_output=True, timeout=30)
    assert r.returncode == 2
    assert b"--allow-remote" in r.stderr
    assert r.stdout == b""


@pytest.mark.parametrize("once", [True, False])
async def test_unix_socket_listen_mode_and_session(tmp_path: Path, once: bool) -> None:
    path = tmp_path / "exec.sock"
    args = [EXE, "--listen", str(path)] + (["--once"] if once else [])
    proc = await trio.lowlevel.open_process(args, stderr=subprocess.PIPE)
    try:
        with trio.fail_after(10):
            while not path.exists():
                await trio.sleep(0.02)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        stream = await trio.open_unix_socket(str(path))
        async with Controller.over(stream) as c:
            inst = c.symbol(mm.instance)
            base = await c.call(mm.reserve, names.RESERVE, inst, 4096)
            assert base != 0
            assert await c.call(mm.release, names.RELEASE, inst, [base]) is None
        with trio.fail_after(10):
            if once:
                assert await proc.wait() == 0
            else:
                await trio.sleep(0.3)
                assert proc.poll() is None  # a daemon keeps serving
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            with trio.fail_after(20):
                assert await proc.wait() == 0


async def test_allow_uid_refuses_other_peers(tmp_path: Path) -> None:
    path = tmp_path / "exec.sock"
    other = os.getuid() + 12345
    proc = await trio.lowlevel.open_process(
        [EXE, "--listen", str(path), "--allow-uid", str(other)], stderr=subprocess.PIPE
    )
    try:
        with trio.fail_after(10):
            while True:  # the socket file exists from bind(), a moment before listen()
                try:
                    stream = await trio.open_unix_socket(str(path))
                    break
                except (FileNotFoundError, ConnectionRefusedError):
                    await trio.sleep(0.02)
        with trio.fail_after(10):
            data = await stream.receive_some(100)
        assert data == b""  # closed without a Setup
    finally:
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            assert await proc.wait() == 0
    assert proc.stderr is not None
    err = (await proc.stderr.receive_some(1 << 16)).decode()
    assert "not allowed" in err


async def test_tcp_connect_back() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    proc = await trio.lowlevel.open_process([EXE, f"tcp:connect=127.0.0.1:{port}"])
    with trio.fail_after(10):
        stream = await listener.accept()
    async with Controller.over(stream) as c:
        assert c.setup is not None and c.setup.triple == "x86_64-pc-linux-gnu"
        inst = c.symbol(mm.instance)
        assert await c.call(mm.reserve, names.RESERVE, inst, 0) == 0
    with trio.fail_after(10):
        assert await proc.wait() == 0
    await listener.aclose()


@pytest.mark.parametrize("form", ["socket:adopt={fd}", "fd={fd}", "--socket-fd={fd}"])
async def test_adopted_socket(form: str) -> None:
    ours, theirs = socket.socketpair()
    fd = theirs.fileno()
    arg = form.format(fd=fd)
    argv = [EXE, *arg.split("=", 1)] if arg.startswith("--") else [EXE, arg]
    proc = await trio.lowlevel.open_process(argv, pass_fds=(fd,))
    theirs.close()
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
    async with Controller.over(stream) as c:
        assert "__llvm_orc_SimpleRemoteEPC_dispatch_fn" in c.setup.symbols  # type: ignore[union-attr]
    with trio.fail_after(10):
        assert await proc.wait() == 0


def _cpu_of_tree(root: int) -> float:
    """CPU seconds (user + system) of ``root``'s descendants and itself, from /proc."""
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            parent[pid], cpu[pid] = proc_stat(pid)
        except OSError:
            continue  # gone meanwhile
    total = 0.0
    for pid, seconds in cpu.items():
        p = pid
        while p > 1 and p != root:
            p = parent.get(p, 0)
        if p == root:
            total += seconds
    return total


@pytest.mark.parametrize(("usec", "spins"), [("300000", True), ("0", False)])
async def test_daemon_passes_busy_poll_to_its_sessions(
    tmp_path: Path, usec: str, spins: bool
) -> None:
    """``--busy-poll`` reaches the session a warm worker runs: seen as the CPU time of the
    daemon's process tree while the controller is silent after a call (on a socket the
    reader polls only with ``--idle-close 0``)."""
    path = tmp_path / "exec.sock"
    proc = await trio.lowlevel.open_process(
        [EXE, "--listen", str(path), "--idle-close", "0", "--busy-poll", usec],
        stderr=subprocess.DEVNULL,
    )
    try:
        with trio.fail_after(10):
            while not path.exists():
                await trio.sleep(0.02)
        await trio.sleep(0.5)  # the pool's workers get ready
        stream = await trio.open_unix_socket(str(path))
        async with Controller.over(stream) as c:
            inst = c.symbol(mm.instance)
            base = await c.call(mm.reserve, names.RESERVE, inst, 4096)
            before = _cpu_of_tree(proc.pid)
            await trio.sleep(0.5)
            cpu = _cpu_of_tree(proc.pid) - before
            await c.call(mm.release, names.RELEASE, inst, [base])
    finally:
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            assert await proc.wait() == 0
    if spins:
        assert cpu >= 0.15, f"{cpu:.3f} s of CPU: the 0.3 s busy poll did not run"
    else:
        assert cpu < 0.1, f"{cpu:.3f} s of CPU while the controller was silent"


async def test_sigterm_waits_for_a_session_to_end_and_reports_its_status(tmp_path: Path) -> None:
    """A session still running at SIGTERM (here: within its idle close) ends on its own and
    the daemon logs its real exit status: the fork server that reports it stays until the
    running sessions have ended."""
    path = tmp_path / "exec.sock"
    proc = await trio.lowlevel.open_process(
        [EXE, "--listen", str(path), "--idle-close", "0.5"], stderr=subprocess.PIPE
    )
    try:
        with trio.fail_after(10):
            while not path.exists():
                await trio.sleep(0.02)
        await trio.sleep(0.5)  # the pool's workers (and the fork server) get ready
        stream = await trio.open_unix_socket(str(path))
        async with Controller.over(stream) as c:
            inst = c.symbol(mm.instance)
            base = await c.call(mm.reserve, names.RESERVE, inst, 4096)
            await c.call(mm.release, names.RELEASE, inst, [base])
            proc.send_signal(signal.SIGTERM)  # the session is now in its 0.5 s idle close
            with trio.fail_after(10):
                await c.eof.wait()  # the executor closed the idle session
        with trio.fail_after(20):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.stderr is not None
    err = (await proc.stderr.receive_some(1 << 16)).decode()
    assert "session 1 ended: exit 0" in err, err
