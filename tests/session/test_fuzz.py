"""Fuzz every advertised wrapper function of one live session.

Hypothesis draws well-typed arguments from each wrapper's SPS signature (addresses from a
pool of the Setup's bootstrap symbols and of the slabs the session reserved so far, plus
arbitrary 64-bit values), and sometimes arbitrary or truncated argument bytes instead. One
``orc-executor`` process serves every example over a socketpair, driven by a blocking
controller so that a lost answer shows as a timeout rather than a hang. Each call must get
a Result with its own sequence number; afterwards the session still answers, has written
nothing to stdout and no Python traceback to stderr, exits cleanly at EOF and leaves no
shared-memory object behind.

What is left out is what a controller may legitimately do with the process: jumping to a
function it wrote or loaded (run_* wrappers and alloc actions get no address of a slab, and
never the native dispatch function), and reserving address space by the terabyte (sizes
passed to the reserve wrappers stay below 1 GiB).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import IO, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orc_executor.controller import decode_setup
from orc_executor.executor.bootstrap import build_context
from orc_executor.protocol.framing import FrameDecoder, Message, Opcode, encode_header
from orc_executor.protocol.orc_types import SPSWrapperFunctionCall, WrapperFunctionCall
from orc_executor.protocol.sps import (
    Addr,
    Bool,
    Bytes,
    BytesView,
    Empty,
    MapOf,
    OptionalOf,
    SequenceOf,
    SPSType,
    String,
    TupleOf,
    UInt64,
    integer_bounds,
)

DISPATCH_FN = "__llvm_orc_SimpleRemoteEPC_dispatch_fn"
MM_INSTANCE = "__llvm_orc_SimpleExecutorMemoryManager_Instance"
MM_RESERVE = "__llvm_orc_SimpleExecutorMemoryManager_reserve_wrapper"


class LiveSession:
    """``python -m orc_executor socket:adopt=FD`` and a blocking controller on the other end."""

    def __init__(self, out: IO[bytes], err: IO[bytes]) -> None:
        self.sock, theirs = socket.socketpair()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "orc_executor", f"socket:adopt={theirs.fileno()}"],
            pass_fds=(theirs.fileno(),), stdout=out, stderr=err,
            env=dict(os.environ, ORC_EXECUTOR_COLD="1"),
        )
        theirs.close()
        self.sock.settimeout(30)
        self.decoder = FrameDecoder(1 << 30)
        self.seq = 0
        setup = self.next_message()
        assert setup.opcode == Opcode.SETUP
        self.symbols = decode_setup(setup.payload).symbols
        #: addresses worth passing: the bootstrap symbols (not the native dispatch function)
        self.symbol_pool = sorted(a for n, a in self.symbols.items() if n != DISPATCH_FN)
        #: ... and the slabs reserved so far
        self.pool = list(self.symbol_pool)
        #: the wrapper functions under test: advertised, with a known signature
        self.wrappers = sorted(n for n in SIGNATURES if n in self.symbols and n != DISPATCH_FN)

    def next_message(self) -> Message:
        while (msg := self.decoder.next_message()) is None:
            data = self.sock.recv(1 << 16)
            if not data:
                raise EOFError("the executor hung up")
            self.decoder.feed(data)
        return msg

    def call(self, tag: int, payload: bytes) -> Message:
        """Send one call; return its Result (the session answers calls in any order, but
        this controller has one in flight at a time)."""
        self.seq += 1
        self.sock.sendall(encode_header(Opcode.CALL_WRAPPER, self.seq, tag, len(payload))
                          + payload)
        msg = self.next_message()
        assert msg.opcode == Opcode.RESULT, msg
        assert msg.seq == self.seq, msg
        return msg


def strategy(
    t: SPSType[Any], addresses: list[int], code: list[int], sizes: bool
) -> st.SearchStrategy[Any]:
    """Values of SPS type ``t``: ``Addr`` values from ``addresses`` or anywhere, except the
    function of a ``WrapperFunctionCall`` (an alloc action), which comes from ``code`` or
    anywhere; ``UInt64`` below 1 GiB if ``sizes``."""
    if t is SPSWrapperFunctionCall:
        return st.tuples(strategy(Addr, code, code, sizes), st.binary(max_size=64)).map(
            lambda v: WrapperFunctionCall(*v))
    if t is Addr:
        # An index into the pool rather than a sample of it: the pool grows as slabs are
        # reserved, and the strategy must draw the same way whatever its length.
        known = st.integers(0, 1 << 16).map(lambda i: addresses[i % len(addresses)])
        return st.one_of(known, st.integers(0, (1 << 64) - 1))
    if t is UInt64 and sizes:
        return st.integers(0, (1 << 30) - 1)
    if t is Bool:
        return st.booleans()
    if t is Empty:
        return st.none()
    if t is Bytes or t is BytesView:
        return st.binary(max_size=64)
    if t is String:
        return st.text(max_size=16)
    bounds = integer_bounds(t)
    if bounds is not None:
        lo, hi = bounds
        return st.integers(lo, hi)
    if isinstance(t, SequenceOf):
        return st.lists(strategy(t.elem, addresses, code, sizes), max_size=3)
    if isinstance(t, OptionalOf):
        return st.one_of(st.none(), strategy(t.elem, addresses, code, sizes))
    if isinstance(t, MapOf):
        key, value = t._seq.elem.elems  # type: ignore[attr-defined]
        return st.dictionaries(strategy(key, addresses, code, sizes),
                               strategy(value, addresses, code, sizes), max_size=3)
    if isinstance(t, TupleOf):
        elems = st.tuples(*(strategy(e, addresses, code, sizes) for e in t.elems))
        factory = t.factory
        return elems.map(lambda v: factory(*v)) if factory is not None else elems
    raise AssertionError(f"no strategy for SPS type {t.name}")


#: Every wrapper function of the LLVM 22 ("modern") profile.
SIGNATURES = build_context("modern").registry.signatures()


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[LiveSession, IO[bytes], IO[bytes]]]:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        shm_before = set(os.listdir("/dev/shm"))
        session = LiveSession(out, err)
        try:
            yield session, out, err
        finally:
            session.sock.close()
            status = session.process.wait(timeout=30)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
        assert status == 0, stderr
        assert "Traceback" not in stderr, stderr
        assert set(os.listdir("/dev/shm")) <= shm_before, "shared-memory objects left behind"


@settings(max_examples=2000, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_every_wrapper_answers_any_arguments(
    live: tuple[LiveSession, IO[bytes], IO[bytes]], data: st.DataObject
) -> None:
    session, out, _err = live
    sigs = SIGNATURES
    name = data.draw(st.sampled_from(session.wrappers), label="wrapper")
    sig = sigs[name]
    pool = session.symbol_pool if "run_as" in name else session.pool
    sizes = "eserve" in name
    how = data.draw(st.sampled_from(["typed", "typed", "typed", "truncated", "bytes"]),
                    label="payload")
    args = data.draw(strategy(sig.args, pool, session.symbol_pool, sizes), label="args")
    payload = sig.args.encode(args)
    if how == "truncated" and payload:
        payload = payload[:data.draw(st.integers(0, len(payload) - 1), label="cut")]
    elif how == "bytes":
        payload = data.draw(st.binary(max_size=128), label="bytes")
    result = session.call(session.symbols[name], payload)
    if how == "typed" and sizes and result.payload:
        try:
            value = sig.ret.decode(result.payload)
        except ValueError:
            value = None
        if isinstance(value, tuple):  # shared memory: (address, name)
            value = value[0]
        if isinstance(value, int) and value and value not in session.pool:
            session.pool.append(value)
    # The session is still there and still answers.
    reserve = sigs[MM_RESERVE]
    ok = session.call(session.symbols[MM_RESERVE],
                      reserve.args.encode((session.symbols[MM_INSTANCE], 0)))
    assert reserve.ret.decode(ok.payload) == 0
    out.seek(0)
    assert out.read() == b"", "the executor wrote to the JIT'd program's stdout"
