"""The ``--listen`` daemon: accepts controllers, one warm session process per session."""

from __future__ import annotations

import logging
import os
import select
import signal
import time
from dataclasses import asdict

import trio

from ..io import streams
from ..io.fdpass import peer_uid
from ..io.spec import Address, UnixAddress
from .connection import serve_until_stopped
from .handover import Control
from .options import DaemonOptions, ServeOptions
from .pool import Worker, WorkerPool, status_text

log = logging.getLogger(__name__)


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
        log.info("session %d ended: %s after %.3fs", n, status_text(rc),
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
            if msg.startswith(Control.FIRST_MESSAGE):
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



def run_daemon(address: Address, opts: ServeOptions, dopts: DaemonOptions) -> int:
    """Serve sessions on ``address`` until SIGTERM/SIGINT; exit status 0 after a clean stop."""
    return serve_until_stopped(Daemon(address, opts, dopts).run)


def _peer_closed(sock: trio.socket.SocketType) -> bool:
    """The peer of ``sock`` has closed or reset it already (no controller closes before
    its Setup arrives)."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLRDHUP)
    return any(ev & (select.POLLRDHUP | select.POLLHUP | select.POLLERR)
               for _fd, ev in poller.poll(0))
