"""The dispatch function's Python side routes each call from JIT'd code to the session whose
dispatch context it was given (``orc_dispatch_fn(ctx, tag, data, size)`` passes ``ctx`` on to
``orc_py_dispatch``): two sessions in one process never mix, and a closed or unknown context
gets the out-of-band error. (The C half, with real JIT'd code: tests/session/test_run.py and
tests/e2e/test_fault_recovery.py.)"""

from __future__ import annotations

import struct

import pytest
import trio
import trio.testing

from orc_executor.errors import JITDispatchError
from orc_executor.executor import jit_dispatch
from orc_executor.executor.bootstrap import build_context
from orc_executor.executor.jit_dispatch import DISPATCH_UNAVAILABLE, ControllerCalls
from orc_executor.executor.session import Session, State
from orc_executor.native.api import ffi, lib
from orc_executor.protocol.framing import HEADER, HEADER_SIZE, Opcode


def dispatch(ctx: int, tag: int, data: bytes) -> tuple[bool, bytes]:
    """What ``orc_dispatch_fn`` returns to JIT'd code for this call: (out of band, bytes)."""
    r = ffi.new("orc_cwfr *")
    buf = ffi.new("char[]", data)
    if not jit_dispatch.orc_py_dispatch(ffi.cast("void *", ctx), tag, buf, len(data), r):
        lib.orc_cwfr_dispose(r)
        return True, DISPATCH_UNAVAILABLE.encode()  # orc_dispatch_fn's own error
    try:
        if lib.orc_cwfr_is_oob(r):
            return True, ffi.string(lib.orc_cwfr_data(r))
        return False, bytes(ffi.buffer(lib.orc_cwfr_data(r), r.Size))
    finally:
        lib.orc_cwfr_dispose(r)


class EchoController:
    """A controller answering each CallWrapper at once: its name, the tag, the data."""

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.calls = ControllerCalls(self.send)
        self.frames: list[tuple[int, int, int]] = []

    def send(self, frame: bytes) -> None:
        size, opcode, seq, tag = HEADER.unpack_from(frame, 0)
        assert size == len(frame) and opcode == Opcode.CALL_WRAPPER
        self.frames.append((opcode, seq, tag))
        self.calls.handle_result(seq, self.name + struct.pack("<Q", tag) + frame[HEADER_SIZE:])


def test_each_dispatch_context_reaches_its_own_session() -> None:
    a, b = EchoController(b"a"), EchoController(b"b")
    ctx_a, ctx_b = a.calls.open(), b.calls.open()
    try:
        assert ctx_a != ctx_b
        assert jit_dispatch.open_contexts() == 2
        for i in range(3):
            echoed = b"a" + struct.pack("<Q", 7 + i) + b"xyz"
            assert dispatch(ctx_a, 7 + i, b"xyz") == (False, echoed)
            assert dispatch(ctx_b, 9, b"") == (False, b"b" + struct.pack("<Q", 9))
        assert [seq for _op, seq, _tag in a.frames] == [0, 1, 2]
        assert [seq for _op, seq, _tag in b.frames] == [0, 1, 2]
        a.calls.close()
        # A closed session's context routes nowhere; the other session still serves.
        assert dispatch(ctx_a, 7, b"xyz") == (True, DISPATCH_UNAVAILABLE.encode())
        assert dispatch(ctx_b, 9, b"") == (False, b"b" + struct.pack("<Q", 9))
    finally:
        a.calls.close()
        b.calls.close()
    assert jit_dispatch.open_contexts() == 0
    assert len(a.frames) == 3 and len(b.frames) == 4


def test_an_unknown_dispatch_context_gets_an_out_of_band_error() -> None:
    a = EchoController(b"a")
    ctx = a.calls.open()
    try:
        assert dispatch(ctx + 4096, 7, b"") == (True, DISPATCH_UNAVAILABLE.encode())
        assert dispatch(0, 7, b"") == (True, DISPATCH_UNAVAILABLE.encode())
        assert a.frames == []
    finally:
        a.calls.close()


def test_a_closed_table_refuses_calls() -> None:
    calls = ControllerCalls(lambda _frame: None)
    for _ in range(2):  # before open, and after close
        with pytest.raises(JITDispatchError) as info:
            calls.call(1, b"")
        assert str(info.value) == DISPATCH_UNAVAILABLE
        calls.open()
        calls.close()


async def test_a_session_cancelled_from_outside_leaves_no_dispatch_context() -> None:
    """As the warm worker's rehearsal is cancelled when a real connection waits."""
    ours, theirs = trio.testing.memory_stream_pair()
    session = Session(ours, build_context("modern"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run)
        assert await theirs.receive_some(1 << 16)  # Setup
        assert session.state is State.SERVING and jit_dispatch.open_contexts() == 1
        nursery.cancel_scope.cancel()
    assert session.state.name == State.ENDED.name and jit_dispatch.open_contexts() == 0
    with pytest.raises(JITDispatchError):
        session.call_controller(1, b"")
