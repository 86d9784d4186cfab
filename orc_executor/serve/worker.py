"""A warm session process: imports everything up front, then waits for a session.

Started by the daemon as ``python -m orc_executor.serve.worker CONTROL_FD [LISTEN_FD]`` (or forked
by the zygote, below). ``CONTROL_FD`` is a ``SOCK_SEQPACKET`` socket to the daemon. The worker
gets ready for a session (:func:`_prepare`), writes ``R`` on it, and then serves exactly one
session and exits with the session's status (0 clean, 1 error). Two ways to get the session:

* **accept** (with ``LISTEN_FD``, the warm server ``orc-executor serve``): the daemon first
  queues ``O<json>`` on the control socket: ``{"options": {...}, "background": bool}``, the
  session's :class:`~orc_executor.serve.options.ServeOptions` and whether the worker gets ready at
  the lowest priority (other workers are ready; see :func:`_prepare`). Ready
  workers receive launched ``orc-executor filedescs=...`` executors (the native launcher or
  :func:`orc_executor.launch.client.try_warm`) on the warm socket themselves, so the launch reaches
  the session process in one ``SCM_RIGHTS`` hop. The warm socket is a unix *datagram*
  socket, and a launch is one datagram: a JSON header (``{"kind": "fdpair", "stdio": true,
  "controller_pid": N, "llvm_version": V, "machine": M, "handover": 1, ...}``: the launching
  process's state, :mod:`orc_executor.launch.state`) with fds ``reply, in, out, stdin, stdout,
  stderr, cwd, environ``, where ``reply`` is one end of a socketpair the launcher keeps the
  other end of. The worker applies the state before it acknowledges (a launch without it, from
  an older launcher, whose state cannot apply here, or from a launcher on another machine type
  than the server's, e.g. emulated, is refused, and the launcher starts cold).
  (A connection would wake the ready workers at ``connect``, before the fds are sent, and
  they would preempt the launcher.) Each ready worker waits with
  ``EPOLLEXCLUSIVE``, so one of them wakes per launch. The worker passes the reply socket to
  the daemon (``S`` with the fd), then acknowledges with ``A``, its pid (4 bytes,
  little-endian) and a pidfd of itself on it (the launcher forwards signals to it): only then
  does the launcher close its copies (without the ``A`` it starts the session cold itself).
  The daemon writes the exit status to the reply socket when the worker has exited (4
  bytes, little-endian signed; negative = killed by that signal); the worker itself sends
  it first as it exits normally (:func:`_report_exit_status`), and the launcher takes the
  first 4 bytes. EOF on the control socket while idle: exit 0.
* **handover** (the ``--listen`` daemon): the daemon sends a JSON header with the fds of one
  session: ``{"kind": "socket", ...}`` with one connected socket, or ``{"kind": "fdpair",
  "stdio": true, ...}`` with ``in, out, stdin, stdout, stderr``; the other header fields are
  :class:`~orc_executor.serve.options.ServeOptions`. The worker writes ``M`` when the socket
  session's controller sent its first complete message, and its status byte at the end.

The fork server that forks workers is :mod:`orc_executor.serve.zygote`; this module is its
entry point too (``--zygote``).
"""

from __future__ import annotations

import gc
import logging
import os
import select
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, TypeVar

from ..executor.context import ExecutorContext
from ..host import RETURN_ZERO_CODE
from ..io import streams
from ..io.fdpass import (
    ANCILLARY_SPACE,
    CREDENTIALS_SPACE,
    close_fds,
    fds_ancillary,
    fds_received,
    sender_uid,
)
from ..io.spec import FdPair
from ..launch import state as launch_state
from . import handover
from .connection import serve_stream
from .handover import Control, Launch, MalformedMessage
from .options import ServeOptions

log = logging.getLogger(__name__)

_T = TypeVar("_T")


#: Nice value of the thread that rehearses a session before the worker reports ready (and of
#: a background worker getting ready where ``SCHED_IDLE`` is refused): a worker refilling the
#: pool must not take CPU from the sessions running meanwhile.
REHEARSAL_NICE = 19


def receive_session(control: socket.socket) -> tuple[dict[str, object], list[int]] | None:
    """Block until the daemon hands over a session: (header, fds), or ``None`` at EOF.
    Raises :class:`~orc_executor.serve.handover.MalformedMessage`."""
    msg, ancdata, _flags, _addr = control.recvmsg(1 << 16, ANCILLARY_SPACE)
    fds = fds_received(ancdata)
    if not msg:
        close_fds(fds)
        return None
    return handover.decode_session_header(msg), fds


def run(control_fd: int, listen_fd: int | None = None) -> int:
    """Get ready, serve one session (handed over, or accepted on ``listen_fd``); return its
    exit status (0 also when the daemon ends the worker before a session)."""
    import trio

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when we stop
    control = socket.socket(fileno=control_fd)
    if listen_fd is None:
        contexts = _in_thread(lambda: _prepare(None))
        return trio.run(_serve_handover, control, contexts)
    listener = socket.socket(fileno=listen_fd)
    from ..native.api import lib

    # The thread that ends this process if its launcher dies, started now (its start is
    # slow on a busy machine), blocking every signal (so before any handler of ours).
    if lib.orc_watch_prepare() != 0:
        log.debug("cannot start the launcher watch now: it starts with the session")
    got = _receive_options(control)
    if got is None:
        return 0
    opts, background = got
    contexts = _in_thread(lambda: _prepare(listener, background))
    return trio.run(_serve_accepted, control, listener, opts, contexts)


def _in_thread(fn: Callable[[], _T]) -> _T:
    """``fn()`` run in a thread of its own, the calling thread waiting for it. Priority is
    per thread on Linux, so the session that follows, on the calling thread, runs at normal
    priority whatever ``fn`` did to its own (see :func:`_lower_this_thread`)."""
    result: list[_T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            result.append(fn())
        except BaseException as e:  # re-raised in the calling thread
            error.append(e)

    t = threading.Thread(target=body, name="orc-executor getting ready")
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def _lower_this_thread(*, idle: bool) -> None:
    """Lower the calling thread's CPU priority: to ``SCHED_IDLE`` with ``idle`` (where
    refused, and without ``idle``, to nice :data:`REHEARSAL_NICE`)."""
    tid = threading.get_native_id()
    if idle:
        try:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            return
        except (OSError, AttributeError):
            pass
    try:
        os.setpriority(os.PRIO_PROCESS, tid, REHEARSAL_NICE)
    except OSError:
        pass


def _receive_options(control: socket.socket) -> tuple[ServeOptions, bool] | None:
    """The daemon's ``O<json>`` message: the session options and whether this worker gets
    ready in the background (``None`` at EOF or if malformed)."""
    try:
        options, background = handover.decode_options(control.recv(1 << 16))
        return ServeOptions(**options), background  # type: ignore[arg-type]
    except (OSError, ValueError, TypeError):
        return None


# ---- getting ready ---------------------------------------------------------------------------


def _prepare(listener: socket.socket | None, background: bool = False
             ) -> dict[str, ExecutorContext]:
    """Everything that does not depend on the session, done before the ready byte: a context
    of each profile (returned, for the session to take), and one rehearsed session, so the
    pages its code paths touch are already this process's own copies (no copy-on-write faults
    of the zygote's heap on the session's critical path). The rehearsal stops early if
    launchers are already waiting on ``listener``, and the collector's view is frozen
    afterwards (the zygote's heap stays frozen too). Then every page still shared
    copy-on-write with the zygote is copied (``orc_take_shared_memory``): the session takes
    no copy-on-write fault at all, at the cost of a worker's own copy of that memory.

    Called in a thread of its own (:func:`_in_thread`), whose priority it lowers. A
    ``background`` worker (the warm server refills the pool while other workers are ready)
    runs at the lowest priority (``SCHED_IDLE``) throughout, so that its copy-on-write
    faults, context building and rehearsal do not delay the running sessions. Otherwise a
    launcher may be waiting for this very worker: the contexts are built at normal priority,
    and only the rehearsal runs at nice :data:`REHEARSAL_NICE` (not ``SCHED_IDLE``, which a
    busy machine can starve for seconds)."""
    from ..executor.bootstrap import PROFILES, build_context, detect_profile, setup_info

    if background:
        _lower_this_thread(idle=True)
    launch_state.prepare()
    try:
        launch_state.rehearse()
    except Exception as e:  # a warm-up problem must never stop the worker
        log.debug("launch state rehearsal failed: %s", e)
    contexts = {}
    for profile in PROFILES:
        ctx = build_context(profile)
        setup_info(ctx).encode()
        contexts[profile] = ctx

    if listener is not None and _readable(listener):
        return contexts  # launchers are waiting: be ready now
    if not background:
        _lower_this_thread(idle=False)
    try:
        # The controller's detection reads /proc before Setup: its first run costs more than
        # later ones (this process's ancestors are no controller: the answer is unused).
        detect_profile(start_pid=os.getpid())
        rehearse_session(listener)
    except Exception as e:  # a warm-up problem must never stop the worker
        log.debug("session rehearsal failed: %s", e)
    gc.collect()
    gc.freeze()
    # The pages still shared copy-on-write with the fork server, copied now (at this
    # thread's priority) rather than by faults on the session's path (~10 MB per worker).
    from ..native.api import lib

    if (taken := lib.orc_take_shared_memory()) < 0:
        log.debug("shared pages not taken in advance: %s", os.strerror(-taken))
    return contexts


def _readable(sock: socket.socket) -> bool:
    p = select.poll()
    p.register(sock, select.POLLIN)
    return bool(p.poll(0))


@contextmanager
def _calls_inline() -> Iterator[None]:
    """Run ``trio.to_thread.run_sync`` calls (and the session's early start of a worker
    thread, ``trio.lowlevel.start_thread_soon``) inline while rehearsing, so the rehearsal
    leaves no threads in trio's cache (they would inherit its nice value, or, in the zygote,
    be missing from the forked workers that inherit the cache's records of them)."""
    import outcome
    import trio

    real, real_soon = trio.to_thread.run_sync, trio.lowlevel.start_thread_soon

    async def inline(fn: Callable[..., Any], *args: Any, **_kw: Any) -> Any:
        return fn(*args)

    def inline_soon(fn: Callable[[], Any], deliver: Callable[[Any], object],
                    **_kw: Any) -> None:
        deliver(outcome.capture(fn))

    trio.to_thread.run_sync = inline  # type: ignore[assignment]
    trio.lowlevel.start_thread_soon = inline_soon  # type: ignore[assignment]
    try:
        yield
    finally:
        trio.to_thread.run_sync = real
        trio.lowlevel.start_thread_soon = real_soon


def rehearse_session(listener: socket.socket | None = None) -> None:
    """Run one complete session in this process against the package's controller over a
    socketpair: Setup, dylib open and resolve, reserve, initialize a page of code with an
    EH-frame alloc action pair (an empty section), run it as main (``xor eax, eax; ret``),
    release. Leaves no session state behind (the next session still resets C stdio first).
    Stops early once ``listener`` has a connection waiting. Raises if a call fails."""
    import trio

    from ..executor import session as session_module

    async def rehearsal() -> None:
        async with trio.open_nursery() as nursery:
            if listener is not None:

                async def stop_when_needed() -> None:
                    await trio.lowlevel.wait_readable(listener)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(stop_when_needed)
            await _rehearsal_calls()
            nursery.cancel_scope.cancel()

    logger = logging.getLogger("orc_executor")
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))  # the rehearsal's session is not news
    with _calls_inline():
        try:
            trio.run(rehearsal)
        finally:
            session_module.reset_stdio_at_next_session()
            logger.setLevel(level)


async def _rehearsal_calls() -> None:
    import trio

    from ..controller import Controller
    from ..protocol import names
    from ..protocol.names import Bootstrap, EHFrame
    from ..protocol.names import SimpleExecutorDylibManager as dm
    from ..protocol.names import SimpleExecutorMemoryManager as mm
    from ..protocol.orc_types import (
        AllocActionCallPair,
        ExecutorAddrRange,
        FinalizeRequest,
        SegFinalizeRequest,
        WrapperFunctionCall,
    )
    from ..protocol.sps import ErrorValue, WrapperSignature

    a, b = trio.socket.socketpair()
    opts = ServeOptions(llvm_version="modern")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: serve_stream(streams.socket_stream(a), opts, is_socket=False))
        async with Controller.over(streams.socket_stream(b)) as c:

            async def call(name: str, sig: WrapperSignature, *args: Any) -> Any:
                value = await c.call(name, sig, *args)
                if isinstance(value, ErrorValue):  # the warm-up must not fail unnoticed
                    raise RuntimeError(f"rehearsal: {name}: {value.message}")
                return value

            dylibs = c.symbol(dm.instance)
            handle = await call(dm.open, names.OPEN, dylibs, "", 0)
            await call(dm.resolve, names.RESOLVE22, handle, [("printf", False)])
            mem = c.symbol(mm.instance)
            base = await call(mm.reserve, names.RESERVE, mem, 8192)
            # return 0 (this architecture's code), and at +16 an empty .eh_frame (its zero
            # terminator), which the alloc actions register and, at release, deregister:
            # libgcc returns at once for an empty section, but the session's alloc-action
            # paths are exercised.
            code = (RETURN_ZERO_CODE or bytes(16)) + bytes(4)
            eh = names.EH_FRAME.encode_args(ExecutorAddrRange(base + 16, base + 20))
            eh_pair = AllocActionCallPair(
                WrapperFunctionCall(c.symbol(EHFrame.register_alloc_action), eh),
                WrapperFunctionCall(c.symbol(EHFrame.deregister_alloc_action), eh),
            )
            req = FinalizeRequest([SegFinalizeRequest(5, base, 4096, code)], [eh_pair])
            await call(mm.initialize, names.INITIALIZE, mem, req)
            if RETURN_ZERO_CODE is not None:
                await call(Bootstrap.run_as_main, names.RUN_AS_MAIN, base, [b"rehearsal"])
            await call(mm.release, names.RELEASE, mem, [base])


# ---- accept mode (orc-executor serve) ----------------------------------------------------------


async def _serve_accepted(control: socket.socket, listener: socket.socket, opts: ServeOptions,
                          contexts: dict[str, ExecutorContext]) -> int:
    control.setblocking(False)
    listener.setblocking(False)
    try:
        control.send(Control.READY)
    except OSError:
        return 0
    taken = await _take_session(control, listener)
    listener.close()  # the next launcher is another worker's
    if taken is None:
        return 0
    launch, fds = taken
    opts = replace(opts, controller_pid=launch.controller_pid)
    if launch.llvm_version is not None:
        opts = replace(opts, llvm_version=launch.llvm_version)
    control.close()
    status = await _run_fdpair(fds, launch.stdio, opts, contexts)
    # The session is over: the process ends here, as the stock executor's returns from main,
    # without trio's teardown on the way (C exit runs the same exit handlers either way).
    from .connection import exit_process

    exit_process(status)
    return status  # not reached


async def _take_session(control: socket.socket, listener: socket.socket
                        ) -> tuple[Launch, list[int]] | None:
    """Receive launches until one hands over a valid session, pass its reply socket to the
    daemon and acknowledge it; ``None`` when the daemon ends the worker first (EOF on
    ``control``). One wait covers both sockets (:func:`_readiness`): no task to cancel on
    the session's critical path."""
    import trio

    taken: tuple[Launch, list[int]] | None = None
    ready = _readiness(listener, control)
    try:
        while taken is None:
            await trio.lowlevel.wait_readable(ready.fileno())
            events = dict(ready.poll(0))
            if control.fileno() in events and _daemon_closed(control):
                return None
            if listener.fileno() not in events:
                continue
            try:
                got = _receive_launch(listener)
            except OSError as e:
                log.error("warm socket: %s", e)
                return None
            if got is None:
                continue  # nothing there (another worker took it), or refused
            launch, reply, fds = got
            with reply:
                # The launching process's state first (refused: the launcher starts cold;
                # partly applied: this process serves no other launch).
                try:
                    launch_state.apply(launch.state, fds[-2], fds[-1])
                except (launch_state.Refused, ValueError) as e:
                    log.warning("warm handover refused: %s", e)
                    close_fds(fds if isinstance(e, ValueError) else fds[:-2])
                    if isinstance(e, launch_state.Refused) and e.tainted:
                        return None
                    continue
                fds = fds[:-2]
                # The daemon takes the reply socket (to write the exit status) before the
                # launcher lets go of its fds: a refused or failed hand-off leaves the
                # launcher able to start the session cold.
                try:
                    control.sendmsg([Control.SESSION_TAKEN], fds_ancillary([reply.fileno()]),
                                    socket.MSG_NOSIGNAL)
                    launch_state.acknowledge(reply)
                except OSError as e:
                    log.warning("warm handover abandoned: %s", e)
                    close_fds(fds)
                    return None
                taken = launch, fds
                # Our own copy, for the exit status as this process exits (the daemon writes
                # it too, which covers a process killed by a signal), and to end this process
                # if the launcher dies first.
                try:
                    _report_exit_status(os.dup(reply.fileno()))
                except OSError:
                    pass  # the daemon's copy still gets it
    finally:
        ready.close()
    return taken


def _daemon_closed(control: socket.socket) -> bool:
    """Read what the daemon sent on ``control`` while this worker is idle (nothing it sends
    then needs an answer): ``True`` at EOF or on an error, the end of this worker."""
    try:
        return not control.recv(64)
    except BlockingIOError:
        return False
    except OSError:
        return True


def _readiness(listener: socket.socket, control: socket.socket) -> select.epoll:
    """An epoll instance that reports ``listener`` (the warm socket) or ``control`` readable.
    ``listener`` is registered ``EPOLLEXCLUSIVE`` where the kernel takes it: a launch wakes
    one of the pool's waiting workers, not all of them (otherwise every waiting worker wakes,
    and all but one find nothing to receive)."""
    ep = select.epoll()
    try:
        ep.register(listener.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)
    except (OSError, AttributeError, ValueError):
        ep.register(listener.fileno(), select.EPOLLIN)
    ep.register(control.fileno(), select.EPOLLIN)
    return ep


def _report_exit_status(fd: int) -> None:
    """Have this process send its exit status to the launcher on ``fd`` as it exits (C
    ``on_exit``, after the JIT'd program's exit handlers and a flush of C stdio): the
    launcher exits, and lets go of the stdout and stderr it still holds, without waiting for
    this process's teardown and the zygote → daemon relay (on the path of any controller
    that reads the program's output to EOF)."""
    from ..native.api import lib

    if lib.orc_report_exit_status(fd) != 0:
        os.close(fd)
    elif lib.orc_watch_launcher(fd) != 0:
        log.warning("cannot watch the launcher: this session outlives it if it is killed")


def _receive_launch(listener: socket.socket
                    ) -> tuple[Launch, socket.socket, list[int]] | None:
    """One launch from the warm socket, if one is waiting: its header, reply socket and the
    fds it hands over. ``None`` when there is none, and for a launch refused (its fds closed,
    so the launcher starts cold; the reason logged): from another user's process, truncated,
    without a reply socket, or with a malformed or unusable header. The sender's uid is the
    kernel's (``SCM_CREDENTIALS``). Raises :class:`OSError`
    when the warm socket itself fails."""
    try:
        msg, ancdata, flags, _addr = listener.recvmsg(handover.MAX_LAUNCH_HEADER,
                                                    ANCILLARY_SPACE + CREDENTIALS_SPACE)
    except (BlockingIOError, InterruptedError):
        return None
    fds = fds_received(ancdata)
    if not fds:
        log.warning("warm handover refused: no reply socket")
        return None
    try:
        reply = socket.socket(fileno=fds[0])
    except OSError:
        log.warning("warm handover refused: the reply fd is not a socket")
        close_fds(fds)
        return None
    fds = fds[1:]
    launch: Launch | None = None
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        problem: str | None = "truncated launch message"
    elif sender_uid(ancdata) != os.getuid():
        # The kernel's record of the sending process (the server set SO_PASSCRED on the warm
        # socket), not the peer of a socket the sender chose to pass.
        problem = f"sent by uid {sender_uid(ancdata)}, not this user"
    elif reply.family != socket.AF_UNIX:
        problem = "the reply fd is not a unix socket"
    else:
        try:
            launch = handover.decode_launch(msg, len(fds), machine=os.uname().machine)
            problem = _version_problem(launch)
        except MalformedMessage as e:
            problem = str(e)
    if problem is not None:
        log.warning("warm handover refused: %s", problem)
        close_fds(fds)
        reply.close()
        return None
    assert launch is not None
    return launch, reply, fds


def _version_problem(launch: Launch) -> str | None:
    """Why the launch's requested LLVM version is refused (the cold start reports it)."""
    if launch.llvm_version is None:
        return None
    from ..protocol.names import profile_for_version

    try:
        profile_for_version(launch.llvm_version)
    except ValueError as e:
        return f"{e} (the cold start reports it)"
    return None


async def _run_fdpair(fds: list[int], stdio: bool, opts: ServeOptions,
                      contexts: dict[str, ExecutorContext] | None) -> int:
    if stdio and len(fds) >= 5:
        for target, fd in zip((0, 1, 2), fds[2:5], strict=True):
            os.dup2(fd, target)
            os.close(fd)
    end = await serve_stream(streams.fd_pair_stream(FdPair(fds[0], fds[1])), opts,
                             is_socket=False, contexts=contexts)
    return end.exit_status


# ---- handover mode (the --listen daemon) -------------------------------------------------------


async def _serve_handover(control: socket.socket, contexts: dict[str, ExecutorContext]) -> int:
    import trio

    control.sendall(Control.READY)
    await trio.lowlevel.wait_readable(control)
    try:
        got = receive_session(control)
    except MalformedMessage as e:
        print(f"orc-executor worker: {e}", file=sys.stderr)
        return 1
    if got is None:
        return 0
    header, fds = got
    options = header.get("options", {})
    opts = ServeOptions(**options) if isinstance(options, dict) else ServeOptions()
    kind = header.get("kind")
    if kind == "fdpair" and len(fds) >= 2:
        status = await _run_fdpair(fds, bool(header.get("stdio")), opts, contexts)
    elif kind == "socket" and fds:
        tsock = trio.socket.from_stdlib_socket(socket.socket(fileno=fds[0]))

        def first_message() -> None:
            # The daemon may evict a session whose controller has not spoken yet, when
            # every slot is taken and another connection waits: this one has now.
            try:
                control.send(Control.FIRST_MESSAGE, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            except OSError:
                pass

        end = await serve_stream(streams.socket_stream(tsock), opts, is_socket=True,
                                 contexts=contexts, on_first_message=first_message)
        status = end.exit_status
    else:
        print(f"orc-executor worker: bad handover {header!r}", file=sys.stderr)
        return 1
    try:
        control.sendall(handover.encode_final_status(status), socket.MSG_NOSIGNAL)
    except OSError:
        pass
    return status


def _end_with(parent: int) -> None:
    """A worker started as an interpreter of its own (not forked by the zygote) by
    ``parent``, the daemon or ``serve``: a thread waits on a pidfd of ``parent`` and kills
    this process (SIGKILL) when it ends, idle or in a session. (``PR_SET_PDEATHSIG`` cannot
    serve here: it fires when the parent's *thread* that started us ends, and the daemon
    starts processes from trio's worker threads, which end when idle.)"""
    try:
        pidfd = os.pidfd_open(parent)
    except (OSError, AttributeError) as e:
        log.warning("cannot watch the parent process %d: %s", parent, e)
        return
    if os.getppid() != parent:  # it ended before the pidfd was opened
        os._exit(1)

    def watch() -> None:
        select.select([pidfd], [], [])
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="orc-executor parent watch", daemon=True).start()


def _rehearse_all() -> None:
    """The fork server's rehearsal: a launch's state handover, then a whole session."""
    launch_state.rehearse()
    rehearse_session()


def main() -> None:
    from .connection import exit_process, setup_logging

    setup_logging(os.environ.get("ORC_EXECUTOR_LOG", "warning"))
    if sys.argv[1] == "--zygote":
        from .zygote import zygote

        exit_process(zygote(int(sys.argv[2]), run, _rehearse_all))
    listen_fd = int(sys.argv[2]) if len(sys.argv) > 2 else None
    _end_with(os.getppid())
    exit_process(run(int(sys.argv[1]), listen_fd))


if __name__ == "__main__":
    main()
