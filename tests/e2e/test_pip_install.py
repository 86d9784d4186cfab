"""Issue 21, item 3: ``pip install`` puts the native launcher in place as ``bin/orc-executor``
with no separate step. A wheel is built from a copy of the tree (as ``pip install .`` does)
and installed into a fresh venv, whose ``bin/orc-executor`` then runs llvm-jitlink 22's
hello as llvm-jitlink-executor does, cold and, with a server started on demand, warm."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from tests.support.jitrun import compile_c
from tests.support.procs import kill_servers

REPO = Path(__file__).resolve().parents[2]
LLVM22 = Path("/usr/lib/llvm-22/bin")

HELLO_C = r"""
#include <stdio.h>
#include <unistd.h>
int main(void) { printf("hello ppid=%d\n", (int)getppid()); return 0; }
"""


def _tree_copy(dest: Path) -> Path:
    """The tracked files of the checkout (no build products, no venv); outside a git
    checkout, the tree without them."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True)
    if listed.returncode != 0:
        shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(
            ".venv", "build", ".git", "*.egg-info", "__pycache__", "*.so", ".*_cache",
            "orc-executor-launcher"))
        return dest
    for name in filter(None, listed.stdout.decode().split("\0")):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    return dest


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel built from the tree installed. Its dependencies come from
    this test run's venv (a path entry), so nothing is fetched for them."""
    tmp = tmp_path_factory.mktemp("pip")
    src = _tree_copy(tmp / "src")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                            str(tmp / "dist"), str(src)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp / "dist").glob("orc_executor-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" /
                                "python"), "install", "-q", "--no-deps", str(wheel)],
                               capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr
    site = subprocess.run([str(venv / "bin" / "python"), "-c",
                           "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "deps-from-test-venv.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv


@pytest.fixture(scope="module")
def hello(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_c(tmp_path_factory.mktemp("hello"), "hello", HELLO_C)


def test_pip_installs_the_native_launcher(venv: Path) -> None:
    launcher = venv / "bin" / "orc-executor"
    assert launcher.read_bytes()[:4] == b"\x7fELF"
    assert os.access(launcher, os.X_OK)
    assert (venv / "bin" / "orc-executor-py").read_text().startswith("#!")  # the Python one
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import orc_executor; print(orc_executor.__file__)"],
                           capture_output=True, text=True, check=True, cwd="/")
    assert where.stdout.startswith(str(venv))  # the installed package, not the checkout


def _jitlink(executor: Path | str, obj: Path, env: dict[str, str]
             ) -> tuple[subprocess.CompletedProcess[bytes], int]:
    with subprocess.Popen([str(LLVM22 / "llvm-jitlink"), f"-oop-executor={executor}", str(obj)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as p:
        out, err = p.communicate(timeout=60)
    return subprocess.CompletedProcess([], p.returncode, out, err), p.pid


def test_the_installed_launcher_runs_hello_cold_then_warm(venv: Path, hello: Path,
                                                          tmp_path: Path) -> None:
    ref, _ = _jitlink(LLVM22 / "llvm-jitlink-executor", hello, dict(os.environ))
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items()
           if k not in ("ORC_EXECUTOR_WARM_SOCKET", "ORC_EXECUTOR_AUTO_SERVE", "ORC_EXECUTOR_COLD")}
    env["XDG_RUNTIME_DIR"] = str(xdg)
    launcher = venv / "bin" / "orc-executor"
    try:
        cold, pid = _jitlink(launcher, hello, env)
        assert (cold.returncode, cold.stderr) == (ref.returncode, ref.stderr)
        assert cold.stdout == f"hello ppid={pid}\n".encode()
        deadline = time.monotonic() + 30
        while not list((xdg / "orc-executor").glob("*.sock")):
            assert time.monotonic() < deadline, "no server started"
            time.sleep(0.05)
        warm, pid = _jitlink(launcher, hello, env)
        assert (warm.returncode, warm.stderr) == (ref.returncode, ref.stderr)
        assert warm.stdout.startswith(b"hello ppid=")
        assert warm.stdout != f"hello ppid={pid}\n".encode()
    finally:
        kill_servers(xdg)
