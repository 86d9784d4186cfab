"""Driving sessions over a connection spec: one-shot sessions on fds, adopted sockets,
connect-back, and listening sockets."""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import trio

from ..executor.bootstrap import build_context, select_profile
from ..executor.context import ExecutorContext
from ..executor.fault_policy import apply_fault_policy, select_fault_policy
from ..executor.session import Session, SessionEnd
from ..interpreter import python_module_command
from ..io import streams
from ..io.fdpass import (
    ANCILLARY_SPACE,
    CREDENTIALS_SPACE,
    close_fds,
    fds_ancillary,
    fds_received,
    pass_credentials,
    peer_uid,
)
from ..io.spec import (
    Address,
    Connect,
    ConnectionSpec,
    FdPair,
    Listen,
    SocketFd,
    UnixAddress,
)
from ..protocol.framing import DEFAULT_MAX_MESSAGE_SIZE
from .start_failures import StartFailures

log = logging.getLogger(__name__)


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


async def serve_stream(
    stream: trio.abc.Stream, opts: ServeOptions, *, is_socket: bool,
    contexts: dict[str, ExecutorContext] | None = None,
    on_first_message: Callable[[], None] | None = None,
) -> SessionEnd:
    """Run one session on ``stream`` and release its resources; return why it ended.

    ``contexts`` may hold unused contexts built in advance, by profile (the one used is
    taken out); otherwise the context is built here. ``on_first_message``: called once when
    the controller's first complete message arrived."""
    profile = select_profile(opts.llvm_version, is_socket=is_socket,
                             start_pid=opts.controller_pid)
    ctx = contexts.pop(profile, None) if contexts is not None else None
    if ctx is None:
        ctx = build_context(profile)
    try:
        # The environment of the process that runs the session: the launching process's
        # (warm sessions apply it before this), as for the busy-poll setting.
        policy = select_fault_policy(
            opts.on_fault or os.environ.get("ORC_EXECUTOR_ON_FAULT") or None,
            is_socket=is_socket, start_pid=opts.controller_pid)
    except ValueError as e:
        log.warning("%s: faults in JIT'd code end the process", e)
        policy = "crash"
    apply_fault_policy(ctx, policy)
    if is_socket:
        streams.stream_keepalive(stream, opts.keepalive_idle, opts.keepalive_interval,
                                 opts.keepalive_count)
    session = Session(
        stream,
        ctx,
        max_message_size=opts.max_message_size,
        max_concurrent_calls=opts.max_concurrent_calls,
        idle_close=opts.idle_close if is_socket else None,
        busy_poll=opts.busy_poll,
        handshake_timeout=opts.handshake_timeout if is_socket else None,
        idle_timeout=opts.idle_timeout if is_socket else None,
        on_first_message=on_first_message,
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


def setup_logging(level: str) -> None:
    """Log records of ``orc_executor.*`` at ``level`` and above to stderr (never stdout)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("orc-executor[%(process)d]: %(levelname)s: %(message)s")
    )
    root = logging.getLogger("orc_executor")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def exit_process(status: int) -> None:
    """End the process as a C program does: flush Python's streams, then C ``exit(status)``,
    which runs the exit handlers the JIT'd program registered (``__cxa_atexit``, ``on_exit``)
    and flushes C stdio — as ``llvm-jitlink-executor`` does when it returns from ``main``.
    Python's own finalization is skipped (worker threads may still be inside JIT'd code)."""
    from ..native.api import lib

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    lib.exit(status)


def run_pipe_session(in_fd: int, out_fd: int) -> None:
    """The launch path of ``orc-executor filedescs=IN,OUT`` / ``IN OUT`` with default
    options (settings from the environment only), without the CLI parser."""
    setup_logging(os.environ.get("ORC_EXECUTOR_LOG") or "warning")
    opts = ServeOptions(llvm_version=os.environ.get("ORC_EXECUTOR_LLVM_VERSION") or None)
    exit_process(run_connection(FdPair(in_fd, out_fd), opts))


def run_connection(conn: ConnectionSpec, opts: ServeOptions) -> int:
    """Serve ``conn`` until its session ends; return the process exit status (0 clean)."""
    try:
        return trio.run(_run, conn, opts)
    except OSError as e:
        log.error("%s", e)
        return 1
    except KeyboardInterrupt:
        return 130


# ---- the daemon: one warm process per session ------------------------------------------------


@dataclass
class DaemonOptions:
    """``--listen`` daemon settings: concurrent sessions, warm processes kept ready, the
    SIGTERM grace period (seconds), and the uid a unix-socket peer must have (or None)."""

    max_sessions: int = 64
    warm: int = 2
    grace: float = 30.0
    allow_uid: int | None = None


class ForkedProcess:
    """A worker forked by the :class:`Zygote`: the part of :class:`trio.Process` the pool
    uses (``pid``, ``returncode``, ``wait()``); the exit status comes from the zygote."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._done = trio.Event()

    def _exited(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            self._done.set()

    async def wait(self) -> int:
        await self._done.wait()
        assert self.returncode is not None
        return self.returncode


class Zygote:
    """A fork server (``python -P -m orc_executor.serve.worker --zygote``) that has imported
    everything once: a new worker then costs one ``fork()`` instead of an interpreter start-up
    and imports competing with running sessions for the CPU. If it dies, :meth:`fork` raises
    :class:`OSError` and the pool starts workers the slow way."""

    def __init__(self, process: trio.Process, control: socket.socket) -> None:
        self.process = process
        self.control = control
        self._forked: dict[int, ForkedProcess] = {}
        self._pending: list[trio.MemorySendChannel[int]] = []
        self._lock = trio.Lock()
        self.alive = True

    @classmethod
    async def start(cls, nursery: trio.Nursery) -> Zygote | None:
        """Start it and wait until it is ready; ``None`` if it failed to start."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        process = await trio.lowlevel.open_process(
            python_module_command("orc_executor.serve.worker", "--zygote", str(child.fileno())),
            pass_fds=(child.fileno(),), start_new_session=True,
        )
        child.close()
        parent.setblocking(False)
        try:
            await trio.lowlevel.wait_readable(parent)
            ok = parent.recv(16) == b"R"
        except OSError:
            ok = False
        if not ok:
            parent.close()
            with trio.move_on_after(1):
                await process.wait()
            return None
        z = cls(process, parent)
        nursery.start_soon(z._read_loop)
        return z

    async def _read_loop(self) -> None:
        try:
            while True:
                try:
                    await trio.lowlevel.wait_readable(self.control)
                except (trio.ClosedResourceError, OSError):
                    break
                try:
                    msg = self.control.recv(64)
                except BlockingIOError:
                    continue
                except OSError:
                    msg = b""
                if not msg:
                    break
                parts = msg.split()
                if parts[:1] == [b"P"] and self._pending:
                    self._pending.pop(0).send_nowait(int(parts[1]))
                elif parts[:1] == [b"X"] and len(parts) == 3:
                    proc = self._forked.pop(int(parts[1]), None)
                    if proc is not None:
                        proc._exited(int(parts[2]))
        finally:
            if self.alive:
                log.warning("the fork server ended; starting session processes the slow way")
            self.alive = False
            for ch in self._pending:
                ch.close()
            for proc in self._forked.values():
                proc._exited(1)  # status unknown (its parent, the zygote, reaped nothing)
            self._forked.clear()

    async def fork(self, fds: list[int]) -> ForkedProcess:
        """A new worker, given ``fds``: its control socket, and in accept mode the warm
        listening socket (the fds stay ours to close). Raises :class:`OSError` if the fork
        server is gone."""
        if not self.alive:
            raise OSError("fork server not running")
        async with self._lock:  # replies come in request order
            send, recv = trio.open_memory_channel[int](1)
            self._pending.append(send)
            try:
                self.control.sendmsg([b"F"], fds_ancillary(fds))
            except OSError:
                self._pending.remove(send)
                raise
            try:
                pid = await recv.receive()
            except trio.EndOfChannel:
                raise OSError("fork server ended") from None
        proc = ForkedProcess(pid)
        self._forked[pid] = proc
        return proc

    async def close(self) -> None:
        self.alive = False
        trio.lowlevel.notify_closing(self.control)
        self.control.close()  # EOF: the zygote exits, and the workers it forked with it
        with trio.move_on_after(2):
            await self.process.wait()


class Worker:
    """A pre-started worker (``python -P -m orc_executor.serve.worker``, or forked by the
    :class:`Zygote`) getting ready for one session; ``control`` is the daemon's end of its
    ``SOCK_SEQPACKET`` control socket (see :mod:`orc_executor.serve.worker`)."""

    def __init__(self, process: trio.Process | ForkedProcess, control: socket.socket) -> None:
        self.process = process
        self.control = control

    @classmethod
    async def start(cls, zygote: Zygote | None = None, *, listen_fd: int | None = None,
                    options: ServeOptions | None = None, background: bool = False,
                    capture_stderr: bool = False) -> Worker:
        """Fork one from ``zygote`` (else start a fresh interpreter). With ``listen_fd`` it
        receives its session on that warm socket itself, with ``options``, and with
        ``background`` gets ready at the lowest CPU priority; without, the session is handed
        over (:meth:`hand_over`). ``capture_stderr``: a fresh interpreter whose stderr is a
        pipe to us (``process.stderr``), to learn why starting fails; such a worker must not
        serve a session. Raises :class:`OSError` if it cannot be started."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            if listen_fd is not None:
                import json  # not on the cold start path

                message = {"options": asdict(options or ServeOptions()), "background": background}
                parent.send(b"O" + json.dumps(message).encode())
            fds = [child.fileno()] if listen_fd is None else [child.fileno(), listen_fd]
            if zygote is not None and zygote.alive and not capture_stderr:
                try:
                    return cls(await zygote.fork(fds), parent)
                except OSError as e:
                    log.warning("fork server: %s", e)
            process = await trio.lowlevel.open_process(
                python_module_command("orc_executor.serve.worker", *map(str, fds)),
                pass_fds=fds, env=dict(os.environ), start_new_session=True,
                stderr=subprocess.PIPE if capture_stderr else None,
            )
            return cls(process, parent)
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()

    async def ready(self) -> bool:
        """Wait for the worker's ready byte; False if it died first."""
        self.control.setblocking(False)
        try:
            await trio.lowlevel.wait_readable(self.control)
            data = self.control.recv(1)
        except OSError:
            data = b""
        return data == b"R"

    async def taken(self) -> socket.socket | None:
        """Accept mode: wait until the worker took a launcher's session; that launcher's
        connection (ours now, to write the exit status to), or ``None`` if the worker ended
        or closed its control socket first."""
        while True:
            try:
                await trio.lowlevel.wait_readable(self.control)
                msg, ancdata, _flags, _addr = self.control.recvmsg(16, ANCILLARY_SPACE)
            except BlockingIOError:
                continue
            except (OSError, trio.ClosedResourceError):
                return None
            fds = fds_received(ancdata)
            if msg == b"S" and len(fds) == 1:
                return socket.socket(fileno=fds[0])
            close_fds(fds)
            if not msg:
                return None

    def hand_over(self, header: dict[str, object], fds: list[int]) -> None:
        """Send the session's fds (``SCM_RIGHTS``) and header; the fds stay ours to close."""
        self.control.setblocking(True)
        import json  # not on the cold start path

        self.control.sendmsg([json.dumps(header).encode()], fds_ancillary(fds))

    async def wait(self) -> int:
        return await self.process.wait()

    def process_stderr_captured(self) -> bool:
        return getattr(self.process, "stderr", None) is not None


async def _start_failure_reason(worker: Worker) -> str:
    """Why ``worker`` (its control socket closed) ended before getting ready: its exit
    status, and the last line of its captured stderr (else a pointer to its output in ours).
    Waits up to 2 s for it to exit."""
    text = ""
    stderr: Any = getattr(worker.process, "stderr", None)
    rc: int | None = None
    with trio.move_on_after(2):
        if stderr is not None:
            chunks: list[bytes] = []
            while sum(map(len, chunks)) < 1 << 16 and (data := await stderr.receive_some()):
                chunks.append(data)
            lines = b"".join(chunks).decode(errors="replace").splitlines()
            text = next((line.strip() for line in reversed(lines) if line.strip()), "")
        rc = await worker.wait()
    if stderr is not None:
        await stderr.aclose()
    status = "still running" if rc is None else _status_text(rc)
    if text:
        return f"{text} ({status})"
    return (f"a session process ended before getting ready ({status}"
            f"{'' if stderr is not None else '; its output is above'})")


async def _reap_worker(worker: Worker) -> None:
    stderr: Any = getattr(worker.process, "stderr", None)
    with trio.move_on_after(5):
        await worker.wait()
    if stderr is not None:
        await stderr.aclose()


class WorkerPool:
    """Keeps ``size`` session processes started and getting ready, for the ``--listen``
    daemon (:class:`Daemon`: it hands a session to a ready worker) and for the warm server
    (:class:`WarmServer`: ready workers take launchers' sessions themselves on the warm
    socket ``listen_fd``, with ``options``).

    Workers are forked by a :class:`Zygote` (started by :meth:`start`) while it runs, else
    started as fresh interpreters. Each worker's life is a task in ``nursery``: start, get
    ready, join :attr:`idle`, then ``on_ready(worker)`` — the owner's part, which takes it out
    of :attr:`idle` when it gets a session. A worker that fails to start or to get ready is
    ended, ``on_failure()`` runs and the next attempt waits 0.1 s, doubling up to
    :attr:`MAX_BACKOFF` seconds. In accept mode a worker started while others are ready gets
    ready at the lowest CPU priority, so that it does not slow the running sessions."""

    #: Most seconds between attempts to start a worker after failures.
    MAX_BACKOFF = 5.0

    def __init__(
        self,
        nursery: trio.Nursery,
        size: int,
        on_ready: Callable[[Worker], Awaitable[None]] | None = None,
        *,
        listen_fd: int | None = None,
        options: ServeOptions | None = None,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self.nursery = nursery
        self.size = max(size, 0)
        self.on_ready = on_ready
        self.listen_fd = listen_fd
        self.options = options
        self.on_failure = on_failure
        #: Ready workers without a session.
        self.idle: set[Worker] = set()
        self.closing = False
        self.zygote: Zygote | None = None
        self._starting = 0
        #: The current streak of failed starts (logged without one line per attempt).
        self.failures = StartFailures()
        self._closed = trio.Event()

    @property
    def starting(self) -> int:
        """Workers started and not ready yet."""
        return self._starting

    async def start(self) -> None:
        """Start the fork server (workers start the slow way if it fails), then fill."""
        if self.size:
            try:
                self.zygote = await Zygote.start(self.nursery)
            except OSError as e:
                log.warning("fork server failed to start: %s", e)
        self.fill()

    def fill(self) -> None:
        """Start workers until :attr:`size` are ready or getting ready."""
        while not self.closing and len(self.idle) + self._starting < self.size:
            self._starting += 1
            self.nursery.start_soon(self._life, bool(self.idle))

    async def _life(self, background: bool) -> None:
        worker: Worker | None = None
        failures = self.failures
        reason = ""
        try:
            if failures.failing:
                with trio.move_on_after(self._backoff()):
                    await self._closed.wait()  # ends the wait at once on close
                if self.closing:
                    return
            # While starts fail, a fresh interpreter with its stderr captured: the reason is
            # logged by us, once, instead of the child's output on every attempt. (Not in
            # accept mode: a worker takes a launch by itself as soon as it is ready.)
            worker = await self.start_worker(
                background=background,
                capture_stderr=failures.failing and self.listen_fd is None)
            ok = await worker.ready()
        except OSError as e:
            reason = str(e) or type(e).__name__
            ok = False
        finally:
            self._starting -= 1
        if not ok:
            if worker is not None:
                worker.control.close()
                reason = await _start_failure_reason(worker)
            failures.failed(reason, self._backoff(failures.attempts + 1))
            if self.on_failure is not None:
                self.on_failure()
            self.fill()
            return
        assert worker is not None
        failures.started()
        if worker.process_stderr_captured():
            # It started, but with its stderr ours: let it go, start a real one at once.
            worker.control.close()  # EOF: it exits
            self.nursery.start_soon(_reap_worker, worker)
            self.fill()
            return
        if self.closing:
            _shutdown_write(worker.control)  # EOF: it exits (or it just took a session)
        self.idle.add(worker)
        if self.on_ready is not None:
            await self.on_ready(worker)

    def _backoff(self, attempts: int | None = None) -> float:
        """Seconds before the next start after ``attempts`` (default: the current streak's)
        failures: 0.1 s, doubling up to :attr:`MAX_BACKOFF`."""
        n = self.failures.attempts if attempts is None else attempts
        return min(0.1 * 2.0 ** max(n - 1, 0), self.MAX_BACKOFF)

    async def start_worker(self, *, background: bool = False,
                           capture_stderr: bool = False) -> Worker:
        """One worker of this pool's mode, not ready yet. Raises :class:`OSError`."""
        return await Worker.start(self.zygote, listen_fd=self.listen_fd, options=self.options,
                                  background=background and self.listen_fd is not None,
                                  capture_stderr=capture_stderr)

    def take(self) -> Worker | None:
        """A ready worker out of :attr:`idle` (refilling the pool), or ``None``."""
        if not self.idle:
            return None
        w = self.idle.pop()
        self.fill()
        return w

    def end_idle(self) -> None:
        """Stop starting workers and tell the idle ones to exit (EOF on their control
        socket; one that just took a session still reports it)."""
        self.closing = True
        self._closed.set()
        for w in list(self.idle):
            _shutdown_write(w.control)

    async def close(self) -> None:
        """:meth:`end_idle`, wait up to 2 s for each idle worker to exit, and end the fork
        server (the workers it forked, idle or not, end with it: PR_SET_PDEATHSIG)."""
        self.end_idle()
        for w in list(self.idle):
            with trio.move_on_after(2):
                await w.wait()
            w.control.close()
        if self.zygote is not None:
            await self.zygote.close()


def _status_text(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit {rc}"


class Daemon:
    """Accepts controllers on a listening socket; each session runs in its own warm process.

    Slots taken by peers that say nothing are reclaimed: while all ``max_sessions`` slots are
    taken and another connection waits, the session whose controller has not sent a complete
    message for the longest time (at least :attr:`EVICT_AFTER` seconds since its Setup) is
    ended, so a silent or slowloris peer cannot keep a real controller out."""

    #: Seconds a session's controller has, after its handover, before the session may be
    #: evicted for a waiting connection (real controllers answer Setup within milliseconds).
    EVICT_AFTER = 0.5
    #: Seconds between looks for a waiting connection while every slot is taken.
    EVICT_POLL = 0.05

    def __init__(self, address: Address, opts: ServeOptions, dopts: DaemonOptions) -> None:
        """Raises :class:`ValueError` for ``dopts.allow_uid`` with a TCP ``address`` (a TCP
        peer has no uid to check)."""
        if dopts.allow_uid is not None and not isinstance(address, UnixAddress):
            raise ValueError(f"allow_uid needs a unix socket address, not {address}")
        self.address = address
        self.opts = opts
        self.dopts = dopts
        self.sessions_started = 0
        self._running: set[int] = set()
        #: Accepted connections whose session task has not ended (handover included).
        self._accepted = 0
        #: Sessions whose controller has not sent a complete message yet: pid -> (trio time
        #: of the handover, session number).
        self._unproven: dict[int, tuple[float, int]] = {}

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        listener = await streams.open_listener(self.address, socket_mode=self.opts.socket_mode)
        where = streams.listener_address(listener)
        log.info("serving sessions on %s (each in its own process; max %d at once)",
                    where, self.dopts.max_sessions)
        limit = trio.Semaphore(self.dopts.max_sessions)
        async with trio.open_nursery() as sessions:
            pool = WorkerPool(sessions, min(self.dopts.warm, self.dopts.max_sessions))
            sessions.start_soon(pool.start)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async with trio.open_nursery() as accept_nursery:

                    async def stop_on_signal() -> None:
                        async for signum in signals:
                            log.warning("%s: no new sessions; waiting up to %.0fs for %d running",
                                        signal.Signals(signum).name, self.dopts.grace,
                                        len(self._running))
                            accept_nursery.cancel_scope.cancel()
                            return

                    accept_nursery.start_soon(stop_on_signal)
                    accept_nursery.start_soon(self._reclaim_slots, listener, limit)
                    task_status.started(where)
                    with listener:
                        while True:
                            await limit.acquire()
                            try:
                                sock, _peer = await listener.accept()
                            except BaseException:
                                limit.release()
                                raise
                            self._accepted += 1
                            sessions.start_soon(self._session, pool, sock, limit)
            pool.end_idle()
            with trio.move_on_after(self.dopts.grace) as scope:
                while self._running or self._accepted:  # also sessions being handed over
                    await trio.sleep(0.05)
            if scope.cancelled_caught:
                log.warning("grace period over: stopping %d session(s)", len(self._running))
                for pid in list(self._running):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            # The fork server goes last: it reports the exit status of the sessions it forked
            # (closed earlier, a session still ending would be reported as exit 1).
            await pool.close()
            sessions.cancel_scope.deadline = trio.current_time() + 2

    async def _session(self, pool: WorkerPool, sock: trio.socket.SocketType,
                       limit: trio.Semaphore) -> None:
        try:
            await self._session_inner(pool, sock)
        except Exception as e:  # one session's failure never stops the daemon
            log.error("session failed to start: %s", e)
            sock.close()
        finally:
            self._accepted -= 1
            limit.release()

    async def _session_inner(self, pool: WorkerPool, sock: trio.socket.SocketType) -> None:
        self.sessions_started += 1
        n = self.sessions_started
        if self.dopts.allow_uid is not None:
            uid = peer_uid(sock)
            if uid != self.dopts.allow_uid:  # None: not a unix peer, no uid to check
                log.warning("session %d refused: peer uid %s is not allowed", n, uid)
                sock.close()
                return
        try:
            peer = sock.getpeername()
        except OSError:
            peer = "?"
        t0 = time.monotonic()
        if _peer_closed(sock):  # a flood's connect-and-close: no session process for it
            log.debug("session %d dropped: its peer closed before the session started", n)
            sock.close()
            return
        worker = pool.take()
        if worker is None and pool.failures.failing:
            pool.failures.refused(n)  # the pool retries with backoff; logged once a streak
            sock.close()
            return
        if worker is None:  # none ready: start one now
            worker = await pool.start_worker()
            if not await worker.ready():
                worker.control.close()
                raise OSError("a session process failed to start")
        header: dict[str, object] = {"kind": "socket", "options": asdict(self.opts)}
        worker.hand_over(header, [sock.fileno()])
        sock.close()
        pid = worker.process.pid
        self._running.add(pid)
        self._unproven[pid] = (trio.current_time(), n)
        log.info("session %d started: peer %s, pid %d", n, peer or "unix", pid)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_first_message, worker, pid)
                rc = await worker.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._running.discard(pid)
            self._unproven.pop(pid, None)
            worker.control.close()
        log.info("session %d ended: %s after %.3fs", n, _status_text(rc),
                    time.monotonic() - t0)


    async def _watch_first_message(self, worker: Worker, pid: int) -> None:
        """Take the session off :attr:`_unproven` when its worker reports (``M``) that the
        controller sent a complete message."""
        control = worker.control
        control.setblocking(False)
        while True:
            try:
                await trio.lowlevel.wait_readable(control)
                msg = control.recv(16)
            except BlockingIOError:
                continue
            except (OSError, trio.ClosedResourceError):
                return
            if not msg:
                return
            if msg.startswith(b"M"):
                self._unproven.pop(pid, None)
                return

    async def _reclaim_slots(self, listener: trio.socket.SocketType,
                             limit: trio.Semaphore) -> None:
        """While every slot is taken and a connection waits, end the session whose controller
        has been silent longest since its Setup (see the class docstring)."""
        poller = select.poll()
        poller.register(listener.fileno(), select.POLLIN)
        while True:
            await trio.sleep(self.EVICT_POLL)
            if limit.value or not self._unproven or not poller.poll(0):
                continue
            pid, (since, n) = min(self._unproven.items(), key=lambda item: item[1][0])
            waited = trio.current_time() - since
            if waited < self.EVICT_AFTER:
                continue
            del self._unproven[pid]
            log.warning("session %d evicted: its controller sent no message in %.1fs, and a "
                        "connection waits for one of the %d slots", n, waited,
                        self.dopts.max_sessions)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _peer_closed(sock: trio.socket.SocketType) -> bool:
    """The peer of ``sock`` has closed or reset it already (no controller closes before
    its Setup arrives)."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLRDHUP)
    return any(ev & (select.POLLRDHUP | select.POLLHUP | select.POLLERR)
               for _fd, ev in poller.poll(0))


def _serve_until_stopped(server: Callable[[], Awaitable[None]]) -> int:
    """Run a listening server until SIGTERM/SIGINT: 0 after a clean stop, 1 if it could not
    listen (the reason logged)."""
    try:
        trio.run(server)
    except OSError as e:
        log.error("%s", e)
        return 1
    return 0


def run_daemon(address: Address, opts: ServeOptions, dopts: DaemonOptions) -> int:
    """Serve sessions on ``address`` until SIGTERM/SIGINT; exit status 0 after a clean stop."""
    return _serve_until_stopped(Daemon(address, opts, dopts).run)


# ---- the warm server: launched executors hand their pipes to a pre-started process ----------


class WarmServer:
    """``orc-executor serve``: keeps ``warm`` session processes ready on a unix socket.

    The ready processes (:mod:`orc_executor.serve.worker`, accept mode) receive launched
    ``orc-executor filedescs=...`` executors on the warm socket (unix datagrams) themselves,
    their pipes and stdio in one ``SCM_RIGHTS`` hop; this server is not on that path. A
    worker that took a session passes the launcher's reply socket here (before acknowledging
    the session to the launcher); the server starts a replacement (when the session ends or after
    :attr:`REFILL_DELAY` if other workers are ready, else at once), and when the worker has
    exited writes its exit status to the launcher (4 bytes, little-endian signed; negative =
    killed by that signal, as reported by the zygote; a worker that exits normally has sent
    it first itself). On SIGTERM/SIGINT it removes the socket (new launches start
    cold), ends the idle workers, and waits up to ``grace`` seconds for running sessions so
    their launchers get the status (a second signal stops waiting)."""

    #: Seconds a taken worker's replacement waits for the session to end, while other
    #: workers are ready (with none ready it starts at once).
    REFILL_DELAY = 0.1

    def __init__(self, path: str, opts: ServeOptions, warm: int, *, grace: float = 30.0,
                 idle_exit: float | None = None, lock_fd: int | None = None) -> None:
        self.path = path
        self.opts = opts
        self.warm = max(warm, 1)
        self.grace = grace
        #: Seconds without a launch (and no session running) after which the server stops
        #: as on SIGTERM; ``None``: never.
        self.idle_exit = idle_exit
        self.lock_fd = lock_fd
        self.sessions_started = 0
        self._last_launch = 0.0
        self._listener: socket.socket | None = None
        self._pool: WorkerPool | None = None
        self._running: set[int] = set()

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        listener = _bind_warm_socket(self.path, self.lock_fd)  # (shared with the workers)
        self._listener = listener
        self._last_launch = trio.current_time()
        log.info("warm server on %s (%d ready processes%s)", self.path, self.warm,
                 f"; exits after {self.idle_exit:g} s without a launch" if self.idle_exit
                 else "")
        try:
            async with trio.open_nursery() as nursery:
                self._pool = WorkerPool(nursery, self.warm, self._serve,
                                        listen_fd=listener.fileno(), options=self.opts,
                                        on_failure=self._refuse_waiting)
                nursery.start_soon(self._pool.start)
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    task_status.started(self.path)
                    await self._until_stopped(signals)
                    await self._stop(signals)
                nursery.cancel_scope.cancel()
        finally:
            self._unlink()
            listener.close()

    async def _until_stopped(self, signals: Any) -> None:
        """Return at SIGTERM/SIGINT, or once :attr:`idle_exit` seconds passed with no launch
        and no session running."""
        async with trio.open_nursery() as nursery:
            if self.idle_exit:
                nursery.start_soon(self._idle_watch, nursery.cancel_scope)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()

    async def _idle_watch(self, scope: trio.CancelScope) -> None:
        assert self.idle_exit
        while True:
            quiet = trio.current_time() - self._last_launch
            if not self._running and quiet >= self.idle_exit:
                log.info("no launch for %.0f s: exiting", quiet)
                scope.cancel()
                return
            await trio.sleep(max(self.idle_exit - quiet, 0.05))

    def _unlink(self) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def _pool_or_fail(self) -> WorkerPool:
        assert self._pool is not None
        return self._pool

    async def _stop(self, signals: Any) -> None:
        """No new sessions; wait for the running ones (up to :attr:`grace` seconds)."""
        pool = self._pool_or_fail()
        pool.end_idle()
        self._unlink()  # launchers from now on start cold
        assert self._listener is not None
        self._listener.close()
        if self._running:
            log.warning("stopping: waiting up to %.0fs for %d running session(s)",
                        self.grace, len(self._running))
        with trio.move_on_after(self.grace):
            async with trio.open_nursery() as waiting:

                async def second_signal() -> None:
                    async for _ in signals:
                        waiting.cancel_scope.cancel()
                        return

                waiting.start_soon(second_signal)
                while self._running or pool.idle or pool.starting:
                    await trio.sleep(0.02)
                waiting.cancel_scope.cancel()
        if self._running:
            log.warning("ending %d session(s) still running (they end with the fork server; "
                        "their launchers exit 1)", len(self._running))
        await pool.close()

    async def _serve(self, worker: Worker) -> None:
        """A ready worker's life in the pool (:attr:`WorkerPool.on_ready`): idle until it
        takes a session, then the session's exit status to its launcher."""
        pool = self._pool_or_fail()
        try:
            conn = await worker.taken()
        finally:
            pool.idle.discard(worker)
        pid = worker.process.pid
        if conn is None:
            pool.fill()
            with trio.move_on_after(5):
                await worker.wait()
            worker.control.close()
            return
        self.sessions_started += 1
        self._running.add(pid)
        self._last_launch = trio.current_time()
        log.debug("session %d started in pid %d", self.sessions_started, pid)
        # Refill the pool when the session ends (or after REFILL_DELAY) while other workers
        # are ready: a fork and a worker getting ready take CPU from the session that just
        # started, on the critical path of its first calls.
        deferred = bool(pool.idle)
        if not deferred:
            pool.fill()
        try:
            async with trio.open_nursery() as nursery:
                if deferred:
                    nursery.start_soon(self._fill_after, self.REFILL_DELAY)
                rc = await worker.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._running.discard(pid)
            self._last_launch = trio.current_time()
            worker.control.close()
        log.debug("session in pid %d ended: %s", pid, _status_text(rc))
        with conn:
            try:
                conn.send(rc.to_bytes(4, "little", signed=True))
            except OSError:
                pass  # the launcher is gone
        pool.fill()

    async def _fill_after(self, seconds: float) -> None:
        await trio.sleep(seconds)
        self._pool_or_fail().fill()

    def _refuse_waiting(self) -> None:
        """No worker could start: turn away the launchers waiting on the socket (their fds
        are closed, so they start cold) rather than let them wait for one."""
        pool = self._pool
        if pool is None or pool.idle or pool.closing or self._listener is None:
            return
        while True:
            try:
                _msg, ancdata, _flags, _addr = self._listener.recvmsg(
                    1, ANCILLARY_SPACE + CREDENTIALS_SPACE)
            except OSError:
                return
            close_fds(fds_received(ancdata))


def _bind_warm_socket(path: str, lock_fd: int | None) -> socket.socket:
    """The warm socket bound at ``path``, after its directory was created (mode 0700) or found
    safe (:func:`~orc_executor.launch.warmdir.open_directory`) and the server lock taken
    (``lock_fd``:
    already taken by the launcher that started this server): only then is a stale socket file
    replaced. The kernel attaches each sender's credentials (``SO_PASSCRED``). Raises
    :class:`OSError` (:class:`PermissionError` for an unsafe directory,
    :class:`BlockingIOError` when another server holds the lock)."""
    from ..launch import warmdir

    warmdir.prepare_directory(path)
    dir_fd = warmdir.open_directory(path)
    if dir_fd is None:
        raise FileNotFoundError(f"{os.path.dirname(path)} vanished")
    try:
        lock = warmdir.sibling(path, ".lock")
        try:
            warmdir.take_lock(warmdir.via_fd(dir_fd, lock), lock_fd)
        except BlockingIOError as e:
            raise BlockingIOError(f"another orc-executor serve is running on {path} ({e}; "
                                  "stop it first)") from None
        # By its own name where it fits in a socket address (tools show that name), else
        # through the directory's fd.
        fits = len(os.fsencode(path)) < 108
        listener = streams.bind_unix_datagram(path if fits else warmdir.via_fd(dir_fd, path))
    finally:
        os.close(dir_fd)
    pass_credentials(listener)
    return listener


def _shutdown_write(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def run_warm_server(path: str, opts: ServeOptions, warm: int, *, idle_exit: float | None = None,
                    lock_fd: int | None = None) -> int:
    """Run ``orc-executor serve`` until SIGTERM/SIGINT (or ``idle_exit`` seconds without a
    launch); 1 if it cannot listen at ``path`` (the reason logged)."""
    return _serve_until_stopped(WarmServer(path, opts, warm, idle_exit=idle_exit,
                                           lock_fd=lock_fd).run)
