"""Driving sessions over a connection spec: one-shot sessions on fds, adopted sockets,
connect-back, and listening sockets."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from .executor.bootstrap import build_context, select_profile
from .executor.session import Session, SessionEnd
from .transport import streams
from .transport.framing import DEFAULT_MAX_MESSAGE_SIZE
from .transport.spec import Connect, ConnectionSpec, FdPair, Listen, SocketFd

log = logging.getLogger(__name__)


@dataclass
class ServeOptions:
    """Session limits: bytes per message, concurrent calls, idle-close seconds, socket mode."""

    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_concurrent_calls: int = 1024
    idle_close: float | None = 0.2
    socket_mode: int = 0o600
    #: Requested controller version ("14", "19", "22", "modern") or None to detect.
    llvm_version: str | None = None


async def serve_stream(stream: trio.abc.Stream, opts: ServeOptions, *, is_socket: bool) -> SessionEnd:
    """Run one session on ``stream`` and release its resources; return why it ended."""
    ctx = build_context(select_profile(opts.llvm_version, is_socket=is_socket))
    session = Session(
        stream,
        ctx,
        max_message_size=opts.max_message_size,
        max_concurrent_calls=opts.max_concurrent_calls,
        idle_close=opts.idle_close if is_socket else None,
    )
    end = await session.run()
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


def run_connection(conn: ConnectionSpec, opts: ServeOptions) -> int:
    """Serve ``conn`` until its session ends; return the process exit status (0 clean)."""
    try:
        return trio.run(_run, conn, opts)
    except OSError as e:
        log.error("%s", e)
        return 1
    except KeyboardInterrupt:
        return 130
