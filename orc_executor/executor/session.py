"""The executor side of one SimpleRemoteEPC session (``SimpleRemoteEPCServer``).

One trio task reads frames; each CallWrapper is answered inline when its handler is cheap and
cannot block, or on a worker thread (trio's thread cache) when it runs native code (run_as_*,
JIT'd wrapper functions, initialize with alloc actions). Executor→controller calls made by
JIT'd code through the dispatch function block only their own thread; their Results are routed
back by sequence number. Frames are written whole (header and payload in one write): directly
while nothing is queued, else by one writer task that coalesces frames ready together. On a
pipe, a worker thread writes its own small frame (a Result, or a call into the controller)
when the pipe takes it whole, so the controller does not wait for the trio thread to wake.
"""

from __future__ import annotations

import logging
import math
import os
import select
import socket
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from ..errors import FramingError, JITDispatchError, OutOfBandError, ProtocolError
from ..memmap.native import ffi, lib
from ..sps.stream import StreamedArgs
from ..transport.framing import (
    DEFAULT_MAX_MESSAGE_SIZE,
    FrameDecoder,
    FramedPayload,
    Message,
    Opcode,
    PayloadSink,
    encode_header,
)
from ..transport.streams import FdReader, enlarge_pipe, raw_fds
from .bootstrap import setup_info
from .context import ExecutorContext
from .registry import WrapperSpec

log = logging.getLogger(__name__)

#: Names whose completion may end a TCP session (see ``idle_close``).
_RELEASE_WORDS = ("release", "deallocate", "deinitialize")

DISPATCH_UNAVAILABLE = "jit_dispatch not available (EPC server shut down)"
#: The out-of-band error a pending executor→controller call gets when the connection drops
#: (the stock executor's text, ``SimpleRemoteEPCServer::handleDisconnect``).
DISPATCH_DISCONNECTED = "disconnecting"

#: Milliseconds a quiet pipe session waits for the controller in poll(2) before handing the
#: wait to trio.
IDLE_POLL_MS = 1

#: Seconds the reader polls without sleeping before its poll(2) sleeps (see
#: :class:`FdReader`): a controller that answers a Result with its next call within this
#: long finds the executor awake. Only when two or more CPUs are usable.
BUSY_POLL = 20e-6

#: Largest busy-poll setting accepted (seconds).
MAX_BUSY_POLL = 1.0


def default_busy_poll() -> float:
    """Seconds: ``$ORC_EXECUTOR_BUSY_POLL`` (microseconds) if set, else :data:`BUSY_POLL`,
    or ``0.0`` with one usable CPU (polling there would only take the CPU the controller
    needs to send the next call)."""
    env = os.environ.get("ORC_EXECUTOR_BUSY_POLL")
    if env:
        try:
            usec = float(env)
        except ValueError:
            usec = math.nan
        if 0 <= usec <= MAX_BUSY_POLL * 1e6:
            return usec * 1e-6
        log.warning("ORC_EXECUTOR_BUSY_POLL=%r is not a number of microseconds from 0 to %d: "
                    "ignored", env, MAX_BUSY_POLL * 1e6)
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return BUSY_POLL if cpus >= 2 else 0.0

#: Bytes of Results queued for a controller that does not read them, above which the session
#: stops reading (and so running) further calls until the controller has taken them: a
#: controller that stops reading blocks itself instead of growing our memory.
SEND_HIGH_WATER = 16 << 20

#: Frames queued together up to this many bytes are joined into one write; larger ones are
#: written as they are (a large Result is never copied again).
_JOIN_MAX = 1 << 16

#: Seconds to let calls still running at session end finish (e.g. JIT'd code that was woken
#: with a ``disconnecting`` error) before abandoning them and exiting.
DRAIN_TIMEOUT = 2.0




@dataclass
class SessionEnd:
    """Why a session ended: ``clean`` (EOF at a message boundary or Hangup) or an error."""

    clean: bool
    reason: str
    calls_in_flight: int = 0

    @property
    def exit_status(self) -> int:
        return 0 if self.clean else 1


class _Waiter:
    __slots__ = ("event", "result")

    def __init__(self) -> None:
        self.event = threading.Event()
        #: The Result payload, or the error to raise if the session went down first.
        self.result: bytes | JITDispatchError = JITDispatchError(DISPATCH_DISCONNECTED)


class _BlockingCall:
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


class Session:
    """Serve one controller over ``stream`` (a :class:`trio.abc.Stream`).

    ``max_message_size`` bounds accepted frames (bytes); ``max_concurrent_calls`` bounds the
    worker threads running calls at once (later calls wait, in arrival order); ``idle_close``
    (seconds, TCP only) closes the connection when the controller has released everything
    and then stays silent that long — the only way to end a session with LLVM 14–22
    controllers in TCP mode (PROTOCOL.md §1.8). ``busy_poll``: seconds the reader polls
    without sleeping while waiting for the next call (``None``: :func:`default_busy_poll`,
    ``0``: never).

    Time a silent peer can hold the session (sockets; ``None`` disables each):
    ``handshake_timeout`` seconds after Setup for the controller's first complete message;
    ``idle_timeout`` seconds without a complete message while no call runs in either
    direction (also the longest wait for a controller that stopped reading its Results).
    Either ends the session unclean, with the reason. ``on_first_message`` is called once,
    on the trio thread, when the first complete message arrived.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        ctx: ExecutorContext,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_concurrent_calls: int = 1024,
        idle_close: float | None = None,
        drain_timeout: float = DRAIN_TIMEOUT,
        busy_poll: float | None = None,
        handshake_timeout: float | None = None,
        idle_timeout: float | None = None,
        on_first_message: Callable[[], None] | None = None,
    ) -> None:
        self.stream = stream
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self._on_first_message = on_first_message
        #: Complete messages received (and when the read deadline was last set); trio time of
        #: Setup and of the latest message (as seen when a deadline was set).
        self._messages = 0
        self._messages_seen = 0
        self._setup_at = 0.0
        self._last_message_at = 0.0
        #: Why the read deadline fired, when it was one of the timeouts (else idle close).
        self._deadline_reason: str | None = None
        #: Bytes queued for the writer (Results a slow controller has not taken yet) and
        #: collected in the current batch; set when they fell below the high-water mark.
        self._queued_bytes = 0
        self._batch_bytes = 0
        self._room: trio.Event | None = None
        self.ctx = ctx
        self.decoder = FrameDecoder(max_message_size, self._route)
        self.max_concurrent_calls = max_concurrent_calls
        self._threads_running = 0
        self._backlog: deque[_BlockingCall] = deque()
        #: Left by worker threads for the trio thread (deque appends are thread-safe), which
        #: they wake through ``_wake_fd``: calls they finished, frames they could not write.
        self._finished: deque[_BlockingCall] = deque()
        self._outgoing: deque[bytes] = deque()
        self._wake_fd: int | None = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.idle_close = idle_close
        self.drain_timeout = drain_timeout
        self._drained: trio.Event | None = None
        # Unbounded in frames; the bytes are bounded by the reader, which stops taking calls
        # above SEND_HIGH_WATER (_backed_up).
        self._send_ch, self._recv_ch = trio.open_memory_channel[bytes | memoryview](math.inf)
        self._out_lock = threading.Lock()
        self._out_pending: dict[int, _Waiter] = {}
        self._next_out_seq = 0
        self._closed = False
        self._token: trio.lowlevel.TrioToken | None = None
        self._inflight = 0
        self._close_armed = False
        self._read_scope: trio.CancelScope | None = None
        self._send_failed = False
        self.calls_served = 0
        self._debug = log.isEnabledFor(logging.DEBUG)
        self._queued = 0
        self._batch: list[bytes | memoryview] | None = None
        in_fd, self._out_fd = raw_fds(stream)
        #: Held for every direct write to ``_out_fd`` (trio thread or worker thread) and while
        #: ``_queued`` goes up after a partial one, so frames never interleave.
        self._write_lock = threading.Lock()
        self._out_closed = False
        #: Worker threads may write frames of up to PIPE_BUF bytes themselves: on a pipe such
        #: a non-blocking write is atomic (all of it, or EAGAIN), never partial.
        self._thread_writes = self._out_fd is not None and _is_fifo(self._out_fd)
        if in_fd is not None and in_fd != self._out_fd:
            enlarge_pipe(in_fd)
        #: Reads the raw fd; waits for the next call in poll(2) while quiet (no idle close:
        #: its deadline needs trio's wait), woken there by worker threads as well.
        self._fd_reader: FdReader | None = None
        if in_fd is not None:
            self._fd_reader = FdReader(
                in_fd,
                quiet=self._quiet if idle_close is None else None,
                poll_ms=IDLE_POLL_MS,
                checkpoint_every=16,
                wake_fd=self._wake_fd,
                on_wake=self._reap,
                busy_poll=default_busy_poll() if busy_poll is None else busy_poll,
                may_spin=self._no_threads_running,
            )
        sock = getattr(stream, "socket", None)
        self._quickack: Any = (
            sock if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6) else None
        )

    # ---- sending -----------------------------------------------------------------------------

    def _send_nowait(
        self, opcode: Opcode, seq: int, tag: int, payload: bytes | FramedPayload
    ) -> None:
        frame = _frame(opcode, seq, tag, payload)
        if self._batch is not None and len(frame) <= _JOIN_MAX:
            self._batch.append(frame)  # flushed in one write after the current read chunk
            self._batch_bytes += len(frame)
            return
        self._flush_batch()
        self._send_frame(frame)

    def _flush_batch(self) -> None:
        batch = self._batch
        if batch:
            self._batch = []
            self._batch_bytes = 0
            self._send_frame(batch[0] if len(batch) == 1 else b"".join(batch))

    def _backed_up(self) -> bool:
        """More Result bytes wait for the controller than :data:`SEND_HIGH_WATER` (never
        once sending failed: the writer drops them)."""
        return (self._queued_bytes + self._batch_bytes > SEND_HIGH_WATER
                and not self._send_failed)

    async def _wait_for_room(self) -> bool:
        """Until the queued Results fell below the high-water mark; ``False`` when the
        controller took none of them for ``idle_timeout`` seconds."""
        self._room = trio.Event()
        with trio.move_on_after(self.idle_timeout or math.inf):
            while self._queued_bytes > SEND_HIGH_WATER and not self._send_failed:
                self._room = trio.Event()
                await self._room.wait()
            return True
        return False

    def _send_frame(self, frame: bytes | memoryview) -> None:
        if self._queued == 0 and self._out_fd is not None and not self._send_failed:
            # Fast path: the writer is idle, so a direct non-blocking write keeps order and
            # saves a task switch per Result.
            with self._write_lock:
                try:
                    n = os.write(self._out_fd, frame)
                except BlockingIOError:
                    n = 0
                except OSError as e:
                    self._on_send_failed(e)
                    return
                if n < len(frame):
                    # Under the lock: worker threads see _queued. A view, not a copy.
                    self._enqueue(memoryview(frame)[n:])
                return
        if not self._out_closed:
            self._enqueue(frame)

    def _enqueue(self, frame: bytes | memoryview) -> None:
        try:
            self._send_ch.send_nowait(frame)
            self._queued += 1
            self._queued_bytes += len(frame)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def _write_from_thread(self, frame: bytes | memoryview) -> bool:
        """Write ``frame`` from a worker thread if the pipe takes it whole now; ``False``
        (nothing written) when it must go through the trio thread: not a pipe, more than
        PIPE_BUF bytes, frames queued, the pipe full, or the output closed."""
        if not self._thread_writes or len(frame) > select.PIPE_BUF:
            return False
        with self._write_lock:
            fd = self._out_fd
            if fd is None or self._queued or self._send_failed:
                return False
            try:
                os.write(fd, frame)  # all of it or EAGAIN (atomic on a pipe)
            except BlockingIOError:
                return False
            except OSError as e:
                self._on_send_failed(e)  # dropped, as the trio thread drops it
            return True

    def _close_output(self) -> None:
        """No more direct writes (the fd is about to be closed, and its number may be reused)."""
        with self._write_lock:
            self._out_fd = None
            self._out_closed = True

    def _on_send_failed(self, e: BaseException) -> None:
        if not self._send_failed:
            # The controller went away; later sends are dropped silently.
            log.debug("send failed: %s", e)
            self._send_failed = True

    async def _writer(self) -> None:
        async with self._recv_ch:
            async for frame in self._recv_ch:
                frames = [frame]
                while True:
                    try:
                        frames.append(self._recv_ch.receive_nowait())
                    except trio.WouldBlock:
                        break
                size = sum(len(f) for f in frames)
                if not self._send_failed:
                    # Small frames in one write; a large one alone, as it is (no copy).
                    chunks = [b"".join(frames)] if size <= _JOIN_MAX else frames
                    try:
                        for data in chunks:
                            await self.stream.send_all(data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                        self._on_send_failed(e)
                self._queued -= len(frames)
                self._queued_bytes -= size
                if self._room is not None and (
                        self._queued_bytes <= SEND_HIGH_WATER // 2 or self._send_failed):
                    self._room.set()

    # ---- executor -> controller calls (from JIT'd code, any thread) ---------------------------

    def call_controller(self, tag: int, data: bytes) -> bytes:
        """Send CallWrapper(tag, data) to the controller and block this thread for the Result.

        Returns the result bytes. Raises :class:`JITDispatchError` if the session is down
        (:data:`DISPATCH_UNAVAILABLE`) or goes down while waiting (:data:`DISPATCH_DISCONNECTED`).
        Must not be called from the trio thread.
        """
        waiter = _Waiter()
        with self._out_lock:
            if self._closed or self._token is None:
                raise JITDispatchError(DISPATCH_UNAVAILABLE)
            seq = self._next_out_seq
            self._next_out_seq += 1
            self._out_pending[seq] = waiter
        frame = encode_header(Opcode.CALL_WRAPPER, seq, tag, len(data)) + data
        if not self._write_from_thread(frame):
            self._outgoing.append(frame)
            self._wake()
        waiter.event.wait()
        if isinstance(waiter.result, JITDispatchError):
            raise waiter.result
        return waiter.result

    def _fail_outgoing(self) -> None:
        """Mark the session down and wake every waiting caller with a ``disconnecting`` error."""
        with self._out_lock:
            self._closed = True
            pending = list(self._out_pending.values())
            self._out_pending.clear()
        for w in pending:
            w.result = JITDispatchError(DISPATCH_DISCONNECTED)
            w.event.set()

    # ---- serving calls -------------------------------------------------------------------------

    def _route(self, opcode: int, tag: int, length: int) -> PayloadSink | None:
        """A streaming sink for a large call (the decoder asks only for payloads of
        ``LARGE_PAYLOAD`` bytes or more) to a wrapper function that has one (initialize:
        segment content is read straight into the slab), else ``None``."""
        if opcode != Opcode.CALL_WRAPPER:
            return None
        spec = self.ctx.registry.lookup(tag)
        if spec is None or spec.stream is None:
            return None
        return spec.stream(length)

    def _start_blocking(self, call: _BlockingCall) -> None:
        """Run ``call`` on a worker thread, or queue it while ``max_concurrent_calls`` run."""
        if self._threads_running >= self.max_concurrent_calls:
            self._backlog.append(call)
            return
        if not self._threads_running:
            lib.orc_program_rest(0)  # signals now go to the program's thread
        self._threads_running += 1
        try:
            trio.lowlevel.start_thread_soon(
                lambda: self._run_blocking(call), lambda _: self._blocking_ran(call)
            )
        except RuntimeError as e:  # no thread to be had ("can't start new thread")
            log.error("%s: %s", call.name, e)
            self._threads_running -= 1
            call.frame = encode_header(Opcode.RESULT, call.seq, 0, 0)  # out of band
            self._call_done(call)

    def _run_blocking(self, call: _BlockingCall) -> None:
        """Worker thread: run the call, then write its Result if the pipe takes it now."""
        lib.orc_program_enter()  # the program's signal mask while it runs (orc_set_signals)
        try:
            result = self._call_sync(call.tag, call.payload, call.name, call.spec, call.streamed)
            frame = _frame(Opcode.RESULT, call.seq, 0, result)
        except MemoryError:
            log.error("%s: out of memory for its result", call.name)
            frame = encode_header(Opcode.RESULT, call.seq, 0, 0)  # out of band
        except Exception as e:  # pragma: no cover - handlers report their own failures
            log.error("%s failed: %s: %s", call.name, type(e).__name__, e,
                      exc_info=log.isEnabledFor(logging.DEBUG))
            frame = encode_header(Opcode.RESULT, call.seq, 0, 0)
        finally:
            lib.orc_program_leave()
        if not self._write_from_thread(frame):
            call.frame = frame

    def _blocking_ran(self, call: _BlockingCall) -> None:
        """Worker thread: hand the rest of ``call`` to the trio thread (:meth:`_reap`)."""
        self._finished.append(call)
        self._wake()

    def _wake(self) -> None:
        """Any thread: make the trio thread run :meth:`_reap` soon, wherever it waits (the
        reader's poll(2) or trio's epoll both watch ``_wake_fd``). Nothing once the session
        has closed it (an abandoned call finishing late)."""
        with self._out_lock:
            fd = self._wake_fd
            if fd is not None:
                os.eventfd_write(fd, 1)

    def _reap(self) -> None:
        """Trio thread: send the frames worker threads could not write, finish the calls
        they ran (sending a Result they could not write), start the calls that waited for a
        thread."""
        while self._outgoing:
            self._send_frame(self._outgoing.popleft())
        while self._finished:
            call = self._finished.popleft()
            self._threads_running -= 1
            self._call_done(call)
        while self._backlog and self._threads_running < self.max_concurrent_calls:
            self._start_blocking(self._backlog.popleft())
        if not self._threads_running:
            lib.orc_program_rest(1)  # no program code runs: signals come here

    async def _reaper(self, wake_fd: int) -> None:
        """Run :meth:`_reap` whenever a worker thread wakes trio's wait (the reader's poll
        handles the wakes that come while it polls)."""
        while True:
            await trio.lowlevel.wait_readable(wake_fd)
            try:
                os.eventfd_read(wake_fd)
            except BlockingIOError:
                pass  # the reader's poll took this one
            self._reap()

    def _call_done(self, call: _BlockingCall) -> None:
        """Trio thread: ``call`` is over; send its Result unless the worker thread wrote it."""
        self._inflight -= 1
        if call.frame is not None:
            self._send_frame(call.frame)
        if self._inflight == 0 and self._drained is not None:
            self._drained.set()
        self._after_call(call.name)

    def _call_sync(
        self, tag: int, payload: bytes | bytearray | memoryview, name: str,
        spec: WrapperSpec | None, streamed: StreamedArgs | None = None,
    ) -> bytes | FramedPayload:
        """Run one call on a worker thread: wrapper ``spec`` (the registry's entry for
        ``tag``, looked up once by :meth:`_handle_call`), else native code at ``tag``."""
        try:
            if spec is None:
                return self.ctx.call(tag, payload)
            if streamed is not None:
                return spec.invoke_streamed(streamed)
            return spec.invoke(payload)
        except OutOfBandError as e:
            log.warning("%s: %s", name, e)
            return b""

    def _after_call(self, name: str) -> None:
        self.calls_served += 1
        if self.idle_close is not None and any(w in name.lower() for w in _RELEASE_WORDS):
            self._close_armed = True
            self._maybe_arm_idle_close()
        elif self.idle_timeout is not None:
            self._maybe_arm_idle_close()

    def _handle_call(self, msg: Message) -> None:
        spec = self.ctx.registry.lookup(msg.tag)
        streamed = msg.decoded if isinstance(msg.decoded, StreamedArgs) else None
        if self._debug:
            log.debug("call seq=%d %s (%d bytes)", msg.seq,
                      spec.name if spec is not None else f"{msg.tag:#x}", len(msg.payload))
            if streamed is not None:
                log.debug("call seq=%d: %d content bytes received straight into the slab",
                          msg.seq, streamed.placed)
        if spec is not None:
            try:
                result = spec.invoke_if_inline(msg.payload, streamed)
            except OutOfBandError as e:
                log.warning("%s: %s", spec.name, e)
                result = b""
            except MemoryError:
                log.error("%s: out of memory", spec.name)
                result = b""
            if result is not None:
                self._send_nowait(Opcode.RESULT, msg.seq, 0, result)
                self._after_call(spec.name)
                return
        if spec is None and not self.ctx.is_native_function(msg.tag):
            log.warning("CallWrapper seq %d: unknown tag %#x (no wrapper function there)",
                        msg.seq, msg.tag)
            self._send_nowait(Opcode.RESULT, msg.seq, 0, b"")
            return
        name = spec.name if spec is not None else f"wrapper function at {msg.tag:#x}"
        # Counted until the trio thread has finished it (_reap); the session's end waits
        # for it (_drain).
        self._inflight += 1
        self._start_blocking(_BlockingCall(msg.seq, msg.tag, msg.payload, name, spec, streamed))

    def _handle_result(self, msg: Message) -> None:
        with self._out_lock:
            waiter = self._out_pending.pop(msg.seq, None)
        if waiter is None:
            raise ProtocolError(f"No call for sequence number {msg.seq}")
        if msg.tag != 0:
            log.debug("Result seq %d carries tag %#x", msg.seq, msg.tag)
        waiter.result = bytes(msg.payload)
        waiter.event.set()

    # ---- main loop -------------------------------------------------------------------------------

    def _idle(self) -> bool:
        return (
            self._close_armed
            and self._inflight == 0
            and not self._out_pending
            and not self.ctx.memmap.has_regions()
        )

    async def _read_some(self) -> bytes | bytearray | None:
        want = min(max(self.decoder.wanted, 1 << 16), 1 << 22)
        if self._quickack is not None:
            # LLVM's controllers write header and payload separately; with Nagle on their side
            # a delayed ACK from ours would stall every call ~40 ms. Re-armed per read (Linux
            # clears it).
            try:
                self._quickack.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            except OSError:
                self._quickack = None
        if self.idle_close is None and self.handshake_timeout is None and \
                self.idle_timeout is None:
            return await self._receive(want)
        with trio.CancelScope() as scope:
            self._read_scope = scope
            self._maybe_arm_idle_close()
            try:
                return await self._receive(want)
            finally:
                self._read_scope = None
        if self._deadline_reason is None:
            log.info("controller idle %.3fs after releasing all memory: closing",
                     self.idle_close)
        return None

    async def _receive(self, want: int) -> bytes | bytearray:
        """Up to ``want`` bytes from the controller (``b""`` at EOF): through the
        :class:`FdReader` on the raw fd (a forced checkpoint every 16 reads that did not wait
        keeps the writer moving under a flood). While calls run on worker threads, it waits
        before reading: the controller waits for their Results."""
        reader = self._fd_reader
        if reader is None:
            return await self.stream.receive_some(want)
        return await reader.read(want, wait_first=self._threads_running > 0)

    def _quiet(self) -> bool:
        """Nothing but the controller or a worker thread's wake-up can give this session work
        (the reader may wait in poll(2)): nothing queued for the writer, no call waiting for
        a thread."""
        return not self._queued and not self._backlog

    def _no_threads_running(self) -> bool:
        """The reader may busy-poll: no worker thread runs a call (and needs the GIL). A
        thread that has just handed its call back is already in trio's idle pool, so the
        next call goes to it even while it waits for the GIL to return there."""
        return self._threads_running == 0

    def _nothing_to_send(self) -> bool:
        """No Result or call will be written anymore: no call in flight, no executor →
        controller call waiting, nothing queued for the writer."""
        return not self._inflight and not self._out_pending and not self._queued

    def _maybe_arm_idle_close(self) -> None:
        """Set the current read's deadline: the idle close, or the handshake or idle
        timeout, whichever comes first (``_deadline_reason`` says which, if a timeout)."""
        scope = self._read_scope
        if scope is None:
            return
        if self._messages != self._messages_seen:  # the clock is read here, not per message
            self._messages_seen = self._messages
            self._last_message_at = trio.current_time()
        deadline, reason = math.inf, None
        if self._messages == 0:
            if self.handshake_timeout is not None:
                deadline = self._setup_at + self.handshake_timeout
                reason = (f"no message from the controller within {self.handshake_timeout:g}s "
                          "of Setup: closing")
        elif self.idle_timeout is not None and not self._inflight and not self._out_pending:
            deadline = self._last_message_at + self.idle_timeout
            reason = (f"no message from the controller for {self.idle_timeout:g}s with "
                      "nothing in flight: closing")
        if self.idle_close is not None and self._idle():
            close_at = trio.current_time() + self.idle_close
            if close_at <= deadline:
                deadline, reason = close_at, None
        self._deadline_reason = reason
        scope.deadline = deadline

    async def _reader(self) -> SessionEnd:
        while True:
            try:
                data = await self._read_some()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                return SessionEnd(False, f"read failed: {e}")
            if data is None and self._deadline_reason is not None:
                return SessionEnd(False, self._deadline_reason)
            if not data:
                if self.decoder.at_boundary:
                    return SessionEnd(True, "controller disconnected")
                return SessionEnd(False, "Unexpected end-of-file inside a message")
            self.decoder.feed(data)
            if (reader := self._fd_reader) is not None:
                # A large payload is pending: read the rest straight into its buffer.
                while (view := self.decoder.payload_view()) is not None and len(view) > 1 << 16:
                    try:
                        n = await reader.readinto(view)
                    except OSError as e:
                        return SessionEnd(False, f"read failed: {e}")
                    if n == 0:
                        return SessionEnd(False, "Unexpected end-of-file inside a message")
                    self.decoder.filled(n)
            while True:
                self._batch = []
                try:
                    end = self._process_messages()
                finally:
                    self._flush_batch()
                    self._batch = None
                if end is not None:
                    return end
                if not self._backed_up():
                    break
                # The controller is not taking its Results: take no more calls until it has.
                if not await self._wait_for_room():
                    return SessionEnd(False, f"the controller took no Result for "
                                             f"{self.idle_timeout:g}s: closing")

    def _process_messages(self) -> SessionEnd | None:
        """Handle every complete buffered message; a :class:`SessionEnd` ends the session."""
        while True:
            try:
                msg = self.decoder.next_message()
            except FramingError as e:
                return SessionEnd(False, str(e))
            if msg is None:
                return None
            self._messages += 1
            if self._messages == 1 and self._on_first_message is not None:
                self._on_first_message()
            self._close_armed = False
            op = msg.opcode
            if op == Opcode.CALL_WRAPPER:
                self._handle_call(msg)
                if self._backed_up():
                    return None  # the reader waits until the controller takes its Results
            elif op == Opcode.RESULT:
                try:
                    self._handle_result(msg)
                except ProtocolError as e:
                    return SessionEnd(False, str(e))
            elif op == Opcode.HANGUP:
                return SessionEnd(True, _hangup_reason(msg.payload))
            else:
                return SessionEnd(False, "Unexpected Setup message from the controller")

    async def run(self) -> SessionEnd:
        """Send Setup, serve until the controller disconnects; return why the session ended.

        Never raises for peer behaviour: protocol violations end the session with
        ``clean=False`` and a reason.
        """
        global _current
        if _current is None:
            lib.orc_reset_stdio()  # once per process, before the JIT'd program's first I/O
        self._token = trio.lowlevel.current_trio_token()
        _current = self
        t0 = time.monotonic()
        end: SessionEnd
        wake_fd = self._wake_fd
        assert wake_fd is not None, "a Session runs once"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer)
            nursery.start_soon(self._reaper, wake_fd)
            payload = setup_info(self.ctx).encode()
            self._send_nowait(Opcode.SETUP, 0, 0, payload)
            self._setup_at = trio.current_time()
            # A worker thread for the session's first blocking call (run_as_main, say), started
            # while the controller reads Setup: trio's thread cache keeps it (idle up to 10 s).
            # Created on that call instead, it delays it ~0.3 ms.
            trio.lowlevel.start_thread_soon(_warm_worker_thread, _ignore_outcome)
            end = await self._reader()
            # The program's buffered output goes out before anything the controller does
            # next (its last words follow the Hangup or EOF), as the stock executor's exit.
            lib.orc_flush_stdio()
            # Calls still waiting for a thread never run: only started ones are in flight.
            self._inflight -= len(self._backlog)
            self._backlog.clear()
            self._reap()
            if self._nothing_to_send() and isinstance(self.stream, trio.StapledStream):
                # Nothing left to send: close our pipe to the controller now, so its reader
                # sees EOF (and llvm-jitlink exits) without waiting for the teardown below.
                self._close_output()
                await self.stream.send_stream.aclose()
            self.decoder.abandon()
            self._fail_outgoing()
            await self._drain()
            end.calls_in_flight = self._inflight
            if self._inflight:
                # Threads still run JIT'd code; they cannot be interrupted. Abandon them.
                log.debug("%d call(s) still running at session end", self._inflight)
            nursery.cancel_scope.cancel()
        self._send_ch.close()
        self._close_wake_fd()
        await self._close_stream()
        log.debug("session ended after %.3fs: %s", time.monotonic() - t0, end.reason)
        return end

    def _close_wake_fd(self) -> None:
        if self._fd_reader is not None:
            self._fd_reader.forget()
        with self._out_lock:
            fd, self._wake_fd = self._wake_fd, None
        if fd is not None:
            os.close(fd)

    async def _drain(self) -> None:
        """Give calls still running (JIT'd code just woken by :meth:`_fail_outgoing`) up to
        :attr:`drain_timeout` seconds to return, as the stock executor waits for its
        dispatcher's outstanding tasks before shutting its services down."""
        if not self._inflight:
            return
        self._drained = trio.Event()
        with trio.move_on_after(self.drain_timeout):
            await self._drained.wait()

    async def _close_stream(self) -> None:
        self._close_output()
        stream: Any = self.stream
        sock = getattr(stream, "socket", None)
        if sock is not None:
            try:
                sock.shutdown(trio.socket.SHUT_RDWR)
            except OSError:
                pass
        with trio.move_on_after(1):
            try:
                await self.stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass

    def finish(self, end: SessionEnd) -> None:
        """Release services (memory, running outstanding dealloc actions) unless calls still
        run native code in memory that would be unmapped under them."""
        if end.calls_in_flight:
            return
        self.ctx.registry.shutdown()


def _warm_worker_thread() -> None:
    """The first worker thread's start, off the first blocking call's path: libgcc_s's
    EH-frame entry points looked up (the first initialize with EH frames), this thread's
    malloc arena made (the JIT'd program's first allocation in the thread), and the
    executor's signal mask taken (it inherited the event loop's)."""
    lib.orc_executor_thread()
    lib.orc_eh_frame_preload()
    ffi.new("char[]", 4096)


def _frame(opcode: int, seq: int, tag: int, payload: bytes | FramedPayload
           ) -> bytes | memoryview:
    """The whole frame of ``payload``: built in place for a :class:`FramedPayload` (no copy
    of a large Result), else header and payload joined."""
    if isinstance(payload, FramedPayload):
        return payload.frame(opcode, seq, tag)
    return encode_header(opcode, seq, tag, len(payload)) + payload


def _is_fifo(fd: int) -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        return False


def _ignore_outcome(_outcome: object) -> None:
    pass


def _hangup_reason(payload: bytes | bytearray | memoryview) -> str:
    from ..sps import Error, ErrorValue, SPSDecodeError

    if not payload:
        return "controller hung up"
    try:
        err = Error.decode(payload)
    except SPSDecodeError:
        return "controller hung up (undecodable reason)"
    if isinstance(err, ErrorValue):
        return f"controller hung up: {err.message}"
    return "controller hung up"


# ---- the native dispatch function's Python side ------------------------------------------------

_current: Session | None = None


@ffi.def_extern(onerror=lambda *exc: None)  # type: ignore[untyped-decorator]
def orc_py_dispatch(ctx: Any, tag: int, data: Any, size: int, out: Any) -> int:
    """Called by ``orc_dispatch_fn`` on the JIT'd thread; fills ``out`` (a
    ``CWrapperFunctionResult``) with a malloc'd copy of the controller's result."""
    session = _current
    if session is None:
        return 0
    args = bytes(ffi.buffer(data, size)) if size else b""
    try:
        result = session.call_controller(tag, args)
    except JITDispatchError as e:
        # Out-of-band error: Size 0 and a malloc'd NUL-terminated message.
        msg = str(e).encode("utf-8", "replace") + b"\0"
        p = lib.malloc(len(msg))
        if p == ffi.NULL:
            return 0
        ffi.memmove(p, msg, len(msg))
        out.Size = 0
        out.Data.ValuePtr = ffi.cast("char *", p)
        return 1
    n = len(result)
    out.Size = n
    if n <= 8:
        if n:
            ffi.memmove(out.Data.Value, result, n)
        else:
            out.Data.ValuePtr = ffi.NULL
    else:
        p = lib.malloc(n)
        if p == ffi.NULL:
            out.Size = 0
            return 0
        ffi.memmove(p, result, n)
        out.Data.ValuePtr = ffi.cast("char *", p)
    return 1
