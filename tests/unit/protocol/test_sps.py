"""SPS codec: round trips for every type, known byte vectors, and decoding robustness."""

from __future__ import annotations

import contextlib
import struct
import time
import tracemalloc
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from orc_executor.controller import ControllerError, decode_setup
from orc_executor.executor.bootstrap import build_context
from orc_executor.protocol.orc_types import (
    AllocActionCallPair,
    ExecutorAddrRange,
    ExecutorSymbolDef,
    FinalizeRequest,
    JITSymbolFlags,
    SegFinalizeRequest,
    SharedMemoryFinalizeRequest,
    SharedMemorySegFinalizeRequest,
    SPSAllocActionCallPair,
    SPSExecutorAddrRange,
    SPSExecutorSymbolDef,
    SPSFinalizeRequest,
    SPSJITSymbolFlags,
    SPSRemoteSymbolLookupSet,
    SPSSetupMessage,
    SPSSetupMessage14,
    SPSSharedMemoryFinalizeRequest,
    SPSWrapperFunctionCall,
    WrapperFunctionCall,
)
from orc_executor.protocol.sps import (
    Addr,
    Bool,
    Bytes,
    Char,
    Empty,
    Error,
    ErrorValue,
    ExpectedOf,
    Int8,
    Int16,
    Int32,
    Int64,
    MapOf,
    OptionalOf,
    SequenceOf,
    Size,
    SPSDecodeError,
    SPSEncodeError,
    SPSType,
    String,
    TupleOf,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    signature,
)

u64 = struct.Struct("<Q").pack

# ---- strategies ----------------------------------------------------------------------------


def ints(bits: int, signed: bool) -> st.SearchStrategy[int]:
    if signed:
        return st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    return st.integers(0, (1 << bits) - 1)


#: (type, value strategy, width in bytes, signed) of every integer primitive.
INT_PRIMITIVES: list[tuple[SPSType[int], int, bool]] = [
    (Char, 1, True),
    (Int8, 1, True),
    (UInt8, 1, False),
    (Int16, 2, True),
    (UInt16, 2, False),
    (Int32, 4, True),
    (UInt32, 4, False),
    (Int64, 8, True),
    (UInt64, 8, False),
    (Size, 8, False),
    (Addr, 8, False),
]

addrs = ints(64, False)
#: Any Python str SPS String can carry: text, plus raw non-UTF-8 bytes (surrogateescape).
sps_strings = st.text() | st.binary().map(lambda b: b.decode("utf-8", "surrogateescape"))
error_values = st.builds(ErrorValue, sps_strings)

ranges = st.builds(ExecutorAddrRange, addrs, addrs)
flags = st.builds(JITSymbolFlags, ints(8, False), ints(8, False))
symbol_defs = st.builds(ExecutorSymbolDef, addrs, flags)
wf_calls = st.builds(WrapperFunctionCall, addrs, st.binary(max_size=64))
action_pairs = st.builds(AllocActionCallPair, wf_calls, wf_calls)
seg_requests = st.builds(SegFinalizeRequest, ints(8, False), addrs, addrs, st.binary(max_size=64))
finalize_requests = st.builds(
    FinalizeRequest,
    st.lists(seg_requests, max_size=4),
    st.lists(action_pairs, max_size=4),
)
shm_finalize_requests = st.builds(
    SharedMemoryFinalizeRequest,
    st.lists(st.builds(SharedMemorySegFinalizeRequest, ints(8, False), addrs, addrs), max_size=4),
    st.lists(action_pairs, max_size=4),
)
#: Realistic bootstrap symbol addresses (a small address read as a length could make a
#: 14-layout Setup decodable as the modern layout, which no real executor sends).
symbol_addrs = st.integers(0x10000, (1 << 47) - 1)
symbol_maps = st.dictionaries(sps_strings, symbol_addrs, max_size=8)

TypeAndValues = tuple[SPSType[Any], st.SearchStrategy[Any]]

LEAVES: list[TypeAndValues] = [
    *[(t, ints(8 * w, s)) for t, w, s in INT_PRIMITIVES],
    (Bool, st.booleans()),
    (String, sps_strings),
    (Bytes, st.binary(max_size=32)),
    (Empty, st.none()),
    (Error, st.none() | error_values),
    (SPSExecutorAddrRange, ranges),
    (SPSExecutorSymbolDef, symbol_defs),
    (SPSWrapperFunctionCall, wf_calls),
]


def _seq(tv: TypeAndValues) -> TypeAndValues:
    return SequenceOf(tv[0]), st.lists(tv[1], max_size=4)


def _tuple(tvs: list[TypeAndValues]) -> TypeAndValues:
    return TupleOf(*(t for t, _ in tvs)), st.tuples(*(v for _, v in tvs))


def _optional(tv: TypeAndValues) -> TypeAndValues:
    return OptionalOf(tv[0]), st.none() | tv[1]


def _expected(tv: TypeAndValues) -> TypeAndValues:
    return ExpectedOf(tv[0]), tv[1] | error_values


def _map(tv: TypeAndValues) -> TypeAndValues:
    return MapOf(String, tv[0]), st.dictionaries(sps_strings, tv[1], max_size=4)


types_and_values: st.SearchStrategy[TypeAndValues] = st.recursive(
    st.sampled_from(LEAVES),
    lambda children: st.one_of(
        children.map(_seq),
        st.lists(children, max_size=4).map(_tuple),
        children.map(_optional),
        children.map(_expected),
        children.map(_map),
    ),
    max_leaves=8,
)


def roundtrip(t: SPSType[Any], value: Any) -> bytes:
    data = t.encode(value)
    assert isinstance(data, bytes)
    assert t.decode(data) == value
    assert t.decode(bytearray(data)) == value
    assert t.decode(memoryview(data)) == value
    if t.fixed_size is not None:
        assert len(data) == t.fixed_size
    return data


# ---- primitives ------------------------------------------------------------------------------


@pytest.mark.parametrize(("t", "width", "signed"), INT_PRIMITIVES, ids=lambda x: repr(x))
@given(data=st.data())
def test_int_primitive_roundtrip(t: SPSType[int], width: int, signed: bool, data: Any) -> None:
    value = data.draw(ints(8 * width, signed))
    encoded = roundtrip(t, value)
    assert encoded == value.to_bytes(width, "little", signed=signed)


@pytest.mark.parametrize(("t", "width", "signed"), INT_PRIMITIVES, ids=lambda x: repr(x))
def test_int_primitive_range_limits(t: SPSType[int], width: int, signed: bool) -> None:
    lo = -(1 << (8 * width - 1)) if signed else 0
    hi = (1 << (8 * width - 1)) - 1 if signed else (1 << (8 * width)) - 1
    assert t.decode(t.encode(lo)) == lo
    assert t.decode(t.encode(hi)) == hi
    assert t.encode(hi) == hi.to_bytes(width, "little", signed=signed)
    for bad in (lo - 1, hi + 1):
        with pytest.raises(SPSEncodeError):
            t.encode(bad)
    with pytest.raises(SPSEncodeError):
        t.encode("1")  # type: ignore[arg-type]


def test_signed_values_are_twos_complement() -> None:
    assert Int64.encode(-1) == b"\xff" * 8
    assert Int64.decode(b"\xff" * 8) == -1
    assert Int32.decode(b"\xfe\xff\xff\xff") == -2
    assert Char.decode(b"\x80") == -128
    assert UInt8.decode(b"\x80") == 128


@given(st.booleans())
def test_bool_roundtrip(b: bool) -> None:
    assert roundtrip(Bool, b) == (b"\x01" if b else b"\x00")


@pytest.mark.parametrize("byte", [1, 2, 0x7F, 0xFF])
def test_bool_nonzero_reads_as_true(byte: int) -> None:
    assert Bool.decode(bytes([byte])) is True
    assert Bool.decode(b"\x00") is False


def test_empty() -> None:
    assert Empty.encode(None) == b""
    assert Empty.decode(b"") is None
    with pytest.raises(SPSDecodeError):
        Empty.decode(b"\x00")


# ---- strings and buffers -------------------------------------------------------------------


@given(st.text())
def test_string_roundtrip_text(s: str) -> None:
    encoded = roundtrip(String, s)
    raw = s.encode("utf-8")
    assert encoded == u64(len(raw)) + raw  # length in bytes, no NUL


@given(st.binary())
def test_string_non_utf8_bytes_survive(raw: bytes) -> None:
    wire = u64(len(raw)) + raw
    s = String.decode(wire)
    assert s.encode("utf-8", "surrogateescape") == raw
    assert String.encode(s) == wire


def test_string_unencodable_surrogate_is_encode_error() -> None:
    with pytest.raises(SPSEncodeError):
        String.encode("\ud800")


@given(st.binary())
def test_bytes_roundtrip(b: bytes) -> None:
    assert roundtrip(Bytes, b) == u64(len(b)) + b


def test_bytes_accepts_buffers() -> None:
    buffers: list[Any] = [bytearray(b"ab"), memoryview(b"ab")]
    for b in buffers:
        assert Bytes.encode(b) == u64(2) + b"ab"
    with pytest.raises(SPSEncodeError):
        Bytes.encode("ab")  # type: ignore[arg-type]


# ---- composites ------------------------------------------------------------------------------


@given(st.lists(ints(64, False)))
def test_sequence_of_u64(values: list[int]) -> None:
    assert roundtrip(SequenceOf(UInt64), values) == u64(len(values)) + b"".join(map(u64, values))


@given(st.lists(ints(8, True)), st.lists(ints(16, False)), st.lists(st.booleans()))
def test_sequences_of_small_primitives(a: list[int], b: list[int], c: list[bool]) -> None:
    roundtrip(SequenceOf(Char), a)
    roundtrip(SequenceOf(UInt16), b)
    roundtrip(SequenceOf(Bool), c)


@given(st.lists(st.lists(sps_strings, max_size=4), max_size=4))
def test_sequence_of_sequence_of_string(values: list[list[str]]) -> None:
    roundtrip(SequenceOf(SequenceOf(String)), values)


def test_sequence_encode_rejects_out_of_range_elements() -> None:
    with pytest.raises(SPSEncodeError):
        SequenceOf(UInt8).encode([1, 256])
    with pytest.raises(SPSEncodeError):
        SequenceOf(String).encode(["a", 1])  # type: ignore[list-item]


@given(ints(8, False), ints(32, True), sps_strings, st.binary(max_size=16), st.booleans())
def test_tuple_roundtrip(a: int, b: int, c: str, d: bytes, e: bool) -> None:
    t = TupleOf(UInt8, Int32, String, Bytes, Bool)
    data = roundtrip(t, (a, b, c, d, e))
    assert data[:5] == bytes([a]) + b.to_bytes(4, "little", signed=True)
    assert roundtrip(TupleOf(UInt8, Int32), (a, b)) == data[:5]  # all-primitive fast path
    assert t.fixed_size is None
    assert TupleOf(UInt8, Int32).fixed_size == 5


def test_tuple_arity_mismatch_is_encode_error() -> None:
    with pytest.raises(SPSEncodeError):
        TupleOf(UInt8, UInt8).encode((1,))
    with pytest.raises(SPSEncodeError):
        TupleOf(UInt8, String).encode((1, "a", 2))


def test_empty_tuple() -> None:
    assert roundtrip(TupleOf(), ()) == b""


@given(st.none() | ints(64, False))
def test_optional_roundtrip(v: int | None) -> None:
    data = roundtrip(OptionalOf(UInt64), v)
    assert data == (b"\x00" if v is None else b"\x01" + u64(v))


@given(st.dictionaries(sps_strings, st.binary(max_size=16), max_size=8))
def test_map_roundtrip_unique_keys(d: dict[str, bytes]) -> None:
    data = roundtrip(MapOf(String, Bytes), d)
    assert data[:8] == u64(len(d))


@given(st.dictionaries(ints(64, False), sps_strings, max_size=8))
def test_map_with_int_keys(d: dict[int, str]) -> None:
    roundtrip(MapOf(UInt64, String), d)


@given(st.lists(sps_strings, min_size=1, max_size=4), st.data())
def test_map_duplicate_keys_rejected(keys: list[str], data: Any) -> None:
    dup = data.draw(st.sampled_from(keys))
    pairs = [(k, b"") for k in keys] + [(dup, b"x")]
    wire = SequenceOf(TupleOf(String, Bytes)).encode(pairs)
    with pytest.raises(SPSDecodeError, match="duplicate key"):
        MapOf(String, Bytes).decode(wire)


@given(st.none() | error_values)
def test_error_roundtrip(v: ErrorValue | None) -> None:
    data = roundtrip(Error, v)
    if v is None:
        assert data == b"\x00"
    else:
        assert data[0] == 1
        assert String.decode(data[1:]) == v.message


@given(ints(64, False) | error_values)
def test_expected_roundtrip(v: int | ErrorValue) -> None:
    data = roundtrip(ExpectedOf(Addr), v)
    if isinstance(v, ErrorValue):
        assert data[0] == 0  # opposite meaning of SPSError's first byte
    else:
        assert data == b"\x01" + u64(v)


@given(symbol_defs | error_values)
def test_expected_symbol_def(v: ExecutorSymbolDef | ErrorValue) -> None:
    roundtrip(ExpectedOf(SPSExecutorSymbolDef), v)


# ---- ORC domain types --------------------------------------------------------------------------


@given(ranges)
def test_executor_addr_range(r: ExecutorAddrRange) -> None:
    assert roundtrip(SPSExecutorAddrRange, r) == u64(r.start) + u64(r.end)
    assert isinstance(SPSExecutorAddrRange.decode(u64(r.start) + u64(r.end)), ExecutorAddrRange)
    assert r.size == r.end - r.start


@given(flags)
def test_jit_symbol_flags(f: JITSymbolFlags) -> None:
    assert roundtrip(SPSJITSymbolFlags, f) == bytes([f.flags, f.target_flags])


@given(symbol_defs)
def test_executor_symbol_def(d: ExecutorSymbolDef) -> None:
    data = roundtrip(SPSExecutorSymbolDef, d)
    assert data == u64(d.address) + bytes([d.flags.flags, d.flags.target_flags])
    decoded = SPSExecutorSymbolDef.decode(data)
    assert isinstance(decoded, ExecutorSymbolDef)
    assert isinstance(decoded.flags, JITSymbolFlags)


@given(wf_calls)
def test_wrapper_function_call(c: WrapperFunctionCall) -> None:
    assert roundtrip(SPSWrapperFunctionCall, c) == u64(c.fn) + u64(len(c.args)) + c.args


@given(action_pairs)
def test_alloc_action_call_pair(p: AllocActionCallPair) -> None:
    data = roundtrip(SPSAllocActionCallPair, p)
    assert data == SPSWrapperFunctionCall.encode(p.finalize) + SPSWrapperFunctionCall.encode(
        p.dealloc
    )


@given(finalize_requests)
def test_finalize_request(r: FinalizeRequest) -> None:
    data = roundtrip(SPSFinalizeRequest, r)
    decoded = SPSFinalizeRequest.decode(data)
    assert isinstance(decoded, FinalizeRequest)
    assert all(isinstance(s, SegFinalizeRequest) for s in decoded.segments)
    assert all(isinstance(a, AllocActionCallPair) for a in decoded.actions)


@given(shm_finalize_requests)
def test_shared_memory_finalize_request(r: SharedMemoryFinalizeRequest) -> None:
    data = roundtrip(SPSSharedMemoryFinalizeRequest, r)
    # Segments carry no content: 1 + 8 + 8 bytes each.
    assert data[:8] == u64(len(r.segments))
    decoded = SPSSharedMemoryFinalizeRequest.decode(data)
    assert all(isinstance(s, SharedMemorySegFinalizeRequest) for s in decoded.segments)


@given(st.lists(st.tuples(sps_strings, st.booleans()), max_size=6))
def test_remote_symbol_lookup_set(items: list[tuple[str, bool]]) -> None:
    roundtrip(SPSRemoteSymbolLookupSet, items)


@given(
    sps_strings,
    ints(64, False),
    st.dictionaries(sps_strings, st.binary(max_size=8), max_size=3),
    symbol_maps,
)
def test_setup_message_modern(
    triple: str, page: int, bmap: dict[str, bytes], syms: dict[str, int]
) -> None:
    data = roundtrip(SPSSetupMessage, (triple, page, bmap, syms))
    info = decode_setup(data)
    assert (info.triple, info.page_size, info.bootstrap_map, info.symbols) == (
        triple,
        page,
        bmap,
        syms,
    )
    assert not info.layout14
    assert info.encode() == data


@given(sps_strings, ints(64, False), symbol_maps)
def test_setup_message_14(triple: str, page: int, syms: dict[str, int]) -> None:
    data = roundtrip(SPSSetupMessage14, (triple, page, syms))
    info = decode_setup(data)
    assert info.layout14
    assert (info.triple, info.page_size, info.symbols) == (triple, page, syms)
    assert info.encode() == data


def test_setup_undecodable() -> None:
    with pytest.raises(ControllerError, match="Could not deserialize setup message"):
        decode_setup(b"\x01\x02")


# ---- random types --------------------------------------------------------------------------------


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.data())
def test_random_type_roundtrip_and_truncation(data: Any) -> None:
    """Any composition of SPS types round-trips, and every strict prefix of an encoding is
    rejected with SPSDecodeError (SPS is prefix-free), as is any trailing byte."""
    t, values = data.draw(types_and_values)
    value = data.draw(values)
    encoded = t.encode(value)
    decoded = t.decode(encoded)
    assert t.encode(decoded) == encoded
    for i in range(len(encoded)):
        with pytest.raises(SPSDecodeError):
            t.decode(encoded[:i])
    with pytest.raises(SPSDecodeError, match="trailing"):
        t.decode(encoded + b"\x00")


def _outcome(decode: Any, buf: bytes) -> tuple[str, Any]:
    try:
        return "value", decode(buf, 0)
    except SPSDecodeError as e:
        return "error", str(e)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.data())
def test_tuple_compiled_decoder_agrees_with_field_by_field_decoding(data: Any) -> None:
    """The generated tuple decoder (runs of fixed-size fields and a trailing length prefix
    in one ``struct`` each) gives what decoding element by element gives — the same value
    and next offset, or the same error message — for every prefix of an encoding and for
    encodings with bytes changed (lengths and counts among them)."""
    tvs = data.draw(st.lists(st.one_of(st.sampled_from(LEAVES), types_and_values),
                             min_size=1, max_size=6))
    t, values = _tuple(tvs)
    assert isinstance(t, TupleOf)
    encoded = bytearray(t.encode(data.draw(values)))
    cases = [bytes(encoded[:i]) for i in range(len(encoded) + 1)]
    for _ in range(8):
        if encoded:
            i = data.draw(st.integers(0, len(encoded) - 1))
            encoded[i] = data.draw(st.integers(0, 255))
        cases.append(bytes(encoded))
    for buf in cases:
        assert _outcome(t.compiled_decoder(), buf) == _outcome(t.decode_fields, buf)


def test_tuple_decoder_builds_factory_values() -> None:
    """NamedTuple factories (built without their ``__new__``), other callables, and plain
    tuples."""
    wfc = WrapperFunctionCall(0x1234, b"args")
    value = SPSWrapperFunctionCall.decode(SPSWrapperFunctionCall.encode(wfc))
    assert type(value) is WrapperFunctionCall and value == wfc
    as_dict = TupleOf(UInt8, String, factory=lambda a, b: {"a": a, "b": b})
    assert as_dict.decode(as_dict.encode((7, "x"))) == {"a": 7, "b": "x"}
    plain = TupleOf(Bool, UInt64, Bytes, UInt8)
    assert plain.decode(b"\x02" + bytes(8) + bytes(8) + b"\x05") == (True, 0, b"", 5)


DOMAIN_TYPES: list[tuple[SPSType[Any], st.SearchStrategy[Any]]] = [
    (SPSExecutorAddrRange, ranges),
    (SPSJITSymbolFlags, flags),
    (SPSExecutorSymbolDef, symbol_defs),
    (SPSWrapperFunctionCall, wf_calls),
    (SPSAllocActionCallPair, action_pairs),
    (SPSFinalizeRequest, finalize_requests),
    (SPSSharedMemoryFinalizeRequest, shm_finalize_requests),
    (SPSRemoteSymbolLookupSet, st.lists(st.tuples(sps_strings, st.booleans()), max_size=4)),
    (SPSSetupMessage, st.tuples(sps_strings, addrs, st.just({"k": b"v"}), symbol_maps)),
    (SPSSetupMessage14, st.tuples(sps_strings, addrs, symbol_maps)),
]


@pytest.mark.parametrize(("t", "values"), DOMAIN_TYPES, ids=[repr(t) for t, _ in DOMAIN_TYPES])
@given(data=st.data())
def test_domain_type_truncation_at_every_offset(
    t: SPSType[Any], values: st.SearchStrategy[Any], data: Any
) -> None:
    encoded = t.encode(data.draw(values))
    for i in range(len(encoded)):
        with pytest.raises(SPSDecodeError):
            t.decode(encoded[:i])


# ---- known byte vectors (docs/protocol.md §4.3, §5.1, §9.1) --------------------------------------


def test_known_error_and_expected_vectors() -> None:
    assert Error.decode(bytes.fromhex("00")) is None
    assert ExpectedOf(Addr).decode(bytes.fromhex("0100e0c611f97f0000")) == 0x7FF911C6E000
    wire = bytes.fromhex("001600000000000000") + b"Cannot allocate memory"
    assert ExpectedOf(Addr).decode(wire) == ErrorValue("Cannot allocate memory")
    assert ExpectedOf(Addr).encode(ErrorValue("Cannot allocate memory")) == wire
    msg = "In release, 0x1234000 is not part of any reserved address range"
    wire = bytes.fromhex("013f00000000000000") + msg.encode()
    assert Error.decode(wire) == ErrorValue(msg)
    assert Error.encode(ErrorValue(msg)) == wire


def test_known_walkthrough_vectors() -> None:
    open_sig = signature(ExpectedOf(Addr), Addr, String, UInt64)
    args = bytes.fromhex("e02e6b3afe550000 0000000000000000 0000000000000000")
    assert open_sig.decode_args(args) == (0x55FE3A6B2EE0, "", 0)
    assert open_sig.encode_args(0x55FE3A6B2EE0, "", 0) == args
    assert open_sig.decode_result(bytes.fromhex("01700b0000f97f0000")) == 0x7FF900000B70

    resolve = signature(
        ExpectedOf(SequenceOf(OptionalOf(SPSExecutorSymbolDef))), Addr, SPSRemoteSymbolLookupSet
    )
    args = bytes.fromhex("700b0000f97f0000 0100000000000000 0600000000000000") + b"printf\x00"
    assert resolve.decode_args(args) == (0x7FF900000B70, [("printf", False)])
    result = bytes.fromhex("01 0100000000000000 01 b0052710f97f0000 1000")
    assert resolve.decode_result(result) == [
        ExecutorSymbolDef(0x7FF9102705B0, JITSymbolFlags(0x10, 0))
    ]
    assert resolve.encode_result([ExecutorSymbolDef(0x7FF9102705B0, JITSymbolFlags(0x10))]) == (
        result
    )

    run_as_main = signature(Int64, Addr, SequenceOf(String))
    args = bytes.fromhex("00d0c611f97f0000 0200000000000000") + u64(1) + b"a" + u64(1) + b"b"
    assert run_as_main.decode_args(args) == (0x7FF911C6D000, ["a", "b"])
    assert run_as_main.decode_result(bytes.fromhex("2a00000000000000")) == 42
    assert run_as_main.decode_result(bytes.fromhex("ffffffffffffffff")) == -1

    release = signature(Error, Addr, SequenceOf(Addr))
    args = bytes.fromhex("102c6b3afe550000 0100000000000000 00c0c611f97f0000")
    assert release.decode_args(args) == (0x55FE3A6B2C10, [0x7FF911C6C000])

    # Lazy trace [069]: Expected<ExecutorSymbolDef> {foo, Exported|Callable}.
    lazy = ExpectedOf(SPSExecutorSymbolDef).decode(bytes.fromhex("010060a4234e7f00003000"))
    assert lazy == ExecutorSymbolDef(0x7F4E23A46000, JITSymbolFlags(0x30, 0))


def test_known_initialize_payload() -> None:
    """The shape of docs/protocol.md §9.1 message 9, rebuilt field by field."""
    content_r = bytes(88)
    content_rx = bytes(53)
    eh = u64(0x7FF911C6C010) + u64(0x7FF911C6C04C)
    wire = (
        u64(0x55FE3A6B2C10)
        + u64(2)
        + b"\x01" + u64(0x7FF911C6C000) + u64(0x1000) + u64(88) + content_r
        + b"\x05" + u64(0x7FF911C6D000) + u64(0x1000) + u64(53) + content_rx
        + u64(1)
        + u64(0x55FE08F9BC60) + u64(16) + eh
        + u64(0x55FE08F9BD20) + u64(16) + eh
    )  # fmt: skip
    assert len(wire) == 279
    inst, req = TupleOf(Addr, SPSFinalizeRequest).decode(wire)
    assert inst == 0x55FE3A6B2C10
    assert req.segments == [
        SegFinalizeRequest(1, 0x7FF911C6C000, 0x1000, content_r),
        SegFinalizeRequest(5, 0x7FF911C6D000, 0x1000, content_rx),
    ]
    assert req.actions == [
        AllocActionCallPair(
            WrapperFunctionCall(0x55FE08F9BC60, eh), WrapperFunctionCall(0x55FE08F9BD20, eh)
        )
    ]


def test_known_setup_prefix() -> None:
    syms = {"__llvm_orc_bootstrap_run_as_main_wrapper": 0x55FE08FA6E20}
    data = SPSSetupMessage.encode(("x86_64-pc-linux-gnu", 4096, {}, syms))
    expected = (
        bytes.fromhex("1300000000000000")
        + b"x86_64-pc-linux-gnu"
        + bytes.fromhex("0010000000000000 0000000000000000 0100000000000000")
        + bytes.fromhex("2800000000000000")
        + b"__llvm_orc_bootstrap_run_as_main_wrapper"
        + bytes.fromhex("206efa08fe550000")
    )
    assert data == expected
    data14 = SPSSetupMessage14.encode(("x86_64-pc-linux-gnu", 4096, syms))
    assert data14 == expected[:35] + expected[43:]


# ---- decoding robustness -------------------------------------------------------------------------

HUGE = 1 << 60


def _fails_fast(t: SPSType[Any], wire: bytes) -> None:
    """Decoding ``wire`` raises SPSDecodeError quickly and without a large allocation."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(SPSDecodeError):
            t.decode(wire)
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 0.5
    assert peak < 1 << 20, f"decoding allocated {peak} bytes"


@pytest.mark.parametrize(
    "t",
    [
        SequenceOf(UInt8),
        SequenceOf(UInt64),
        SequenceOf(Bool),
        SequenceOf(String),
        SequenceOf(SPSExecutorSymbolDef),
        SequenceOf(SequenceOf(UInt8)),
        SequenceOf(Empty),
        SequenceOf(TupleOf()),
        SequenceOf(OptionalOf(Empty)),
        Bytes,
        String,
        MapOf(String, Addr),
        SPSRemoteSymbolLookupSet,
    ],
    ids=repr,
)
@pytest.mark.parametrize("count", [HUGE, (1 << 64) - 1, 1 << 32, 1 << 21])
def test_huge_count_fails_fast(t: SPSType[Any], count: int) -> None:
    _fails_fast(t, u64(count) + b"\x00" * 64)


def test_huge_counts_inside_composites_fail_fast() -> None:
    _fails_fast(SPSFinalizeRequest, u64(HUGE))
    _fails_fast(SPSFinalizeRequest, u64(1) + b"\x05" + u64(0) + u64(0x1000) + u64(HUGE))
    _fails_fast(SPSSetupMessage, u64(3) + b"abc" + u64(4096) + u64(HUGE))
    _fails_fast(ExpectedOf(Addr), b"\x00" + u64(HUGE) + b"msg")
    _fails_fast(Error, b"\x01" + u64(HUGE))


def test_empty_sequence_of_empty_elements() -> None:
    assert SequenceOf(Empty).decode(u64(3)) == [None, None, None]
    assert SequenceOf(Empty).encode([None, None]) == u64(2)


@pytest.mark.parametrize(
    ("t", "value"),
    [
        (UInt32, 7),
        (String, "abc"),
        (Bytes, b""),
        (SequenceOf(UInt8), [1, 2]),
        (OptionalOf(Addr), None),
        (Error, None),
        (ExpectedOf(Addr), 1),
        (SPSFinalizeRequest, FinalizeRequest([], [])),
        (MapOf(String, Addr), {"a": 1}),
        (Empty, None),
    ],
    ids=repr,
)
def test_trailing_bytes_rejected(t: SPSType[Any], value: Any) -> None:
    data = t.encode(value)
    with pytest.raises(SPSDecodeError, match="trailing"):
        t.decode(data + b"\x00")
    assert t.decode_from(data + b"\x00", 0) == (value, len(data))


def test_decode_from_offset() -> None:
    data = b"xx" + UInt16.encode(0x1234) + String.encode("hi")
    v, off = UInt16.decode_from(data, 2)
    assert (v, off) == (0x1234, 4)
    assert String.decode_from(data, off) == ("hi", len(data))
    with pytest.raises(SPSDecodeError):
        UInt64.decode_from(data, len(data) - 4)


COMPLEX: list[SPSType[Any]] = [
    SPSFinalizeRequest,
    SPSSharedMemoryFinalizeRequest,
    SPSSetupMessage,
    SPSSetupMessage14,
    ExpectedOf(SequenceOf(OptionalOf(SPSExecutorSymbolDef))),
    TupleOf(Addr, SPSRemoteSymbolLookupSet),
    TupleOf(Error, ExpectedOf(TupleOf(Addr, String)), OptionalOf(Bytes)),
    SequenceOf(TupleOf(Addr, SequenceOf(Bytes))),
    MapOf(UInt64, SequenceOf(SPSExecutorAddrRange)),
]


def _decode_or_decode_error(t: SPSType[Any], data: bytes) -> None:
    try:
        value = t.decode(data)
    except SPSDecodeError:
        return
    # Whatever decodes re-encodes to the same bytes (canonical except for bool bytes > 1).
    if all(b in (0, 1) for b in data):
        assert t.encode(value) == data


@pytest.mark.parametrize("t", COMPLEX, ids=repr)
@given(data=st.binary(max_size=300))
def test_random_bytes_only_raise_decode_error(t: SPSType[Any], data: bytes) -> None:
    _decode_or_decode_error(t, data)


@pytest.mark.parametrize("t", COMPLEX, ids=repr)
@given(raw=st.data())
def test_small_counts_only_raise_decode_error(t: SPSType[Any], raw: Any) -> None:
    """Random bytes rarely form plausible lengths; build inputs from small u64s and bytes."""
    chunks = raw.draw(
        st.lists(
            st.integers(0, 5).map(u64)
            | st.binary(max_size=6)
            | st.sampled_from([b"\x00", b"\x01"]),
            max_size=30,
        )
    )
    _decode_or_decode_error(t, b"".join(chunks))


@given(st.data())
def test_every_registered_signature_rejects_garbage_cleanly(data: Any) -> None:
    """decode_args / decode_result of every wrapper we serve raise only SPSDecodeError."""
    specs = _registered_specs()
    spec = data.draw(st.sampled_from(specs))
    payload = data.draw(st.binary(max_size=120))
    for decode in (spec.sig.decode_args, spec.sig.decode_result):
        with contextlib.suppress(SPSDecodeError):
            decode(payload)


@given(finalize_requests, st.data())
def test_mutated_finalize_request_only_raises_decode_error(r: FinalizeRequest, data: Any) -> None:
    wire = bytearray(SPSFinalizeRequest.encode(r))
    assume(wire)
    i = data.draw(st.integers(0, len(wire) - 1))
    wire[i] = data.draw(st.integers(0, 255))
    _decode_or_decode_error(SPSFinalizeRequest, bytes(wire))


_SPECS: list[Any] = []


def _registered_specs() -> list[Any]:
    if not _SPECS:
        reg = build_context().registry
        _SPECS.extend(s for a in reg.addr_of.values() if (s := reg.lookup(a)) is not None)
    return _SPECS


def test_wrapper_signature_str() -> None:
    sig = signature(ExpectedOf(Addr), Addr, UInt64)
    assert str(sig) == "Expected<ExecutorAddr>(ExecutorAddr, uint64)"
    assert sig.decode_args(sig.encode_args(1, 2)) == (1, 2)


def test_integer_bounds_follow_the_wire_format() -> None:
    """:func:`integer_bounds` (the fuzzers' ranges): each integer type's range is exactly
    what its encoding takes; other types have none."""
    import struct

    from orc_executor.protocol import sps

    for t, size, signed in ((sps.Char, 1, True), (sps.Int8, 1, True), (sps.UInt8, 1, False),
                            (sps.Int16, 2, True), (sps.UInt16, 2, False),
                            (sps.Int32, 4, True), (sps.UInt32, 4, False),
                            (sps.Int64, 8, True), (sps.UInt64, 8, False),
                            (sps.Size, 8, False), (sps.Addr, 8, False)):
        bounds = sps.integer_bounds(t)
        assert bounds is not None
        lo, hi = bounds
        assert (lo, hi) == ((-(1 << (8 * size - 1)), (1 << (8 * size - 1)) - 1) if signed
                            else (0, (1 << (8 * size)) - 1))
        for v in (lo, hi):
            assert t.decode(t.encode(v)) == v
        for v in (lo - 1, hi + 1):
            with pytest.raises((struct.error, OverflowError, ValueError)):
                t.encode(v)
    for t in (sps.Bool, sps.Empty, sps.String, sps.Bytes, sps.SequenceOf(sps.UInt8)):
        assert sps.integer_bounds(t) is None


NESTED_FIXED = TupleOf(UInt8, TupleOf(Addr, TupleOf(Bool, Int16)), UInt32)


@given(st.tuples(ints(8, False), st.tuples(addrs, st.tuples(st.booleans(), ints(16, True))),
                 ints(32, False)))
def test_nested_fixed_tuple_encoder_matches_field_by_field(v: Any) -> None:
    """A nested tuple of fixed-size fields is encoded by generated code (one struct): the
    same bytes as encoding field by field, and it decodes back."""
    out_fast, out_slow = bytearray(), bytearray()
    NESTED_FIXED.encode_into(out_fast, v)
    NESTED_FIXED.encode_fields(out_slow, v)
    assert out_fast == out_slow
    assert NESTED_FIXED.decode(bytes(out_fast)) == v
    assert SPSExecutorSymbolDef.encode(ExecutorSymbolDef(v[1][0], JITSymbolFlags(v[0], 7))) \
        == struct.pack("<QBB", v[1][0], v[0], 7)


@pytest.mark.parametrize("bad", [
    (1, (2, (True,)), 3), (1, (2,), 3), (1, 2, 3), (1, (2, (True, 1)), 3, 4), 5,
    (1, (2, (True, 1 << 20)), 3), (1, (-1, (True, 1)), 3), ("x", (2, (True, 1)), 3),
])
def test_nested_fixed_tuple_encoder_refuses_bad_shapes(bad: Any) -> None:
    with pytest.raises(SPSEncodeError):
        NESTED_FIXED.encode(bad)
