"""The session's frame writer: every frame to the controller goes through one
:class:`FrameWriter`.

A frame is written whole (header and payload in one write): directly, with a non-blocking
write, while nothing is queued; else by the writer task (:meth:`FrameWriter.run`), which
coalesces frames ready together. On a pipe, a worker thread writes its own small frame
(:meth:`FrameWriter.write_from_thread`) when the pipe takes it whole.

On a socket every write is a ``send(MSG_NOSIGNAL)``: a controller that vanished makes the
write fail with ``EPIPE`` (the output fails, the session ends as on a hangup) instead of
raising SIGPIPE, whose disposition stays the JIT'd program's (``SIG_DFL``, as for
``llvm-jitlink-executor``). A pipe cannot take that flag: a write to a pipe whose reader is
gone raises SIGPIPE as it does in the reference (its default action ends the process).
"""

from __future__ import annotations

import enum
import logging
import math
import os
import select
import socket
import stat
import threading

import trio

from ..protocol.framing import FramedPayload, Opcode, encode_header

log = logging.getLogger(__name__)

#: Bytes of Results queued for a controller that does not read them, above which the session
#: stops reading (and so running) further calls until the controller has taken them: a
#: controller that stops reading blocks itself instead of growing our memory.
SEND_HIGH_WATER = 16 << 20

#: Frames queued together up to this many bytes are joined into one write; larger ones are
#: written as they are (a large Result is never copied again).
JOIN_MAX = 1 << 16


class Output(enum.Enum):
    """The state of the output to the controller. Transitions (:meth:`FrameWriter._enter`):
    ``OPEN → FAILED`` (a write failed), ``OPEN | FAILED → CLOSED`` (:meth:`FrameWriter.close`)."""

    #: Frames are written (directly, or queued for the writer task).
    OPEN = "open"
    #: A write failed (the controller went away): frames are dropped.
    FAILED = "failed"
    #: The fd is about to be closed (its number may be reused): nothing is written or queued.
    CLOSED = "closed"


_OUTPUT_TRANSITIONS = {
    Output.OPEN: (Output.FAILED, Output.CLOSED),
    Output.FAILED: (Output.CLOSED,),
    Output.CLOSED: (),
}

_OPEN = Output.OPEN


class FrameWriter:
    """Writes frames to ``stream`` (a :class:`trio.abc.Stream`) whose output fd is ``out_fd``
    (``None``: only through the stream). ``idle_timeout`` (seconds, ``None``: none) bounds
    :meth:`wait_for_room`.

    :meth:`send_frame` and :meth:`send_nowait` are for the trio thread;
    :meth:`write_from_thread` for worker threads.
    """

    def __init__(self, stream: trio.abc.Stream, out_fd: int | None,
                 idle_timeout: float | None) -> None:
        self.stream = stream
        self.idle_timeout = idle_timeout
        self.state = Output.OPEN
        self._fd = out_fd
        #: A socket's own handle (a duplicate of ``out_fd``, closed by :meth:`close`) for
        #: ``send(MSG_NOSIGNAL)``; ``None`` on a pipe.
        mode = _mode_of(out_fd)
        self._sock = (_socket_of(out_fd) if out_fd is not None and stat.S_ISSOCK(mode)
                      else None)
        #: Worker threads may write frames of up to PIPE_BUF bytes themselves: on a pipe such
        #: a non-blocking write is atomic (all of it, or EAGAIN), never partial.
        self._thread_writes = stat.S_ISFIFO(mode)
        #: Held for every direct write to the fd (trio thread or worker thread) and while
        #: ``queued`` goes up after a partial one, so frames never interleave.
        self._lock = threading.Lock()
        #: Frames and bytes queued for the writer task (Results a slow controller has not
        #: taken yet), bytes collected in the current batch; ``_room`` is set when the queued
        #: bytes fell below the high-water mark.
        self.queued = 0
        self._queued_bytes = 0
        self._batch: list[bytes | memoryview] | None = None
        self._batch_bytes = 0
        self._room: trio.Event | None = None
        # Unbounded in frames; the bytes are bounded by the reader, which stops taking calls
        # above SEND_HIGH_WATER (backed_up).
        self._send_ch, self._recv_ch = trio.open_memory_channel[bytes | memoryview](math.inf)

    @property
    def fd(self) -> int | None:
        """The output fd direct writes go to (``None`` once closed)."""
        return self._fd

    def _enter(self, state: Output) -> None:
        """The one place the output state changes; call with ``_lock`` held."""
        if state not in _OUTPUT_TRANSITIONS[self.state]:
            return  # FAILED after CLOSED, say: the first end stands
        self.state = state
        if state is Output.CLOSED:
            self._fd = None

    # ---- the trio thread -------------------------------------------------------------------------

    def begin_batch(self) -> None:
        """Collect small frames from :meth:`send_nowait` until :meth:`end_batch`."""
        self._batch = []

    def end_batch(self) -> None:
        """Write the collected frames in one write; stop collecting."""
        self.flush_batch()
        self._batch = None

    def send_nowait(self, opcode: Opcode, seq: int, tag: int,
                    payload: bytes | FramedPayload) -> None:
        """Send one frame: into the current batch if one is open and the frame is small, else
        after the batch."""
        frame = build_frame(opcode, seq, tag, payload)
        if self._batch is not None and len(frame) <= JOIN_MAX:
            self._batch.append(frame)  # flushed in one write after the current read chunk
            self._batch_bytes += len(frame)
            return
        self.flush_batch()
        self.send_frame(frame)

    def flush_batch(self) -> None:
        batch = self._batch
        if batch:
            self._batch = []
            self._batch_bytes = 0
            self.send_frame(batch[0] if len(batch) == 1 else b"".join(batch))

    def send_frame(self, frame: bytes | memoryview) -> None:
        """Write ``frame`` now if nothing is queued and the fd takes it, else queue (the rest
        of) it for the writer task; dropped once the output failed or closed."""
        if self.queued == 0 and self.state is _OPEN and self._fd is not None:
            # Fast path: the writer is idle, so a direct non-blocking write keeps order and
            # saves a task switch per Result.
            with self._lock:
                try:
                    sock = self._sock
                    n = (sock.send(frame, _NOSIGNAL) if sock is not None
                         else os.write(self._fd, frame))
                except BlockingIOError:
                    n = 0
                except OSError as e:
                    self._on_send_failed(e)
                    return
                if n < len(frame):
                    # Under the lock: worker threads see queued. A view, not a copy.
                    self._enqueue(memoryview(frame)[n:])
                return
        if self.state is not Output.CLOSED:
            self._enqueue(frame)

    def _enqueue(self, frame: bytes | memoryview) -> None:
        try:
            self._send_ch.send_nowait(frame)
            self.queued += 1
            self._queued_bytes += len(frame)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def backed_up(self) -> bool:
        """More Result bytes wait for the controller than :data:`SEND_HIGH_WATER` (never
        once sending failed: the writer drops them)."""
        return (self._queued_bytes + self._batch_bytes > SEND_HIGH_WATER
                and self.state is not Output.FAILED)

    async def wait_for_room(self) -> bool:
        """Until the queued Results fell below the high-water mark; ``False`` when the
        controller took none of them for ``idle_timeout`` seconds."""
        self._room = trio.Event()
        with trio.move_on_after(self.idle_timeout or math.inf):
            while self._queued_bytes > SEND_HIGH_WATER and self.state is not Output.FAILED:
                self._room = trio.Event()
                await self._room.wait()
            return True
        return False

    def close(self) -> None:
        """No more direct writes (the fd is about to be closed, and its number may be
        reused)."""
        with self._lock:
            self._enter(Output.CLOSED)
            if self._sock is not None:
                self._sock.close()  # our duplicate only; the stream's fd is the caller's
                self._sock = None

    def close_queue(self) -> None:
        """End the writer task's queue (frames still queued are not written)."""
        self._send_ch.close()

    async def run(self) -> None:
        """The writer task: write queued frames, small ones joined, until :meth:`close_queue`."""
        async with self._recv_ch:
            async for frame in self._recv_ch:
                frames = [frame]
                while True:
                    try:
                        frames.append(self._recv_ch.receive_nowait())
                    except trio.WouldBlock:
                        break
                size = sum(len(f) for f in frames)
                if self.state is not Output.FAILED:
                    # Small frames in one write; a large one alone, as it is (no copy).
                    chunks = [b"".join(frames)] if size <= JOIN_MAX else frames
                    try:
                        for data in chunks:
                            await self._send_all(data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                        with self._lock:
                            self._on_send_failed(e)
                self.queued -= len(frames)
                self._queued_bytes -= size
                if self._room is not None and (
                        self._queued_bytes <= SEND_HIGH_WATER // 2
                        or self.state is Output.FAILED):
                    self._room.set()

    async def _send_all(self, data: bytes | memoryview) -> None:
        """Write all of ``data`` from the writer task: ``send(MSG_NOSIGNAL)`` on a socket,
        else through the stream. Raises :class:`OSError` (``EPIPE`` when the controller is
        gone) or trio's closed/broken-resource errors."""
        sock = self._sock
        if sock is None:
            await self.stream.send_all(data)
            return
        fd = sock.fileno()
        view = memoryview(data)
        while view:
            try:
                n = sock.send(view, _NOSIGNAL)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(fd)
                continue
            view = view[n:]

    # ---- worker threads --------------------------------------------------------------------------

    def write_from_thread(self, frame: bytes | memoryview) -> bool:
        """Write ``frame`` from a worker thread if the pipe takes it whole now; ``False``
        (nothing written) when it must go through the trio thread: not a pipe, more than
        PIPE_BUF bytes, frames queued, the pipe full, or the output failed or closed."""
        if not self._thread_writes or len(frame) > select.PIPE_BUF:
            return False
        with self._lock:
            fd = self._fd
            if fd is None or self.queued or self.state is not _OPEN:
                return False
            try:
                os.write(fd, frame)  # all of it or EAGAIN (atomic on a pipe)
            except BlockingIOError:
                return False
            except OSError as e:
                self._on_send_failed(e)  # dropped, as the trio thread drops it
            return True

    def _on_send_failed(self, e: BaseException) -> None:
        """Call with ``_lock`` held."""
        if self.state is _OPEN:
            # The controller went away; later sends are dropped silently.
            log.debug("send failed: %s", e)
            self._enter(Output.FAILED)


def build_frame(opcode: int, seq: int, tag: int, payload: bytes | FramedPayload
                ) -> bytes | memoryview:
    """The whole frame of ``payload``: built in place for a :class:`FramedPayload` (no copy
    of a large Result), else header and payload joined."""
    if isinstance(payload, FramedPayload):
        return payload.frame(opcode, seq, tag)
    return encode_header(opcode, seq, tag, len(payload)) + payload


_NOSIGNAL = socket.MSG_NOSIGNAL


def _mode_of(fd: int | None) -> int:
    """``st_mode`` of ``fd`` (0 for ``None`` or an fd that cannot be examined)."""
    if fd is None:
        return 0
    try:
        return os.fstat(fd).st_mode
    except OSError:
        return 0


def _socket_of(fd: int) -> socket.socket | None:
    """A socket object on a duplicate of the socket ``fd`` (sends with flags), or ``None``
    if it cannot be duplicated."""
    try:
        return socket.socket(fileno=os.dup(fd))
    except OSError:
        return None
