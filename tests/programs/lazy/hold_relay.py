"""A SimpleRemoteEPC relay for the lazy-linking tests, put where llvm-jitlink expects an
executor (``-oop-executor=`` a wrapper that runs this file with ``filedescs=IN,OUT``).

It starts the executor named by ``HOLD_RELAY_EXEC`` on its own pipes and copies whole frames
both ways. Every executor→controller CallWrapper is logged to ``HOLD_RELAY_LOG`` as
``call seq=N tag=0x...`` (flushed at once, so a test can wait for it); the executor's exit
status is logged last as ``exit N`` (negative: killed by that signal).

With ``HOLD_RELAY_COUNT=N`` the controller's Results to executor→controller calls are held
back until N such calls are outstanding at once (then all are delivered), or until no new
call has arrived for ``HOLD_RELAY_WINDOW`` seconds (default 1.0; calls made one at a time,
e.g. at start-up, are delivered after that pause). ``max_outstanding=K`` is logged at the end:
K == N proves the executor had N calls to the controller in flight together.
"""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import sys
import threading
import time

HEADER = struct.Struct("<QQQQ")
CALL_WRAPPER, RESULT = 3, 2


def read_exact(fd: int, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def read_frame(fd: int) -> tuple[int, int, int, bytes] | None:
    head = read_exact(fd, HEADER.size)
    if head is None:
        return None
    size, opcode, seq, tag = HEADER.unpack(head)
    body = read_exact(fd, size - HEADER.size)
    if body is None:
        return None
    return opcode, seq, tag, head + body


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class Relay:
    def __init__(self, ctl_in: int, ctl_out: int, log_path: str, hold: int, window: float):
        self.ctl_in, self.ctl_out = ctl_in, ctl_out
        self.log = open(log_path, "a", buffering=1)  # noqa: SIM115 - lives as long as we do
        self.hold = hold
        self.window = window
        self.lock = threading.Lock()
        self.to_exec_lock = threading.Lock()
        self.outstanding: set[int] = set()
        self.held: list[tuple[int, bytes]] = []
        self.max_outstanding = 0
        self.last_call = time.monotonic()
        self.done = threading.Event()
        exe = os.environ["HOLD_RELAY_EXEC"]
        c2e_r, self.c2e_w = os.pipe()
        self.e2c_r, e2c_w = os.pipe()
        self.proc = subprocess.Popen([exe, f"filedescs={c2e_r},{e2c_w}"], pass_fds=(c2e_r, e2c_w))
        os.close(c2e_r)
        os.close(e2c_w)

    def to_executor(self, data: bytes) -> None:
        with self.to_exec_lock, contextlib.suppress(OSError):
            write_all(self.c2e_w, data)

    def flush_held(self) -> None:
        """Deliver every held Result (caller holds ``self.lock``)."""
        for seq, frame in self.held:
            self.outstanding.discard(seq)
            self.to_executor(frame)
        self.held.clear()

    def executor_to_controller(self) -> None:
        while (frame := read_frame(self.e2c_r)) is not None:
            opcode, seq, tag, data = frame
            if opcode == CALL_WRAPPER:
                with self.lock:
                    self.outstanding.add(seq)
                    self.max_outstanding = max(self.max_outstanding, len(self.outstanding))
                    self.last_call = time.monotonic()
                    self.log.write(f"call seq={seq} tag={tag:#x}\n")
                    if self.hold and len(self.outstanding) >= self.hold:
                        self.flush_held()
            try:
                write_all(self.ctl_out, data)
            except OSError:
                break
        os.close(self.ctl_out)

    def controller_to_executor(self) -> None:
        while (frame := read_frame(self.ctl_in)) is not None:
            opcode, seq, _tag, data = frame
            if opcode == RESULT and self.hold:
                with self.lock:
                    if seq in self.outstanding:
                        self.held.append((seq, data))
                        continue
            if opcode == RESULT:
                with self.lock:
                    self.outstanding.discard(seq)
            self.to_executor(data)
        with self.lock:
            self.flush_held()
        with self.to_exec_lock:
            os.close(self.c2e_w)

    def release_after_pause(self) -> None:
        while not self.done.wait(0.05):
            with self.lock:
                if self.held and time.monotonic() - self.last_call >= self.window:
                    self.flush_held()

    def run(self) -> int:
        threads = [
            threading.Thread(target=self.executor_to_controller, daemon=True),
            threading.Thread(target=self.controller_to_executor, daemon=True),
        ]
        if self.hold:
            threads.append(threading.Thread(target=self.release_after_pause, daemon=True))
        for t in threads:
            t.start()
        rc = self.proc.wait()
        self.done.set()
        threads[0].join(5)
        self.log.write(f"max_outstanding={self.max_outstanding}\n")
        self.log.write(f"exit {rc}\n")
        return rc


def main() -> int:
    spec = sys.argv[1]
    if not spec.startswith("filedescs="):
        print(f"hold_relay: expected filedescs=IN,OUT, got {spec!r}", file=sys.stderr)
        return 2
    ctl_in, ctl_out = (int(x) for x in spec.split("=", 1)[1].split(","))
    relay = Relay(
        ctl_in,
        ctl_out,
        os.environ["HOLD_RELAY_LOG"],
        int(os.environ.get("HOLD_RELAY_COUNT", "0")),
        float(os.environ.get("HOLD_RELAY_WINDOW", "1.0")),
    )
    rc = relay.run()
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    sys.exit(main())
