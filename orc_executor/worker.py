"""A warm session process: imports everything up front, then waits for a connection.

Started by the daemon as ``python -m orc_executor.worker CONTROL_FD``. It writes one byte
``R`` on the control socket when ready, then receives (``SCM_RIGHTS``) the file descriptors of
one session and a JSON header describing them:

* ``{"kind": "socket", ...}`` with one fd: a connected socket (``--listen`` daemon);
* ``{"kind": "fdpair", "stdio": true, ...}`` with fds ``in, out, stdin, stdout, stderr``: a
  launched ``orc-executor filedescs=...`` handing its pipes and stdio over (warm start).

It serves exactly one session, then exits with the session's status (0 clean, 1 error). The
other header fields are :class:`~orc_executor.daemon.ServeOptions`.
"""

from __future__ import annotations

import array
import json
import os
import signal
import socket
import sys

from .daemon import ServeOptions, serve_stream
from .transport import streams
from .transport.spec import FdPair

MAX_FDS = 8


def receive_session(control: socket.socket) -> tuple[dict[str, object], list[int]] | None:
    """Block until the daemon hands over a session: (header, fds), or ``None`` at EOF."""
    fds = array.array("i")
    msg, ancdata, _flags, _addr = control.recvmsg(
        1 << 16, socket.CMSG_SPACE(MAX_FDS * fds.itemsize)
    )
    for level, type_, data in ancdata:
        if level == socket.SOL_SOCKET and type_ == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    if not msg:
        for fd in fds:
            os.close(fd)
        return None
    return json.loads(msg.decode()), list(fds)


def run(control_fd: int) -> int:
    """Serve one handed-over session; return its exit status."""
    import trio

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when we stop
    control = socket.socket(fileno=control_fd)
    control.sendall(b"R")
    got = receive_session(control)
    if got is None:
        return 0
    header, fds = got
    options = header.get("options", {})
    opts = ServeOptions(**options) if isinstance(options, dict) else ServeOptions()
    kind = header.get("kind")
    if kind == "fdpair" and len(fds) >= 2:
        if header.get("stdio") and len(fds) >= 5:
            for target, fd in zip((0, 1, 2), fds[2:5], strict=True):
                os.dup2(fd, target)
                os.close(fd)
        spec = FdPair(fds[0], fds[1])

        async def go() -> int:
            end = await serve_stream(streams.fd_pair_stream(spec), opts, is_socket=False)
            return end.exit_status
    elif kind == "socket" and fds:
        sock = socket.socket(fileno=fds[0])

        async def go() -> int:
            tsock = trio.socket.from_stdlib_socket(sock)
            end = await serve_stream(streams.socket_stream(tsock), opts, is_socket=True)
            return end.exit_status
    else:
        print(f"orc-executor worker: bad handover {header!r}", file=sys.stderr)
        return 1
    status = trio.run(go)
    try:
        control.sendall(bytes([status & 0xFF]))
    except OSError:
        pass
    return status


def main() -> None:
    from .daemon import exit_process, setup_logging

    setup_logging(os.environ.get("ORC_EXECUTOR_LOG", "warning"))
    exit_process(run(int(sys.argv[1])))


if __name__ == "__main__":
    main()
