"""A small SimpleRemoteEPC *controller*: launch or connect to any executor (orc-executor,
``llvm-jitlink-executor``, ``lli-child-target``), read its Setup, and call wrapper functions
by bootstrap-symbol name with SPS signatures.

Used by the protocol tests and benchmarks; mirrors the controller half of
``SimpleRemoteEPC`` (``llvm/lib/ExecutionEngine/Orc/SimpleRemoteEPC.cpp``)::

    from orc_executor.protocol.names import RESERVE, SimpleExecutorMemoryManager as MM

    async with await Controller.launch(["orc-executor"]) as c:
        base = await c.call(MM.reserve, RESERVE, c.symbol(MM.instance), 4096)

Wrapper names and signatures come from :mod:`orc_executor.protocol.names`; the Setup message
from :mod:`orc_executor.protocol.setup` (:func:`decode_setup` and :class:`SetupInfo` are
re-exported here).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any

import trio

from .errors import ControllerError, SPSDecodeError
from .io.streams import FdReader, raw_fds
from .protocol.framing import FrameDecoder, Message, Opcode, encode_header
from .protocol.setup import SetupInfo as SetupInfo  # re-exported
from .protocol.setup import decode_setup as decode_setup  # re-exported
from .protocol.sps import WrapperSignature

#: Handler for executor→controller calls: (tag, argument bytes) → result bytes.
Handler = Callable[[int, bytes], Awaitable[bytes]]

#: While calls are outstanding and no other task can run, the reader waits for their Results
#: in poll(2) for up to this long (milliseconds) before handing the wait to trio.
RESULT_POLL_MS = 1

#: Calls answered in the caller's own task return without yielding to trio's scheduler;
#: every this many of them, they checkpoint.
CHECKPOINT_EVERY = 16


class Controller:
    """One connection to an executor. Create with :meth:`launch` or :meth:`over`.

    Calls may be issued concurrently from many tasks; Results are matched by sequence number.
    ``handlers`` maps dispatch tags to coroutines answering executor→controller calls.

    Over pipes (:meth:`launch`) frames of under 64 KiB are written with one non-blocking
    ``write`` and Results are read with ``read`` before any wait for readiness; while calls are
    outstanding and no other task is runnable (nor a deadline due within 2 ms), the reader
    waits for them in ``poll(2)`` for up to :data:`RESULT_POLL_MS` instead of a trip through
    trio's scheduler. Other I/O of the same trio run may then wait up to that long. The only
    call outstanding in that state reads its Result in its own task, without the switch to
    the reader task and back.
    """

    def __init__(self, stream: trio.abc.Stream, *, max_message_size: int = 1 << 31) -> None:
        self.stream = stream
        self.decoder = FrameDecoder(max_message_size)
        self.setup: SetupInfo | None = None
        self.handlers: dict[int, Handler] = {}
        self.process: trio.Process | None = None
        self._setup_event = trio.Event()
        self._pending: dict[int, tuple[trio.Event, list[bytes]]] = {}
        self._next_seq = 0
        self._nursery: trio.Nursery | None = None
        self._nursery_cm: Any = None
        self._send_lock = trio.Lock()
        self._closed_reason: str | None = None
        self.eof = trio.Event()
        self._reader_scope: trio.CancelScope | None = None
        self._calls_without_yield = 0
        in_fd, out_fd = raw_fds(stream)
        #: The pipe fds for the fast paths (``None`` for sockets and other streams).
        self._out_fd = out_fd if in_fd != out_fd else None
        #: Reads the pipe; waits for Results in poll(2) while nothing else can run.
        self._fd_reader: FdReader | None = None
        if in_fd is not None and in_fd != out_fd:
            self._fd_reader = FdReader(
                in_fd, quiet=self._awaiting_only_results, poll_ms=RESULT_POLL_MS,
                checkpoint_every=1,
            )

    # ---- construction --------------------------------------------------------------------------

    @classmethod
    async def launch(
        cls,
        argv: Sequence[str],
        *,
        style: str = "filedescs",
        env: dict[str, str] | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
    ) -> Controller:
        """Start an executor as LLVM's tools do: ``argv + ["filedescs=IN,OUT"]`` (``style=
        "filedescs"``) or ``argv + [IN, OUT]`` (``style="lli"``), over two pipes."""
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        if style == "filedescs":
            args = [*argv, f"filedescs={to_r},{from_w}"]
        else:
            args = [*argv, str(to_r), str(from_w)]
        proc = await trio.lowlevel.open_process(
            args, pass_fds=(to_r, from_w), env=env, stdout=stdout, stderr=stderr
        )
        os.close(to_r)
        os.close(from_w)
        stream = trio.StapledStream(trio.lowlevel.FdStream(to_w), trio.lowlevel.FdStream(from_r))
        c = cls(stream)
        c.process = proc
        return c

    @classmethod
    def over(cls, stream: trio.abc.Stream) -> Controller:
        """A controller speaking over an existing stream (socket, socketpair, ...)."""
        return cls(stream)

    async def __aenter__(self) -> Controller:
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        self._nursery.start_soon(self._reader)
        await self.wait_setup()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        await self.close()
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()
        return bool(await self._nursery_cm.__aexit__(exc_type, exc, tb))

    async def wait_setup(self) -> SetupInfo:
        """The executor's Setup message, decoded (waits for it). Raises
        :class:`ControllerError` if the session ended without one."""
        await self._setup_event.wait()
        if self.setup is None:
            raise ControllerError(self._closed_reason or "no Setup message")
        return self.setup

    # ---- messages --------------------------------------------------------------------------------

    async def send_raw(self, data: bytes) -> None:
        """Write raw bytes (tests use this to send malformed frames)."""
        async with self._send_lock:
            await self.stream.send_all(data)

    async def send(self, opcode: int, seq: int, tag: int, payload: bytes = b"") -> None:
        """Send one frame. Raises :class:`trio.BrokenResourceError` if the executor's end is
        gone, :class:`trio.ClosedResourceError` after :meth:`close`."""
        header = encode_header(opcode, seq, tag, len(payload))
        if self._out_fd is not None and len(payload) < 1 << 16 and not self._send_lock.locked():
            # Fast path: nothing else is being sent, so one direct write keeps frames whole.
            frame = header + payload
            try:
                n = os.write(self._out_fd, frame)
            except BlockingIOError:
                n = 0
            except OSError as e:
                raise trio.BrokenResourceError(f"write to the executor failed: {e}") from e
            if n < len(frame):
                with trio.CancelScope(shield=True):  # never leave half a frame on the pipe
                    await self.send_raw(frame[n:])
            return
        if len(payload) < 1 << 16:
            await self.send_raw(header + payload)
            return
        async with self._send_lock:  # large payload: no concatenated copy of it
            await self.stream.send_all(header)
            await self.stream.send_all(payload)

    async def _reader(self) -> None:
        try:
            with trio.CancelScope() as self._reader_scope:
                while True:
                    data = await self._receive(1 << 20)
                    if not data:
                        break
                    self.decoder.feed(data)
                    while (msg := self.decoder.next_message()) is not None:
                        self._on_message(msg)
        except Exception as e:  # transport failure or framing error: end the session
            self._closed_reason = f"{type(e).__name__}: {e}"
        finally:
            self._closed_reason = self._closed_reason or "executor disconnected"
            self._setup_event.set()
            for event, _ in self._pending.values():
                event.set()
            self.eof.set()

    async def _receive(self, want: int) -> bytes | bytearray:
        """Up to ``want`` bytes from the executor (``b""`` at EOF); see the class docstring.
        Checkpoints before every read, so the tasks the last Results woke send their next
        calls before the reader decides to wait."""
        reader = self._fd_reader
        if reader is None:
            return await self.stream.receive_some(want)
        return await reader.read(want)

    def _awaiting_only_results(self) -> bool:
        return bool(self._pending) and _nothing_else_runnable()

    def _read_own_result(self, event: trio.Event) -> None:
        """Read and handle what the executor sends until ``event`` (the caller's Result) is
        set, in this task: each read waits in poll(2) for at most :data:`RESULT_POLL_MS`;
        nothing arriving, EOF (the reader task sees it too) or a read error hands the wait
        back to the reader task. A malformed message or a Hangup ends the session as it
        would in the reader task. The reader task is then parked in a wait for readiness or
        at a checkpoint; every read and decode is synchronous, so bytes stay in order."""
        reader = self._fd_reader
        assert reader is not None
        while not event.is_set():
            try:
                data = reader.read_polled(1 << 20)
            except OSError:
                return
            if not data:
                return  # nothing yet, or EOF (sticky: the reader task sees it too)
            self.decoder.feed(data)
            try:
                while (msg := self.decoder.next_message()) is not None:
                    self._on_message(msg)
            except Exception as e:
                self._fail(e)
                return

    def _fail(self, e: Exception) -> None:
        self._closed_reason = self._closed_reason or f"{type(e).__name__}: {e}"
        if self._reader_scope is not None:
            self._reader_scope.cancel()

    def _on_message(self, msg: Message) -> None:
        if msg.opcode == Opcode.SETUP:
            if msg.seq != 0 or msg.tag != 0:
                raise ControllerError("Setup packet SeqNo or TagAddr not zero")
            self.setup = decode_setup(msg.payload)
            self._setup_event.set()
        elif msg.opcode == Opcode.RESULT:
            entry = self._pending.pop(msg.seq, None)
            if entry is None:
                raise ControllerError(f"No call for sequence number {msg.seq}")
            entry[1].append(bytes(msg.payload))
            entry[0].set()
        elif msg.opcode == Opcode.CALL_WRAPPER:
            assert self._nursery is not None
            self._nursery.start_soon(self._answer, msg)
        elif msg.opcode == Opcode.HANGUP:
            raise ControllerError("executor hung up")

    async def _answer(self, msg: Message) -> None:
        handler = self.handlers.get(msg.tag)
        result = b"" if handler is None else await handler(msg.tag, bytes(msg.payload))
        await self.send(Opcode.RESULT, msg.seq, 0, result)

    # ---- calls ---------------------------------------------------------------------------

    def symbol(self, name: str) -> int:
        """Address of bootstrap symbol ``name``; raises :class:`ControllerError` if absent."""
        if self.setup is None:
            raise ControllerError("no Setup yet")
        try:
            return self.setup.symbols[name]
        except KeyError:
            raise ControllerError(f'Symbol "{name}" not found in bootstrap symbols map') from None

    async def call_raw(self, tag: int, payload: bytes = b"") -> bytes:
        """CallWrapper(tag, payload); wait for and return the Result payload (bytes).

        Raises :class:`ControllerError` if the executor disconnects or the session fails
        first. Over pipes, the only call outstanding while nothing else of the trio run can
        run reads its own Result (see the class docstring) and then returns without yielding
        to the scheduler, except once every :data:`CHECKPOINT_EVERY` such calls; a pending
        cancellation is always honoured before the call is sent.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        seq = self._next_seq
        self._next_seq += 1
        event = trio.Event()
        box: list[bytes] = []
        self._pending[seq] = (event, box)
        await self.send(Opcode.CALL_WRAPPER, seq, tag, payload)
        if self._fd_reader is not None and len(self._pending) == 1 and _nothing_else_runnable():
            self._read_own_result(event)
            if event.is_set():
                self._calls_without_yield += 1
                if self._calls_without_yield >= CHECKPOINT_EVERY:
                    self._calls_without_yield = 0
                    await trio.lowlevel.checkpoint()
                return self._result(box)
        await event.wait()
        return self._result(box)

    def _result(self, box: list[bytes]) -> bytes:
        if not box:
            raise ControllerError(self._closed_reason or "disconnected")
        return box[0]

    async def call(self, fn: str | int, sig: WrapperSignature, *args: Any) -> Any:
        """Call wrapper ``fn`` (bootstrap name or address) with SPS signature ``sig``.

        Returns the decoded result (``ErrorValue`` for in-band failures); raises
        :class:`ControllerError` for an undecodable (e.g. empty out-of-band) result.
        """
        tag = self.symbol(fn) if isinstance(fn, str) else fn
        result = await self.call_raw(tag, sig.encode_args(*args))
        try:
            return sig.decode_result(result)
        except SPSDecodeError as e:
            raise ControllerError(f"Error deserializing return value from blob in call: {e}") from e

    async def close(self) -> None:
        """Close our end (EOF for the executor) and wait for the executor to exit."""
        self._out_fd = None  # the fd numbers may be reused once closed
        if self._fd_reader is not None:
            self._fd_reader.forget()
            self._fd_reader = None
        try:
            await self.stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        if self.process is not None:
            with trio.move_on_after(10) as scope:
                await self.process.wait()
            if scope.cancelled_caught:
                self.process.kill()
                await self.process.wait()

    async def wait_exit(self, timeout: float = 10) -> int | None:
        """Wait up to ``timeout`` seconds for the launched executor to exit; its return code
        (``None`` on timeout, or when the executor was not launched by :meth:`launch`)."""
        if self.process is None:
            return None
        with trio.move_on_after(timeout):
            return await self.process.wait()
        return None


def _nothing_else_runnable() -> bool:
    """No other task of this trio run is runnable and no deadline is due within 2 ms."""
    stats = trio.lowlevel.current_statistics()
    return stats.tasks_runnable == 0 and stats.seconds_to_next_deadline > 0.002
