"""The executor side of one SimpleRemoteEPC session: message routing
(``SimpleRemoteEPCServer::handleMessage``; orc-rt's ``Session``).

One trio task reads frames and routes each message: a CallWrapper is answered inline when
its handler is cheap and cannot block, else run on a worker thread
(:class:`~.dispatch.ThreadDispatcher`); a Result goes to the executor→controller call waiting
for it (:class:`~.jit_dispatch.ControllerCalls`); a Hangup ends the session. Every frame to
the controller goes through the session's :class:`~.writer.FrameWriter`. The session's
lifecycle is :class:`State`.
"""

from __future__ import annotations

import enum
import logging
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from ..errors import FramingError, OutOfBandError, ProtocolError
from ..io.streams import FdReader, enlarge_pipe, raw_fds
from ..native.api import lib
from ..protocol.finalize_sink import StreamedArgs
from ..protocol.framing import (
    DEFAULT_MAX_MESSAGE_SIZE,
    FrameDecoder,
    FramedPayload,
    Message,
    Opcode,
    PayloadSink,
)
from .bootstrap import DISPATCH_CTX, setup_info
from .context import ExecutorContext
from .dispatch import BlockingCall, ThreadDispatcher, ignore_outcome, warm_worker_thread
from .jit_dispatch import DISPATCH_DISCONNECTED, DISPATCH_UNAVAILABLE, ControllerCalls
from .registry import WrapperSpec
from .writer import SEND_HIGH_WATER, FrameWriter

__all__ = [
    "BUSY_POLL",
    "DISPATCH_DISCONNECTED",
    "DISPATCH_UNAVAILABLE",
    "DRAIN_TIMEOUT",
    "IDLE_POLL_MS",
    "MAX_BUSY_POLL",
    "SEND_HIGH_WATER",
    "Session",
    "SessionEnd",
    "State",
    "default_busy_poll",
]

log = logging.getLogger(__name__)

#: Payloads of at least this many bytes (64 KiB) are offered to a wrapper function's
#: streaming sink (``Session._route``): an initialize's segment content is read from the
#: controller straight into the slab, not into a payload buffer first (fewer page faults
#: and copies for every object larger than this).
STREAM_FROM = 1 << 16

#: Names whose completion may end a TCP session (see ``idle_close``).
_RELEASE_WORDS = ("release", "deallocate", "deinitialize")

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


#: Seconds to let calls still running at session end finish (e.g. JIT'd code that was woken
#: with a ``disconnecting`` error) before abandoning them and exiting.
DRAIN_TIMEOUT = 2.0

#: C stdio is reset once per process, before the first session's JIT'd program does I/O
#: (:func:`reset_stdio_at_next_session` asks for it again).
_stdio_reset_pending = True


def reset_stdio_at_next_session() -> None:
    """The next session in this process resets C stdio first, as the first one does."""
    global _stdio_reset_pending
    _stdio_reset_pending = True


def stdio_reset_pending() -> bool:
    """The next session in this process resets C stdio first."""
    return _stdio_reset_pending


@dataclass
class SessionEnd:
    """Why a session ended: ``clean`` (EOF at a message boundary or Hangup) or an error."""

    clean: bool
    reason: str
    calls_in_flight: int = 0

    @property
    def exit_status(self) -> int:
        return 0 if self.clean else 1


class State(enum.Enum):
    """A :class:`Session`'s lifecycle (LLVM: ``SimpleRemoteEPCServer``'s ``RunState``:
    ``ServerRunning``, ``ServerShuttingDown``, ``ServerShutDown``). Transitions, all in
    :meth:`Session._enter` (:data:`TRANSITIONS`)::

        NEW → SERVING ⇄ RELEASED
              SERVING | RELEASED → ENDING → ENDED
        NEW → ENDED (cancelled before Setup)
    """

    #: Constructed; :meth:`Session.run` has not sent Setup yet.
    NEW = "new"
    #: Setup sent: reading messages, serving calls, accepting executor→controller calls.
    SERVING = "serving"
    #: Serving, and the last call completed released memory with no message since: with
    #: ``idle_close``, the session closes once nothing is in flight or mapped.
    RELEASED = "released"
    #: The reader stopped: no new calls; running ones drain, executor→controller calls fail
    #: (``disconnecting``).
    ENDING = "ending"
    #: The stream is closed.
    ENDED = "ended"


#: Allowed transitions of :class:`State`.
TRANSITIONS: dict[State, tuple[State, ...]] = {
    State.NEW: (State.SERVING, State.ENDED),
    State.SERVING: (State.RELEASED, State.ENDING),
    State.RELEASED: (State.SERVING, State.ENDING),
    State.ENDING: (State.ENDED,),
    State.ENDED: (),
}

_SERVING = State.SERVING
_RELEASED = State.RELEASED


class Session:
    """Serve one controller over ``stream`` (a :class:`trio.abc.Stream`).

    ``max_message_size`` bounds accepted frames (bytes); ``max_concurrent_calls`` bounds the
    worker threads running calls at once (later calls wait, in arrival order); ``idle_close``
    (seconds, TCP only) closes the connection when the controller has released everything
    and then stays silent that long — the only way to end a session with LLVM 14–22
    controllers in TCP mode (docs/protocol.md §3.4). ``busy_poll``: seconds the reader polls
    without sleeping while waiting for the next call (``None``: :func:`default_busy_poll`,
    ``0``: never).

    Time a silent peer can hold the session (sockets; ``None`` disables each):
    ``handshake_timeout`` seconds after Setup for the controller's first complete message;
    ``idle_timeout`` seconds without a complete message while no call runs in either
    direction (also the longest wait for a controller that stopped reading its Results).
    Either ends the session unclean, with the reason. ``on_first_message`` is called once,
    on the trio thread, when the first complete message arrived.

    Parts: :attr:`writer` (:class:`~.writer.FrameWriter`), :attr:`dispatcher`
    (:class:`~.dispatch.ThreadDispatcher`), :attr:`controller_calls`
    (:class:`~.jit_dispatch.ControllerCalls`); :attr:`state` (:class:`State`).
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
        self.state = State.NEW
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
        self.ctx = ctx
        self.decoder = FrameDecoder(max_message_size, self._route, STREAM_FROM)
        self.idle_close = idle_close
        self.drain_timeout = drain_timeout
        self._read_scope: trio.CancelScope | None = None
        self.calls_served = 0
        self._debug = log.isEnabledFor(logging.DEBUG)
        in_fd, out_fd = raw_fds(stream)
        self.writer = writer = FrameWriter(stream, out_fd, idle_timeout)
        self.dispatcher = dispatcher = ThreadDispatcher(
            max_concurrent_calls, self._call_sync, writer, self._after_call
        )
        self.controller_calls = ControllerCalls(self._send_from_thread)
        #: Executor→controller call (any thread but the trio thread): see
        #: :meth:`~.jit_dispatch.ControllerCalls.call`.
        self.call_controller = self.controller_calls.call
        # Bound once: the per-message paths call these.
        self._send_nowait = writer.send_nowait
        self._submit = dispatcher.submit
        if in_fd is not None and in_fd != out_fd:
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
                wake_fd=dispatcher.wake_fd,
                on_wake=dispatcher.reap,
                busy_poll=default_busy_poll() if busy_poll is None else busy_poll,
                may_spin=dispatcher.no_threads_running,
            )
        sock = getattr(stream, "socket", None)
        self._quickack: Any = (
            sock if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6) else None
        )

    def _enter(self, state: State) -> None:
        """The one place :attr:`state` changes, with what each transition does: SERVING
        from NEW opens the dispatch context (advertised in Setup), ENDING fails the
        executor→controller calls, ENDED closes the worker threads' wake-up."""
        old = self.state
        if state not in TRANSITIONS[old]:
            raise AssertionError(f"session state {old.name} → {state.name}")
        self.state = state
        if state is State.SERVING and old is State.NEW:
            self.ctx.registry.add_symbol(DISPATCH_CTX, self.controller_calls.open())
        elif state is State.ENDING:
            self.controller_calls.close()
        elif state is State.ENDED:
            if self._fd_reader is not None:
                self._fd_reader.forget()
            self.dispatcher.close_wake_fd()

    # ---- sending ---------------------------------------------------------------------------------

    def _send_from_thread(self, frame: bytes) -> None:
        """Any thread but the trio thread: write ``frame`` now if the pipe takes it, else
        have the trio thread send it."""
        if not self.writer.write_from_thread(frame):
            self.dispatcher.post(frame)

    # ---- serving calls ---------------------------------------------------------------------------

    def _route(self, opcode: int, tag: int, length: int) -> PayloadSink | None:
        """A streaming sink for a large call (the decoder asks only for payloads of
        :data:`STREAM_FROM` bytes or more) to a wrapper function that has one (initialize:
        segment content is read straight into the slab), else ``None``."""
        if opcode != Opcode.CALL_WRAPPER:
            return None
        spec = self.ctx.registry.lookup(tag)
        if spec is None or spec.stream is None:
            return None
        return spec.stream(length)

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
            if self.state is _SERVING:
                self._enter(_RELEASED)
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
        # In flight until the trio thread has finished it (ThreadDispatcher.reap); the
        # session's end waits for it (ThreadDispatcher.drain).
        self._submit(BlockingCall(msg.seq, msg.tag, msg.payload, name, spec, streamed))

    def _handle_result(self, msg: Message) -> None:
        if msg.tag != 0:
            log.debug("Result seq %d carries tag %#x", msg.seq, msg.tag)
        self.controller_calls.handle_result(msg.seq, msg.payload)

    # ---- main loop -------------------------------------------------------------------------------

    def _idle(self) -> bool:
        return (
            self.state is _RELEASED
            and self.dispatcher.inflight == 0
            and not self.controller_calls.pending
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
        return await reader.read(want, wait_first=self.dispatcher.threads_running > 0)

    def _quiet(self) -> bool:
        """Nothing but the controller or a worker thread's wake-up can give this session work
        (the reader may wait in poll(2)): nothing queued for the writer, no call waiting for
        a thread."""
        return not self.writer.queued and not self.dispatcher.backlog

    def _nothing_to_send(self) -> bool:
        """No Result or call will be written anymore: no call in flight, no executor →
        controller call waiting, nothing queued for the writer."""
        return (not self.dispatcher.inflight and not self.controller_calls.pending
                and not self.writer.queued)

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
        elif (self.idle_timeout is not None and not self.dispatcher.inflight
              and not self.controller_calls.pending):
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
        writer = self.writer
        decoder = self.decoder
        while True:
            reader = self._fd_reader
            view = decoder.payload_view() if reader is not None else None
            if reader is not None and view is not None and len(view) > 1 << 16:
                # A large payload is pending (its header was parsed): read the rest straight
                # into its buffer (for a streamed initialize, the slab), not through a copy.
                try:
                    n = await reader.readinto(view)
                except (trio.ClosedResourceError, OSError) as e:
                    return SessionEnd(False, f"read failed: {e}")
                if n == 0:
                    return SessionEnd(False, "Unexpected end-of-file inside a message")
                decoder.filled(n)
            else:
                try:
                    data = await self._read_some()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                    return SessionEnd(False, f"read failed: {e}")
                if data is None and self._deadline_reason is not None:
                    return SessionEnd(False, self._deadline_reason)
                if not data:
                    if decoder.at_boundary:
                        return SessionEnd(True, "controller disconnected")
                    return SessionEnd(False, "Unexpected end-of-file inside a message")
                decoder.feed(data)
            while True:
                writer.begin_batch()
                try:
                    end = self._process_messages()
                finally:
                    writer.end_batch()
                if end is not None:
                    return end
                if not writer.backed_up():
                    break
                # The controller is not taking its Results: take no more calls until it has.
                if not await writer.wait_for_room():
                    return SessionEnd(False, f"the controller took no Result for "
                                             f"{self.idle_timeout:g}s: closing")

    def _process_messages(self) -> SessionEnd | None:
        """Handle every complete buffered message (``SimpleRemoteEPCServer::handleMessage``);
        a :class:`SessionEnd` ends the session."""
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
            if self.state is _RELEASED:
                self._enter(_SERVING)
            op = msg.opcode
            if op == Opcode.CALL_WRAPPER:
                self._handle_call(msg)
                if self.writer.backed_up():
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
        ``clean=False`` and a reason. Runs once.
        """
        global _stdio_reset_pending
        if _stdio_reset_pending:
            lib.orc_reset_stdio()  # once per process, before the JIT'd program's first I/O
            _stdio_reset_pending = False
        # However the process ends from here (the program may call exit() itself), its fds
        # close right after the program's exit handlers (see exit_process).
        if lib.orc_release_fds_at_exit() != 0:
            log.debug("no exit handler to release the fds early: they close at the very end")
        t0 = time.monotonic()
        end: SessionEnd
        dispatcher, writer = self.dispatcher, self.writer
        wake_fd = dispatcher.wake_fd
        assert wake_fd is not None, "a Session runs once"
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer.run)
                nursery.start_soon(dispatcher.reaper, wake_fd)
                self._enter(State.SERVING)
                payload = setup_info(self.ctx).encode()
                self._send_nowait(Opcode.SETUP, 0, 0, payload)
                self._setup_at = trio.current_time()
                # A worker thread for the session's first blocking call (run_as_main, say), started
                # while the controller reads Setup: trio's thread cache keeps it.
                trio.lowlevel.start_thread_soon(warm_worker_thread, ignore_outcome)
                end = await self._reader()
                # The program's buffered output goes out before anything the controller does
                # next (its last words follow the Hangup or EOF), as the stock executor's exit.
                lib.orc_flush_stdio()
                dispatcher.drop_waiting()
                dispatcher.reap()
                if self._nothing_to_send() and isinstance(self.stream, trio.StapledStream):
                    # Nothing left to send: close our pipe to the controller now, so its reader
                    # sees EOF (and llvm-jitlink exits) without waiting for the teardown below.
                    writer.close()
                    await self.stream.send_stream.aclose()
                self.decoder.abandon()
                self._enter(State.ENDING)
                # Calls still running (JIT'd code just woken with ``disconnecting``) get
                # drain_timeout seconds to return, as the stock executor waits for its
                # dispatcher's outstanding tasks before shutting its services down.
                await dispatcher.drain(self.drain_timeout)
                end.calls_in_flight = dispatcher.inflight
                if dispatcher.inflight:
                    # Threads still run JIT'd code; they cannot be interrupted. Abandon them.
                    log.debug("%d call(s) still running at session end", dispatcher.inflight)
                nursery.cancel_scope.cancel()
            writer.close_queue()
        finally:
            # Also when cancelled from outside: no dispatch context or eventfd left behind.
            if self.state is _SERVING or self.state is _RELEASED:
                self._enter(State.ENDING)
            self._enter(State.ENDED)
        await self._close_stream()
        log.debug("session ended after %.3fs: %s", time.monotonic() - t0, end.reason)
        return end

    async def _close_stream(self) -> None:
        self.writer.close()
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

    def finish_runs_no_program_code(self, end: SessionEnd) -> bool:
        """:meth:`finish` runs no JIT'd code (no initialized region is left, so no dealloc
        action runs; or it does nothing): it cannot block, and may run on the event loop."""
        return bool(end.calls_in_flight) or not self.ctx.memmap.has_regions()


def _hangup_reason(payload: bytes | bytearray | memoryview) -> str:
    from ..errors import SPSDecodeError
    from ..protocol.sps import Error, ErrorValue

    if not payload:
        return "controller hung up"
    try:
        err = Error.decode(payload)
    except SPSDecodeError:
        return "controller hung up (undecodable reason)"
    if isinstance(err, ErrorValue):
        return f"controller hung up: {err.message}"
    return "controller hung up"


