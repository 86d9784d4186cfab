"""Streaming decode of initialize/finalize arguments (sps/stream.py) through the frame decoder:
any chunking gives the arguments a whole-buffer decode gives, placed content lands in its
destination, and malformed payloads end in a decode error at the right frame boundary."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from orc_executor.protocol.finalize_sink import FinalizeRequestSink, StreamedArgs
from orc_executor.protocol.framing import FrameDecoder, Message, Opcode, encode_message
from orc_executor.protocol.names import INITIALIZE
from orc_executor.protocol.orc_types import (
    AllocActionCallPair,
    FinalizeRequest,
    SegFinalizeRequest,
    WrapperFunctionCall,
)
from orc_executor.protocol.sps import SPSDecodeError

TAG = 0x1000


class FakePlacement:
    def __init__(self, n: int) -> None:
        self.buf = bytearray(n)
        self.view = memoryview(self.buf)
        self.released = 0

    def release(self) -> None:
        self.released += 1


class Placer:
    """Places the content of segments whose address is even; refuses the others."""

    def __init__(self) -> None:
        self.placed: list[tuple[int, FakePlacement]] = []

    def __call__(self, addr: int, size: int, n: int) -> FakePlacement | None:
        if addr % 2:
            return None
        p = FakePlacement(n)
        self.placed.append((addr, p))
        return p

    def all(self) -> list[FakePlacement]:
        return [p for _, p in self.placed]


def decoder(placer: Placer) -> FrameDecoder:
    def route(opcode: int, tag: int, n: int) -> FinalizeRequestSink | None:
        return FinalizeRequestSink(n, placer) if tag == TAG else None

    return FrameDecoder(router=route, stream_threshold=1)


def feed_in_chunks(dec: FrameDecoder, data: bytes, cuts: list[int]) -> list[Message]:
    out: list[Message] = []
    prev = 0
    for c in [*sorted(set(cuts)), len(data)]:
        if c <= prev:
            continue
        dec.feed(data[prev:c])
        prev = c
        # Sometimes read "directly" into the payload view, as the session does.
        view = dec.payload_view()
        while (m := dec.next_message()) is not None:
            out.append(m)
        del view
    return out


segments = st.lists(
    st.builds(
        SegFinalizeRequest,
        st.integers(0, 7),
        st.integers(0, 1 << 40),
        st.integers(0, 64),
        st.binary(max_size=48),
    ).filter(lambda s: len(s.content) <= s.size),
    max_size=4,
)
actions = st.lists(
    st.builds(
        AllocActionCallPair,
        st.builds(WrapperFunctionCall, st.integers(0, 1 << 48), st.binary(max_size=16)),
        st.builds(WrapperFunctionCall, st.integers(0, 1 << 48), st.binary(max_size=16)),
    ),
    max_size=3,
)


def plain(args: tuple[Any, ...]) -> tuple[Any, ...]:
    inst, req = args
    segs = [SegFinalizeRequest(s.prot, s.addr, s.size, bytes(s.content)) for s in req.segments]
    return inst, FinalizeRequest(segs, list(req.actions))


@settings(max_examples=200)
@given(st.integers(0, 1 << 64 - 1), segments, actions, st.lists(st.integers(0, 600)))
def test_streamed_decode_matches_whole_buffer_decode(
    inst: int, segs: list[SegFinalizeRequest], acts: list[AllocActionCallPair], cuts: list[int]
) -> None:
    payload = INITIALIZE.encode_args(inst, FinalizeRequest(segs, acts))
    after = Message(Opcode.RESULT, 9, 0, b"next")
    data = encode_message(Message(Opcode.CALL_WRAPPER, 1, TAG, payload)) + encode_message(after)
    placer = Placer()
    msgs = feed_in_chunks(decoder(placer), data, cuts)
    assert len(msgs) == 2
    first, second = msgs
    assert (second.opcode, second.seq, bytes(second.payload)) == (Opcode.RESULT, 9, b"next")
    streamed = first.decoded
    assert isinstance(streamed, StreamedArgs) and streamed.error is None
    assert streamed.args is not None
    assert plain(streamed.args) == plain(INITIALIZE.decode_args(payload))
    # Placed content is in its destination, and only there.
    placed = [s for s in segs if s.content and s.addr % 2 == 0]
    assert [(s.addr, s.content) for s in placed] == [(a, bytes(p.buf)) for a, p in placer.placed]
    assert streamed.placed == sum(len(p.buf) for p in placer.all())
    streamed.release()
    streamed.release()
    assert all(p.released == 1 for p in placer.all())


@given(st.binary(min_size=1, max_size=120), st.lists(st.integers(0, 200)))
def test_garbage_payload_is_a_decode_error_and_the_stream_goes_on(
    payload: bytes, cuts: list[int]
) -> None:
    data = encode_message(Message(Opcode.CALL_WRAPPER, 1, TAG, payload)) + encode_message(
        Message(Opcode.HANGUP, 2, 0, b"")
    )
    placer = Placer()
    msgs = feed_in_chunks(decoder(placer), data, cuts)
    assert [m.opcode for m in msgs] == [Opcode.CALL_WRAPPER, Opcode.HANGUP]
    streamed = msgs[0].decoded
    assert isinstance(streamed, StreamedArgs)
    try:
        expected: tuple[Any, ...] | None = INITIALIZE.decode_args(payload)
    except SPSDecodeError:
        expected = None
    if expected is None:
        assert streamed.error is not None and streamed.args is None
        # Nothing stays claimed after a failed decode.
        assert all(p.released == 1 for p in placer.all())
    else:
        assert streamed.error is None and streamed.args is not None
        assert plain(streamed.args) == plain(expected)


def test_truncated_segment_count_fails_before_placing_anything() -> None:
    # 2**40 segments announced in a 40-byte payload.
    payload = (7).to_bytes(8, "little") + (1 << 40).to_bytes(8, "little") + bytes(24)
    placer = Placer()
    dec = decoder(placer)
    dec.feed(encode_message(Message(Opcode.CALL_WRAPPER, 1, TAG, payload)))
    msg = dec.next_message()
    assert msg is not None and isinstance(msg.decoded, StreamedArgs)
    assert msg.decoded.error is not None
    assert "2" in str(msg.decoded.error) and not placer.placed


def test_abandoned_message_releases_its_placements() -> None:
    content = bytes(range(256)) * 64
    payload = INITIALIZE.encode_args(5, FinalizeRequest([SegFinalizeRequest(3, 0x10, len(content),
                                                                            content)], []))
    placer = Placer()
    dec = decoder(placer)
    data = encode_message(Message(Opcode.CALL_WRAPPER, 1, TAG, payload))
    dec.feed(data[: len(data) // 2])
    assert dec.next_message() is None and not dec.at_boundary
    view = dec.payload_view()
    ((addr, placement),) = placer.placed
    assert addr == 0x10 and view is not None and view.obj is placement.buf  # reads land in place
    dec.abandon()
    assert placement.released == 1
