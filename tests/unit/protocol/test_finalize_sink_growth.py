"""Content the streamed decoder cannot place grows with what arrives (sps/stream.py): large
unplaced segments and long action lists decode exactly, in any chunking, and the buffers
allocated before their bytes arrive stay small."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from orc_executor.protocol.finalize_sink import _GROW_FROM, FinalizeRequestSink, StreamedArgs
from orc_executor.protocol.framing import Opcode, encode_header
from orc_executor.protocol.names import INITIALIZE
from orc_executor.protocol.orc_types import FinalizeRequest, SegFinalizeRequest
from tests.unit.protocol.test_finalize_sink import TAG, Placer, decoder, feed_in_chunks, plain

CONTENT = os.urandom(300_000)


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(0, 300_200), max_size=12), n=st.integers(0, 300_000))
def test_unplaced_content_decodes_in_any_chunking(cuts: list[int], n: int) -> None:
    seg = SegFinalizeRequest(3, 0x1001, n, CONTENT[:n])  # odd address: not placed
    args = (7, FinalizeRequest([seg], []))
    payload = INITIALIZE.args.encode(args)
    msgs = feed_in_chunks(decoder(Placer()), encode_header(Opcode.CALL_WRAPPER, 1, TAG,
                                                           len(payload)) + payload, cuts)
    assert len(msgs) == 1
    got = msgs[0].decoded
    assert isinstance(got, StreamedArgs) and got.error is None and got.args is not None
    assert plain(got.args) == args


def test_buffers_before_content_are_small() -> None:
    """A segment announcing 1 GiB of unplaced content: the first buffer offered is at most
    :data:`_GROW_FROM` bytes, and each later one at most what arrived before it."""
    n = 1 << 30
    head = INITIALIZE.args.encode((7, FinalizeRequest([SegFinalizeRequest(3, 1, n, b"")], [])))
    head = head[:-16]  # up to the segment's content length (no content, no actions count)
    head += n.to_bytes(8, "little")
    sink = FinalizeRequestSink(len(head) + n + 8, Placer())
    view = head
    while view:
        t = sink.target()
        k = min(len(t), len(view))
        t[:k] = view[:k]
        sink.advance(k)
        view = view[k:]
    received = 0
    for _ in range(40):
        t = sink.target()
        assert len(t) <= max(_GROW_FROM, received)
        sink.advance(len(t))
        received += len(t)
    sink.discard()
