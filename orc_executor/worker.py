"""A warm session process: imports everything up front, then waits for a connection.

Started by the daemon as ``python -m orc_executor.worker CONTROL_FD``. It writes one byte
``R`` on the control socket when ready, then receives (``SCM_RIGHTS``) the file descriptors of
one session and a JSON header describing them:

* ``{"kind": "socket", ...}`` with one fd: a connected socket (``--listen`` daemon);
* ``{"kind": "fdpair", "stdio": true, ...}`` with fds ``in, out, stdin, stdout, stderr``: a
  launched ``orc-executor filedescs=...`` handing its pipes and stdio over (warm start).

It serves exactly one session, then exits with the session's status (0 clean, 1 error). The
other header fields are :class:`~orc_executor.daemon.ServeOptions`.

Started as ``python -m orc_executor.worker --zygote CONTROL_FD`` it is instead a *fork
server* (zygote): it imports everything once, writes ``R``, and then forks one worker per
request, so refilling the daemon's pool costs a ``fork()`` (about a millisecond) instead of
an interpreter start and imports (~90 ms of CPU that would compete with running sessions).
The control socket is ``SOCK_SEQPACKET``; messages:

* daemon → zygote: ``F`` with one fd (``SCM_RIGHTS``): the new worker's control socket;
* zygote → daemon: ``P <pid>`` (the forked worker, in request order), ``X <pid> <status>``
  when it ended (``status`` as :attr:`subprocess.Popen.returncode`: negative = signal).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys

from .daemon import ServeOptions, serve_stream
from .transport import streams
from .transport.fdpass import ANCILLARY_SPACE, fds_received
from .transport.spec import FdPair


def receive_session(control: socket.socket) -> tuple[dict[str, object], list[int]] | None:
    """Block until the daemon hands over a session: (header, fds), or ``None`` at EOF."""
    msg, ancdata, _flags, _addr = control.recvmsg(1 << 16, ANCILLARY_SPACE)
    fds = fds_received(ancdata)
    if not msg:
        for fd in fds:
            os.close(fd)
        return None
    return json.loads(msg.decode()), fds


def run(control_fd: int) -> int:
    """Serve one handed-over session; return its exit status.

    Everything that does not depend on the session is done before the ready byte: the trio
    loop is already running when the fds arrive, and the session code paths have been run
    once (:func:`_warm_up`), so a forked worker has already copied the pages they touch.
    """
    import trio

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when we stop
    control = socket.socket(fileno=control_fd)
    _warm_up()
    return trio.run(_serve_handover, control)


def _warm_up() -> None:
    """Build a context of each profile and its Setup message once (and drop them)."""
    from .executor.bootstrap import PROFILES, build_context, setup_info

    for profile in PROFILES:
        ctx = build_context(profile)
        setup_info(ctx).encode()
        ctx.registry.shutdown()


async def _serve_handover(control: socket.socket) -> int:
    import trio

    control.sendall(b"R")
    await trio.lowlevel.wait_readable(control)
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
        end = await serve_stream(streams.fd_pair_stream(spec), opts, is_socket=False)
    elif kind == "socket" and fds:
        tsock = trio.socket.from_stdlib_socket(socket.socket(fileno=fds[0]))
        end = await serve_stream(streams.socket_stream(tsock), opts, is_socket=True)
    else:
        print(f"orc-executor worker: bad handover {header!r}", file=sys.stderr)
        return 1
    status = end.exit_status
    try:
        control.sendall(bytes([status & 0xFF]))
    except OSError:
        pass
    return status


def _preload() -> None:
    """Import what a session needs, so forked workers start with it loaded."""
    import trio  # noqa: F401

    from .executor import bootstrap, session  # noqa: F401
    from .memmap import native  # noqa: F401
    from .sps import orc  # noqa: F401


def zygote(control_fd: int) -> int:
    """Fork workers on request until the daemon closes ``control_fd`` (see module doc)."""
    import gc
    import select

    from .daemon import exit_process

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _preload()
    gc.collect()
    gc.freeze()  # keep the collector from touching (and so copying) the shared heap
    control = socket.socket(fileno=control_fd)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    control.send(b"R")
    poller = select.poll()
    poller.register(control, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    while True:
        try:
            events = poller.poll()
        except InterruptedError:
            continue
        for fd, _ev in events:
            if fd == wake_r:
                while True:
                    try:
                        if not os.read(wake_r, 256):
                            break
                    except BlockingIOError:
                        break
                _reap(control)
                continue
            try:
                msg, ancdata, _flags, _addr = control.recvmsg(16, ANCILLARY_SPACE)
            except InterruptedError:
                continue
            except OSError:
                msg, ancdata = b"", []
            fds = fds_received(ancdata)
            if not msg:  # the daemon is gone: running workers finish on their own
                return 0
            if msg != b"F" or len(fds) != 1:
                for fd_ in fds:
                    os.close(fd_)
                continue
            pid = os.fork()
            if pid == 0:
                # The worker: drop the zygote's state, serve one session, exit.
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                control.close()
                os.close(wake_r)
                os.close(wake_w)
                os.setsid()
                gc.unfreeze()
                exit_process(run(fds[0]))
            os.close(fds[0])
            _send(control, f"P {pid}".encode())
            _reap(control)


def _reap(control: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.waitstatus_to_exitcode(status)
        _send(control, f"X {pid} {code}".encode())


def _send(control: socket.socket, data: bytes) -> None:
    try:
        control.send(data)
    except OSError:
        pass  # the daemon is gone


def main() -> None:
    from .daemon import exit_process, setup_logging

    setup_logging(os.environ.get("ORC_EXECUTOR_LOG", "warning"))
    if sys.argv[1] == "--zygote":
        exit_process(zygote(int(sys.argv[2])))
    exit_process(run(int(sys.argv[1])))


if __name__ == "__main__":
    main()
