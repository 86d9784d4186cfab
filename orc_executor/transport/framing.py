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
from dataclasses import dataclass

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


class FramingError(Exception):
    """The byte stream is not a valid sequence of SimpleRemoteEPC messages (fatal)."""


@dataclass(frozen=True, slots=True)
class Message:
    """One SimpleRemoteEPC message: opcode, sequence number, tag address, payload bytes."""

    opcode: Opcode
    seq: int
    tag: int
    payload: bytes | bytearray | memoryview = b""


def encode_header(opcode: int, seq: int, tag: int, payload_len: int) -> bytes:
    """The 32-byte header for a message with ``payload_len`` payload bytes."""
    return HEADER.pack(HEADER_SIZE + payload_len, opcode, seq, tag)


def encode_message(msg: Message) -> bytes:
    """Header and payload as one ``bytes`` object, so one write sends the whole message."""
    return encode_header(msg.opcode, msg.seq, msg.tag, len(msg.payload)) + bytes(msg.payload)


#: Payloads at least this large (bytes) get an anonymous mapping instead of a bytearray.
LARGE_PAYLOAD = 1 << 20


def _payload_buffer(n: int) -> bytearray | memoryview:
    """A writable buffer of ``n`` bytes for a payload.

    ``bytearray(n)`` zero-fills, which touches every page once before the read fills it;
    a large payload instead gets an anonymous mapping (zero pages supplied lazily by the
    kernel as the read writes them) with transparent huge pages requested, so receiving
    64 MiB costs one copy and a few dozen page faults instead of a memset, a copy and
    16384 faults.
    """
    if n < LARGE_PAYLOAD:
        return bytearray(n)
    m = mmap.mmap(-1, n)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            m.madvise(mmap.MADV_HUGEPAGE)
        except OSError:
            pass
    return memoryview(m)


class FrameDecoder:
    """Incremental decoder: :meth:`feed` bytes as they arrive, :meth:`next_message` pops messages.

    A header announcing fewer than 32 bytes, more than ``max_message_size`` bytes, or an
    unknown opcode raises :class:`FramingError` before any payload buffer is allocated.
    The payload of a large message is collected into one preallocated buffer.
    """

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self.max_message_size = max_message_size
        self._buf = bytearray()
        self._header: tuple[int, int, int, int] | None = None
        self._payload: bytearray | memoryview | None = None
        self._filled = 0

    @property
    def at_boundary(self) -> bool:
        """True when no partial message is buffered (EOF here is a clean end)."""
        return not self._buf and self._header is None

    @property
    def wanted(self) -> int:
        """How many more bytes the current message needs (a good read size), at least 1."""
        if self._header is not None and self._payload is not None:
            return max(1, len(self._payload) - self._filled)
        return max(1, HEADER_SIZE - len(self._buf))

    def payload_view(self) -> memoryview | None:
        """While a large payload is being collected: the unfilled part, to read into directly.

        Call :meth:`filled` with the byte count written. ``None`` when no payload is pending.
        """
        if self._payload is None or self._buf:
            return None
        return memoryview(self._payload)[self._filled :]

    def filled(self, n: int) -> None:
        """Record that ``n`` bytes were written into :meth:`payload_view`."""
        self._filled += n

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes."""
        if self._payload is not None and not self._buf:
            take = min(len(data), len(self._payload) - self._filled)
            self._payload[self._filled : self._filled + take] = data[:take]
            self._filled += take
            data = data[take:]
        if data:
            self._buf += data

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
        self._payload = _payload_buffer(size - HEADER_SIZE)
        take = min(len(self._buf), len(self._payload))
        self._payload[:take] = self._buf[:take]
        del self._buf[:take]
        self._filled = take

    def next_message(self) -> Message | None:
        """Pop the next complete message, or ``None`` if more bytes are needed."""
        if self._header is None:
            if len(self._buf) < HEADER_SIZE:
                return None
            self._parse_header()
        assert self._header is not None and self._payload is not None
        if self._filled < len(self._payload):
            if self._buf:
                take = min(len(self._buf), len(self._payload) - self._filled)
                self._payload[self._filled : self._filled + take] = self._buf[:take]
                del self._buf[:take]
                self._filled += take
            if self._filled < len(self._payload):
                return None
        _, opcode, seq, tag = self._header
        payload = self._payload
        self._header = None
        self._payload = None
        self._filled = 0
        return Message(Opcode(opcode), seq, tag, payload)
