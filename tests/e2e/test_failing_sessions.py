"""Issue 20 (finding 2, second half): a ``--listen`` daemon whose session processes fail to
start backs off, logs the reason without a line per attempt, turns controllers away at once,
recovers when starting works again, and stops at SIGTERM at once.

The failure is one a user hits: ``python -m orc_executor --listen ...`` run from a source
checkout that is not installed. The daemon imports the package from the working directory;
its session processes (``python -P``, which never imports from there) cannot find it.
"""

from __future__ import annotations

import os
import re
import signal
import site
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.test_daemon import ECHO_C, LLVM22, _wait_listening
from tests.support.jitrun import compile_c

REPO = Path(__file__).resolve().parents[2]
MISSING = "No module named 'orc_executor'"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def checkout(tmp_path: Path) -> tuple[Path, Path]:
    """(python, checkout): a venv that has orc-executor's dependencies but not the package,
    and a directory holding the package (as a source checkout does)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    target = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                            check=True, capture_output=True, text=True).stdout.strip()
    # The test venv's site-packages as a plain path: its own .pth files (the editable
    # install of orc_executor) are not processed from there.
    Path(target, "deps.pth").write_text(site.getsitepackages()[0] + "\n")
    co = tmp_path / "checkout"
    co.mkdir()
    (co / "orc_executor").symlink_to(REPO / "orc_executor")
    probe = subprocess.run([str(python), "-P", "-c", "import orc_executor"], cwd=co,
                           capture_output=True, text=True)
    assert MISSING in probe.stderr, probe  # the session processes' view
    return python, co


def _jitlink(port: int, obj: Path) -> tuple[int, float, bytes]:
    t0 = time.monotonic()
    r = subprocess.run([str(LLVM22 / "llvm-jitlink"), f"-oop-executor-connect=127.0.0.1:{port}",
                        str(obj), "-args", "x", "6"], capture_output=True, timeout=30)
    return r.returncode, time.monotonic() - t0, r.stderr


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def test_daemon_whose_session_processes_fail_backs_off_and_stops_at_once(
        checkout: tuple[Path, Path], tmp_path: Path) -> None:
    """Controllers (llvm-jitlink 22) get a prompt hangup while session processes fail; the
    log holds the reason (the child's own line only from the first attempts, then ours) in a
    few lines for ~20 attempts, with growing intervals; once the package is importable again a
    session process starts and llvm-jitlink 22 runs its program; SIGTERM then ends the
    daemon within a second with status 0 and nothing left running. (Before: the child's
    error on every attempt and one line per controller, and SIGTERM took 2 s.)"""
    python, co = checkout
    obj = compile_c(tmp_path, "echo", ECHO_C)
    port = _free_port()
    log = tmp_path / "daemon.log"
    out = tmp_path / "daemon.out"
    with open(log, "wb") as err, open(out, "wb") as out_f:
        daemon = subprocess.Popen(
            [str(python), "-m", "orc_executor", "--listen", f"127.0.0.1:{port}",
             "--max-sessions", "2", "--warm", "2"],
            cwd=co, stdout=out_f, stderr=err)
    try:
        _wait_listening(port, daemon)
        time.sleep(1.0)  # the first attempts failed
        for _ in range(3):
            rc, took, msg = _jitlink(port, obj)
            assert rc != 0 and took < 5, (rc, took, msg)
        time.sleep(7.0)  # the backoff grows to its 5 s cap
        text = log.read_text()
        attempts = [int(n) for n in re.findall(r"after (\d+) attempts", text)]
        assert attempts and max(attempts) >= 8, text
        # The reason, from the daemon, without one line per attempt: the child's own line
        # only from the first attempts (the fork server and the 2 warm processes).
        assert f"session processes fail to start: {python}" in text, text
        assert text.count(MISSING) <= 3 + len(attempts) + 2, text
        assert len(text.splitlines()) <= 14, text
        waits = [float(x) for x in re.findall(r"next (?:attempt )?in ([\d.]+)s", text)]
        assert waits == sorted(waits) and waits[-1] >= 3.2, waits
        assert "session 1 refused" in text and "session 2 refused" not in text, text
        assert "Traceback" not in text

        # Starting works again (the package became importable): the daemon notices at its
        # next attempt, and a real controller is served.
        site_dir = subprocess.run(
            [str(python), "-c", "import site; print(site.getsitepackages()[0])"],
            check=True, capture_output=True, text=True).stdout.strip()
        Path(site_dir, "checkout.pth").write_text(f"{co}\n")
        deadline = time.monotonic() + 15
        while "session processes start again" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        rc, took, msg = _jitlink(port, obj)
        assert rc == 6, (rc, msg, log.read_text())
        assert b"session x sum=6\n" in out.read_bytes()

        t0 = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0, log.read_text()
        stopped = time.monotonic() - t0
        assert stopped < 1.0, f"SIGTERM took {stopped:.2f}s"
        time.sleep(0.3)
        assert not _processes_mentioning(str(python.parent.parent)), "orphans left running"
        print(f"stopped {stopped:.3f}s after SIGTERM; log:\n{log.read_text()}")
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
