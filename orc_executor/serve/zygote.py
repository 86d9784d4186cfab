"""The fork server (zygote) and the daemon's handle on it.

Started as ``python -m orc_executor.serve.worker --zygote CONTROL_FD`` it is instead a *fork
server* (zygote): it imports everything once, rehearses a session, writes ``R``, and then
forks one worker per request, so refilling the daemon's pool costs a ``fork()`` instead of an
interpreter start and imports (CPU time that would compete with running sessions).
The control socket is ``SOCK_SEQPACKET``; messages:

* daemon → zygote: ``F`` with one fd (``SCM_RIGHTS``), the new worker's control socket, or
  two: the control socket and the warm listening socket (accept mode);
* zygote → daemon: ``P <pid>`` (the forked worker, in request order), ``X <pid> <status>``
  when it ended (``status`` as :attr:`subprocess.Popen.returncode`: negative = signal).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import select
import signal
import socket
from collections.abc import Callable

import trio

from ..interpreter import python_module_command
from ..io.fdpass import ANCILLARY_SPACE, close_fds, fds_ancillary, fds_received
from . import handover
from .handover import Control

log = logging.getLogger(__name__)


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
            ok = parent.recv(16) == Control.READY
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
                report = handover.decode_zygote_report(msg)
                if report is None:
                    continue
                code, pid, status = report
                if code == Control.FORKED and self._pending:
                    self._pending.pop(0).send_nowait(pid)
                elif code == Control.EXITED:
                    proc = self._forked.pop(pid, None)
                    if proc is not None:
                        proc._exited(status)
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
                self.control.sendmsg([Control.FORK], fds_ancillary(fds))
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


# ---- the fork server's process ------------------------------------------------------------


def _preload(rehearse: Callable[[], None]) -> None:
    """Import and load what a session needs, and rehearse one (``rehearse``), so forked
    workers start with it all in place: the process libraries (libgcc_s, libstdc++) are
    loaded, lazily created objects exist, and the interpreter has specialised the session's
    code paths."""
    import trio  # noqa: F401

    from .. import controller  # noqa: F401  (the rehearsal's controller)
    from ..executor import bootstrap, session  # noqa: F401
    from ..executor.services.dylib_manager import load_process_libraries
    from ..native import api as native  # noqa: F401
    from ..protocol import orc_types as orc  # noqa: F401

    load_process_libraries()
    try:
        rehearse()
    except Exception as e:  # a warm-up problem must never stop the fork server
        log.debug("session rehearsal failed: %s", e)
    # The argument decoders of every profile's wrapper functions (generated at first use):
    # the signatures are module-level, so forked workers inherit them all.
    for profile in bootstrap.PROFILES:
        for spec in bootstrap.build_context(profile).registry.by_addr.values():
            spec.sig.args.compiled_decoder()


def zygote(control_fd: int, run_worker: Callable[[int, int | None], int],
           rehearse: Callable[[], None]) -> int:
    """Fork workers on request until the daemon closes ``control_fd`` (see module doc). A
    forked worker exits with ``run_worker(control_fd, listen_fd or None)``; ``rehearse``
    rehearses a session before the first fork."""
    from .connection import exit_process

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _preload(rehearse)
    gc.collect()
    gc.freeze()  # keep the collector from touching (and so copying) the shared heap
    control = socket.socket(fileno=control_fd)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    zygote_pid = os.getpid()
    libc = ctypes.CDLL(None, use_errno=True)  # prctl, for the forked workers
    try:
        control.send(Control.READY)
    except OSError:  # the daemon died while we got ready
        return 0
    poller = select.poll()
    poller.register(control, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    while True:
        try:
            events = poller.poll()
        except InterruptedError:
            continue
        for fd, _ev in events:
            if fd == wake_r:
                while True:
                    try:
                        if not os.read(wake_r, 256):
                            break
                    except BlockingIOError:
                        break
                _reap(control)
                continue
            try:
                msg, ancdata, _flags, _addr = control.recvmsg(16, ANCILLARY_SPACE)
            except InterruptedError:
                continue
            except OSError:
                msg, ancdata = b"", []
            fds = fds_received(ancdata)
            if not msg:  # the daemon is gone (or done): the workers forked end with us
                return 0
            if msg != Control.FORK or len(fds) not in (1, 2):
                close_fds(fds)
                continue
            pid = os.fork()
            if pid == 0:
                # The worker: drop the zygote's state, serve one session, exit. The heap
                # stays frozen: a full collection would touch (and so copy) all of it.
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                control.close()
                os.close(wake_r)
                os.close(wake_w)
                os.setsid()
                _die_with_parent(libc, zygote_pid)
                exit_process(run_worker(fds[0], fds[1] if len(fds) == 2 else None))
            close_fds(fds)
            _send(control, handover.encode_forked(pid))
            _reap(control)


def _die_with_parent(libc: ctypes.CDLL, parent: int) -> None:
    """Have the kernel kill this process (SIGKILL) when ``parent``, the fork server that
    forked it from its only thread, ends: a ``serve`` or daemon killed with SIGKILL closes
    the zygote's control socket, the zygote exits, and its workers, idle or running a
    session, end with it instead of living on orphaned. Exits at once if ``parent`` is
    already gone (the signal is only sent for a death after ``prctl``)."""
    pr_set_pdeathsig = 1
    if libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) != 0:
        log.warning("PR_SET_PDEATHSIG: %s", os.strerror(ctypes.get_errno()))
    if os.getppid() != parent:
        os._exit(1)


def _reap(control: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)  # negative: killed by that signal
        _send(control, handover.encode_exited(pid, code))


def _send(control: socket.socket, data: bytes) -> None:
    try:
        control.send(data)
    except OSError:
        pass  # the daemon is gone

