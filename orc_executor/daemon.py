"""Driving sessions over a connection spec: one-shot sessions on fds, adopted sockets,
connect-back, and listening sockets."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import trio

from .executor.bootstrap import build_context, select_profile
from .executor.session import Session, SessionEnd
from .transport import streams
from .transport.fdpass import ANCILLARY_SPACE, fds_ancillary, fds_received
from .transport.framing import DEFAULT_MAX_MESSAGE_SIZE
from .transport.spec import (
    Address,
    Connect,
    ConnectionSpec,
    FdPair,
    Listen,
    SocketFd,
    UnixAddress,
)

log = logging.getLogger(__name__)


@dataclass
class ServeOptions:
    """Session limits: bytes per message, concurrent calls, idle-close seconds, socket mode."""

    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_concurrent_calls: int = 1024
    idle_close: float | None = 0.2
    socket_mode: int = 0o600
    #: Requested controller version ("14", "19", "22", "modern") or None to detect.
    llvm_version: str | None = None
    #: The launching controller's pid when it is not our parent (warm handover), for detection.
    controller_pid: int | None = None


async def serve_stream(
    stream: trio.abc.Stream, opts: ServeOptions, *, is_socket: bool
) -> SessionEnd:
    """Run one session on ``stream`` and release its resources; return why it ended."""
    ctx = build_context(
        select_profile(opts.llvm_version, is_socket=is_socket, start_pid=opts.controller_pid)
    )
    session = Session(
        stream,
        ctx,
        max_message_size=opts.max_message_size,
        max_concurrent_calls=opts.max_concurrent_calls,
        idle_close=opts.idle_close if is_socket else None,
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
    from .memmap.native import lib

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
    """A fork server (``python -m orc_executor.worker --zygote``) that has imported everything
    once: a new worker then costs one ``fork()`` instead of an interpreter start-up and ~90 ms
    of imports competing with running sessions for the CPU. If it dies, :meth:`fork` raises
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
            [sys.executable, "-m", "orc_executor.worker", "--zygote", str(child.fileno())],
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

    async def fork(self) -> tuple[ForkedProcess, socket.socket]:
        """A new worker and the daemon's end of its control socket."""
        if not self.alive:
            raise OSError("fork server not running")
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            async with self._lock:  # replies come in request order
                send, recv = trio.open_memory_channel[int](1)
                self._pending.append(send)
                try:
                    self.control.sendmsg([b"F"], fds_ancillary([child.fileno()]))
                except OSError:
                    self._pending.remove(send)
                    raise
                try:
                    pid = await recv.receive()
                except trio.EndOfChannel:
                    raise OSError("fork server ended") from None
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        proc = ForkedProcess(pid)
        self._forked[pid] = proc
        return proc, parent

    async def close(self) -> None:
        self.alive = False
        trio.lowlevel.notify_closing(self.control)
        self.control.close()  # EOF: the zygote exits; forked workers finish on their own
        with trio.move_on_after(2):
            await self.process.wait()


class Worker:
    """A pre-started worker (``python -m orc_executor.worker``, or forked by the
    :class:`Zygote`) waiting for a session's fds."""

    def __init__(self, process: trio.Process | ForkedProcess, control: socket.socket) -> None:
        self.process = process
        self.control = control

    @classmethod
    async def start(cls, zygote: Zygote | None = None) -> Worker:
        if zygote is not None and zygote.alive:
            try:
                proc, control = await zygote.fork()
                return cls(proc, control)
            except OSError as e:
                log.warning("fork server: %s", e)
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "orc_executor.worker", str(child.fileno())],
            pass_fds=(child.fileno(),),
            env=env,
            start_new_session=True,
        )
        child.close()
        return cls(process, parent)

    async def ready(self) -> bool:
        """Wait for the worker's ready byte; False if it died first."""
        self.control.setblocking(False)
        try:
            await trio.lowlevel.wait_readable(self.control)
            data = self.control.recv(1)
        except OSError:
            data = b""
        return data == b"R"

    def hand_over(self, header: dict[str, object], fds: list[int]) -> None:
        """Send the session's fds (``SCM_RIGHTS``) and header; the fds stay ours to close."""
        self.control.setblocking(True)
        self.control.sendmsg([json.dumps(header).encode()], fds_ancillary(fds))

    async def wait(self) -> int:
        return await self.process.wait()


class WarmPool:
    """Keeps ``size`` workers started and ready, so a session starts without interpreter
    start-up and imports on its path. Workers are forked by a :class:`Zygote` (started with
    the pool) when it runs, else started as fresh interpreters."""

    def __init__(self, nursery: trio.Nursery, size: int, *, fork_server: bool = True) -> None:
        self.nursery = nursery
        self.size = max(size, 0)
        self._ready_send, self._ready_recv = trio.open_memory_channel[Worker](math.inf)
        self._starting = 0
        self.closed = False
        self._zygote: Zygote | None = None
        self._zygote_settled = trio.Event()
        if fork_server and self.size:
            nursery.start_soon(self._start_zygote)
        else:
            self._zygote_settled.set()

    async def _start_zygote(self) -> None:
        try:
            self._zygote = await Zygote.start(self.nursery)
        except OSError as e:
            log.warning("fork server failed to start: %s", e)
        finally:
            self._zygote_settled.set()

    def fill(self) -> None:
        while not self.closed and self._starting + self._ready_count() < self.size:
            self._starting += 1
            self.nursery.start_soon(self._spawn)

    def _ready_count(self) -> int:
        return self._ready_recv.statistics().current_buffer_used

    async def _spawn(self) -> None:
        try:
            await self._zygote_settled.wait()
            w = await Worker.start(self._zygote)
            ok = await w.ready()
        finally:
            self._starting -= 1
        if ok and not self.closed:
            self._ready_send.send_nowait(w)
        else:
            w.control.close()
            with trio.move_on_after(1):
                await w.process.wait()

    async def get(self) -> Worker:
        """A ready worker (started now if none is waiting)."""
        try:
            w = self._ready_recv.receive_nowait()
        except trio.WouldBlock:
            w = await Worker.start(self._zygote)
            if not await w.ready():
                raise OSError("a session process failed to start") from None
        self.fill()
        return w

    async def close(self) -> None:
        self.closed = True
        while True:
            try:
                w = self._ready_recv.receive_nowait()
            except trio.WouldBlock:
                break
            w.control.close()  # EOF: an idle worker exits 0
            with trio.move_on_after(2):
                await w.process.wait()
        if self._zygote is not None:
            await self._zygote.close()


def _peer_uid(sock: trio.socket.SocketType) -> int | None:
    if sock.family != socket.AF_UNIX:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def _status_text(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit {rc}"


class Daemon:
    """Accepts controllers on a listening socket; each session runs in its own warm process."""

    def __init__(self, address: Address, opts: ServeOptions, dopts: DaemonOptions) -> None:
        self.address = address
        self.opts = opts
        self.dopts = dopts
        self.sessions_started = 0
        self._running: set[int] = set()

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        listener = await streams.open_listener(self.address, socket_mode=self.opts.socket_mode)
        where = streams.listener_address(listener)
        log.info("serving sessions on %s (each in its own process; max %d at once)",
                    where, self.dopts.max_sessions)
        limit = trio.Semaphore(self.dopts.max_sessions)
        async with trio.open_nursery() as sessions:
            pool = WarmPool(sessions, min(self.dopts.warm, self.dopts.max_sessions))
            pool.fill()
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
                    task_status.started(where)
                    with listener:
                        while True:
                            await limit.acquire()
                            try:
                                sock, _peer = await listener.accept()
                            except BaseException:
                                limit.release()
                                raise
                            sessions.start_soon(self._session, pool, sock, limit)
            await pool.close()
            with trio.move_on_after(self.dopts.grace) as scope:
                while self._running:
                    await trio.sleep(0.05)
            if scope.cancelled_caught:
                log.warning("grace period over: stopping %d session(s)", len(self._running))
                for pid in list(self._running):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            sessions.cancel_scope.deadline = trio.current_time() + 2

    async def _session(self, pool: WarmPool, sock: trio.socket.SocketType,
                       limit: trio.Semaphore) -> None:
        try:
            await self._session_inner(pool, sock)
        except Exception as e:  # one session's failure never stops the daemon
            log.error("session failed to start: %s", e)
            sock.close()
        finally:
            limit.release()

    async def _session_inner(self, pool: WarmPool, sock: trio.socket.SocketType) -> None:
        self.sessions_started += 1
        n = self.sessions_started
        if self.dopts.allow_uid is not None:
            uid = _peer_uid(sock)
            if uid is not None and uid != self.dopts.allow_uid:
                log.warning("session %d refused: peer uid %d is not allowed", n, uid)
                sock.close()
                return
        try:
            peer = sock.getpeername()
        except OSError:
            peer = "?"
        t0 = time.monotonic()
        worker = await pool.get()
        header: dict[str, object] = {"kind": "socket", "options": asdict(self.opts)}
        worker.hand_over(header, [sock.fileno()])
        sock.close()
        pid = worker.process.pid
        self._running.add(pid)
        log.info("session %d started: peer %s, pid %d", n, peer or "unix", pid)
        try:
            rc = await worker.wait()
        finally:
            self._running.discard(pid)
            worker.control.close()
        log.info("session %d ended: %s after %.3fs", n, _status_text(rc),
                    time.monotonic() - t0)


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


async def _recv_handover(sock: trio.socket.SocketType) -> tuple[dict[str, Any], list[int]]:
    msg, ancdata, _flags, _addr = await sock.recvmsg(1 << 16, ANCILLARY_SPACE)
    fds = fds_received(ancdata)
    try:
        header = json.loads(msg.decode()) if msg else {}
    except ValueError:
        header = {}
    return header, fds


class WarmServer:
    """``orc-executor serve``: keeps ``warm`` session processes ready; a launched
    ``orc-executor filedescs=...`` hands its pipes and stdio over and gets the session's exit
    status back (4 bytes, little-endian signed; negative = killed by that signal)."""

    def __init__(self, path: str, opts: ServeOptions, warm: int) -> None:
        self.path = path
        self.opts = opts
        self.warm = warm

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
        listener = await streams.open_listener(UnixAddress(self.path), socket_mode=0o600)
        log.info("warm server on %s (%d ready processes)", self.path, self.warm)
        try:
            async with trio.open_nursery() as nursery:
                pool = WarmPool(nursery, self.warm)
                pool.fill()
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async with trio.open_nursery() as accept:

                        async def stop() -> None:
                            async for _ in signals:
                                accept.cancel_scope.cancel()
                                return

                        accept.start_soon(stop)
                        task_status.started(self.path)
                        with listener:
                            while True:
                                sock, _ = await listener.accept()
                                nursery.start_soon(self._handle, pool, sock)
                await pool.close()
                nursery.cancel_scope.cancel()
        finally:
            try:
                os.unlink(self.path)
            except OSError:
                pass

    async def _handle(self, pool: WarmPool, sock: trio.socket.SocketType) -> None:
        with sock:
            if _peer_uid(sock) != os.getuid():
                log.warning("warm handover refused: peer is another user")
                return
            header, fds = await _recv_handover(sock)
            try:
                if header.get("kind") != "fdpair" or len(fds) < 2:
                    log.warning("bad warm handover %r with %d fds", header, len(fds))
                    return
                opts = asdict(self.opts)
                if header.get("llvm_version"):
                    opts["llvm_version"] = header["llvm_version"]
                if header.get("controller_pid"):
                    opts["controller_pid"] = header["controller_pid"]
                worker = await pool.get()
                worker.hand_over({"kind": "fdpair", "stdio": header.get("stdio", False),
                                  "options": opts}, fds)
            finally:
                for fd in fds:
                    os.close(fd)
            try:
                rc = await worker.wait()
            finally:
                worker.control.close()
            try:
                await sock.send(rc.to_bytes(4, "little", signed=True))
            except OSError:
                pass


def run_warm_server(path: str, opts: ServeOptions, warm: int) -> int:
    """Run ``orc-executor serve`` until SIGTERM/SIGINT."""
    return _serve_until_stopped(WarmServer(path, opts, warm).run)
