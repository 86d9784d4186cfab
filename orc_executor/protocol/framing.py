"""SimpleRemoteEPC message framing, sans-I/O (feed bytes in, get messages out).

Mirrors ``SimpleRemoteEPCTransport`` / ``FDSimpleRemoteEPCTransport`` in
``llvm/ExecutionEngine/Orc/Shared/SimpleRemoteEPCUtils.h``: every message is a 32-byte header
of four little-endian u64 fields — ``size`` (whole message in bytes, header included),
``opcode``, ``seq``, ``tag`` (an ExecutorAddr) — followed by ``size - 32`` payload bytes.
"""

from __future__ import annotations

import enum
import mmap
import struct
from collections.abc import Callable
from typing import NamedTuple, Protocol

from ..errors import FramingError

HEADER = struct.Struct("<4Q")
HEADER_SIZE = HEADER.size  # 32 bytes

#: Default largest accepted message, header included (bytes). Configurable per decoder.
DEFAULT_MAX_MESSAGE_SIZE = 1 << 30


class Opcode(enum.IntEnum):
    """``SimpleRemoteEPCOpcode``."""

    SETUP = 0
    HANGUP = 1
    RESULT = 2
    CALL_WRAPPER = 3


_OPCODES = tuple(Opcode)
_LAST_OPCODE = int(Opcode.CALL_WRAPPER)



class Message(NamedTuple):
    """One SimpleRemoteEPC message: opcode, sequence number, tag address, payload bytes.

    A ``NamedTuple`` (immutable, and cheaper to build than a frozen dataclass): built once
    per message on the hot path."""

    opcode: Opcode
    seq: int
    tag: int
    payload: bytes | bytearray | memoryview = b""
    #: When a :class:`PayloadSink` took the payload: what its :meth:`PayloadSink.result`
    #: returned (``payload`` is then empty).
    decoded: object = None


def encode_header(opcode: int, seq: int, tag: int, payload_len: int) -> bytes:
    """The 32-byte header for a message with ``payload_len`` payload bytes."""
    return HEADER.pack(HEADER_SIZE + payload_len, opcode, seq, tag)


def encode_message(msg: Message) -> bytes:
    """Header and payload as one ``bytes`` object, so one write sends the whole message."""
    return encode_header(msg.opcode, msg.seq, msg.tag, len(msg.payload)) + bytes(msg.payload)


#: Payloads at least this large (bytes) get an anonymous mapping instead of a bytearray.
LARGE_PAYLOAD = 1 << 20

#: ``MAP_NORESERVE`` (Linux's value where the mmap module lacks it, before Python 3.12).
_MAP_NORESERVE: int = getattr(mmap, "MAP_NORESERVE", 0x4000)


def _payload_buffer(n: int) -> bytearray | memoryview:
    """A writable buffer of ``n`` bytes for a payload.

    ``bytearray(n)`` zero-fills, which touches every page once before the read fills it;
    a large payload instead gets an anonymous mapping (zero pages supplied lazily by the
    kernel as the read writes them, not reserved ahead: memory grows with the content)
    with transparent huge pages requested, so the content is copied once and never
    zero-filled first.
    """
    if n < LARGE_PAYLOAD:
        return bytearray(n)
    try:
        # Private and not reserved: pages are charged as content fills them, so a header
        # announcing a large payload commits nothing until the payload arrives.
        m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | _MAP_NORESERVE)
    except OSError as e:
        raise FramingError(f"cannot map a buffer for a {n}-byte payload: {e}") from None
    if hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            m.madvise(mmap.MADV_HUGEPAGE)
        except OSError:
            pass
    return memoryview(m)


class FramedPayload:
    """A payload of ``n`` bytes built in place behind room for its frame's header, so that
    the whole frame is sent without copying the payload again (a large ``mem_read_buffers``
    Result: the memory is read straight into :attr:`payload`).

    Raises :class:`MemoryError` if the buffer cannot be had. At least :data:`LARGE_PAYLOAD`
    bytes get an anonymous private mapping (charged to the commit limit, so a failure is an
    error here rather than a fault later)."""

    __slots__ = ("_buf",)

    def __init__(self, n: int) -> None:
        size = HEADER_SIZE + n
        if n < LARGE_PAYLOAD:
            self._buf: bytearray | mmap.mmap = bytearray(size)
        else:
            try:
                self._buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
            except (OSError, OverflowError) as e:
                raise MemoryError(f"cannot map {size} bytes for a payload: {e}") from None

    @property
    def payload(self) -> memoryview:
        """The payload bytes (writable), after the header's room."""
        return memoryview(self._buf)[HEADER_SIZE:]

    def __len__(self) -> int:
        return len(self._buf) - HEADER_SIZE

    def frame(self, opcode: int, seq: int, tag: int) -> memoryview:
        """The whole message: the header written in front of the payload."""
        HEADER.pack_into(self._buf, 0, len(self._buf), opcode, seq, tag)
        return memoryview(self._buf)


class PayloadSink(Protocol):
    """Takes one message's payload piecewise, into buffers of its own choosing.

    Lets a payload be decoded while it arrives and its bulk land where it is finally needed
    (segment content straight into a slab) instead of in a payload buffer first. The decoder
    writes every payload byte, in order, into :meth:`target` and reports it with
    :meth:`advance`; a sink must never offer more bytes than the payload has left.
    """

    def target(self) -> memoryview:
        """The writable buffer the next payload bytes go to (non-empty while any are left)."""
        ...

    def advance(self, n: int) -> None:
        """``n`` bytes were written at the start of :meth:`target`."""
        ...

    def result(self) -> object:
        """After the last payload byte: the decoded value (becomes :attr:`Message.decoded`)."""
        ...

    def discard(self) -> None:
        """The message will never be complete (the stream ended): drop what was claimed."""
        ...


#: Chooses a sink for a message from its header: ``(opcode, tag, payload_len)`` → a sink, or
#: ``None`` for an ordinary payload buffer.
PayloadRouter = Callable[[int, int, int], "PayloadSink | None"]


class FrameDecoder:
    """Incremental decoder: :meth:`feed` bytes as they arrive, :meth:`next_message` pops messages.

    A header announcing fewer than 32 bytes, more than ``max_message_size`` bytes, or an
    unknown opcode raises :class:`FramingError` before any payload buffer is allocated.
    The payload of a large message is collected into one preallocated buffer, or handed to
    the :class:`PayloadSink` that ``router`` picks for its header (asked only for payloads of
    ``stream_threshold`` bytes or more). A small message already complete in the buffer is
    cut out of it directly. The three settings are fixed at construction.
    """

    def __init__(
        self,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        router: PayloadRouter | None = None,
        stream_threshold: int = LARGE_PAYLOAD,
    ) -> None:
        self.max_message_size = max_message_size
        self.router = router
        #: Payloads at least this large (bytes) are offered to ``router``; smaller ones never.
        self.stream_threshold = stream_threshold
        #: Largest message (bytes, header included) that :meth:`next_message` cuts straight
        #: out of the buffer: within the maximum, not large, and never offered to ``router``.
        self._small_max = min(
            max_message_size,
            LARGE_PAYLOAD - 1,
            HEADER_SIZE + stream_threshold - 1 if router is not None else max_message_size,
        )
        self._buf = bytearray()
        self._header: tuple[int, int, int, int] | None = None
        self._payload: bytearray | memoryview | None = None
        self._filled = 0
        self._sink: PayloadSink | None = None
        self._left = 0  # payload bytes the sink has still to take

    @property
    def at_boundary(self) -> bool:
        """True when no partial message is buffered (EOF here is a clean end)."""
        return not self._buf and self._header is None

    @property
    def wanted(self) -> int:
        """How many more bytes the current message needs (a good read size), at least 1.

        While a sink takes the payload: the size of its current target (at most the rest).
        """
        if self._sink is not None and self._left:
            return max(1, min(len(self._sink.target()), self._left))
        if self._header is not None and self._payload is not None:
            return max(1, len(self._payload) - self._filled)
        return max(1, HEADER_SIZE - len(self._buf))

    def payload_view(self) -> memoryview | None:
        """While a payload is being collected: where its next bytes go, to read into directly.

        Call :meth:`filled` with the byte count written. ``None`` when no payload is pending.
        """
        if self._buf:
            return None
        if self._sink is not None:
            return self._sink.target()[: self._left] if self._left else None
        if self._payload is None:
            return None
        return memoryview(self._payload)[self._filled :]

    def filled(self, n: int) -> None:
        """Record that ``n`` bytes were written into :meth:`payload_view`."""
        if self._sink is not None:
            self._sink.advance(n)
            self._left -= n
        else:
            self._filled += n

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes."""
        if not self._buf:
            if self._sink is not None:
                data = self._feed_sink(data)
            elif self._payload is not None:
                take = min(len(data), len(self._payload) - self._filled)
                self._payload[self._filled : self._filled + take] = data[:take]
                self._filled += take
                data = data[take:]
        if data:
            self._buf += data

    def _feed_sink(self, data: bytes | bytearray | memoryview) -> memoryview:
        """Give ``data`` to the sink up to the end of the payload; return what is left over."""
        sink = self._sink
        assert sink is not None
        mv = memoryview(data)
        while mv and self._left:
            t = sink.target()
            k = min(len(t), len(mv), self._left)
            t[:k] = mv[:k]
            sink.advance(k)
            self._left -= k
            mv = mv[k:]
        return mv

    def abandon(self) -> None:
        """The stream ended: a sink still taking a payload is told to discard it."""
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.discard()

    def _parse_header(self) -> None:
        size, opcode, seq, tag = HEADER.unpack_from(self._buf, 0)
        if size < HEADER_SIZE:
            raise FramingError(f"message size {size} too small (header is {HEADER_SIZE} bytes)")
        if size > self.max_message_size:
            raise FramingError(
                f"message size {size} exceeds the maximum of {self.max_message_size} bytes"
            )
        if opcode > Opcode.CALL_WRAPPER:
            raise FramingError(f"unexpected opcode {opcode}")
        del self._buf[:HEADER_SIZE]
        self._header = (size, opcode, seq, tag)
        n = size - HEADER_SIZE
        sink = (
            self.router(opcode, tag, n)
            if self.router is not None and n and n >= self.stream_threshold
            else None
        )
        if sink is not None:
            self._sink, self._left = sink, n
            rest = self._feed_sink(self._buf)
            self._buf = bytearray(rest)
            return
        self._payload = _payload_buffer(n)
        take = min(len(self._buf), len(self._payload))
        self._payload[:take] = self._buf[:take]
        del self._buf[:take]
        self._filled = take

    def next_message(self) -> Message | None:
        """Pop the next complete message, or ``None`` if more bytes are needed."""
        if self._header is None:
            buf = self._buf
            if len(buf) < HEADER_SIZE:
                return None
            size, opcode, seq, tag = HEADER.unpack_from(buf, 0)
            if (HEADER_SIZE <= size <= self._small_max and size <= len(buf)
                    and opcode <= _LAST_OPCODE):
                # Fast path: the whole (small) message is here.
                payload = bytes(memoryview(buf)[HEADER_SIZE:size])
                del buf[:size]
                return Message(_OPCODES[opcode], seq, tag, payload)
            self._parse_header()
        assert self._header is not None
        if self._sink is not None:
            if self._left:
                return None
            sink, self._sink = self._sink, None
            _, opcode, seq, tag = self._header
            self._header = None
            return Message(Opcode(opcode), seq, tag, b"", sink.result())
        assert self._payload is not None
        if self._filled < len(self._payload):
            if self._buf:
                take = min(len(self._buf), len(self._payload) - self._filled)
                self._payload[self._filled : self._filled + take] = self._buf[:take]
                del self._buf[:take]
                self._filled += take
            if self._filled < len(self._payload):
                return None
        _, opcode, seq, tag = self._header
        large = self._payload
        self._header = None
        self._payload = None
        self._filled = 0
        return Message(Opcode(opcode), seq, tag, large)
