"""Issue 20 (finding 5): controllers that vanish without a FIN — made half-open for real.

The controllers run in a network namespace joined to the host by a veth pair; the daemon
listens on the host's end. Once the sessions run, the namespace's end of the link is set
down: nothing the controllers' kernel could send (FIN, RST) reaches the daemon's host any
more, and nothing from it reaches them — as when a cable is pulled or the host is gone.
TCP keepalive (``--keepalive-idle/--keepalive-interval/--keepalive-count``, here 2 s, 1 s,
2 probes) and ``TCP_USER_TIMEOUT`` end each such session within their bound, and the slots
serve a real llvm-jitlink 22 afterwards. ``llvm-jitlink-executor`` sets no keepalive: its
session is still there after the same time (it would wait forever; not waited for here).

Needs root (``ip netns``, veth); iproute2 comes from scripts/bootstrap.sh.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.test_chaos import RawController
from tests.e2e.test_daemon import ECHO_C, EXE, LLVM22
from tests.support.harness import MM_INSTANCE, MM_RESERVE, RESERVE_SIG
from tests.support.jitrun import compile_c
from tests.support.procs import alive

#: Keepalive of the daemon under test: half-open sessions end within IDLE + INTERVAL * COUNT.
IDLE, INTERVAL, COUNT = 2, 1, 2
BOUND = IDLE + INTERVAL * COUNT

#: Writes a marker file (argv[0]) once running, then sleeps argv[1] milliseconds, prints.
MARK_SLEEP_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc < 2) return 2;
    FILE *f = fopen(argv[0], "w");
    if (f) { fputs("running\n", f); fclose(f); }
    usleep((useconds_t)atol(argv[1]) * 1000);
    printf("slept %s ms\n", argv[1]);
    return 5;
}
"""


def _setns(fd: int) -> None:
    """``setns(fd, CLONE_NEWNET)`` (``os.setns`` is Python 3.12+)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, 0x40000000) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


class Link:
    """A network namespace ``ns`` joined to the host by a veth pair: ``host_ip`` on the host's
    end, ``ns_ip`` on the namespace's end (``ns_dev``)."""

    def __init__(self, tag: str, subnet: int) -> None:
        self.ns = f"orc-ho-{tag}"
        self.host_dev, self.ns_dev = f"ohh{tag}", f"ohn{tag}"
        self.host_ip, self.ns_ip = f"10.231.{subnet}.1", f"10.231.{subnet}.2"

    def up(self) -> None:
        _ip("netns", "add", self.ns)
        _ip("link", "add", self.host_dev, "type", "veth", "peer", "name", self.ns_dev)
        _ip("link", "set", self.ns_dev, "netns", self.ns)
        _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_dev)
        _ip("link", "set", self.host_dev, "up")
        self.run("ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_dev)
        self.run("ip", "link", "set", self.ns_dev, "up")
        self.run("ip", "link", "set", "lo", "up")

    def run(self, *cmd: str) -> None:
        _ip("netns", "exec", self.ns, *cmd)

    def popen(self, *cmd: str, **kw: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["ip", "netns", "exec", self.ns, *cmd], **kw)  # type: ignore[call-overload, no-any-return]

    def cut(self) -> None:
        """Set the namespace's end down: no packet crosses either way, no FIN or RST."""
        self.run("ip", "link", "set", self.ns_dev, "down")

    def socket(self) -> socket.socket:
        """A TCP socket created inside the namespace (by this process, which then returns
        to its own namespace; the socket stays in the one it was made in)."""
        own = os.open("/proc/self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.ns}", os.O_RDONLY)
        try:
            _setns(target)  # this thread only
            try:
                return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            finally:
                _setns(own)
        finally:
            os.close(own)
            os.close(target)

    def down(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_dev], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=30)


@pytest.fixture
def link() -> Iterator[Link]:
    if os.geteuid() != 0:
        pytest.fail("the half-open tests need root (ip netns); CI runs them as root")
    tag = f"{os.getpid() % 100000}"
    lk = Link(tag, os.getpid() % 250 + 1)
    lk.down()  # leftovers of an interrupted run with the same pid
    lk.up()
    try:
        yield lk
    finally:
        lk.down()


@pytest.fixture(scope="module")
def objs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("halfopen")
    return {"echo": compile_c(tmp, "echo", ECHO_C), "marksleep": compile_c(tmp, "marksleep",
                                                                          MARK_SLEEP_C)}


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _wait_for(pred: Callable[[], object], timeout: float, what: str) -> float:
    """Poll ``pred()`` every 50 ms; the seconds it took. Fails after ``timeout``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout:g}s")


def _session_pids(log: Path) -> dict[int, int]:
    """Session number -> pid, from the daemon's log."""
    return {int(m[1]): int(m[2]) for m in
            re.finditer(r"session (\d+) started: peer .*, pid (\d+)", log.read_text())}


def test_half_open_controllers_free_their_sessions_and_slots(link: Link, objs: dict[str, Path],
                                                             tmp_path: Path) -> None:
    """Three controllers in the namespace take all three slots: llvm-jitlink 22 running a
    program that sleeps 10 minutes (a call in flight, nothing to send), llvm-jitlink 22
    running one that returns 3 s after the cut (its Result is never acknowledged), and a raw
    controller that completed Setup and a reserve and went quiet. The link is cut. Each
    session process ends within the keepalive bound (plus the 2 s the session lets a running
    call finish), the daemon logs why, and a new llvm-jitlink 22 session gets Setup and the
    right answer. The reference executor, cut off the same way, is still waiting."""
    port = _free_port(link.host_ip)
    log = tmp_path / "daemon.log"
    out = tmp_path / "daemon.out"  # the JIT'd programs' stdout (the session processes')
    with open(log, "wb") as err, open(out, "wb") as out_f:
        daemon = subprocess.Popen(
            [EXE, "--listen", f"{link.host_ip}:{port}", "--allow-remote", "--max-sessions", "3",
             "--warm", "1", "--keepalive-idle", str(IDLE), "--keepalive-interval",
             str(INTERVAL), "--keepalive-count", str(COUNT)],
            stdout=out_f, stderr=err, cwd=tmp_path)
    ref_port = _free_port(link.host_ip)
    reference = subprocess.Popen(
        [str(LLVM22 / "llvm-jitlink-executor"), f"listen={link.host_ip}:{ref_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    clients: list[subprocess.Popen[bytes]] = []
    raw: RawController | None = None
    try:
        _wait_for(lambda: "serving sessions on" in log.read_text(), 20, "daemon listening")
        marks = [tmp_path / "long.mark", tmp_path / "short.mark", tmp_path / "ref.mark"]
        for mark, ms in ((marks[0], "600000"), (marks[1], "")):
            clients.append(link.popen(
                str(LLVM22 / "llvm-jitlink"),
                f"-oop-executor-connect={link.host_ip}:{port}", str(objs["marksleep"]),
                "-args", str(mark), ms or "3000",
                stdout=subprocess.PIPE, stderr=subprocess.PIPE))
            _wait_for(mark.exists, 30, f"the JIT'd program of {mark.name} running")
        t_short = time.monotonic()
        sock = link.socket()
        sock.settimeout(20)
        sock.connect((link.host_ip, port))
        raw = RawController(sock)
        inst = raw.symbols[MM_INSTANCE]
        assert raw.call(MM_RESERVE, RESERVE_SIG.encode_args(inst, 4096))  # spoke: not evictable
        _wait_for(lambda: len(_session_pids(log)) == 3, 10, "three sessions started")
        pids = _session_pids(log)

        # The reference, connected from the namespace and running the 10-minute program.
        for _ in range(100):  # it listens once its socket is bound
            if f":{ref_port:04X} " in Path("/proc/net/tcp").read_text():
                break
            time.sleep(0.05)
        clients.append(link.popen(
            str(LLVM22 / "llvm-jitlink"), f"-oop-executor-connect={link.host_ip}:{ref_port}",
            str(objs["marksleep"]), "-args", str(marks[2]), "600000",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        _wait_for(marks[2].exists, 30, "the reference's JIT'd program running")

        # The short program returns 3 s after it started: make sure that is after the cut.
        assert time.monotonic() - t_short < 2.5, "setting up took too long for the short case"
        link.cut()
        t_cut = time.monotonic()
        took: dict[int, float] = {}

        def all_ended() -> bool:
            for n, pid in pids.items():
                if n not in took and not alive(pid):
                    took[n] = round(time.monotonic() - t_cut, 2)
            return len(took) == len(pids)

        _wait_for(all_ended, BOUND + 2 + 10, "the half-open sessions ending")
        # The daemon logs a session's end once the fork server has reaped its process and
        # told it: a moment after the process is gone.
        ended = [rf"session {n} ended: exit [01] after" for n in pids]
        _wait_for(lambda: all(re.search(e, log.read_text()) for e in ended), 10,
                  "the daemon logging the sessions' end")
        text = log.read_text()
        assert "timed out" in text, text
        # Within the bound: keepalive (or the user timeout), plus the 2 s drain of a call
        # still running, plus scheduling on a loaded machine.
        assert max(took.values()) <= BOUND + 2 + 3, (took, text)

        # The reference has no keepalive: after the same time it still waits.
        assert reference.poll() is None, "llvm-jitlink-executor ended (it sets no keepalive?)"

        # The slots are free again: a real llvm-jitlink gets Setup and the right answer.
        t0 = time.monotonic()
        r = subprocess.run(
            [str(LLVM22 / "llvm-jitlink"), f"-oop-executor-connect={link.host_ip}:{port}",
             str(objs["echo"]), "-args", "after", "4"], capture_output=True, timeout=60)
        assert r.returncode == 4, r
        _wait_for(lambda: b"session after sum=4\n" in out.read_bytes(), 5, "the program's output")
        assert time.monotonic() - t0 < 10
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0, log.read_text()
        assert "Traceback" not in log.read_text()
        print(f"half-open sessions ended {took} s after the cut (bound {BOUND} s + 2 s drain)")
        print("\n".join(line for line in text.splitlines() if "session" in line))
    finally:
        if raw is not None:
            raw.sock.close()
        for p in (*clients, reference, daemon):
            if p.poll() is None:
                p.kill()
            p.wait()
