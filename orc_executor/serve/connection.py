"""Driving sessions over a connection spec: one-shot sessions on fds, adopted sockets,
connect-back, and listening sockets; the process's logging and exit."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Awaitable, Callable

import trio

from ..executor.bootstrap import build_context, select_profile
from ..executor.context import ExecutorContext
from ..executor.fault_policy import apply_fault_policy, select_fault_policy
from ..executor.session import Session, SessionEnd
from ..io import streams
from ..io.spec import Connect, ConnectionSpec, FdPair, Listen, SocketFd
from .options import ServeOptions

log = logging.getLogger(__name__)


async def serve_stream(
    stream: trio.abc.Stream, opts: ServeOptions, *, is_socket: bool,
    contexts: dict[str, ExecutorContext] | None = None,
    on_first_message: Callable[[], None] | None = None,
) -> SessionEnd:
    """Run one session on ``stream`` and release its resources; return why it ended.

    ``contexts`` may hold unused contexts built in advance, by profile (the one used is
    taken out); otherwise the context is built here. ``on_first_message``: called once when
    the controller's first complete message arrived."""
    profile = select_profile(opts.llvm_version, is_socket=is_socket,
                             start_pid=opts.controller_pid)
    ctx = contexts.pop(profile, None) if contexts is not None else None
    if ctx is None:
        ctx = build_context(profile)
    try:
        # The environment of the process that runs the session: the launching process's
        # (warm sessions apply it before this), as for the busy-poll setting.
        policy = select_fault_policy(
            opts.on_fault or os.environ.get("ORC_EXECUTOR_ON_FAULT") or None,
            is_socket=is_socket, start_pid=opts.controller_pid)
    except ValueError as e:
        log.warning("%s: faults in JIT'd code end the process", e)
        policy = "crash"
    apply_fault_policy(ctx, policy)
    if is_socket:
        streams.stream_keepalive(stream, opts.keepalive_idle, opts.keepalive_interval,
                                 opts.keepalive_count)
    session = Session(
        stream,
        ctx,
        max_message_size=opts.max_message_size,
        max_concurrent_calls=opts.max_concurrent_calls,
        idle_close=opts.idle_close if is_socket else None,
        busy_poll=opts.busy_poll,
        handshake_timeout=opts.handshake_timeout if is_socket else None,
        idle_timeout=opts.idle_timeout if is_socket else None,
        on_first_message=on_first_message,
    )
    end = await session.run()
    if session.finish_runs_no_program_code(end):
        session.finish(end)  # (the controller released everything: nothing to wait for)
    else:
        await trio.to_thread.run_sync(session.finish, end)
    if not end.clean:
        log.error("%s", end.reason)
    else:
        log.info("session ended: %s", end.reason)
    return end


async def _run(conn: ConnectionSpec, opts: ServeOptions) -> int:
    if isinstance(conn, FdPair):
        stream = streams.fd_pair_stream(conn)
        end = await serve_stream(stream, opts, is_socket=conn.in_fd == conn.out_fd)
    elif isinstance(conn, SocketFd):
        end = await serve_stream(streams.adopt_socket(conn), opts, is_socket=True)
    elif isinstance(conn, Connect):
        stream = await streams.connect(conn.address)
        end = await serve_stream(stream, opts, is_socket=True)
    else:
        assert isinstance(conn, Listen)
        listener = await streams.open_listener(conn.address, socket_mode=opts.socket_mode)
        log.info("listening on %s", streams.listener_address(listener))
        with listener:
            sock, peer = await listener.accept()
        log.info("accepted connection from %s", peer or "unix peer")
        end = await serve_stream(streams.socket_stream(sock), opts, is_socket=True)
    return end.exit_status


def setup_logging(level: str) -> None:
    """Log records of ``orc_executor.*`` at ``level`` and above to stderr (never stdout)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("orc-executor[%(process)d]: %(levelname)s: %(message)s")
    )
    root = logging.getLogger("orc_executor")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def exit_process(status: int) -> None:
    """End the process as a C program does: flush Python's streams, then C ``exit(status)``,
    which runs the exit handlers the JIT'd program registered (``__cxa_atexit``, ``on_exit``)
    and flushes C stdio — as ``llvm-jitlink-executor`` does when it returns from ``main``.
    Python's own finalization is skipped (worker threads may still be inside JIT'd code).
    After a session, the process's fds close after the program's exit handlers, before the
    executor's own and the kernel's teardown of its memory (``orc_release_fds`` in
    native.c)."""
    from ..native.api import lib

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    lib.orc_exit(status)


def run_pipe_session(in_fd: int, out_fd: int) -> None:
    """The launch path of ``orc-executor filedescs=IN,OUT`` / ``IN OUT`` with default
    options (settings from the environment only), without the CLI parser."""
    setup_logging(os.environ.get("ORC_EXECUTOR_LOG") or "warning")
    opts = ServeOptions(llvm_version=os.environ.get("ORC_EXECUTOR_LLVM_VERSION") or None)
    exit_process(run_connection(FdPair(in_fd, out_fd), opts))


def run_connection(conn: ConnectionSpec, opts: ServeOptions) -> int:
    """Serve ``conn`` until its session ends; return the process exit status (0 clean)."""
    try:
        return trio.run(_run, conn, opts)
    except OSError as e:
        log.error("%s", e)
        return 1
    except KeyboardInterrupt:
        return 130



def serve_until_stopped(server: Callable[[], Awaitable[None]]) -> int:
    """Run a listening server until SIGTERM/SIGINT: 0 after a clean stop, 1 if it could not
    listen (the reason logged)."""
    try:
        trio.run(server)
    except OSError as e:
        log.error("%s", e)
        return 1
    return 0

