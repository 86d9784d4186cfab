"""Sans-I/O frame decoder: chunking, limits, bad headers, boundary tracking."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orc_executor.protocol.framing import (
    DEFAULT_MAX_MESSAGE_SIZE,
    HEADER,
    HEADER_SIZE,
    FrameDecoder,
    FramingError,
    Message,
    Opcode,
    encode_header,
    encode_message,
)

messages = st.builds(
    Message,
    st.sampled_from(list(Opcode)),
    st.integers(0, (1 << 64) - 1),
    st.integers(0, (1 << 64) - 1),
    st.binary(max_size=200),
)


def drain(dec: FrameDecoder) -> list[Message]:
    out = []
    while (m := dec.next_message()) is not None:
        out.append(m)
    return out


def same(a: Message, b: Message) -> bool:
    return (a.opcode, a.seq, a.tag, bytes(a.payload)) == (b.opcode, b.seq, b.tag, bytes(b.payload))


def test_header_layout() -> None:
    assert HEADER_SIZE == 32
    # docs/protocol.md §2.1: a Result header (size 41 = 32 + 9, opcode 2, seq 1, tag 0).
    assert encode_header(Opcode.RESULT, 1, 0, 9) == bytes.fromhex(
        "2900000000000000 0200000000000000 0100000000000000 0000000000000000"
    )
    # The Setup header of the 22 executor: size 0x8b9 = 32 + 2201.
    assert encode_header(Opcode.SETUP, 0, 0, 2201)[:8] == bytes.fromhex("b908000000000000")
    msg = Message(Opcode.CALL_WRAPPER, 5, 0x1234, b"abc")
    data = encode_message(msg)
    assert HEADER.unpack_from(data) == (35, 3, 5, 0x1234)
    assert data[32:] == b"abc"


def test_one_message_at_once() -> None:
    dec = FrameDecoder()
    assert dec.at_boundary
    msg = Message(Opcode.RESULT, 7, 0, b"\x01" * 9)
    dec.feed(encode_message(msg))
    got = dec.next_message()
    assert got is not None and same(got, msg)
    assert isinstance(got.opcode, Opcode)
    assert dec.next_message() is None
    assert dec.at_boundary


def test_empty_payload() -> None:
    dec = FrameDecoder()
    dec.feed(encode_header(Opcode.HANGUP, 0, 0, 0))
    got = dec.next_message()
    assert got is not None
    assert (got.opcode, bytes(got.payload)) == (Opcode.HANGUP, b"")
    assert dec.at_boundary


@given(st.lists(messages, min_size=1, max_size=5))
def test_byte_by_byte(msgs: list[Message]) -> None:
    stream = b"".join(encode_message(m) for m in msgs)
    dec = FrameDecoder()
    got: list[Message] = []
    ends = set()
    pos = 0
    for m in msgs:
        pos += HEADER_SIZE + len(m.payload)
        ends.add(pos)
    for i in range(len(stream)):
        dec.feed(stream[i : i + 1])
        got.extend(drain(dec))
        # at_boundary is true exactly after the last byte of a message.
        assert dec.at_boundary == (i + 1 in ends)
    assert len(got) == len(msgs)
    assert all(same(a, b) for a, b in zip(got, msgs, strict=True))


@given(st.lists(messages, min_size=1, max_size=6), st.data())
def test_random_chunking(msgs: list[Message], data: Any) -> None:
    stream = b"".join(encode_message(m) for m in msgs)
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=12)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    drain_each = data.draw(st.booleans())
    dec = FrameDecoder()
    got: list[Message] = []
    for piece in pieces:
        dec.feed(memoryview(piece) if data.draw(st.booleans()) else bytearray(piece))
        if drain_each:
            got.extend(drain(dec))
    got.extend(drain(dec))
    assert len(got) == len(msgs)
    assert all(same(a, b) for a, b in zip(got, msgs, strict=True))
    assert dec.at_boundary


def test_multiple_messages_in_one_chunk() -> None:
    msgs = [Message(Opcode.CALL_WRAPPER, i, 0x1000 + i, bytes([i]) * i) for i in range(10)]
    dec = FrameDecoder()
    dec.feed(b"".join(encode_message(m) for m in msgs))
    assert not dec.at_boundary
    got = drain(dec)
    assert [m.seq for m in got] == list(range(10))
    assert all(same(a, b) for a, b in zip(got, msgs, strict=True))
    assert dec.at_boundary


def test_message_and_a_half() -> None:
    a = encode_message(Message(Opcode.RESULT, 1, 0, b"x" * 100))
    b = encode_message(Message(Opcode.RESULT, 2, 0, b"y" * 100))
    dec = FrameDecoder()
    dec.feed(a + b[:50])
    first = dec.next_message()
    assert first is not None and first.seq == 1
    assert dec.next_message() is None
    assert not dec.at_boundary
    dec.feed(b[50:])
    second = dec.next_message()
    assert second is not None and bytes(second.payload) == b"y" * 100


@given(st.binary(min_size=1, max_size=5000), st.data())
def test_payload_view_direct_reads(payload: bytes, data: Any) -> None:
    """The zero-copy path: read straight into payload_view() and report with filled()."""
    dec = FrameDecoder()
    dec.feed(encode_header(Opcode.CALL_WRAPPER, 3, 9, len(payload)))
    assert dec.next_message() is None
    pos = 0
    while pos < len(payload):
        assert dec.wanted == len(payload) - pos
        view = dec.payload_view()
        assert view is not None and len(view) == len(payload) - pos
        n = data.draw(st.integers(1, len(payload) - pos))
        view[:n] = payload[pos : pos + n]
        dec.filled(n)
        pos += n
        if pos < len(payload):
            assert dec.next_message() is None
    got = dec.next_message()
    assert got is not None and bytes(got.payload) == payload
    assert dec.payload_view() is None
    assert dec.at_boundary


def test_wanted_counts_header_bytes() -> None:
    dec = FrameDecoder()
    assert dec.wanted == HEADER_SIZE
    dec.feed(b"\x00" * 10)
    assert dec.wanted == HEADER_SIZE - 10
    assert not dec.at_boundary


@pytest.mark.parametrize("size", [0, 1, 31])
def test_size_below_header_is_error(size: int) -> None:
    dec = FrameDecoder()
    dec.feed(HEADER.pack(size, Opcode.RESULT, 0, 0))
    with pytest.raises(FramingError, match="too small"):
        dec.next_message()


def test_size_exactly_header_is_ok() -> None:
    dec = FrameDecoder()
    dec.feed(HEADER.pack(32, Opcode.RESULT, 0, 0))
    assert dec.next_message() is not None


@pytest.mark.parametrize("size", [DEFAULT_MAX_MESSAGE_SIZE + 1, 1 << 40, (1 << 64) - 1])
def test_size_above_default_max_is_error_without_allocation(size: int) -> None:
    dec = FrameDecoder()
    dec.feed(HEADER.pack(size, Opcode.CALL_WRAPPER, 0, 0))
    tracemalloc.start()
    try:
        with pytest.raises(FramingError, match="exceeds the maximum"):
            dec.next_message()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 16


def test_configurable_max() -> None:
    dec = FrameDecoder(max_message_size=100)
    dec.feed(HEADER.pack(100, Opcode.RESULT, 0, 0) + b"z" * 68)
    got = dec.next_message()
    assert got is not None and len(got.payload) == 68
    dec.feed(HEADER.pack(101, Opcode.RESULT, 0, 0))
    with pytest.raises(FramingError, match="maximum of 100"):
        dec.next_message()


@pytest.mark.parametrize("opcode", [4, 7, 255, (1 << 64) - 1])
def test_unknown_opcode_is_error(opcode: int) -> None:
    dec = FrameDecoder()
    dec.feed(HEADER.pack(40, opcode, 0, 0) + b"\x00" * 8)
    with pytest.raises(FramingError, match="opcode"):
        dec.next_message()


def test_header_checked_before_payload_arrives() -> None:
    """A bad header is reported as soon as its 32 bytes are in, not after the payload."""
    dec = FrameDecoder()
    dec.feed(HEADER.pack(1 << 50, Opcode.CALL_WRAPPER, 0, 0))
    with pytest.raises(FramingError):
        dec.next_message()


@pytest.mark.parametrize("opcode", list(Opcode))
def test_every_opcode_accepted(opcode: Opcode) -> None:
    dec = FrameDecoder()
    dec.feed(encode_header(opcode, 1, 2, 1) + b"\x00")
    got = dec.next_message()
    assert got is not None and got.opcode is opcode


def test_at_boundary_semantics() -> None:
    dec = FrameDecoder()
    data = encode_message(Message(Opcode.RESULT, 1, 0, b"abcd"))
    assert dec.at_boundary
    dec.feed(data[:5])  # partial header
    assert not dec.at_boundary
    assert dec.next_message() is None
    dec.feed(data[5:33])  # header complete, payload partial
    assert dec.next_message() is None
    assert not dec.at_boundary
    dec.feed(data[33:])  # complete but not yet popped
    assert not dec.at_boundary
    assert dec.next_message() is not None
    assert dec.at_boundary
    dec.feed(b"")
    assert dec.at_boundary


def test_large_payload_lands_in_one_lazily_zeroed_buffer() -> None:
    """A payload of LARGE_PAYLOAD bytes or more is collected in one anonymous mapping (no
    zero-fill pass); fed in odd chunks and partly read straight into payload_view(), it
    comes out byte-identical, and the decoder is back at a message boundary."""
    from orc_executor.protocol.framing import LARGE_PAYLOAD

    payload = bytes(range(251)) * (LARGE_PAYLOAD // 251 + 3)
    frame = encode_header(Opcode.CALL_WRAPPER, 7, 0x1234, len(payload)) + payload
    dec = FrameDecoder()
    dec.feed(frame[:1000])
    assert dec.next_message() is None  # header parsed, payload pending
    view = dec.payload_view()
    assert view is not None and len(view) == len(payload) - (1000 - 32)
    half = len(view) // 2
    view[:half] = frame[1000 : 1000 + half]
    dec.filled(half)
    dec.feed(frame[1000 + half :])
    msg = dec.next_message()
    assert msg is not None
    assert isinstance(msg.payload, memoryview)
    assert (msg.seq, msg.tag, bytes(msg.payload)) == (7, 0x1234, payload)
    assert dec.at_boundary and dec.next_message() is None
