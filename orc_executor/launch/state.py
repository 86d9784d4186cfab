"""The launching process's state, so that a warm session is the same program as a cold one.

A program inherits across fork+exec its working directory, environment, umask, resource
limits, signal mask, ignored signals, nice value, scheduling policy, I/O priority and CPU
affinity. A warm launch (``launcher_state.h``, :func:`orc_executor.launch.client.try_warm`) sends
them with its fds; the session process applies them (:func:`apply`) before it acknowledges
the launch, so before Setup. The header fields (JSON, with the launch's own; decoded by
:func:`orc_executor.serve.handover.decode_launch`):

* ``"handover": 1``; ``umask``, ``nice``, ``ioprio``, ``personality`` (ints); ``sigmask``,
  ``sigign``: the blocked and the ignored signals (bit N-1 = signal N); ``rlimits``:
  ``[cur, max]`` for each resource 0..``RLIM_NLIMITS``-1, -1 for ``RLIM_INFINITY``;
  ``cpus``: the CPU affinity mask (hex string); ``sched``: ``[policy, priority]``;
* two fds after the stdio ones: the working directory (``O_PATH``) and a memfd holding
  ``environ`` (each entry NUL-terminated, in order; any size up to :data:`MAX_ENVIRON`).

What the dynamic loader and the C library read once at process start-up cannot change in a
running process: if the launch's values differ from this process's
(:data:`STARTUP_ONLY_PREFIXES`, :data:`STARTUP_ONLY_RLIMITS`, the personality),
:func:`apply` refuses and the launcher starts cold. A launch whose state this process
cannot take (a lower nice value, a higher hard limit, ...) is refused too; if part of it was
applied already, the process serves no launch after it (:attr:`Refused.tainted`).
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import stat
import sys
import threading

from ..serve.handover import LaunchState, encode_ack, encode_state

#: The most bytes of ``environ`` a launch may hand over (larger: refused, so started cold).
MAX_ENVIRON = 64 << 20

#: Environment variables read once at start-up (the dynamic loader's ``LD_*``, glibc's
#: tunables and malloc settings): a launch whose values differ starts cold.
STARTUP_ONLY_PREFIXES = (b"LD_", b"GLIBC_TUNABLES", b"MALLOC_")

#: Resource limits also read once at start-up (glibc sizes thread stacks by RLIMIT_STACK).
STARTUP_ONLY_RLIMITS = (resource.RLIMIT_STACK,)


# ---- the launcher's side -------------------------------------------------------------------


def ignored_signals(assume_default: tuple[int, ...] = ()) -> int:
    """The signals whose disposition is ``SIG_IGN`` (bit N-1 = signal N), those in
    ``assume_default`` taken as ``SIG_DFL`` (the interpreter ignores SIGPIPE and SIGXFSZ
    itself, whatever it inherited)."""
    mask = 0
    for sig in signal.valid_signals():
        n = int(sig)
        if 0 < n <= 64 and n not in assume_default and signal.getsignal(n) == signal.SIG_IGN:
            mask |= 1 << (n - 1)
    return mask


def current_state() -> LaunchState:
    """This process's state, as a launch hands it over."""
    um = os.umask(0)
    os.umask(um)
    blocked = 0
    for sig in signal.pthread_sigmask(signal.SIG_BLOCK, []):
        if 0 < int(sig) <= 64:
            blocked |= 1 << (int(sig) - 1)
    ignored = ignored_signals((signal.SIGPIPE, signal.SIGXFSZ))
    limits = [resource.getrlimit(r) for r in range(_rlim_count())]
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    from ..native._native import lib  # (not .native: its imports lengthen the launcher's start)

    return LaunchState(umask=um, nice=nice, sigmask=blocked, sigign=ignored, rlimits=limits,
                       cpus=os.sched_getaffinity(0), policy=os.sched_getscheduler(0),
                       priority=os.sched_getparam(0).sched_priority,
                       ioprio=lib.orc_get_ioprio(), personality=lib.orc_personality())


def state_header() -> str:
    """The header fields (JSON text, starting with ``, ``) of this process's state
    (:func:`orc_executor.serve.handover.encode_state`)."""
    return encode_state(current_state())


_RLIM_COUNT: int | None = None


def _rlim_count() -> int:
    """``RLIM_NLIMITS``: the resources ``getrlimit`` knows."""
    global _RLIM_COUNT
    if _RLIM_COUNT is None:
        n = 0
        while True:
            try:
                resource.getrlimit(n)
            except (ValueError, OSError):
                break
            n += 1
        _RLIM_COUNT = n
    return _RLIM_COUNT


def state_fds() -> tuple[int, int]:
    """The working directory (``O_PATH``) and a memfd holding ``environ``: the caller closes
    both. Raises :class:`OSError`."""
    cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        env = os.memfd_create("orc-executor-environ", os.MFD_CLOEXEC)
    except BaseException:
        os.close(cwd)
        raise
    try:
        data = b"".join(k + b"=" + v + b"\0" for k, v in os.environb.items())
        view = memoryview(data)
        while view:
            view = view[os.write(env, view):]
    except BaseException:
        os.close(cwd)
        os.close(env)
        raise
    return cwd, env


# ---- the session process's side ------------------------------------------------------------


class Refused(Exception):
    """The launch's state cannot be applied here: the launcher must start cold. ``tainted``:
    part of it was applied already, so this process must not serve another launch."""

    def __init__(self, reason: str, *, tainted: bool) -> None:
        super().__init__(reason)
        self.tainted = tainted


def read_environ(fd: int) -> bytes:
    """The ``environ`` block a launch sent in the memfd ``fd``. Raises :class:`Refused`."""
    try:
        size = os.fstat(fd).st_size
        if size > MAX_ENVIRON:
            raise Refused(f"environment of {size} bytes (most {MAX_ENVIRON})", tainted=False)
        data = os.pread(fd, size, 0)
    except OSError as e:
        raise Refused(f"cannot read the launch's environment: {e}", tainted=False) from None
    if len(data) != size:
        raise Refused("the launch's environment changed while read", tainted=False)
    return data


def _entries(block: bytes) -> dict[bytes, bytes]:
    """``key -> value`` as the interpreter builds ``os.environ`` (first one wins; entries
    without ``=`` are left out)."""
    out: dict[bytes, bytes] = {}
    for entry in block.split(b"\0"):
        key, eq, value = entry.partition(b"=")
        if eq and key and key not in out:
            out[key] = value
    return out


def _startup_only(env: dict[bytes, bytes]) -> dict[bytes, bytes]:
    return {k: v for k, v in env.items() if k.startswith(STARTUP_ONLY_PREFIXES)}


_OWN_STARTUP: dict[bytes, bytes] | None = None


def prepare() -> None:
    """Work :func:`apply` would otherwise do on a launch's path: this process's start-up-only
    variables, the number of resource limits. Call it once, before the first launch (in the
    process whose environment is the one its loader saw)."""
    global _OWN_STARTUP
    if _OWN_STARTUP is None:
        _OWN_STARTUP = _startup_only(dict(os.environb))
    _rlim_count()


def apply(state: LaunchState, cwd_fd: int, env_fd: int, *, rehearsal: bool = False) -> None:
    """Make this process's state the launcher's (then close both fds): refuse (raise
    :class:`Refused`) what cannot be the same. ``rehearsal``: the state is this process's
    own (:func:`rehearse`); the signal state and locale are left alone."""
    from ..native.api import lib

    try:
        block = read_environ(env_fd)
        env = _entries(block)
        prepare()
        ours = _OWN_STARTUP or {}
        theirs = _startup_only(env)
        if ours != theirs:
            names = sorted(k.decode(errors="replace") for k in set(ours) ^ set(theirs) | {
                k for k in ours.keys() & theirs.keys() if ours[k] != theirs[k]})
            raise Refused(f"{', '.join(names)} differ(s) from the server's (read at start-up "
                          f"only)", tainted=False)
        if state.personality != lib.orc_personality():
            raise Refused(f"personality {state.personality:#x} differs from the server's "
                          f"(the address space is laid out already)", tainted=False)
        if not stat.S_ISDIR(os.fstat(cwd_fd).st_mode):
            raise Refused("the working directory fd is no directory", tainted=False)
        if len(state.rlimits) < _rlim_count():
            raise Refused("resource limits missing from the launch", tainted=False)
        for r in STARTUP_ONLY_RLIMITS:
            if resource.getrlimit(r) != state.rlimits[r]:
                raise Refused(f"resource limit {r} differs from the server's (read at start-up "
                              "only)", tainted=False)
        # From here on, a refusal leaves this process changed (tainted).
        if not rehearsal:  # (per thread: a rehearsing thread's own may be lowered)
            _set_nice(state.nice)
            _set_scheduling(state)
        for r, (cur, top) in enumerate(state.rlimits[:_rlim_count()]):
            try:
                if resource.getrlimit(r) != (cur, top):
                    resource.setrlimit(r, (cur, top))
            except (OSError, ValueError, OverflowError) as e:
                raise Refused(f"resource limit {r} {(cur, top)}: {e}", tainted=True) from None
        try:
            os.fchdir(cwd_fd)
        except OSError as e:
            raise Refused(f"working directory: {e}", tainted=True) from None
        os.umask(state.umask)
        _set_environ(block, env)
        if rehearsal:
            return
        rc = lib.orc_set_signals(state.sigign, state.sigmask)
        if rc:
            raise Refused(f"signal dispositions: {os.strerror(rc)}", tainted=True)
        lib.orc_c_locale()
    finally:
        for fd in (cwd_fd, env_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def _set_nice(nice: int) -> None:
    """Every thread of this process at ``nice`` (threads started later inherit it; a
    worker has one thread here, whose nice value is usually the launch's already)."""
    if threading.active_count() == 1 and os.getpriority(os.PRIO_PROCESS, 0) == nice:
        return
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except ProcessLookupError:
            pass
        except OSError as e:
            raise Refused(f"nice {nice}: {e}", tainted=tid != tids[0]) from None


def _set_scheduling(state: LaunchState) -> None:
    """Scheduling policy, I/O priority and CPU affinity of the calling thread (the only one;
    threads started later inherit them)."""
    from ..native.api import lib

    try:
        if (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority) != (
                state.policy, state.priority):
            os.sched_setscheduler(0, state.policy, os.sched_param(state.priority))
        if lib.orc_get_ioprio() != state.ioprio:
            rc = lib.orc_set_ioprio(state.ioprio)
            if rc:
                raise OSError(rc, f"I/O priority {state.ioprio}: {os.strerror(rc)}")
        if os.sched_getaffinity(0) != state.cpus:
            os.sched_setaffinity(0, state.cpus)
    except (OSError, ValueError, OverflowError) as e:
        raise Refused(f"scheduling: {e}", tainted=True) from None


def _set_environ(block: bytes, env: dict[bytes, bytes]) -> None:
    """The C ``environ`` becomes ``block`` exactly, ``os.environ`` its entries, and the C
    library's time zone follows ``TZ``."""
    import time

    from ..native.api import ffi, lib

    rc = lib.orc_set_environ(ffi.from_buffer(block), len(block))
    if rc:
        raise Refused(f"environment: {os.strerror(rc)}", tainted=True)
    data = os.environb._data  # type: ignore[attr-defined]  # the shared store, no putenv
    data.clear()
    data.update(env)
    time.tzset()


def rehearse() -> None:
    """Take this process's own state as a launch's and apply it (no change; nice,
    scheduling, signals and locale left alone), and acknowledge on a socketpair: a session
    process forked from here (or getting ready) then finds those code paths and pages warm.
    Raises what :func:`apply` raises."""
    import json

    state = LaunchState.from_header(json.loads('{"kind": null' + state_header() + "}"))
    cwd, env = state_fds()
    apply(state, cwd, env, rehearsal=True)
    from ..io.fdpass import ANCILLARY_SPACE, close_fds, fds_received

    a, b = socket.socketpair()
    with a, b:
        acknowledge(a)
        close_fds(fds_received(b.recvmsg(16, ANCILLARY_SPACE)[1]))


def acknowledge(reply: socket.socket) -> None:
    """Acknowledge the launch on ``reply``: ``A``, this process's pid (4 bytes,
    little-endian) and a pidfd of it (where the kernel has them). Raises :class:`OSError`."""
    from ..io.fdpass import fds_ancillary

    msg = encode_ack(os.getpid())
    try:
        pidfd = os.pidfd_open(os.getpid())
    except (OSError, AttributeError):
        reply.sendall(msg)
        return
    try:
        reply.sendmsg([msg], fds_ancillary([pidfd]), socket.MSG_NOSIGNAL)
    finally:
        os.close(pidfd)


# ---- the cold path -------------------------------------------------------------------------


#: The signals the native launcher found ignored before it exec'd the interpreter
#: (``--ignored=HEX``, set by :func:`orc_executor.launch.client.main`), if it did.
inherited_ignored: int | None = None


def cold_start(ignored: int | None = None) -> None:
    """In a process that runs one session itself (started cold: the launcher exec'd the
    interpreter): undo what the interpreter changed of the inherited signal state, and put it
    in the C locale. ``ignored``: the signals found ignored before the interpreter started
    (default :data:`inherited_ignored`), else SIGPIPE and SIGXFSZ are taken as not ignored."""
    from ..native.api import lib

    if ignored is None:
        ignored = inherited_ignored
    if ignored is None:
        ignored = ignored_signals((signal.SIGPIPE, signal.SIGXFSZ))
    blocked = 0
    for sig in signal.pthread_sigmask(signal.SIG_BLOCK, []):
        if 0 < int(sig) <= 64:
            blocked |= 1 << (int(sig) - 1)
    # The interpreter's own SIGINT handler goes (trio would install its own over SIG_DFL's).
    signal.signal(signal.SIGINT,
                  signal.SIG_IGN if ignored >> (signal.SIGINT - 1) & 1 else signal.SIG_DFL)
    lib.orc_c_locale()
    rc = lib.orc_set_signals(ignored, blocked)
    if rc:
        print(f"orc-executor: signal dispositions: {os.strerror(rc)}", file=sys.stderr)
