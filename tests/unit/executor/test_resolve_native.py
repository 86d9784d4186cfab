"""resolve (LLVM 22) answered in one native call (``orc_resolve22``) gives exactly the bytes
of the generic path (SPS decode, :meth:`DylibManagerService.resolve22`, SPS encode), for any
lookup set: the executor's own names, libc's, missing ones, required or not, empty names,
a NUL inside a name, names that are not UTF-8, repeats; and it hands every malformed payload
to the generic path (``None``), which reports the error."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orc_executor.executor.bootstrap import build_context
from orc_executor.executor.context import ExecutorContext
from orc_executor.executor.registry import WrapperSpec
from orc_executor.executor.services.dylib_manager import DylibManagerService
from orc_executor.protocol.names import RESOLVE22
from orc_executor.protocol.names import SimpleExecutorDylibManager as DM
from orc_executor.protocol.sps import ErrorValue

CTX: ExecutorContext = build_context()
SVC = next(s for s in CTX.registry.services if isinstance(s, DylibManagerService))
HANDLE = SVC.open_handle("")
SPEC = CTX.registry.lookup(CTX.registry.addr_of[DM.resolve])
OWN = sorted(CTX.registry.addr_of)[:40] + sorted(SVC.lookup_only)

names = st.one_of(
    st.sampled_from(OWN),
    st.sampled_from(["printf", "malloc", "free", "dlopen", "__cxa_atexit", "environ"]),
    st.text(max_size=40),  # mostly missing; NULs and lone surrogates (non-UTF-8) included
    st.just(""),
    st.just("malloc\0tail"),
)
symbol_sets = st.lists(st.tuples(names, st.booleans()), max_size=60)


@pytest.fixture(scope="module", autouse=True)
def _shutdown() -> Iterator[None]:
    yield
    CTX.registry.shutdown()


def generic(payload: bytes) -> bytes:
    plain = WrapperSpec(SPEC.name, SPEC.sig, SPEC.handler)  # the same wrapper, no native path
    out = plain.invoke(payload)
    assert isinstance(out, bytes)
    return out


def test_resolve_has_the_native_path() -> None:
    assert SPEC is not None and SPEC.native is not None


@settings(max_examples=300, deadline=None)
@given(symbol_sets)
def test_native_resolve_gives_the_generic_bytes(symbols: list[tuple[str, bool]]) -> None:
    payload = RESOLVE22.encode_args(HANDLE, symbols)
    fast = SVC.resolve22_native(payload)
    assert fast is not None
    assert fast == generic(payload)
    assert SPEC.invoke(payload) == fast


def test_a_required_byte_other_than_0_or_1_is_true() -> None:
    payload = RESOLVE22.encode_args(HANDLE, [("no_such_name_q", False)])[:-1] + b"\x02"
    fast = SVC.resolve22_native(payload)
    assert fast is not None and fast == generic(payload)
    assert RESOLVE22.decode_result(fast) == [None]  # missing and required: absent


def test_a_long_name_and_many_names() -> None:
    symbols = [("x" * 5000, False), ("printf", True)] * 300
    payload = RESOLVE22.encode_args(HANDLE, symbols)
    assert SVC.resolve22_native(payload) == generic(payload)


def malformed() -> list[bytes]:
    good = RESOLVE22.encode_args(HANDLE, [("printf", True), ("free", False)])
    count_at = 8
    return [
        good[:-1],  # truncated
        good + b"\0",  # trailing byte
        good[:count_at] + struct.pack("<Q", 3) + good[count_at + 8:],  # one more than sent
        good[:count_at] + struct.pack("<Q", 1 << 62) + good[count_at + 8:],  # absurd count
        good[:count_at + 8] + struct.pack("<Q", 1 << 40) + good[count_at + 16:],  # long name
        RESOLVE22.encode_args(12345, [("printf", True)]),  # no such handle
        b"", good[:15],
    ]


@pytest.mark.parametrize("payload", malformed())
def test_malformed_payloads_take_the_generic_path(payload: bytes) -> None:
    assert SVC.resolve22_native(payload) is None
    out = SPEC.invoke(payload)  # the generic path's error result
    assert out == generic(payload)
    value = RESOLVE22.decode_result(out)
    assert isinstance(value, ErrorValue)
