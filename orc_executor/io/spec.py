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

from ..errors import SpecError


class _Value:
    """An immutable value: equality, hash and ``repr`` by its fields (``__slots__``), as a
    frozen dataclass. (Plain classes: the Python launcher parses its command line with this
    module, and importing :mod:`dataclasses` would lengthen its start.)"""

    __slots__: tuple[str, ...] = ()

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, _Value)
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}")

    def __reduce__(self) -> tuple[type[_Value], tuple[object, ...]]:
        return self.__class__, self._fields()


class FdPair(_Value):
    """Read from ``in_fd``, write to ``out_fd`` (they may be equal for a socket)."""

    __slots__ = ("in_fd", "out_fd")
    __match_args__ = ("in_fd", "out_fd")
    in_fd: int
    out_fd: int

    def __init__(self, in_fd: int, out_fd: int) -> None:
        object.__setattr__(self, "in_fd", in_fd)
        object.__setattr__(self, "out_fd", out_fd)


class SocketFd(_Value):
    """One already-connected stream socket used in both directions."""

    __slots__ = ("fd",)
    __match_args__ = ("fd",)
    fd: int

    def __init__(self, fd: int) -> None:
        object.__setattr__(self, "fd", fd)


class TcpAddress(_Value):
    """A TCP ``host`` (name or IP address; IPv6 without brackets) and ``port``."""

    __slots__ = ("host", "port")
    __match_args__ = ("host", "port")
    host: str
    port: int

    def __init__(self, host: str, port: int) -> None:
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "port", port)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        import ipaddress  # (not on the Python launcher's start-up path)

        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


class UnixAddress(_Value):
    """A unix-domain socket's ``path``."""

    __slots__ = ("path",)
    __match_args__ = ("path",)
    path: str

    def __init__(self, path: str) -> None:
        object.__setattr__(self, "path", path)

    def __str__(self) -> str:
        return self.path


Address = TcpAddress | UnixAddress


class Listen(_Value):
    """Listen at ``address`` and serve the controller that connects."""

    __slots__ = ("address",)
    __match_args__ = ("address",)
    address: Address

    def __init__(self, address: Address) -> None:
        object.__setattr__(self, "address", address)


class Connect(_Value):
    """Connect to a controller listening at ``address``."""

    __slots__ = ("address",)
    __match_args__ = ("address",)
    address: Address

    def __init__(self, address: Address) -> None:
        object.__setattr__(self, "address", address)


ConnectionSpec = FdPair | SocketFd | Listen | Connect


#: The largest file descriptor number a spec may name (C's ``INT_MAX``).
FD_MAX = 2**31 - 1


def parse_fd(text: str) -> int:
    """A file descriptor number: ASCII decimal digits only (no sign, space or ``_``), at most
    :data:`FD_MAX`. Raises :class:`SpecError`."""
    if text[:1] == "-" and text[1:].isascii() and text[1:].isdigit():
        raise SpecError(f"negative file descriptor: {text}")
    if not (text.isascii() and text.isdigit()):
        raise SpecError(f"not a file descriptor number: {text!r}")
    fd = int(text)
    if fd > FD_MAX:
        raise SpecError(f"file descriptor out of range: {text}")
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


def pipe_fds(args: list[str]) -> FdPair | None:
    """The fds of a controller's pipe-style launch, the command lines a launcher may hand to a
    warm server: exactly one spec naming fds (``IN OUT``, ``filedescs=IN,OUT``,
    ``pipe:adopt=IN,OUT``; ``fd=N`` and ``socket:adopt=N`` give ``FdPair(N, N)``) besides
    ``debug`` and ``test-*`` tokens, and no option (an argument starting with ``-``).
    ``None`` for anything else, valid or not (the full command line interface decides).
    ``launch/launcher.c`` (``pipe_fds``) decides the same way (``tests/unit/io/test_spec.py``
    checks that they agree)."""
    rest = [a for a in args if a != "debug" and not a.startswith("test-")]
    if not rest or len(rest) > 2 or any(a.startswith("-") for a in rest):
        return None
    if len(rest) != (1 if "=" in rest[0] else 2):
        return None
    try:
        spec = parse_spec(rest)
    except SpecError:
        return None
    if isinstance(spec, SocketFd):
        return FdPair(spec.fd, spec.fd)
    return spec if isinstance(spec, FdPair) else None
