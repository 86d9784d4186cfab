"""Processes of the warm server's tests: the parent and liveness of a pid, starting an
``orc-executor serve`` and waiting for its socket, and finding and ending the servers whose
command line names a directory (the servers a test started on demand)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

EXE = str(Path(sys.executable).parent / "orc-executor")


def parent_of(pid: int) -> int | None:
    """The parent pid of ``pid`` (``None`` if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_serve(sock: Path, env: dict[str, str], *args: str,
                stderr: int | IO[bytes] | None = subprocess.DEVNULL,
                timeout: float = 30) -> subprocess.Popen[bytes]:
    """``orc-executor serve ARGS`` with ``env``, once its socket ``sock`` exists and its pool
    had a second to get ready."""
    server = subprocess.Popen([EXE, "serve", *args], env=env, stderr=stderr)
    deadline = time.monotonic() + timeout
    while not sock.exists():
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise AssertionError(f"serve did not listen on {sock}")
        time.sleep(0.02)
    time.sleep(1)
    return server


def servers_under(root: Path) -> list[int]:
    """Live processes whose command line has ``serve`` and names a path under ``root``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in cmd and any(str(root).encode() in a for a in cmd) and alive(int(entry)):
            out.append(int(entry))
    return out


def kill_servers(root: Path) -> None:
    """End every server :func:`servers_under` ``root`` finds (SIGTERM, then SIGKILL)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in servers_under(root):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while servers_under(root) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not servers_under(root):
            return
