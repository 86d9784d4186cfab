"""ORC domain types in SPS (``Shared/ExecutorAddress.h``, ``Shared/TargetProcessControlTypes.h``,
``Shared/ExecutorSymbolDef.h``, ``Shared/AllocationActions.h``).

Each SPS shape is documented next to its definition; byte layouts are in docs/protocol.md §4.4.
"""

from __future__ import annotations

from typing import NamedTuple

from .sps import (
    Addr,
    Bool,
    Bytes,
    BytesView,
    MapOf,
    SequenceOf,
    String,
    TupleOf,
    UInt8,
    UInt32,
    UInt64,
)


class ExecutorAddrRange(NamedTuple):
    """``ExecutorAddrRange``: ``[start, end)`` in executor addresses (bytes)."""

    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


class JITSymbolFlags(NamedTuple):
    """``JITSymbolFlags``: (flags, target flags), one byte each."""

    flags: int
    target_flags: int = 0


# Bits of JITSymbolFlags.flags.
FLAG_HAS_ERROR = 0x01
FLAG_WEAK = 0x02
FLAG_COMMON = 0x04
FLAG_ABSOLUTE = 0x08
FLAG_EXPORTED = 0x10
FLAG_CALLABLE = 0x20
FLAG_SIDE_EFFECTS_ONLY = 0x40


class ExecutorSymbolDef(NamedTuple):
    """``ExecutorSymbolDef``: (address, flags)."""

    address: int
    flags: JITSymbolFlags


class WrapperFunctionCall(NamedTuple):
    """``shared::WrapperFunctionCall``: a function address and its SPS argument bytes.

    ``fn == 0`` means "no call".
    """

    fn: int
    args: bytes


class AllocActionCallPair(NamedTuple):
    """``shared::AllocActionCallPair``: run ``finalize`` at initialize, ``dealloc`` at teardown."""

    finalize: WrapperFunctionCall
    dealloc: WrapperFunctionCall


class SegFinalizeRequest(NamedTuple):
    """``tpctypes::SegFinalizeRequest``: protection bits, address, size (bytes), content."""

    prot: int
    addr: int
    size: int
    content: bytes | bytearray | memoryview


class FinalizeRequest(NamedTuple):
    """``tpctypes::FinalizeRequest``: segments and alloc actions."""

    segments: list[SegFinalizeRequest]
    actions: list[AllocActionCallPair]


class SharedMemorySegFinalizeRequest(NamedTuple):
    """``tpctypes::SharedMemorySegFinalizeRequest``: protection, address, size (no content)."""

    prot: int
    addr: int
    size: int


class SharedMemoryFinalizeRequest(NamedTuple):
    """``tpctypes::SharedMemoryFinalizeRequest``."""

    segments: list[SharedMemorySegFinalizeRequest]
    actions: list[AllocActionCallPair]


# Memory protection bits (``orc::MemProt`` / ``RemoteAllocGroup``).
PROT_READ = 0x1
PROT_WRITE = 0x2
PROT_EXEC = 0x4
PROT_FINALIZE_LIFETIME = 0x8
PROT_VALID_MASK = 0xF

SPSExecutorAddrRange = TupleOf(Addr, Addr, factory=ExecutorAddrRange, name="ExecutorAddrRange")
SPSJITSymbolFlags = TupleOf(UInt8, UInt8, factory=JITSymbolFlags, name="JITSymbolFlags")
SPSExecutorSymbolDef = TupleOf(
    Addr, SPSJITSymbolFlags, factory=ExecutorSymbolDef, name="ExecutorSymbolDef"
)
SPSRemoteSymbolLookupSet = SequenceOf(TupleOf(String, Bool))
SPSWrapperFunctionCall = TupleOf(
    Addr, Bytes, factory=WrapperFunctionCall, name="WrapperFunctionCall"
)
SPSAllocActionCallPair = TupleOf(
    SPSWrapperFunctionCall,
    SPSWrapperFunctionCall,
    factory=AllocActionCallPair,
    name="AllocActionCallPair",
)
SPSSegFinalizeRequest = TupleOf(
    UInt8, Addr, UInt64, BytesView, factory=SegFinalizeRequest, name="SegFinalizeRequest"
)
SPSFinalizeRequest = TupleOf(
    SequenceOf(SPSSegFinalizeRequest),
    SequenceOf(SPSAllocActionCallPair),
    factory=FinalizeRequest,
    name="FinalizeRequest",
)
SPSSharedMemorySegFinalizeRequest = TupleOf(
    UInt8,
    Addr,
    UInt64,
    factory=SharedMemorySegFinalizeRequest,
    name="SharedMemorySegFinalizeRequest",
)
SPSSharedMemoryFinalizeRequest = TupleOf(
    SequenceOf(SPSSharedMemorySegFinalizeRequest),
    SequenceOf(SPSAllocActionCallPair),
    factory=SharedMemoryFinalizeRequest,
    name="SharedMemoryFinalizeRequest",
)

#: Setup payload, LLVM 15+ (``SimpleRemoteEPCExecutorInfo``): triple, page size (bytes),
#: bootstrap map (String -> bytes), bootstrap symbols (String -> ExecutorAddr).
SPSSetupMessage = TupleOf(
    String, UInt64, MapOf(String, Bytes), MapOf(String, Addr), name="SimpleRemoteEPCExecutorInfo"
)
#: Setup payload, LLVM 14: triple, page size, bootstrap symbols (no bootstrap map).
SPSSetupMessage14 = TupleOf(
    String, UInt64, MapOf(String, Addr), name="SimpleRemoteEPCExecutorInfo14"
)

# ---- perf support (LLVM's PerfSharedStructs.h) --------------------------------------------------


class CodeLoadRecord(NamedTuple):
    """``PerfJITCodeLoadRecord``: one function's code (``JIT_CODE_LOAD``)."""

    prefix: tuple[int, int]  # (id, total size)
    pid: int
    tid: int
    vma: int
    code_addr: int
    code_size: int
    code_index: int
    name: bytes


class DebugEntry(NamedTuple):
    """``PerfJITDebugEntry``: a source line of a code address."""

    addr: int
    line: int
    discrim: int
    name: bytes


class DebugInfoRecord(NamedTuple):
    """``PerfJITDebugInfoRecord`` (``JIT_CODE_DEBUG_INFO``)."""

    prefix: tuple[int, int]
    code_addr: int
    entries: list[DebugEntry]


class UnwindingRecord(NamedTuple):
    """``PerfJITCodeUnwindingInfoRecord`` (``JIT_CODE_UNWINDING_INFO``)."""

    prefix: tuple[int, int]
    unwind_data_size: int
    eh_frame_hdr_size: int
    mapped_size: int
    eh_frame_hdr_addr: int
    eh_frame_hdr: bytes
    eh_frame_addr: int


SPSPerfJITRecordPrefix = TupleOf(UInt32, UInt32)
SPSPerfJITCodeLoadRecord = TupleOf(
    SPSPerfJITRecordPrefix, UInt32, UInt32, UInt64, UInt64, UInt64, UInt64, Bytes,
    factory=CodeLoadRecord, name="PerfJITCodeLoadRecord",
)
SPSPerfJITDebugEntry = TupleOf(UInt64, UInt32, UInt32, Bytes, factory=DebugEntry,
                               name="PerfJITDebugEntry")
SPSPerfJITDebugInfoRecord = TupleOf(
    SPSPerfJITRecordPrefix, UInt64, SequenceOf(SPSPerfJITDebugEntry),
    factory=DebugInfoRecord, name="PerfJITDebugInfoRecord",
)
SPSPerfJITCodeUnwindingInfoRecord = TupleOf(
    SPSPerfJITRecordPrefix, UInt64, UInt64, UInt64, UInt64, Bytes, UInt64,
    factory=UnwindingRecord, name="PerfJITCodeUnwindingInfoRecord",
)
SPSPerfJITRecordBatch = TupleOf(
    SequenceOf(SPSPerfJITCodeLoadRecord), SequenceOf(SPSPerfJITDebugInfoRecord),
    SPSPerfJITCodeUnwindingInfoRecord, name="PerfJITRecordBatch",
)
