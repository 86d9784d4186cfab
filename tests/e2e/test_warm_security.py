"""Issue 20, finding 1: another local user cannot take over launched sessions.

A second user (created with ``useradd``; the tests run as root) squats the warm socket's
directory (its own directory, a directory open to everyone, or a symbolic link): the
launcher (native and Python) starts cold with a warning and sends nothing there, and
``orc-executor serve`` refuses such a directory. A launch datagram from the second user that
passes as its reply socket a socket connected to one of this user's listening sockets (so
that ``SO_PEERCRED`` of it names this user) is refused: the server takes the sender's uid
from the kernel (``SCM_CREDENTIALS``). End to end with llvm-jitlink 22."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orc_executor.launch.client import warm_socket_path
from tests.support.jitrun import compile_c
from tests.support.procs import start_serve

LLVM22 = Path("/usr/lib/llvm-22/bin")
EXE = str(Path(sys.executable).parent / "orc-executor")
SYSTEM_PYTHON = "/usr/bin/python3"  # the second user's (stdlib only)
SQUATTER = "orc-squatter"

PPID_C = r"""
#include <stdio.h>
#include <unistd.h>
int main(void) { printf("ppid=%d\n", (int)getppid()); return 0; }
"""

# Run as the second user: bind a datagram socket at argv[1] (open to everyone), say "ready",
# then report whether anything arrives within argv[2] seconds.
LISTEN_PY = r"""
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o777)
print("ready", flush=True)
s.settimeout(float(sys.argv[2]))
try:
    s.recvmsg(4096, 4096)
    print("GOT", flush=True)
except socket.timeout:
    print("NONE", flush=True)
"""

# Run as the second user: a launch to the warm socket argv[1] whose reply socket is connected
# to this user's listening socket argv[2], with a pipe pair for the protocol. ACCEPTED if a
# session process answers on the pipe (its Setup message), REFUSED at EOF.
ATTACK_PY = r"""
import array, os, select, socket, sys
conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
conn.connect(sys.argv[2])
to_exec_r, to_exec_w = os.pipe()
from_exec_r, from_exec_w = os.pipe()
header = b'{"kind": "fdpair", "stdio": false, "controller_pid": %d, "llvm_version": null}' % (
    os.getpid())
fds = array.array("i", [conn.fileno(), to_exec_r, from_exec_w]).tobytes()
launch = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
launch.sendmsg([header], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)], 0, sys.argv[1])
os.close(to_exec_r)
os.close(from_exec_w)
ready, _, _ = select.select([from_exec_r], [], [], 10)
data = os.read(from_exec_r, 4096) if ready else b""
print("ACCEPTED" if data else "REFUSED", flush=True)
"""


@pytest.fixture(scope="module")
def squatter() -> pwd.struct_passwd:
    """The second local user (created if missing)."""
    if os.geteuid() != 0:
        pytest.fail("these tests create a second user (useradd): run them as root")
    try:
        return pwd.getpwnam(SQUATTER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", SQUATTER], check=True)
        return pwd.getpwnam(SQUATTER)


def as_user(user: pwd.struct_passwd, *cmd: str) -> list[str]:
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
            "--", *cmd]


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory every user can create files in, as /tmp (mode 1777)."""
    d = Path(tempfile.mkdtemp(prefix="orc-shared-", dir="/tmp"))
    d.chmod(0o1777)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def prog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_c(tmp_path_factory.mktemp("security"), "ppid", PPID_C)


@pytest.fixture(scope="module")
def py_launcher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pure-Python launcher (orc_executor.launch.client), as a controller would start it."""
    py = tmp_path_factory.mktemp("py") / "orc-executor-py"
    py.write_text(f"#!/bin/sh\nexec {sys.executable} -m orc_executor.launch.client \"$@\"\n")
    py.chmod(0o755)
    return py


def _squat(user: pwd.struct_passwd, sock: Path, seconds: float) -> subprocess.Popen[str]:
    listener = subprocess.Popen(as_user(user, SYSTEM_PYTHON, "-c", LISTEN_PY, str(sock),
                                        str(seconds)), stdout=subprocess.PIPE, text=True)
    assert listener.stdout is not None
    assert listener.stdout.readline() == "ready\n"
    return listener


@pytest.mark.parametrize("launcher", ["native", "python"])
@pytest.mark.parametrize("how", ["owned-by-another-user", "open-to-everyone", "symlink"])
def test_a_squatted_directory_is_never_used(prog: Path, py_launcher: Path,
                                            squatter: pwd.struct_passwd, shared_tmp: Path,
                                            monkeypatch: pytest.MonkeyPatch, how: str,
                                            launcher: str) -> None:
    """``$XDG_RUNTIME_DIR/orc-executor`` (as ``/tmp/orc-executor-UID`` would be) made by the
    second user, open to everyone, or a symbolic link to the second user's directory, with
    the second user's socket where this user's server would listen: the launch starts cold
    (same output), warns on stderr, sends nothing there and starts no server."""
    squat_dir = shared_tmp / "orc-executor"
    if how == "owned-by-another-user":
        subprocess.run(as_user(squatter, "mkdir", "-m", "777", str(squat_dir)), check=True)
    elif how == "open-to-everyone":
        squat_dir.mkdir()
        squat_dir.chmod(0o777)
    else:
        theirs = shared_tmp / "theirs"
        subprocess.run(as_user(squatter, "mkdir", "-m", "777", str(theirs)), check=True)
        squat_dir.symlink_to(theirs)
    monkeypatch.delenv("ORC_EXECUTOR_WARM_SOCKET", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(shared_tmp))
    sock = Path(warm_socket_path())  # where this user's launcher looks
    assert sock.parent == squat_dir
    listener = _squat(squatter, sock, 4)
    env = {k: v for k, v in os.environ.items()
           if k not in ("ORC_EXECUTOR_WARM_SOCKET", "ORC_EXECUTOR_AUTO_SERVE")}
    env["XDG_RUNTIME_DIR"] = str(shared_tmp)
    executor = EXE if launcher == "native" else str(py_launcher)
    with subprocess.Popen([str(LLVM22 / "llvm-jitlink"), f"-oop-executor={executor}", str(prog)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as p:
        out, err = p.communicate(timeout=60)
    got, _ = listener.communicate(timeout=30)
    assert got == "NONE\n"  # nothing was sent to the second user's socket
    assert p.returncode == 0, err
    assert out == f"ppid={p.pid}\n".encode()  # cold, in the launched process
    assert b"warning: not using the warm socket" in err
    time.sleep(0.5)
    assert not [e for e in os.listdir("/proc") if e.isdigit()
                and str(shared_tmp).encode() in _cmdline(int(e))]  # no server started


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.parametrize("how", ["owned-by-another-user", "open-to-everyone", "symlink"])
def test_serve_refuses_a_directory_it_does_not_own(squatter: pwd.struct_passwd,
                                                   shared_tmp: Path, how: str) -> None:
    directory = shared_tmp / "orc-executor"
    if how == "owned-by-another-user":
        subprocess.run(as_user(squatter, "mkdir", "-m", "700", str(directory)), check=True)
    elif how == "open-to-everyone":
        directory.mkdir(mode=0o755)
        directory.chmod(0o755)
    else:
        (shared_tmp / "elsewhere").mkdir(mode=0o700)
        directory.symlink_to(shared_tmp / "elsewhere")
    r = subprocess.run([EXE, "serve", "--socket", str(directory / "warm.sock")],
                       capture_output=True, timeout=60)
    assert r.returncode == 1
    assert b"refusing the warm socket directory" in r.stderr
    assert b"Traceback" not in r.stderr
    assert not (shared_tmp / "elsewhere" / "warm.sock").exists()


def test_stale_socket_file_is_replaced(prog: Path, tmp_path: Path) -> None:
    """A socket file nobody receives on (a server killed with SIGKILL leaves one) is replaced
    by the next server, which holds the lock."""
    sock = tmp_path / "warm.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(str(sock))
    stale.close()
    env = dict(os.environ, ORC_EXECUTOR_WARM_SOCKET=str(sock))
    serve = subprocess.Popen([EXE, "serve"], env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            with subprocess.Popen([str(LLVM22 / "llvm-jitlink"), f"-oop-executor={EXE}",
                                   str(prog)], stdout=subprocess.PIPE, env=env) as p:
                out, _ = p.communicate(timeout=60)
            if out != f"ppid={p.pid}\n".encode():
                break  # warm
            assert time.monotonic() < deadline, "the stale socket was not replaced"
            time.sleep(0.2)
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=30) == 0


def test_the_senders_uid_comes_from_the_kernel(squatter: pwd.struct_passwd, shared_tmp: Path,
                                               tmp_path: Path) -> None:
    """The second user reaches the warm socket (its directory and socket opened up by hand,
    as a misconfiguration would) and passes as its reply socket one connected to a
    listening socket of this user: ``SO_PEERCRED`` of that socket names this user, but the
    kernel's record of the datagram's sender does not, and the launch is refused."""
    home = shared_tmp / "warm"
    home.mkdir(mode=0o700)
    sock = home / "warm.sock"
    log = tmp_path / "serve.log"
    env = dict(os.environ, ORC_EXECUTOR_WARM_SOCKET=str(sock))
    with open(log, "wb") as log_file:
        serve = start_serve(sock, env, "--warm", "1", stderr=log_file)
    ours = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        home.chmod(0o711)
        sock.chmod(0o777)
        listening = shared_tmp / "ours.sock"
        ours.bind(str(listening))
        listening.chmod(0o777)
        ours.listen(4)
        r = subprocess.run(as_user(squatter, SYSTEM_PYTHON, "-c", ATTACK_PY, str(sock),
                                   str(listening)), capture_output=True, text=True, timeout=60)
        assert r.stdout == "REFUSED\n", r.stderr
        time.sleep(0.2)
        assert f"sent by uid {squatter.pw_uid}, not this user" in log.read_text()
    finally:
        ours.close()
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=30) == 0
