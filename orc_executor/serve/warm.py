"""``orc-executor serve``: the warm server, whose ready session processes take launched
executors' sessions on a unix datagram socket."""

from __future__ import annotations

import logging
import os
import signal
import socket
from typing import Any

import trio

from ..io import streams
from ..io.fdpass import (
    ANCILLARY_SPACE,
    CREDENTIALS_SPACE,
    close_fds,
    fds_received,
    pass_credentials,
)
from .connection import serve_until_stopped
from .handover import encode_exit_status
from .options import ServeOptions
from .pool import Worker, WorkerPool, status_text

log = logging.getLogger(__name__)


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
        log.debug("session in pid %d ended: %s", pid, status_text(rc))
        with conn:
            try:
                conn.send(encode_exit_status(rc))
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



def run_warm_server(path: str, opts: ServeOptions, warm: int, *, idle_exit: float | None = None,
                    lock_fd: int | None = None) -> int:
    """Run ``orc-executor serve`` until SIGTERM/SIGINT (or ``idle_exit`` seconds without a
    launch); 1 if it cannot listen at ``path`` (the reason logged)."""
    return serve_until_stopped(WarmServer(path, opts, warm, idle_exit=idle_exit,
                                           lock_fd=lock_fd).run)
