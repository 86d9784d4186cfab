"""Memory read and write wrappers (``__llvm_orc_bootstrap_mem_*`` and ``orc_rt_ci_sps_mem_*``).

Signatures (``TargetProcess/SimpleExecutorMemoryManager``-era bootstrap functions):

* ``mem_write_uint{8,16,32,64}s``: ``void(Sequence<Tuple<Addr, uintN>>)``
* ``mem_write_pointers``: ``void(Sequence<Tuple<Addr, Addr>>)``
* ``mem_write_buffers``: ``void(Sequence<Tuple<Addr, Sequence<char>>>)``
* ``mem_read_uint{8,16,32,64}s`` / ``mem_read_pointers``: ``Sequence<T>(Sequence<Addr>)``
* ``mem_read_buffers``: ``Sequence<Sequence<uint8>>(Sequence<ExecutorAddrRange>)``
* ``mem_read_strings``: ``Sequence<String>(Sequence<Addr>)`` (C strings, NUL excluded)

Every access goes through ``process_vm_readv``/``writev`` on our own process, so a bad
address yields an error (out-of-band: these result types cannot carry one) instead of a crash.
Buffer reads and writes of more than :data:`INLINE_MAX_BYTES` in all run on a worker thread
(never on the event loop); a large read lands straight in its Result frame's buffer (one
copy), and a write's bytes are taken from the message payload without a copy.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import Any

from ...errors import MemoryAccessError, OutOfBandError
from ...native.api import mem_read, mem_read_into, mem_write, read_c_string
from ...protocol.framing import DEFAULT_MAX_MESSAGE_SIZE, FramedPayload
from ...protocol.names import MEM_READ, MEM_WRITE, Bootstrap, MemoryAccessSPSCI
from ...protocol.orc_types import ExecutorAddrRange
from ...protocol.sps import Addr, BytesView, Empty, SequenceOf, TupleOf, WrapperSignature, signature
from ..registry import Service, WrapperSpec

#: Buffer reads or writes of at most this many bytes in all run on the event loop.
INLINE_MAX_BYTES = 1 << 20

#: Largest ``mem_read_buffers`` result (bytes in all): a larger read is refused before its
#: buffer is made (it would be larger than any message this executor accepts; a range that
#: runs far past readable memory would otherwise cost its whole size first).
MAX_READ_BYTES = DEFAULT_MAX_MESSAGE_SIZE

_U64 = struct.Struct("<Q")

#: ``struct`` format of each integer kind (``mem_write_<kind>`` / ``mem_read_<kind>``).
_INTS: list[tuple[str, str]] = [
    ("uint8s", "<B"),
    ("uint16s", "<H"),
    ("uint32s", "<I"),
    ("uint64s", "<Q"),
    ("pointers", "<Q"),
]

#: ``mem_write_buffers`` as in :data:`MEM_WRITE`, decoding each buffer as a view of the
#: message payload (no copy).
WRITE_BUFFERS = signature(Empty, SequenceOf(TupleOf(Addr, BytesView)))


def _writer(fmt: str) -> Callable[[list[tuple[int, int]]], None]:
    packer = struct.Struct(fmt)

    def write(items: list[tuple[int, int]]) -> None:
        try:
            for addr, value in items:
                mem_write(addr, packer.pack(value))
        except MemoryAccessError as e:
            raise OutOfBandError(str(e)) from e

    return write


def _reader(fmt: str) -> Callable[[list[int]], list[int]]:
    packer = struct.Struct(fmt)

    def read(addrs: list[int]) -> list[int]:
        try:
            return [packer.unpack(mem_read(a, packer.size))[0] for a in addrs]
        except MemoryAccessError as e:
            raise OutOfBandError(str(e)) from e

    return read


def write_buffers(items: list[tuple[int, bytes | memoryview]]) -> None:
    try:
        for addr, data in items:
            mem_write(addr, data)
    except MemoryAccessError as e:
        raise OutOfBandError(str(e)) from e


def _read_size(ranges: list[ExecutorAddrRange]) -> int:
    """Bytes the ranges cover in all; raises :class:`OutOfBandError` for an inverted one."""
    total = 0
    for r in ranges:
        if r.end < r.start:
            raise OutOfBandError(f"bad address range [{r.start:#x}, {r.end:#x})")
        total += r.end - r.start
    return total


def read_buffers(ranges: list[ExecutorAddrRange]) -> list[bytes] | FramedPayload:
    """The bytes of each range: a list, or for more than :data:`INLINE_MAX_BYTES` in all,
    the encoded ``Sequence<Sequence<uint8>>`` read in place into a :class:`FramedPayload`."""
    total = _read_size(ranges)
    if total > MAX_READ_BYTES:
        raise OutOfBandError(f"cannot read {total} bytes: more than {MAX_READ_BYTES} in one call")
    try:
        if total <= INLINE_MAX_BYTES:
            return [mem_read(r.start, r.end - r.start) for r in ranges]
        try:
            result = FramedPayload(8 + 8 * len(ranges) + total)
        except MemoryError as e:
            raise OutOfBandError(f"cannot read {total} bytes: {e}") from None
        out = result.payload
        _U64.pack_into(out, 0, len(ranges))
        off = 8
        for r in ranges:
            n = r.end - r.start
            _U64.pack_into(out, off, n)
            mem_read_into(r.start, out[off + 8 : off + 8 + n])
            off += 8 + n
        return result
    except MemoryAccessError as e:
        raise OutOfBandError(str(e)) from e


def _small_read(ranges: list[ExecutorAddrRange]) -> bool:
    try:
        return _read_size(ranges) <= INLINE_MAX_BYTES
    except OutOfBandError:
        return True  # refused at once


def _small_write(items: list[tuple[int, bytes | memoryview]]) -> bool:
    return sum(len(data) for _addr, data in items) <= INLINE_MAX_BYTES


def read_strings(addrs: list[int]) -> list[bytes]:
    try:
        return [read_c_string(a) for a in addrs]
    except MemoryAccessError as e:
        raise OutOfBandError(str(e)) from e


_Spec = tuple[str, WrapperSignature, Callable[..., Any], Callable[..., bool] | None]


def _specs() -> list[_Spec]:
    """(name, signature, handler, ``inline_when`` — set for the buffer wrappers, which run
    on a worker thread unless small) of every memory-access wrapper."""
    specs: list[_Spec] = []
    for kind, fmt in _INTS:
        specs.append((f"mem_write_{kind}", MEM_WRITE[kind], _writer(fmt), None))
        specs.append((f"mem_read_{kind}", MEM_READ[kind], _reader(fmt), None))
    specs.append(("mem_write_buffers", WRITE_BUFFERS, write_buffers, _small_write))
    specs.append(("mem_read_buffers", MEM_READ["buffers"], read_buffers, _small_read))
    specs.append(("mem_read_strings", MEM_READ["strings"], read_strings, None))
    return specs


#: (name in :class:`Bootstrap` and :class:`MemoryAccessSPSCI`, signature, handler,
#: ``inline_when``) of every memory-access wrapper function, built once per process: every
#: session's registry shares these signatures, and so their decoders (generated at first use).
_SPECS = _specs()


class MemoryAccessService(Service):
    """Reads and writes of executor memory on the controller's behalf (answered inline, but
    buffer reads and writes of more than :data:`INLINE_MAX_BYTES` on a worker thread)."""

    service_name = "memory-access"

    def wrappers(self) -> Iterable[WrapperSpec]:
        """Every name (the profile decides which are registered)."""
        for attr, sig, fn, small in _SPECS:
            blocking = small is not None
            for names in (Bootstrap, MemoryAccessSPSCI):
                name: str = getattr(names, attr)
                yield WrapperSpec(name, sig, fn, blocking, inline_when=small)
