"""The messages of process orchestration, sans I/O: the launch header a launcher sends to the
warm socket, and the control messages between the daemon or warm server, the fork server
(zygote), the session processes (workers) and the launchers.

No sockets are touched here: these functions build and parse bytes; the callers
(:mod:`orc_executor.serve.worker`, :mod:`~orc_executor.serve.pool`,
:mod:`~orc_executor.serve.zygote`, :mod:`~orc_executor.serve.warm`,
:mod:`orc_executor.launch.client`, :mod:`orc_executor.launch.state`) send and receive them,
with their fds (``SCM_RIGHTS``). The native launcher (``orc_executor/launch/launcher.c``,
``launcher_state.h``) speaks the launcher's side in C with the same values, as ``#define
ORC_HANDOVER_*`` (``tests/unit/serve/test_handover.py`` checks they agree).

Messages, each one datagram (``SOCK_SEQPACKET`` control sockets, the ``SOCK_DGRAM`` warm
socket) unless said otherwise:

* worker or zygote → daemon: :attr:`Control.READY` (``R``), ready;
* daemon → worker (accept mode): :attr:`Control.OPTIONS` (``O``) and JSON
  ``{"options": {...}, "background": bool}`` (:func:`encode_options`);
* launcher → warm socket: the launch header (JSON, :func:`encode_launch`,
  :func:`decode_launch`) with fds ``reply,
  in, out, [stdin, stdout, stderr,] cwd, environ``;
* worker → daemon: :attr:`Control.SESSION_TAKEN` (``S``) with the launch's reply socket;
* worker → launcher, on the reply socket (a stream): :attr:`Control.ACKNOWLEDGE` (``A``),
  the worker's pid (4 bytes, little-endian) and a pidfd of it (:func:`encode_ack`); later
  the exit status (:data:`EXIT_STATUS_SIZE` bytes, little-endian signed; negative: killed by
  that signal; :func:`encode_exit_status`);
* daemon → zygote: :attr:`Control.FORK` (``F``) with the new worker's control socket (and the
  warm listening socket in accept mode);
* zygote → daemon: :attr:`Control.FORKED` (``P <pid>``) in request order, and
  :attr:`Control.EXITED` (``X <pid> <status>``; ``status`` as
  :attr:`subprocess.Popen.returncode`) (:func:`decode_zygote_report`);
* daemon → worker (``--listen``): the session header (JSON: ``{"kind": "socket" | "fdpair",
  "stdio": bool, "options": {...}}``) with its fds; worker → daemon:
  :attr:`Control.FIRST_MESSAGE` (``M``) once the controller sent a complete message, and one
  status byte at the end.
"""

from __future__ import annotations

import enum
import resource


class Control(bytes, enum.Enum):
    """The single-byte control codes (each member is its ``bytes``)."""

    #: worker or zygote → daemon: ready.
    READY = b"R"
    #: daemon → worker (accept mode): the session options follow (JSON).
    OPTIONS = b"O"
    #: worker → daemon: took a launch; its reply socket is attached.
    SESSION_TAKEN = b"S"
    #: session process → launcher: took the session; pid and pidfd follow.
    ACKNOWLEDGE = b"A"
    #: daemon → zygote: fork a worker for the attached control socket (and warm socket).
    FORK = b"F"
    #: zygote → daemon: ``P <pid>``, the worker forked.
    FORKED = b"P"
    #: zygote → daemon: ``X <pid> <status>``, a forked worker ended.
    EXITED = b"X"
    #: worker → daemon (``--listen``): the controller sent its first complete message.
    FIRST_MESSAGE = b"M"


#: Version of the state a launch carries (``"handover"`` in its header).
HANDOVER_VERSION = 1

#: Bytes of an acknowledgement: :attr:`Control.ACKNOWLEDGE` and a 4-byte pid.
ACK_SIZE = 5

#: Bytes of the exit status written to a launcher's reply socket.
EXIT_STATUS_SIZE = 4

#: The most bytes a launch header may have (a longer datagram is truncated, so refused).
MAX_LAUNCH_HEADER = 4096

#: The header fields the launchers write and :func:`decode_launch` reads (besides the
#: launching process's state, :class:`LaunchState`).
LAUNCH_FIELDS = ("kind", "stdio", "controller_pid", "llvm_version", "machine", "handover")


class MalformedMessage(ValueError):
    """A control message or launch header that cannot be decoded. For a launch: the launch is
    refused (its fds closed, the reason logged) and the launcher starts cold."""


# ---- control messages --------------------------------------------------------------------


def encode_options(options: dict[str, object], background: bool) -> bytes:
    """The daemon's :attr:`Control.OPTIONS` message to an accept-mode worker."""
    import json  # not on the cold start path

    return Control.OPTIONS + json.dumps({"options": options, "background": background}).encode()


def decode_options(msg: bytes) -> tuple[dict[str, object], bool]:
    """The session options (fields of :class:`~orc_executor.serve.options.ServeOptions`) and
    whether the worker gets ready in the background. Raises :class:`MalformedMessage`."""
    import json

    if msg[:1] != Control.OPTIONS:
        raise MalformedMessage(f"expected the options message, got {msg[:16]!r}")
    try:
        fields = json.loads(msg[1:].decode())
    except ValueError:
        fields = None
    if not isinstance(fields, dict) or not isinstance(fields.get("options"), dict):
        raise MalformedMessage("malformed options message")
    return fields["options"], bool(fields.get("background"))


def encode_ack(pid: int) -> bytes:
    """A session process's acknowledgement of a launch (its pidfd goes with it)."""
    return Control.ACKNOWLEDGE + pid.to_bytes(4, "little")


def decode_ack(data: bytes) -> int | None:
    """The pid in a complete acknowledgement (:data:`ACK_SIZE` bytes), ``None`` if ``data``
    is none."""
    if len(data) != ACK_SIZE or data[:1] != Control.ACKNOWLEDGE:
        return None
    return int.from_bytes(data[1:ACK_SIZE], "little")


def encode_exit_status(status: int) -> bytes:
    """The session's exit status for its launcher (negative: killed by that signal)."""
    return status.to_bytes(EXIT_STATUS_SIZE, "little", signed=True)


def decode_exit_status(data: bytes) -> int:
    """The exit status in :data:`EXIT_STATUS_SIZE` bytes."""
    return int.from_bytes(data, "little", signed=True)


def encode_forked(pid: int) -> bytes:
    """The zygote's report of a worker it forked."""
    return Control.FORKED + f" {pid}".encode()


def encode_exited(pid: int, status: int) -> bytes:
    """The zygote's report of a forked worker that ended."""
    return Control.EXITED + f" {pid} {status}".encode()


def decode_zygote_report(msg: bytes) -> tuple[Control, int, int] | None:
    """``(Control.FORKED, pid, 0)`` or ``(Control.EXITED, pid, status)``; ``None`` for
    anything else."""
    parts = msg.split()
    try:
        if parts[:1] == [Control.FORKED] and len(parts) == 2:
            return Control.FORKED, int(parts[1]), 0
        if parts[:1] == [Control.EXITED] and len(parts) == 3:
            return Control.EXITED, int(parts[1]), int(parts[2])
    except ValueError:
        pass
    return None


def encode_session_header(header: dict[str, object]) -> bytes:
    """The ``--listen`` daemon's session header to a worker (its fds go with it)."""
    import json  # not on the cold start path

    return json.dumps(header).encode()


def decode_session_header(msg: bytes) -> dict[str, object]:
    """Raises :class:`MalformedMessage`."""
    import json

    try:
        header = json.loads(msg.decode())
    except ValueError:
        header = None
    if not isinstance(header, dict):
        raise MalformedMessage(f"bad handover {msg[:64]!r}")
    return header


def encode_final_status(status: int) -> bytes:
    """A ``--listen`` worker's last message: its exit status, one byte."""
    return bytes([status & 0xFF])


# ---- the launch header ---------------------------------------------------------------------


class LaunchState:
    """The launching process's state in a launch header (see
    :mod:`orc_executor.launch.state`). (A plain class: the Python launcher imports this
    module, and importing ``dataclasses`` would lengthen its start.)"""

    __slots__ = ("cpus", "ioprio", "nice", "personality", "policy", "priority", "rlimits",
                 "sigign", "sigmask", "umask")

    def __init__(self, *, umask: int, nice: int, sigmask: int, sigign: int,
                 rlimits: list[tuple[int, int]], cpus: set[int], policy: int, priority: int,
                 ioprio: int, personality: int) -> None:
        self.umask = umask
        self.nice = nice
        self.sigmask = sigmask
        self.sigign = sigign
        self.rlimits = rlimits
        self.cpus = cpus
        self.policy = policy
        self.priority = priority
        self.ioprio = ioprio
        self.personality = personality

    @classmethod
    def from_header(cls, header: dict[str, object]) -> LaunchState:
        """Raises :class:`ValueError` for a header without valid state."""
        if header.get("handover") != HANDOVER_VERSION:
            raise ValueError("launch without the launching process's state (an older launcher)")
        ints: dict[str, int] = {}
        for key, low, high in (("umask", 0, 0o777), ("nice", -20, 19), ("sigmask", 0, 2**64 - 1),
                               ("sigign", 0, 2**64 - 1), ("ioprio", 0, 2**16 - 1),
                               ("personality", 0, 2**32 - 1)):
            value = header.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ValueError(f"malformed {key} in the launch header")
            ints[key] = value
        limits = header.get("rlimits")
        if not isinstance(limits, list) or not all(
                isinstance(p, list) and len(p) == 2
                and all(isinstance(x, int) and -1 <= x < 2**64 for x in p) for p in limits):
            raise ValueError("malformed resource limits in the launch header")
        sched = header.get("sched")
        if not isinstance(sched, list) or len(sched) != 2 or not all(
                isinstance(x, int) and 0 <= x < 2**31 for x in sched):
            raise ValueError("malformed scheduling policy in the launch header")
        cpus = header.get("cpus")
        try:
            mask = int(cpus, 16) if isinstance(cpus, str) and len(cpus) <= 4096 else None
        except ValueError:
            mask = None
        if not mask:
            raise ValueError("malformed CPU affinity in the launch header")
        return cls(umask=ints["umask"], nice=ints["nice"], sigmask=ints["sigmask"],
                   sigign=ints["sigign"], rlimits=[(_rlim(a), _rlim(b)) for a, b in limits],
                   cpus={i for i in range(mask.bit_length()) if mask >> i & 1},
                   policy=sched[0], priority=sched[1], ioprio=ints["ioprio"],
                   personality=ints["personality"])


def _rlim(v: int) -> int:
    return resource.RLIM_INFINITY if v < 0 else v


class Launch:
    """A decoded launch: the header (all its fields), whether it hands over stdio, the
    launching controller's pid and requested LLVM version (if any), and the launching
    process's state."""

    __slots__ = ("controller_pid", "header", "llvm_version", "state", "stdio")

    def __init__(self, header: dict[str, object], state: LaunchState) -> None:
        self.header = header
        self.stdio = bool(header.get("stdio"))
        pid = header.get("controller_pid")
        self.controller_pid = pid if isinstance(pid, int) and pid > 0 else None
        version = header.get("llvm_version")
        self.llvm_version = version if isinstance(version, str) and version else None
        self.state = state


def _json_str(value: str | None) -> str:
    """``value`` as a JSON string (``null`` for ``None``), without importing :mod:`json`."""
    if value is None:
        return "null"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _json_rlim(v: int) -> int:
    return -1 if v == resource.RLIM_INFINITY else v


def encode_state(state: LaunchState) -> str:
    """The header fields of a launching process's state (JSON text starting with ``, ``;
    :data:`HANDOVER_VERSION` first): what :meth:`LaunchState.from_header` reads back."""
    limits = ", ".join(f"[{_json_rlim(cur)}, {_json_rlim(top)}]" for cur, top in state.rlimits)
    cpus = sum(1 << c for c in state.cpus)
    return (f', "handover": {HANDOVER_VERSION}, "umask": {state.umask}, "nice": {state.nice}, '
            f'"sigmask": {state.sigmask}, "sigign": {state.sigign}, "cpus": "{cpus:x}", '
            f'"sched": [{state.policy}, {state.priority}], '
            f'"ioprio": {state.ioprio}, "personality": {state.personality}, '
            f'"rlimits": [{limits}]')


def encode_launch(*, controller_pid: int, llvm_version: str | None, machine: str,
                  state: LaunchState, stdio: bool = True) -> bytes:
    """A launch header (the datagram's bytes; its fds go with it) as the Python launcher
    sends it: kind ``fdpair``, whether stdin/stdout/stderr are handed over, the launching
    controller's pid, the requested LLVM version (``None``: not requested), the launcher's
    ``uname -m``, and the launching process's ``state`` (:func:`encode_state`).
    :func:`decode_launch` reads it back. Built without :mod:`json` (not on the Python
    launcher's start-up path)."""
    return (f'{{"kind": "fdpair", "stdio": {"true" if stdio else "false"}, '
            f'"controller_pid": {controller_pid}, "llvm_version": {_json_str(llvm_version)}, '
            f'"machine": {_json_str(machine)}{encode_state(state)}}}').encode()


def decode_launch(data: bytes, nfds: int, *, machine: str) -> Launch:
    """The launch in a warm-socket datagram ``data`` that came with ``nfds`` fds after the
    reply socket (in, out, [stdin, stdout, stderr,] cwd, environ), for a server on
    ``machine`` (``uname -m``). Raises :class:`MalformedMessage` (the launch is refused):
    no JSON object, another handover version (an older launcher), the wrong kind or number
    of fds, another machine type, or malformed state."""
    import json  # not on the cold start path

    try:
        header = json.loads(data.decode())
    except ValueError:
        header = None
    if not isinstance(header, dict):
        raise MalformedMessage("no valid header")
    if header.get("handover") != HANDOVER_VERSION:
        raise MalformedMessage("launch without the launching process's state (an older launcher)")
    # in, out, [stdin, stdout, stderr,] and the launcher's working directory and environ
    if header.get("kind") != "fdpair" or nfds not in (4, 7):
        raise MalformedMessage(f"bad header {header!r} with {nfds} fds")
    if header.get("stdio") and nfds != 7:
        raise MalformedMessage("stdio announced without its fds")
    theirs = header.get("machine")
    if theirs is not None and theirs != machine:
        raise MalformedMessage(f"the launcher runs on {theirs!r}, this server on {machine!r}")
    try:
        state = LaunchState.from_header(header)
    except ValueError as e:
        raise MalformedMessage(str(e)) from None
    return Launch(header, state)
