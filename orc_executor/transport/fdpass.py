"""Passing file descriptors over unix sockets (``SCM_RIGHTS``): the warm handover of a
launched executor's pipes and stdio, the daemon's hand-off of accepted connections, and the
zygote's worker control sockets. Stdlib only, so the start-up path stays light."""

from __future__ import annotations

import array
import socket
from typing import Any

#: Most fds one message carries (the warm handover sends 5: in, out, stdin, stdout, stderr).
MAX_FDS = 8

#: ``recvmsg`` ancillary buffer size for up to :data:`MAX_FDS` fds (bytes).
ANCILLARY_SPACE = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)


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
