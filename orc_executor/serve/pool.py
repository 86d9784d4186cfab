"""The pool of session processes (workers) started and getting ready, and the daemon's
handle on each."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

import trio

from ..interpreter import python_module_command
from ..io.fdpass import ANCILLARY_SPACE, close_fds, fds_ancillary, fds_received
from . import handover
from .handover import Control
from .options import ServeOptions
from .start_failures import StartFailures
from .zygote import ForkedProcess, Zygote

log = logging.getLogger(__name__)


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
                parent.send(handover.encode_options(asdict(options or ServeOptions()),
                                                    background))
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
        return data == Control.READY

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
            if msg == Control.SESSION_TAKEN and len(fds) == 1:
                return socket.socket(fileno=fds[0])
            close_fds(fds)
            if not msg:
                return None

    def hand_over(self, header: dict[str, object], fds: list[int]) -> None:
        """Send the session's fds (``SCM_RIGHTS``) and header; the fds stay ours to close."""
        self.control.setblocking(True)
        self.control.sendmsg([handover.encode_session_header(header)], fds_ancillary(fds))

    async def wait(self) -> int:
        return await self.process.wait()

    @property
    def captured_stderr(self) -> Any:
        """The pipe from a worker started with ``capture_stderr`` (a trio receive stream),
        else ``None``."""
        return getattr(self.process, "stderr", None)

    def process_stderr_captured(self) -> bool:
        return self.captured_stderr is not None


async def _start_failure_reason(worker: Worker) -> str:
    """Why ``worker`` (its control socket closed) ended before getting ready: its exit
    status, and the last line of its captured stderr (else a pointer to its output in ours).
    Waits up to 2 s for it to exit."""
    text = ""
    stderr = worker.captured_stderr
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
    status = "still running" if rc is None else status_text(rc)
    if text:
        return f"{text} ({status})"
    return (f"a session process ended before getting ready ({status}"
            f"{'' if stderr is not None else '; its output is above'})")


async def _reap_worker(worker: Worker) -> None:
    stderr = worker.captured_stderr
    with trio.move_on_after(5):
        await worker.wait()
    if stderr is not None:
        await stderr.aclose()


class WorkerPool:
    """Keeps ``size`` session processes started and getting ready, for the ``--listen``
    daemon (:class:`~orc_executor.serve.daemon.Daemon`: it hands a session to a ready
    worker) and for the warm server (:class:`~orc_executor.serve.warm.WarmServer`: ready
    workers take launchers' sessions themselves on the warm socket ``listen_fd``, with
    ``options``).

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
            shutdown_write(worker.control)  # EOF: it exits (or it just took a session)
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
            shutdown_write(w.control)

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


def status_text(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit {rc}"



def shutdown_write(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass

