"""Issue 21, item 2: a server on demand. When no ``orc-executor serve`` answers, the native
launcher runs the session cold and starts a server in the background (detached, one per user
and installation, racing launchers start one), so the next launches are warm; the server
exits after ``$ORC_EXECUTOR_SERVE_IDLE`` seconds without a launch. End to end with
llvm-jitlink 22 and the reference executor. Every test runs in a directory of its own
(``$XDG_RUNTIME_DIR``) and kills the servers it caused."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from orc_executor import __version__
from orc_executor.launch.warmdir import install_hash
from tests.support.jitrun import compile_c
from tests.support.procs import kill_servers, servers_under

LLVM22 = Path("/usr/lib/llvm-22/bin")
EXE = str(Path(sys.executable).parent / "orc-executor")
REF = str(LLVM22 / "llvm-jitlink-executor")

# Prints its parent's pid: the controller's for a cold session (the launched process runs
# it), a process of the server's for a warm one.
PPID_C = r"""
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    printf("hello %s ppid=%d\n", argc ? argv[0] : "-", (int)getppid());
    return 3;
}
"""


@pytest.fixture(scope="module")
def prog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_c(tmp_path_factory.mktemp("autoserve"), "ppid", PPID_C)


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A runtime directory of this test's own and the environment that uses it (auto-serve
    on, no explicit socket); the servers started there are ended afterwards."""
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items()
           if k not in ("ORC_EXECUTOR_WARM_SOCKET", "ORC_EXECUTOR_AUTO_SERVE",
                        "ORC_EXECUTOR_COLD", "ORC_EXECUTOR_SERVE_IDLE")}
    env["XDG_RUNTIME_DIR"] = str(xdg)
    try:
        yield xdg, env
    finally:
        kill_servers(xdg)


def socket_of(xdg: Path) -> Path:
    """The socket this installation's launcher uses there (version and installation)."""
    return xdg / "orc-executor" / (
        f"warm-{__version__}-{install_hash(str(Path(EXE).parent)):016x}.sock")


def jitlink(obj: Path, env: dict[str, str], executor: str = EXE, *args: str
            ) -> tuple[subprocess.CompletedProcess[bytes], int]:
    """One llvm-jitlink run with its output captured through pipes (``communicate`` reads
    to EOF): the result and llvm-jitlink's pid."""
    cmd = [str(LLVM22 / "llvm-jitlink"), f"-oop-executor={executor}", str(obj)]
    if args:
        cmd += ["-args", *args]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as p:
        out, err = p.communicate(timeout=60)
    return subprocess.CompletedProcess(cmd, p.returncode, out, err), p.pid


def parent_of(r: subprocess.CompletedProcess[bytes]) -> int:
    assert r.returncode == 3, r.stderr
    return int(r.stdout.split(b"ppid=")[1])


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_first_launch_is_cold_and_starts_a_server_the_next_are_warm(
        prog: Path, runtime: tuple[Path, dict[str, str]]) -> None:
    xdg, env = runtime
    sock = socket_of(xdg)
    ref = subprocess.run([str(LLVM22 / "llvm-jitlink"), f"-oop-executor={REF}", str(prog)],
                         capture_output=True, timeout=60)
    first, pid = jitlink(prog, env)
    assert parent_of(first) == pid  # cold: the launched process ran it
    assert first.stderr == ref.stderr
    wait_for(sock.exists, 30, "no server started")
    (server,) = servers_under(xdg)
    second, pid = jitlink(prog, env)
    assert parent_of(second) != pid  # warm: a process of the server's ran it
    zygote = parent_of(second)  # the server's fork server forked the session process
    assert int(Path(f"/proc/{zygote}/stat").read_text().rsplit(")", 1)[1].split()[1]) == server
    for r in (first, second):  # the same program output as the reference's either way
        assert (r.stdout.split(b" ppid=")[0], r.stderr, r.returncode) == (
            ref.stdout.split(b" ppid=")[0], ref.stderr, ref.returncode)
    third, pid = jitlink(prog, env)
    assert parent_of(third) != pid
    assert servers_under(xdg) == [server]
    log = sock.with_suffix(".log").read_text()
    assert f"warm server on {sock}" in log
    # Fully detached: its own session, stdin/stdout on /dev/null, stderr its log, no other
    # fd of the launcher's (only the lock, its sockets and its own files).
    assert os.getsid(server) != os.getsid(0)
    fds = {int(fd): os.readlink(f"/proc/{server}/fd/{fd}") for fd in os.listdir(
        f"/proc/{server}/fd")}
    assert fds[0] == fds[1] == "/dev/null"
    assert fds[2] == str(sock.with_suffix(".log"))
    assert fds[3] == str(sock.with_suffix(".lock"))
    assert sock.with_suffix(".lock").read_text() == f"{server}\n"  # who holds it
    assert not any(t.startswith("pipe:") for t in fds.values()), fds


def test_output_through_pipes_sees_eof_when_the_program_ends(
        prog: Path, runtime: tuple[Path, dict[str, str]]) -> None:
    """The launch that starts the server: llvm-jitlink's output captured through pipes
    reaches EOF as soon as the program ends, while the server runs on (it holds none of
    those pipes)."""
    xdg, env = runtime
    env["ORC_EXECUTOR_SERVE_IDLE"] = "600"
    t0 = time.monotonic()
    r, _pid = jitlink(prog, env)  # reads stdout and stderr to EOF
    took = time.monotonic() - t0
    assert r.returncode == 3
    wait_for(lambda: servers_under(xdg), 10, "no server started")
    assert took < 20  # (a server holding the pipes would make it last its 600 s)
    wait_for(socket_of(xdg).exists, 30, "the server did not listen")
    assert servers_under(xdg)  # still running after the controller saw EOF


def test_server_exits_when_idle(prog: Path, runtime: tuple[Path, dict[str, str]]) -> None:
    xdg, env = runtime
    env["ORC_EXECUTOR_SERVE_IDLE"] = "2"
    sock = socket_of(xdg)
    jitlink(prog, env)
    wait_for(sock.exists, 30, "no server started")
    second, pid = jitlink(prog, env)
    assert parent_of(second) != pid  # a launch resets the idle time
    wait_for(lambda: not servers_under(xdg), 20, "the idle server did not exit")
    assert not sock.exists()
    assert "no launch for" in sock.with_suffix(".log").read_text()
    # and the next launch starts a new one
    jitlink(prog, env)
    wait_for(sock.exists, 30, "no server started again")


def test_auto_serve_off(prog: Path, runtime: tuple[Path, dict[str, str]]) -> None:
    xdg, env = runtime
    env["ORC_EXECUTOR_AUTO_SERVE"] = "0"
    for _ in range(2):
        r, pid = jitlink(prog, env)
        assert parent_of(r) == pid
    time.sleep(1.5)
    assert not servers_under(xdg)
    assert not (xdg / "orc-executor").exists()


def test_racing_launchers_start_one_server(prog: Path,
                                           runtime: tuple[Path, dict[str, str]]) -> None:
    xdg, env = runtime
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: jitlink(prog, env)[0], range(8)))
    assert all(r.returncode == 3 for r in results), [r.stderr for r in results]
    wait_for(socket_of(xdg).exists, 30, "no server started")
    time.sleep(1)
    assert len(servers_under(xdg)) == 1


def test_explicit_serve_still_works_and_is_alone_on_its_socket(
        prog: Path, runtime: tuple[Path, dict[str, str]]) -> None:
    """``orc-executor serve`` listens where the launchers look (no idle exit); a second
    server on the same socket (here one on demand would be) exits with an error."""
    xdg, env = runtime
    sock = socket_of(xdg)
    serve = subprocess.Popen([EXE, "serve"], env=env, stderr=subprocess.PIPE)
    try:
        wait_for(sock.exists, 30, "serve did not listen")
        r, pid = jitlink(prog, env)
        assert parent_of(r) != pid
        second = subprocess.run([EXE, "serve"], env=env, capture_output=True, timeout=30)
        assert second.returncode == 1
        assert b"another orc-executor serve is running" in second.stderr
        assert f"pid {serve.pid} holds".encode() in second.stderr
        assert b"Traceback" not in second.stderr
        assert sock.exists()  # the running server's socket was left alone
        r, pid = jitlink(prog, env)
        assert parent_of(r) != pid
        assert serve.poll() is None
        assert servers_under(xdg) == []  # no server on demand either
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=30) == 0


def test_one_server_per_installation(prog: Path, runtime: tuple[Path, dict[str, str]],
                                     tmp_path: Path) -> None:
    """A launcher of another installation (another bin/ directory) never hands its launch
    to this installation's server: the socket's name holds the version and the
    installation."""
    xdg, env = runtime
    env["ORC_EXECUTOR_AUTO_SERVE"] = "0"
    serve = subprocess.Popen([EXE, "serve"], env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for(socket_of(xdg).exists, 30, "serve did not listen")
        other = tmp_path / "other-venv" / "bin"
        other.mkdir(parents=True)
        shutil.copy(EXE, other / "orc-executor")
        # Its cold path runs this interpreter (the package is not installed in other-venv;
        # nothing is ever imported from the working directory).
        r, pid = jitlink(prog, dict(env, ORC_EXECUTOR_PYTHON=sys.executable),
                         str(other / "orc-executor"))
        assert parent_of(r) == pid  # cold
        r, pid = jitlink(prog, env)
        assert parent_of(r) != pid  # this installation's launcher: warm
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=30) == 0
