"""trio streams for every transport: fd pairs (pipes), adopted sockets, TCP and unix sockets.

All functions return a :class:`trio.abc.Stream` carrying SimpleRemoteEPC frames in both
directions. Socket streams are shut down (``SHUT_RDWR``) before they are closed so the peer
sees EOF even when another thread of its own is blocked reading (docs/protocol.md §3.4).
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import socket as _socket
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import trio

from .spec import Address, FdPair, SocketFd, TcpAddress, UnixAddress

log = logging.getLogger(__name__)


def fd_pair_stream(spec: FdPair) -> trio.abc.Stream:
    """A stream reading ``spec.in_fd`` and writing ``spec.out_fd`` (ownership is taken).

    If both are the same socket, one socket stream serves both directions.
    """
    for fd in {spec.in_fd, spec.out_fd}:
        try:
            os.fstat(fd)
        except OSError as e:
            raise OSError(e.errno, f"file descriptor {fd} is not open") from None
    if spec.in_fd == spec.out_fd:
        return adopt_socket(SocketFd(spec.in_fd))
    return trio.StapledStream(
        trio.lowlevel.FdStream(spec.out_fd), trio.lowlevel.FdStream(spec.in_fd)
    )


def adopt_socket(spec: SocketFd) -> trio.abc.Stream:
    """Wrap an already-connected stream socket fd (``socket:adopt=N``)."""
    try:
        mode = os.fstat(spec.fd).st_mode
    except OSError as e:
        raise OSError(e.errno, f"file descriptor {spec.fd} is not open") from None
    if not stat.S_ISSOCK(mode):
        raise OSError(f"file descriptor {spec.fd} is not a socket")
    sock = _socket.socket(fileno=spec.fd)
    if sock.type != _socket.SOCK_STREAM:
        raise OSError(f"file descriptor {spec.fd} is not a stream socket")
    return trio.SocketStream(trio.socket.from_stdlib_socket(sock))


async def open_listener(address: Address, *, socket_mode: int = 0o600) -> trio.socket.SocketType:
    """A listening socket on ``address`` (TCP: ``SO_REUSEADDR``; unix: created with
    ``socket_mode`` permissions, a stale socket file is replaced)."""
    if isinstance(address, TcpAddress):
        infos = await trio.socket.getaddrinfo(
            address.host, address.port, type=_socket.SOCK_STREAM, flags=_socket.AI_PASSIVE
        )
        family, type_, proto, _, sockaddr = infos[0]
        sock = trio.socket.socket(family, type_, proto)
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        await sock.bind(sockaddr)
    else:
        sock = trio.socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        with _unix_socket_file(address.path, socket_mode):
            await sock.bind(address.path)
    sock.listen(128)
    return sock


def bind_unix_datagram(path: str, *, socket_mode: int = 0o600) -> _socket.socket:
    """A non-blocking unix datagram socket bound at ``path`` (created with ``socket_mode``
    permissions; a stale socket file is replaced): the warm socket, where each launch is one
    datagram carrying its fds (see :mod:`orc_executor.serve.worker`)."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    try:
        with _unix_socket_file(path, socket_mode):
            sock.bind(path)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


@contextmanager
def _unix_socket_file(path: str, socket_mode: int) -> Iterator[None]:
    """Around a ``bind`` to ``path``: a stale socket file there is removed first, and the new
    one is created with ``socket_mode`` permissions."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    old = os.umask(0o777 & ~socket_mode)
    try:
        yield
    finally:
        os.umask(old)
    os.chmod(path, socket_mode)


def listener_address(sock: trio.socket.SocketType) -> str:
    name = sock.getsockname()
    if isinstance(name, str):
        return name
    host, port = name[0], name[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def connect(address: Address) -> trio.abc.Stream:
    """Dial a listening controller (``tcp:connect=`` / ``unix:connect=``). TCP keepalive is
    the session's to set (:func:`stream_keepalive`, with its options)."""
    if isinstance(address, UnixAddress):
        return await trio.open_unix_socket(address.path)
    stream = await trio.open_tcp_stream(address.host, address.port)
    stream.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
    return stream


#: TCP keepalive of session sockets by default (``--keepalive-idle``, ``--keepalive-interval``,
#: ``--keepalive-count``): probes after this many seconds of silence, every ``[1]`` seconds,
#: ``[2]`` unanswered ones end the connection: a controller that vanished without a FIN
#: (half-open) frees its session within ~2 minutes.
DEFAULT_KEEPALIVE = (60, 10, 6)


def keepalive(sock: trio.socket.SocketType | _socket.socket, idle: int = DEFAULT_KEEPALIVE[0],
              interval: int = DEFAULT_KEEPALIVE[1], count: int = DEFAULT_KEEPALIVE[2]) -> None:
    """Turn on TCP keepalive for a TCP socket (others are left alone): the first probe after
    ``idle`` seconds without traffic, then every ``interval`` seconds; after ``count``
    unanswered probes reads fail with ``ETIMEDOUT``. ``TCP_USER_TIMEOUT`` gets the same bound
    (``idle + interval * count`` seconds), so data we sent that the peer never acknowledges
    (where keepalive does not probe) ends the connection as soon. ``idle`` 0: keepalive off."""
    if sock.family not in (_socket.AF_INET, _socket.AF_INET6):
        return
    try:
        if idle <= 0:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_KEEPALIVE, 0)
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_USER_TIMEOUT, 0)
            return
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_KEEPALIVE, 1)
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_KEEPIDLE, idle)
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_KEEPINTVL, max(interval, 1))
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_KEEPCNT, max(count, 1))
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_USER_TIMEOUT,
                        (idle + max(interval, 1) * max(count, 1)) * 1000)
    except OSError as e:  # pragma: no cover - every Linux TCP socket has these
        log.debug("keepalive: %s", e)


def stream_keepalive(stream: trio.abc.Stream, idle: int, interval: int, count: int) -> None:
    """:func:`keepalive` on the socket under ``stream`` (a :class:`trio.SocketStream` over
    TCP); any other stream is left alone."""
    if isinstance(stream, trio.SocketStream):
        keepalive(stream.socket, idle, interval, count)


def socket_stream(sock: trio.socket.SocketType) -> trio.SocketStream:
    """``sock`` as a stream (TCP_NODELAY on TCP; keepalive is the session's to set:
    :func:`stream_keepalive`)."""
    stream = trio.SocketStream(sock)
    if sock.family in (_socket.AF_INET, _socket.AF_INET6):
        stream.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
    return stream


def raw_fds(stream: trio.abc.Stream) -> tuple[int | None, int | None]:
    """The non-blocking fds under ``stream`` as ``(read_fd, write_fd)``, for fast paths that
    call ``os.read`` / ``os.write`` on them and wait for readiness only when they would block:
    a socket's fd twice, or the two fds of a :class:`trio.StapledStream` of
    :class:`trio.lowlevel.FdStream` (pipes). ``(None, None)`` for any other stream."""
    if isinstance(stream, trio.SocketStream):
        fd = stream.socket.fileno()
        return fd, fd
    if isinstance(stream, trio.StapledStream):
        send, recv = stream.send_stream, stream.receive_stream
        if isinstance(send, trio.lowlevel.FdStream) and isinstance(recv, trio.lowlevel.FdStream):
            return recv.fileno(), send.fileno()
    return None, None


def enlarge_pipe(fd: int, size: int = 1 << 20) -> None:
    """Ask for a pipe buffer of ``size`` bytes on ``fd`` (``F_SETPIPE_SZ``; fewer wake-ups for
    bulk content). Best effort: not a pipe, or over ``/proc/sys/fs/pipe-max-size``, is
    ignored."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    except OSError:
        pass


class FdReader:
    """Reads one non-blocking fd (pipe or socket) on a SimpleRemoteEPC peer's hot path.

    ``read(2)`` comes first and a wait for readiness only when it would block, so bytes that
    are already waiting cost one system call and no trip through trio's scheduler. When it
    would block and ``quiet()`` says that only this fd (or ``wake_fd``) can bring work, the
    wait is a ``poll(2)`` of up to ``poll_ms`` milliseconds on the trio thread (a wake-up
    without the scheduler's epoll round; other tasks of the run wait at most that long);
    after it, or when not quiet (or ``quiet`` is ``None``), trio's ``wait_readable``. A
    forced checkpoint every ``checkpoint_every`` reads without a trio wait keeps the other
    tasks running under a flood (``1``: before every read).

    ``busy_poll`` (seconds, ``0`` for none): before that ``poll(2)`` sleeps, polls that do
    not sleep for up to this long, so bytes the peer sends within that window are read without
    a sleep and a wake-up. Only while ``may_spin()`` (default: always) says that no other
    thread needs the GIL this loop holds.

    ``wake_fd`` (an eventfd, or any fd that becomes readable) ends the poll early: another
    thread wrote it because it left work for the trio thread. The reader drains it, calls
    ``on_wake()`` (on the trio thread) and, if still quiet, polls again.

    Used by :class:`~orc_executor.executor.session.Session` (quiet: nothing queued for the
    writer and no call waiting for a thread; worker threads wake it) and by
    :class:`~orc_executor.controller.Controller` (quiet: calls outstanding and no other task
    runnable). The caller owns ``fd`` and ``wake_fd``; before closing either, call
    :meth:`forget`.
    """

    def __init__(
        self,
        fd: int,
        *,
        quiet: Callable[[], bool] | None = None,
        poll_ms: int = 1,
        checkpoint_every: int = 16,
        wake_fd: int | None = None,
        on_wake: Callable[[], None] | None = None,
        busy_poll: float = 0.0,
        may_spin: Callable[[], bool] | None = None,
    ) -> None:
        self.fd = fd
        self._busy_poll = busy_poll
        self._may_spin: Callable[[], bool] = may_spin or _always
        self._quiet: Callable[[], bool] = quiet or _never
        self._poll_ms = poll_ms
        self._every = checkpoint_every
        self._reads_without_wait = 0
        self._poller: select.poll | None = None
        self._wake_fd = wake_fd
        self._on_wake: Callable[[], None] = on_wake or _nothing
        if quiet is not None:
            self._poller = select.poll()
            self._poller.register(fd, select.POLLIN)
            if wake_fd is not None:
                self._poller.register(wake_fd, select.POLLIN)

    async def read(self, want: int, *, wait_first: bool = False) -> bytes:
        """Up to ``want`` bytes (``b""`` at EOF). ``wait_first``: the bytes are not expected
        yet (the peer waits for a Result another thread is about to write), so while quiet
        the poll comes before the first read: the trio thread goes to sleep at once, and that
        thread gets the GIL without a hand-off. Raises :class:`OSError` from ``read(2)`` and
        :class:`trio.ClosedResourceError` if the fd is closed while waiting."""
        self._reads_without_wait += 1
        if self._reads_without_wait >= self._every:
            self._reads_without_wait = 0
            await trio.lowlevel.checkpoint()
        fd = self.fd
        polled = wait_first
        if wait_first:
            self._wait_quietly()  # then read: what arrived, or EAGAIN and trio's wait
        while True:
            try:
                return os.read(fd, want)
            except BlockingIOError:
                self._reads_without_wait = 0
                if not polled:
                    polled = True
                    if self._wait_quietly():
                        continue
                await trio.lowlevel.wait_readable(fd)

    def _wait_quietly(self) -> bool:
        """While quiet, poll until ``fd`` is readable: ``True`` then; ``False`` if not quiet
        or ``poll_ms`` passed without it (trio must wait). Each sleeping poll comes after
        ``busy_poll`` seconds of polls that do not sleep, while ``may_spin()``."""
        poller = self._poller
        while poller is not None and self._quiet():
            if self._busy_poll and self._may_spin():
                self._spin(poller)
            readable = self._poll_once(poller)
            if readable is not None:
                return readable
            poller = self._poller  # None if on_wake called forget()
        return False

    def _spin(self, poller: select.poll) -> None:
        """``poll(2)`` without sleeping until ``fd`` or ``wake_fd`` is readable, at most
        ``busy_poll`` seconds (what is ready is then handled by the sleeping poll, at once)."""
        end = time.perf_counter() + self._busy_poll
        while not poller.poll(0) and time.perf_counter() < end:
            pass

    def _poll_once(self, poller: select.poll) -> bool | None:
        """One ``poll(2)`` of up to ``poll_ms``: ``True`` if ``fd`` is readable, ``False`` if
        nothing came, ``None`` after a wake-up alone (``wake_fd`` drained, ``on_wake``
        called)."""
        events = poller.poll(self._poll_ms)
        if not events:
            return False
        wake = self._wake_fd
        if wake is None or events[-1][0] != wake:  # polled after fd, so listed last
            return True
        try:
            os.read(wake, 8)
        except BlockingIOError:
            pass
        self._on_wake()
        return True if len(events) > 1 else None

    def read_polled(self, want: int) -> bytes | None:
        """Up to ``want`` bytes without trio, for an answer that is expected within
        microseconds: one ``poll(2)`` of up to ``poll_ms``, then one ``read(2)``. ``None`` if
        nothing arrived, a wake-up came first (handled), or the reader was made with
        ``quiet=None`` or forgotten; ``b""`` at EOF. Raises :class:`OSError` from
        ``read(2)``."""
        poller = self._poller
        if poller is None or not self._poll_once(poller):
            return None
        try:
            return os.read(self.fd, want)
        except BlockingIOError:
            return None

    async def readinto(self, view: memoryview) -> int:
        """Read straight into ``view`` (bulk payloads; no intermediate bytes object): the
        number of bytes read, ``0`` at EOF. Waits through trio only."""
        while True:
            try:
                return os.readv(self.fd, [view])
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self.fd)

    def forget(self) -> None:
        """Stop polling ``fd`` and ``wake_fd`` (their numbers may be reused once the caller
        closed them)."""
        self._poller = None
        self._wake_fd = None


def _never() -> bool:
    return False


def _always() -> bool:
    return True


def _nothing() -> None:
    pass
