"""Settings of the sessions and of the ``--listen`` daemon."""

from __future__ import annotations

from dataclasses import dataclass

from ..io import streams
from ..protocol.framing import DEFAULT_MAX_MESSAGE_SIZE


@dataclass
class ServeOptions:
    """Session limits: bytes per message, concurrent calls, idle-close seconds, socket mode,
    busy-poll seconds."""

    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_concurrent_calls: int = 1024
    idle_close: float | None = 0.2
    socket_mode: int = 0o600
    #: Requested controller version ("14", "19", "22", "modern") or None to detect.
    llvm_version: str | None = None
    #: The launching controller's pid when it is not our parent (warm handover), for detection.
    controller_pid: int | None = None
    #: Seconds the reader polls without sleeping for the next call; None: the session's
    #: default (:func:`~orc_executor.executor.session.default_busy_poll`).
    busy_poll: float | None = None
    #: Socket sessions: seconds after Setup for the controller's first message, and seconds
    #: without a message while nothing is in flight, before the session is closed (None:
    #: never). Pipes always get EOF and have neither.
    handshake_timeout: float | None = 10.0
    idle_timeout: float | None = 3600.0
    #: TCP sessions: keepalive seconds idle, seconds between probes, unanswered probes
    #: (:func:`~orc_executor.io.streams.keepalive`; idle 0: off).
    keepalive_idle: int = streams.DEFAULT_KEEPALIVE[0]
    keepalive_interval: int = streams.DEFAULT_KEEPALIVE[1]
    keepalive_count: int = streams.DEFAULT_KEEPALIVE[2]
    #: "recover", "crash", or None to choose from the launching controller
    #: (:func:`~orc_executor.executor.fault_policy.select_fault_policy`).
    on_fault: str | None = None



@dataclass
class DaemonOptions:
    """``--listen`` daemon settings: concurrent sessions, warm processes kept ready, the
    SIGTERM grace period (seconds), and the uid a unix-socket peer must have (or None)."""

    max_sessions: int = 64
    warm: int = 2
    grace: float = 30.0
    allow_uid: int | None = None
