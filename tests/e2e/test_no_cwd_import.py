"""Issue 20, finding 2: no code is imported from the working directory.

A directory named ``orc_executor/`` in the working directory of a controller, of the daemon or
of ``orc-executor serve`` must never be imported: every child interpreter starts with ``-P``
(``orc_executor/interpreter.py``), the native launcher's cold path too. The planted package
records that it ran in a marker file and then breaks the process; each test runs a real
``llvm-jitlink`` 22 session and requires the program's output and no marker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.test_daemon import _free_port, _wait_listening
from tests.support.jitrun import compile_c

LLVM_JITLINK = "/usr/lib/llvm-22/bin/llvm-jitlink"
EXE = str(Path(sys.executable).parent / "orc-executor")

HELLO_C = r"""
#include <stdio.h>
int main(int argc, char **argv) { printf("hello %d\n", argc); return 7; }
"""


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, Path]:
    """A working directory holding a hostile ``orc_executor`` package, and its marker file."""
    cwd = tmp_path / "cwd"
    pkg = cwd / "orc_executor"
    pkg.mkdir(parents=True)
    marker = tmp_path / "planted-ran"
    body = (f"open({str(marker)!r}, 'a').write('ran\\n')\n"
            "raise SystemExit('planted orc_executor imported')\n")
    for name in ("__init__.py", "__main__.py", "worker.py", "launch.py"):
        (pkg / name).write_text(body)
    return cwd, marker


@pytest.fixture(scope="module")
def hello(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_c(tmp_path_factory.mktemp("nocwd"), "hello", HELLO_C)


def _jitlink(cwd: Path, hello: Path, *executor_args: str,
             env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([LLVM_JITLINK, *executor_args, str(hello)], cwd=cwd, env=env,
                          capture_output=True, timeout=60)


def _check(result: subprocess.CompletedProcess[bytes], marker: Path,
           stdout: bytes = b"hello 0\n") -> None:
    assert not marker.exists(), "the planted orc_executor package was imported"
    assert (result.stdout, result.returncode) == (stdout, 7), result.stderr.decode()


def test_cold_launch_ignores_cwd_package(planted: tuple[Path, Path], hello: Path,
                                        tmp_path: Path) -> None:
    cwd, marker = planted
    env = dict(os.environ, ORC_EXECUTOR_COLD="1",
               ORC_EXECUTOR_WARM_SOCKET=str(tmp_path / "none.sock"))
    _check(_jitlink(cwd, hello, f"-oop-executor={EXE}", env=env), marker)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def test_daemon_sessions_ignore_cwd_package(planted: tuple[Path, Path], hello: Path) -> None:
    cwd, marker = planted
    port = _free_port()
    # A daemon's sessions write the program's output to the daemon's own stdout.
    proc = subprocess.Popen([EXE, "--listen", f"127.0.0.1:{port}", "--warm", "2"], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_listening(port, proc)
        for _ in range(3):  # warm workers forked by the zygote, and their replacements
            _check(_jitlink(cwd, hello, f"-oop-executor-connect=127.0.0.1:{port}",
                            env=dict(os.environ)), marker, stdout=b"")
    finally:
        _stop(proc)
    assert proc.stdout is not None and proc.stdout.read() == b"hello 0\n" * 3


def test_warm_server_ignores_cwd_package(planted: tuple[Path, Path], hello: Path,
                                        tmp_path: Path) -> None:
    cwd, marker = planted
    sock = tmp_path / "sockdir" / "warm.sock"
    sock.parent.mkdir(mode=0o700)
    env = dict(os.environ, ORC_EXECUTOR_WARM_SOCKET=str(sock))
    proc = subprocess.Popen([EXE, "serve", "--warm", "2"], cwd=cwd, env=env,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while not sock.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.3)
        for _ in range(3):
            _check(_jitlink(cwd, hello, f"-oop-executor={EXE}", env=env), marker)
    finally:
        _stop(proc)
    assert not marker.exists()
