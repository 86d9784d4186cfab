"""Passing file descriptors over unix sockets (``SCM_RIGHTS``): the warm handover of a
launched executor's pipes and stdio, the daemon's hand-off of accepted connections, and the
zygote's worker control sockets. Stdlib only, so the start-up path stays light."""

from __future__ import annotations

import array
import os
import socket
import struct
from typing import Any

#: Most fds one message carries (the warm handover sends 5: in, out, stdin, stdout, stderr).
MAX_FDS = 8

#: ``recvmsg`` ancillary buffer size for up to :data:`MAX_FDS` fds (bytes).
ANCILLARY_SPACE = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)


#: ``recvmsg`` ancillary buffer size for the sender's credentials (``SCM_CREDENTIALS``, sent by
#: the kernel to a socket with ``SO_PASSCRED`` set): add it to :data:`ANCILLARY_SPACE`.
CREDENTIALS_SPACE = socket.CMSG_SPACE(struct.calcsize("3i"))


def pass_credentials(sock: socket.socket) -> None:
    """Have the kernel attach each sender's pid, uid and gid to what ``sock`` receives
    (``SO_PASSCRED``; see :func:`sender_uid`)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)


def sender_uid(ancdata: list[tuple[int, int, bytes]] | Any) -> int | None:
    """The sender's uid in ``recvmsg`` ancillary data (``SCM_CREDENTIALS``: the kernel's
    record of the sending process, which only a privileged process can change), or ``None``
    if there is none."""
    for level, type_, data in ancdata:
        if (level == socket.SOL_SOCKET and type_ == socket.SCM_CREDENTIALS
                and len(data) >= struct.calcsize("3i")):
            _pid, uid, _gid = struct.unpack_from("3i", data)
            return int(uid)
    return None


def fds_ancillary(fds: list[int]) -> list[tuple[int, int, bytes]]:
    """The ``sendmsg`` ancillary data that passes ``fds``."""
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]


def fds_received(ancdata: list[tuple[int, int, bytes]] | Any) -> list[int]:
    """The fds carried by ``recvmsg`` ancillary data (now open in this process)."""
    fds = array.array("i")
    for level, type_, data in ancdata:
        if level == socket.SOL_SOCKET and type_ == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    return list(fds)


def close_fds(fds: list[int]) -> None:
    """Close received fds that will not be used (errors ignored)."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def peer_uid(sock: Any) -> int | None:
    """The uid of the process at the other end of a unix socket (``SO_PEERCRED``), or
    ``None`` for another family. ``sock``: a stdlib or trio socket."""
    if sock.family != socket.AF_UNIX:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)
