"""SPS — LLVM ORC's Simple Packed Serialization, as declarative, composable type values.

Mirrors ``llvm/ExecutionEngine/Orc/Shared/SimplePackedSerialization.h``: no padding, no
alignment, no type tags, little-endian; the receiver must know the signature. Each SPS tag
(``SPSTuple<...>``, ``SPSSequence<...>``, ...) is a :class:`SPSType` instance here; instances
compose exactly like LLVM's tag templates and are used by both the executor and the
controller side.

Every decoder is bounds-checked: truncated input, a length prefix larger than the bytes that
remain, or trailing bytes raise :class:`SPSDecodeError` before anything is allocated.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from ..errors import SPSDecodeError, SPSEncodeError

T = TypeVar("T")

Buffer = bytes | bytearray | memoryview

_U64 = struct.Struct("<Q")




@dataclass(frozen=True, slots=True)
class ErrorValue:
    """The failure half of ``SPSError`` / ``SPSExpected<T>``: an ``llvm::Error`` message."""

    message: str


class SPSType(Generic[T]):
    """An SPS tag: encodes Python values of type ``T`` to bytes and back.

    Subclasses implement :meth:`encode_into` and :meth:`decode_from`; :attr:`fixed_size` is
    the encoded size in bytes when it does not depend on the value (else ``None``).
    """

    fixed_size: int | None = None
    name: str = "?"
    #: The ``struct`` format of the value's fixed-size wire form, when it is a single field
    #: (primitives, bool); lets :class:`TupleOf` unpack runs of such fields at once.
    fmt: str | None = None
    #: True for a length-prefixed value (u64 byte count, then that many bytes), which
    #: :meth:`from_span` builds from its bytes: :class:`TupleOf` unpacks the count along
    #: with the fixed-size fields before it.
    length_prefixed: bool = False

    def encode_into(self, out: bytearray, value: T) -> None:
        raise NotImplementedError

    def decode_from(self, buf: Buffer, off: int) -> tuple[T, int]:
        """Decode one value starting at byte offset ``off``; return it and the next offset."""
        raise NotImplementedError

    def encode(self, value: T) -> bytes:
        """Encode ``value``; raises :class:`SPSEncodeError` for values of the wrong shape."""
        out = bytearray()
        try:
            self.encode_into(out, value)
        except (struct.error, TypeError, AttributeError, OverflowError, UnicodeError) as e:
            raise SPSEncodeError(f"cannot encode {value!r} as {self.name}: {e}") from e
        return bytes(out)

    def from_span(self, buf: Buffer, lo: int, hi: int) -> T:
        """The value of a :attr:`length_prefixed` type whose bytes are ``buf[lo:hi]``."""
        raise NotImplementedError

    def decode(self, data: Buffer) -> T:
        """Decode exactly one value filling all of ``data``; raises :class:`SPSDecodeError`."""
        value, off = self.decode_from(data, 0)
        if off != len(data):
            raise SPSDecodeError(
                f"{len(data) - off} trailing byte(s) after {self.name} ({len(data)} bytes)"
            )
        return value

    def __repr__(self) -> str:
        return self.name


def _need(buf: Buffer, off: int, n: int, what: str) -> None:
    if n < 0 or off + n > len(buf):
        raise SPSDecodeError(
            f"truncated {what}: need {n} byte(s) at offset {off}, have {len(buf) - off}"
        )


class _Primitive(SPSType[Any]):
    def __init__(self, name: str, fmt: str) -> None:
        self.name = name
        self._struct = struct.Struct("<" + fmt)
        self.fixed_size = self._struct.size
        self.fmt = fmt

    def encode_into(self, out: bytearray, value: Any) -> None:
        out += self._struct.pack(value)

    def decode_from(self, buf: Buffer, off: int) -> tuple[Any, int]:
        size = self._struct.size
        if off + size > len(buf):
            _need(buf, off, size, self.name)
        return self._struct.unpack_from(buf, off)[0], off + size


class _Bool(SPSType[bool]):
    name = "bool"
    fixed_size = 1
    fmt = "?"

    def encode_into(self, out: bytearray, value: bool) -> None:
        out.append(1 if value else 0)

    def decode_from(self, buf: Buffer, off: int) -> tuple[bool, int]:
        _need(buf, off, 1, "bool")
        return buf[off] != 0, off + 1


class _Empty(SPSType[None]):
    """``SPSEmpty``: zero bytes (a void result)."""

    name = "Empty"
    fixed_size = 0

    def encode_into(self, out: bytearray, value: None) -> None:
        return None

    def decode_from(self, buf: Buffer, off: int) -> tuple[None, int]:
        return None, off


Bool: SPSType[bool] = _Bool()
Char: SPSType[int] = _Primitive("char", "b")
Int8: SPSType[int] = _Primitive("int8", "b")
UInt8: SPSType[int] = _Primitive("uint8", "B")
Int16: SPSType[int] = _Primitive("int16", "h")
UInt16: SPSType[int] = _Primitive("uint16", "H")
Int32: SPSType[int] = _Primitive("int32", "i")
UInt32: SPSType[int] = _Primitive("uint32", "I")
Int64: SPSType[int] = _Primitive("int64", "q")
UInt64: SPSType[int] = _Primitive("uint64", "Q")
#: ``size_t`` / orc-rt ``SPSSize``: always a u64 on the wire.
Size: SPSType[int] = _Primitive("size", "Q")
#: ``SPSExecutorAddr``: an address in the executor process, u64.
Addr: SPSType[int] = _Primitive("ExecutorAddr", "Q")
Empty: SPSType[None] = _Empty()

_INTEGER_FORMATS = frozenset("bBhHiIqQ")


def integer_bounds(t: SPSType[Any]) -> tuple[int, int] | None:
    """The least and the greatest value of an SPS integer type (``char``, ``int8`` ...
    ``uint64``, ``size``, ``ExecutorAddr``), from its wire format; ``None`` for any other
    type."""
    if not isinstance(t, _Primitive) or t.fmt not in _INTEGER_FORMATS:
        return None
    bits = 8 * t._struct.size
    if t.fmt.islower():
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _read_count(buf: Buffer, off: int, what: str) -> tuple[int, int]:
    if off + 8 > len(buf):
        _need(buf, off, 8, f"{what} length")
    return _U64.unpack_from(buf, off)[0], off + 8


class _Bytes(SPSType[bytes]):
    """``SPSSequence<char>`` used as a byte buffer: u64 length, then the bytes."""

    name = "Bytes"
    length_prefixed = True

    def encode_into(self, out: bytearray, value: bytes) -> None:
        out += _U64.pack(len(value))
        out += value

    def decode_from(self, buf: Buffer, off: int) -> tuple[bytes, int]:
        n, off = _read_count(buf, off, "byte sequence")
        _need(buf, off, n, "byte sequence")
        return bytes(memoryview(buf)[off : off + n]), off + n

    def from_span(self, buf: Buffer, lo: int, hi: int) -> bytes:
        return bytes(memoryview(buf)[lo:hi])


class _BytesView(SPSType[Buffer]):
    """Same wire format as :data:`Bytes`, decoded without copying: a ``memoryview`` into the
    decoded buffer (used for segment contents, which may be megabytes)."""

    name = "Bytes"
    length_prefixed = True

    def encode_into(self, out: bytearray, value: Buffer) -> None:
        out += _U64.pack(len(value))
        out += value

    def decode_from(self, buf: Buffer, off: int) -> tuple[Buffer, int]:
        n, off = _read_count(buf, off, "byte sequence")
        _need(buf, off, n, "byte sequence")
        return memoryview(buf)[off : off + n], off + n

    def from_span(self, buf: Buffer, lo: int, hi: int) -> Buffer:
        return memoryview(buf)[lo:hi]


class _String(SPSType[str]):
    """``SPSString``: u64 length then bytes, no NUL; non-UTF-8 bytes survive as surrogates."""

    name = "String"
    length_prefixed = True

    def encode_into(self, out: bytearray, value: str) -> None:
        raw = value.encode("utf-8", "surrogateescape")
        out += _U64.pack(len(raw))
        out += raw

    def decode_from(self, buf: Buffer, off: int) -> tuple[str, int]:
        n, off = _read_count(buf, off, "string")
        _need(buf, off, n, "string")
        return bytes(buf[off : off + n]).decode("utf-8", "surrogateescape"), off + n

    def from_span(self, buf: Buffer, lo: int, hi: int) -> str:
        return bytes(buf[lo:hi]).decode("utf-8", "surrogateescape")


Bytes: SPSType[bytes] = _Bytes()
BytesView: SPSType[Buffer] = _BytesView()
String: SPSType[str] = _String()


class SequenceOf(SPSType[list[T]]):
    """``SPSSequence<T>``: u64 element count, then the elements back to back."""

    def __init__(self, elem: SPSType[T]) -> None:
        self.elem = elem
        self.name = f"Sequence<{elem.name}>"
        self._fmt: str | None = elem.fmt if isinstance(elem, _Primitive) else None
        # Every element takes at least one byte, except Empty: impossible counts are refused
        # before anything is allocated.
        self._min_size = elem.fixed_size if elem.fixed_size is not None else 1

    def encode_into(self, out: bytearray, value: list[T]) -> None:
        out += _U64.pack(len(value))
        if self._fmt is not None:
            out += struct.pack(f"<{len(value)}{self._fmt}", *value)
            return
        enc = self.elem.encode_into
        for v in value:
            enc(out, v)

    def decode_from(self, buf: Buffer, off: int) -> tuple[list[T], int]:
        n, off = _read_count(buf, off, self.name)
        min_size = self._min_size
        if min_size and n * min_size > len(buf) - off:
            _need(buf, off, n * min_size, self.name)
        if not n:
            return [], off
        if self._fmt is not None:
            vals = list(struct.unpack_from(f"<{n}{self._fmt}", buf, off))
            return cast(list[T], vals), off + n * min_size
        if not min_size and n > 1 << 20:
            raise SPSDecodeError(f"implausible element count {n} for {self.name}")
        elem = self.elem
        dec = elem.compiled_decoder() if isinstance(elem, TupleOf) else elem.decode_from
        out: list[T] = []
        append = out.append
        for _ in range(n):
            v, off = dec(buf, off)
            append(v)
        return out, off


class TupleOf(SPSType[Any]):
    """``SPSTuple<A, B, ...>``: the elements back to back.

    ``factory`` (e.g. a ``NamedTuple`` class) builds the Python value from the decoded fields;
    by default a plain tuple is returned. Argument lists of wrapper functions are tuples.
    """

    def __init__(
        self,
        *elems: SPSType[Any],
        factory: Callable[..., Any] | None = None,
        name: str | None = None,
    ) -> None:
        self.elems = elems
        self.factory = factory
        self.name = name or "Tuple<" + ", ".join(e.name for e in elems) + ">"
        fmts = [e.fmt for e in elems]
        if elems and all(isinstance(e, _Primitive) for e in elems):
            self._struct: struct.Struct | None = struct.Struct("<" + "".join(cast(list[str], fmts)))
            self.fixed_size = self._struct.size
        else:
            self._struct = None
            sizes = [e.fixed_size for e in elems]
            self.fixed_size = None if None in sizes else sum(cast(list[int], sizes))
        self._decoder: Callable[[Buffer, int], tuple[Any, int]] | None = None
        if self._struct is None and _flat_formats(self) is not None:
            # Nested, but every field fixed-size (an ExecutorSymbolDef: an address and a
            # pair of flag bytes): encoded by generated code, one struct for all fields.
            self.encode_into = _compile_flat_encoder(self)  # type: ignore[method-assign,assignment]

    def encode_into(self, out: bytearray, value: Any) -> None:
        if len(value) != len(self.elems):
            raise SPSEncodeError(f"{self.name} needs {len(self.elems)} fields, got {len(value)}")
        if self._struct is not None:
            out += self._struct.pack(*value)
            return
        for e, v in zip(self.elems, value, strict=True):
            e.encode_into(out, v)

    def encode_fields(self, out: bytearray, value: Any) -> None:
        """Encode element by element (each nested tuple checking its own field count)."""
        TupleOf.encode_into(self, out, value)

    def decode_from(self, buf: Buffer, off: int) -> tuple[Any, int]:
        decoder = self._decoder or self.compiled_decoder()
        return decoder(buf, off)

    def compiled_decoder(self) -> Callable[[Buffer, int], tuple[Any, int]]:
        """This tuple's decoder, ``(buf, off) -> (value, next offset)``: straight-line code
        generated at first use (as ``dataclasses`` and ``namedtuple`` generate theirs), with
        each run of fixed-size fields — and the u64 count of a length-prefixed element that
        ends a run — unpacked by one ``struct``. When the bytes run out it decodes field by
        field instead (:meth:`decode_fields`), which raises the precise
        :class:`SPSDecodeError`."""
        if self._decoder is None:
            self._decoder = _compile_tuple_decoder(self)
        return self._decoder

    def decode_fields(self, buf: Buffer, off: int) -> tuple[Any, int]:
        """Decode element by element, each with its own bounds checks and error message."""
        acc = []
        for e in self.elems:
            v, off = e.decode_from(buf, off)
            acc.append(v)
        if self.factory is not None:
            return self.factory(*acc), off
        return tuple(acc), off


def _flat_formats(t: TupleOf) -> list[str] | None:
    """The ``struct`` codes of ``t``'s fields, nested tuples flattened in order, when every
    field is a single fixed-size one (``None`` otherwise)."""
    fmts: list[str] = []
    for e in t.elems:
        if isinstance(e, TupleOf):
            inner = _flat_formats(e)
            if inner is None:
                return None
            fmts += inner
        elif e.fmt is not None and e.fixed_size is not None and len(e.fmt) == 1:
            fmts.append(e.fmt)
        else:
            return None
    return fmts


def _compile_flat_encoder(t: TupleOf) -> Callable[[bytearray, Any], None]:
    """Generate the encoder of a nested tuple whose fields are all fixed-size: each level's
    field count checked, then one ``struct`` pack of the flattened fields. A count that does
    not match goes to :meth:`TupleOf.encode_fields`, which raises the precise error."""
    ns: dict[str, Any] = {"_pack": struct.Struct("<" + "".join(_flat_formats(t) or [])).pack,
                          "_fields": t.encode_fields}
    checks: list[str] = []
    leaves: list[str] = []

    def walk(tt: TupleOf, expr: str) -> None:
        checks.append(f"len({expr}) != {len(tt.elems)}")
        for i, e in enumerate(tt.elems):
            if isinstance(e, TupleOf):
                walk(e, f"{expr}[{i}]")
            else:
                leaves.append(f"{expr}[{i}]")

    walk(t, "v")
    src = ("def encode_into(out, v):\n"
           f"    if {' or '.join(checks)}:\n"
           "        return _fields(out, v)\n"
           f"    out += _pack({', '.join(leaves)})\n")
    exec(compile(src, f"<SPS encoder {t.name}>", "exec"), ns)
    encoder: Callable[[bytearray, Any], None] = ns["encode_into"]
    return encoder


def _compile_tuple_decoder(t: TupleOf) -> Callable[[Buffer, int], tuple[Any, int]]:
    """Generate :meth:`TupleOf.compiled_decoder`'s function for ``t`` (the source uses only
    names made here; the elements, structs and factory are bound in its namespace)."""
    ns: dict[str, Any] = {"_fields": t.decode_fields}
    body = ["    start = off", "    n = len(buf)"]
    names: list[str] = []
    fmt: list[str] = []

    def flush_run(span: SPSType[Any] | None) -> None:
        """Emit the unpack of the pending run of fields (plus ``span``'s count)."""
        i = len(ns)
        run = struct.Struct("<" + "".join(fmt) + ("Q" if span is not None else ""))
        ns[f"_u{i}"] = run.unpack_from
        count = len(fmt) + (span is not None)  # every format here is one field's code
        fields = [f"v{len(names) + j}" for j in range(count)]
        names.extend(fields)
        body.append(f"    end = off + {run.size}")
        body.append("    if end > n:\n        return _fields(buf, start)")
        body.append(f"    {', '.join(fields)}, = _u{i}(buf, off)")
        if span is None:
            body.append("    off = end")
        else:
            ns[f"_s{i}"] = span.from_span
            body.append(f"    off = end + {fields[-1]}")
            body.append("    if off > n:\n        return _fields(buf, start)")
            body.append(f"    {fields[-1]} = _s{i}(buf, end, off)")
        fmt.clear()

    for e in t.elems:
        if e.fmt is not None:
            fmt.append(e.fmt)
        elif e.length_prefixed:
            flush_run(e)
        else:
            if fmt:
                flush_run(None)
            i = len(ns)
            ns[f"_d{i}"] = e.compiled_decoder() if isinstance(e, TupleOf) else e.decode_from
            v = f"v{len(names)}"
            names.append(v)
            body.append(f"    {v}, off = _d{i}(buf, off)")
    if fmt:
        flush_run(None)
    values = "(" + "".join(f"{v}, " for v in names) + ")"
    factory = t.factory
    if factory is None:
        body.append(f"    return {values}, off")
    elif isinstance(factory, type) and issubclass(factory, tuple) and hasattr(factory, "_fields"):
        # A NamedTuple: the fields are known to fit, so skip its __new__'s argument parsing.
        ns["_new"], ns["_cls"] = tuple.__new__, factory
        body.append(f"    return _new(_cls, {values}), off")
    else:
        ns["_factory"] = factory
        body.append(f"    return _factory(*{values}), off")
    src = "def decode(buf, off):\n" + "\n".join(body) + "\n"
    exec(compile(src, f"<SPS decoder {t.name}>", "exec"), ns)
    decoder: Callable[[Buffer, int], tuple[Any, int]] = ns["decode"]
    return decoder


class OptionalOf(SPSType[T | None]):
    """``SPSOptional<T>``: a bool "present", then ``T`` if present. ``None`` is absent."""

    def __init__(self, elem: SPSType[T]) -> None:
        self.elem = elem
        self.name = f"Optional<{elem.name}>"

    def encode_into(self, out: bytearray, value: T | None) -> None:
        if value is None:
            out.append(0)
        else:
            out.append(1)
            self.elem.encode_into(out, value)

    def decode_from(self, buf: Buffer, off: int) -> tuple[T | None, int]:
        _need(buf, off, 1, self.name)
        if buf[off] == 0:
            return None, off + 1
        return self.elem.decode_from(buf, off + 1)


class MapOf(SPSType[dict[Any, Any]]):
    """``SPSSequence<SPSTuple<K, V>>`` read as a map (LLVM's StringMap / DenseMap encodings).

    Order on the wire is arbitrary; duplicate keys are a decode error.
    """

    def __init__(self, key: SPSType[Any], value: SPSType[Any]) -> None:
        self._seq = SequenceOf(TupleOf(key, value))
        self.name = f"Map<{key.name}, {value.name}>"

    def encode_into(self, out: bytearray, value: Mapping[Any, Any]) -> None:
        self._seq.encode_into(out, list(value.items()))

    def decode_from(self, buf: Buffer, off: int) -> tuple[dict[Any, Any], int]:
        pairs, off = self._seq.decode_from(buf, off)
        result: dict[Any, Any] = {}
        for k, v in pairs:
            if k in result:
                raise SPSDecodeError(f"duplicate key {k!r} in {self.name}")
            result[k] = v
        return result, off


class _Error(SPSType[ErrorValue | None]):
    """``SPSError``: ``00`` success (``None``), or ``01`` + String message (:class:`ErrorValue`)."""

    name = "Error"

    def encode_into(self, out: bytearray, value: ErrorValue | None) -> None:
        if value is None:
            out.append(0)
        else:
            out.append(1)
            String.encode_into(out, value.message)

    def decode_from(self, buf: Buffer, off: int) -> tuple[ErrorValue | None, int]:
        _need(buf, off, 1, "Error")
        if buf[off] == 0:
            return None, off + 1
        msg, off = String.decode_from(buf, off + 1)
        return ErrorValue(msg), off


Error: SPSType[ErrorValue | None] = _Error()


class ExpectedOf(SPSType[Any]):
    """``SPSExpected<T>``: ``01`` + T (the value), or ``00`` + String (an :class:`ErrorValue`).

    Note the first byte's meaning is the opposite of ``SPSError``'s.
    """

    def __init__(self, elem: SPSType[T]) -> None:
        self.elem = elem
        self.name = f"Expected<{elem.name}>"

    def encode_into(self, out: bytearray, value: Any) -> None:
        if isinstance(value, ErrorValue):
            out.append(0)
            String.encode_into(out, value.message)
        else:
            out.append(1)
            self.elem.encode_into(out, value)

    def decode_from(self, buf: Buffer, off: int) -> tuple[Any, int]:
        _need(buf, off, 1, self.name)
        if buf[off] == 0:
            msg, off = String.decode_from(buf, off + 1)
            return ErrorValue(msg), off
        return self.elem.decode_from(buf, off + 1)


def failable(t: SPSType[Any]) -> bool:
    """True if ``t`` can carry an error in-band (``SPSError`` or ``SPSExpected<T>``)."""
    return t is Error or isinstance(t, ExpectedOf)


@dataclass(frozen=True)
class WrapperSignature:
    """The SPS signature of a wrapper function: ``ret(args...)``.

    Mirrors ``shared::WrapperFunction<SPSRet(SPSArgs...)>``: the argument bytes are the
    arguments encoded as an ``SPSTuple``; the result bytes are ``ret`` encoded alone.
    """

    ret: SPSType[Any]
    args: TupleOf

    def encode_args(self, *args: Any) -> bytes:
        return self.args.encode(args)

    def decode_args(self, data: Buffer) -> tuple[Any, ...]:
        args: tuple[Any, ...] = self.args.decode(data)
        return args

    def encode_result(self, value: Any) -> bytes:
        return self.ret.encode(value)

    def decode_result(self, data: Buffer) -> Any:
        return self.ret.decode(data)

    def __str__(self) -> str:
        return f"{self.ret.name}({', '.join(e.name for e in self.args.elems)})"


def signature(ret: SPSType[Any], *args: SPSType[Any]) -> WrapperSignature:
    """Build a :class:`WrapperSignature` ``ret(args...)``."""
    return WrapperSignature(ret, TupleOf(*args))


def encode_args(types: Sequence[SPSType[Any]], values: Sequence[Any]) -> bytes:
    """Encode ``values`` as ``SPSTuple<types...>`` (the argument bytes of a wrapper call)."""
    return TupleOf(*types).encode(tuple(values))
