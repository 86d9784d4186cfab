"""Connection specs: how the executor reaches its controller (sans-I/O parsing).

Accepted forms (docs/protocol.md §1.2), first non-flag argument, after optional ``debug`` and
``test-*`` tokens:

==========================  =====================================================
``IN OUT``                  two pipe fds (``lli-child-target``)
``filedescs=IN,OUT``        two pipe fds (llvm-jitlink 14–22 ``-oop-executor``)
``listen=HOST:PORT``        TCP listen (14–22); HOST is honoured (loopback default)
``fd=N``, ``socket:adopt=N`` one bidirectional socket fd (upstream)
``tcp:listen=HOST:PORT``    TCP listen (upstream)
``tcp:connect=HOST:PORT``   TCP connect-back to a listening controller
``unix:listen=PATH``        unix-domain socket listen
``unix:connect=PATH``       unix-domain socket connect
``pipe:adopt=IN,OUT``       two pipe fds
==========================  =====================================================

Grammar of the upstream form: ``<transport>[:<action>]=<descriptor>``, split at the first
``=``; the descriptor may contain ``:`` and ``=``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..errors import SpecError


@dataclass(frozen=True)
class FdPair:
    """Read from ``in_fd``, write to ``out_fd`` (they may be equal for a socket)."""

    in_fd: int
    out_fd: int


@dataclass(frozen=True)
class SocketFd:
    """One already-connected stream socket used in both directions."""

    fd: int


@dataclass(frozen=True)
class TcpAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True)
class UnixAddress:
    path: str

    def __str__(self) -> str:
        return self.path


Address = TcpAddress | UnixAddress


@dataclass(frozen=True)
class Listen:
    address: Address


@dataclass(frozen=True)
class Connect:
    address: Address


ConnectionSpec = FdPair | SocketFd | Listen | Connect


def parse_fd(text: str) -> int:
    try:
        fd = int(text)
    except ValueError:
        raise SpecError(f"not a file descriptor number: {text!r}") from None
    if fd < 0:
        raise SpecError(f"negative file descriptor: {fd}")
    return fd


def parse_tcp(text: str, default_host: str = "127.0.0.1") -> TcpAddress:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (``default_host``). Raises
    :class:`SpecError` for a missing, non-numeric or out-of-range port (0–65535) or an IPv6
    host without brackets."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise SpecError(f"bad [IPv6]:PORT address: {text!r}")
        port_s = rest[1:]
    else:
        host, sep, port_s = text.rpartition(":")
        if not sep:
            raise SpecError(f"address needs a port (HOST:PORT): {text!r}")
        if ":" in host:
            raise SpecError(f"IPv6 addresses need brackets: [{host}]:{port_s}")
    if not host:
        host = default_host
    try:
        port = int(port_s)
    except ValueError:
        raise SpecError(f"bad port in {text!r}") from None
    if not 0 <= port <= 65535:
        raise SpecError(f"port out of range in {text!r}")
    return TcpAddress(host, port)


def parse_address(text: str) -> Address:
    """A TCP ``HOST:PORT`` / ``[IPv6]:PORT`` / ``:PORT``, or a unix socket path (contains
    ``/`` or starts with ``unix:``). Raises :class:`SpecError` as :func:`parse_tcp` does."""
    if text.startswith("unix:"):
        return UnixAddress(text[5:])
    if "/" in text or (":" not in text and not text.isdigit()):
        return UnixAddress(text)
    return parse_tcp(text)


def _fd_pair(desc: str) -> FdPair:
    a, sep, b = desc.partition(",")
    if not sep:
        raise SpecError(f"expected IN,OUT file descriptors: {desc!r}")
    return FdPair(parse_fd(a), parse_fd(b))


def parse_spec(args: list[str]) -> ConnectionSpec:
    """Parse positional arguments as LLVM's tools pass them. Raises :class:`SpecError`."""
    rest = [a for a in args if a != "debug" and not a.startswith("test-")]
    if not rest:
        raise SpecError("no connection spec given")
    first = rest[0]
    if "=" not in first:
        if len(rest) >= 2:
            return FdPair(parse_fd(first), parse_fd(rest[1]))
        raise SpecError(f"unrecognized connection spec {first!r}")
    kind, _, desc = first.partition("=")
    if kind == "filedescs" or kind == "pipe:adopt":
        return _fd_pair(desc)
    if kind in ("fd", "socket:adopt"):
        return SocketFd(parse_fd(desc))
    if kind in ("listen", "tcp:listen"):
        return Listen(parse_tcp(desc))
    if kind == "tcp:connect":
        return Connect(parse_tcp(desc))
    if kind == "unix:listen":
        return Listen(UnixAddress(desc))
    if kind == "unix:connect":
        return Connect(UnixAddress(desc))
    raise SpecError(f"unrecognized connection spec {first!r}")
