"""Calls run on worker threads (LLVM's ``orc::DynamicThreadPoolTaskDispatcher``, orc-rt's
``TaskDispatcher``): CallWrappers whose handler blocks or runs native code.

Worker threads come from trio's thread cache. A thread that finished a call (or has a frame
for the controller it could not write itself) leaves it for the trio thread and wakes it
through an eventfd, which both the reader's poll(2) and trio's epoll watch.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable

import trio

from ..native.api import ffi, lib
from ..protocol.finalize_sink import StreamedArgs
from ..protocol.framing import FramedPayload, Opcode, encode_header
from .registry import WrapperSpec
from .writer import FrameWriter, build_frame

log = logging.getLogger(__name__)

#: ``run_call(tag, payload, name, spec, streamed)``: runs one call on a worker thread and
#: returns its Result payload.
RunCall = Callable[
    [int, "bytes | bytearray | memoryview", str, "WrapperSpec | None", "StreamedArgs | None"],
    "bytes | FramedPayload",
]


class BlockingCall:
    """A CallWrapper run on a worker thread; ``frame`` is its Result frame while the trio
    thread has to send it (``None`` once the worker thread wrote it)."""

    __slots__ = ("frame", "name", "payload", "seq", "spec", "streamed", "tag")

    def __init__(
        self, seq: int, tag: int, payload: bytes | bytearray | memoryview, name: str,
        spec: WrapperSpec | None, streamed: StreamedArgs | None,
    ) -> None:
        self.seq = seq
        self.tag = tag
        self.payload = payload
        self.name = name
        self.spec = spec
        self.streamed = streamed
        self.frame: bytes | memoryview | None = None


class ThreadDispatcher:
    """Runs :class:`BlockingCall` s on worker threads, at most ``max_concurrent_calls`` at
    once (later ones wait, in arrival order).

    ``run_call`` runs a call (worker thread); Results go out through ``writer``;
    ``on_done(name)`` is called on the trio thread when a call is over.
    """

    def __init__(
        self, max_concurrent_calls: int, run_call: RunCall, writer: FrameWriter,
        on_done: Callable[[str], None],
    ) -> None:
        self.max_concurrent_calls = max_concurrent_calls
        self._run_call = run_call
        self._writer = writer
        self._on_done = on_done
        #: Calls submitted and not yet finished on the trio thread (waiting ones included).
        self.inflight = 0
        self.threads_running = 0
        self.backlog: deque[BlockingCall] = deque()
        #: Left by worker threads for the trio thread (deque appends are thread-safe), which
        #: they wake through ``wake_fd``: calls they finished, frames they could not write.
        self.finished: deque[BlockingCall] = deque()
        self._outgoing: deque[bytes] = deque()
        self.wake_fd: int | None = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        #: Held while the eventfd is written or closed.
        self._wake_lock = threading.Lock()
        self._drained: trio.Event | None = None

    # ---- the trio thread -------------------------------------------------------------------------

    def submit(self, call: BlockingCall) -> None:
        """Run ``call`` on a worker thread; counted in :attr:`inflight` until it is over."""
        self.inflight += 1
        self._start(call)

    def _start(self, call: BlockingCall) -> None:
        """Run ``call`` on a worker thread, or queue it while ``max_concurrent_calls`` run."""
        if self.threads_running >= self.max_concurrent_calls:
            self.backlog.append(call)
            return
        if not self.threads_running:
            lib.orc_program_rest(0)  # signals now go to the program's thread
        self.threads_running += 1
        try:
            trio.lowlevel.start_thread_soon(
                lambda: self._run(call), lambda _: self._ran(call)
            )
        except RuntimeError as e:  # no thread to be had ("can't start new thread")
            log.error("%s: %s", call.name, e)
            self.threads_running -= 1
            call.frame = encode_header(Opcode.RESULT, call.seq, 0, 0)  # out of band
            self._done(call)

    def reap(self) -> None:
        """Send the frames worker threads could not write, finish the calls they ran
        (sending a Result they could not write), start the calls that waited for a thread."""
        while self._outgoing:
            self._writer.send_frame(self._outgoing.popleft())
        while self.finished:
            call = self.finished.popleft()
            self.threads_running -= 1
            self._done(call)
        while self.backlog and self.threads_running < self.max_concurrent_calls:
            self._start(self.backlog.popleft())
        if not self.threads_running:
            lib.orc_program_rest(1)  # no program code runs: signals come here

    async def reaper(self, wake_fd: int) -> None:
        """Run :meth:`reap` whenever a worker thread wakes trio's wait (the reader's poll
        handles the wakes that come while it polls)."""
        while True:
            await trio.lowlevel.wait_readable(wake_fd)
            try:
                os.eventfd_read(wake_fd)
            except BlockingIOError:
                pass  # the reader's poll took this one
            self.reap()

    def _done(self, call: BlockingCall) -> None:
        """``call`` is over; send its Result unless the worker thread wrote it."""
        self.inflight -= 1
        if call.frame is not None:
            self._writer.send_frame(call.frame)
        if self.inflight == 0 and self._drained is not None:
            self._drained.set()
        self._on_done(call.name)

    def no_threads_running(self) -> bool:
        """No worker thread runs a call (and needs the GIL). A thread that has just handed
        its call back is already in trio's idle pool, so the next call goes to it even while
        it waits for the GIL to return there."""
        return self.threads_running == 0

    def drop_waiting(self) -> None:
        """Calls still waiting for a thread never run: only started ones stay in flight."""
        self.inflight -= len(self.backlog)
        self.backlog.clear()

    async def drain(self, timeout: float) -> None:
        """Up to ``timeout`` seconds for the calls in flight to finish."""
        if not self.inflight:
            return
        self._drained = trio.Event()
        with trio.move_on_after(timeout):
            await self._drained.wait()

    def close_wake_fd(self) -> None:
        """Close the eventfd; a call finishing later wakes nobody."""
        with self._wake_lock:
            fd, self.wake_fd = self.wake_fd, None
        if fd is not None:
            os.close(fd)

    # ---- any thread ------------------------------------------------------------------------------

    def post(self, frame: bytes) -> None:
        """Have the trio thread send ``frame`` soon (a worker thread could not write it)."""
        self._outgoing.append(frame)
        self.wake()

    def wake(self) -> None:
        """Make the trio thread run :meth:`reap` soon, wherever it waits. Nothing once the
        eventfd is closed (an abandoned call finishing late)."""
        with self._wake_lock:
            fd = self.wake_fd
            if fd is not None:
                os.eventfd_write(fd, 1)

    # ---- worker threads --------------------------------------------------------------------------

    def _run(self, call: BlockingCall) -> None:
        """Run the call, then write its Result if the pipe takes it now."""
        lib.orc_program_enter()  # the program's signal mask while it runs (orc_set_signals)
        try:
            result = self._run_call(call.tag, call.payload, call.name, call.spec, call.streamed)
            frame = build_frame(Opcode.RESULT, call.seq, 0, result)
        except MemoryError:
            log.error("%s: out of memory for its result", call.name)
            frame = encode_header(Opcode.RESULT, call.seq, 0, 0)  # out of band
        except Exception as e:  # pragma: no cover - handlers report their own failures
            log.error("%s failed: %s: %s", call.name, type(e).__name__, e,
                      exc_info=log.isEnabledFor(logging.DEBUG))
            frame = encode_header(Opcode.RESULT, call.seq, 0, 0)
        finally:
            lib.orc_program_leave()
        if not self._writer.write_from_thread(frame):
            call.frame = frame

    def _ran(self, call: BlockingCall) -> None:
        """Hand the rest of ``call`` to the trio thread (:meth:`reap`)."""
        self.finished.append(call)
        self.wake()


def warm_worker_thread() -> None:
    """The first worker thread's start, off the first blocking call's path: libgcc_s's
    EH-frame entry points looked up (the first initialize with EH frames), this thread's
    malloc arena made (the JIT'd program's first allocation in the thread), and the
    executor's signal mask taken (it inherited the event loop's)."""
    lib.orc_executor_thread()
    lib.orc_eh_frame_preload()
    ffi.new("char[]", 4096)


def ignore_outcome(_outcome: object) -> None:
    pass
