"""Every bootstrap symbol and wrapper function name the executor serves, with its SPS signature,
per LLVM version and per executor profile.

The counterpart of LLVM's ``llvm/ExecutionEngine/Orc/Shared/OrcRTBridge.h`` (the names of the
executor-side bootstrap functions) and of orc-rt's controller-interface (``orc_rt_ci_*``) names.
docs/protocol.md describes each wrapper function; this module is the one table of their names.

* Names, one namespace class per service: ``SimpleExecutorMemoryManager.reserve`` is
  ``"__llvm_orc_SimpleExecutorMemoryManager_reserve_wrapper"``.
* Signatures, as :class:`~orc_executor.protocol.sps.WrapperSignature` values (``RESERVE``, ...).
* :data:`TABLE`: one :class:`BootstrapSymbol` per (name, signature) with the LLVM versions
  (:data:`VERSIONS`) whose executor advertises it in Setup or whose controller looks it up by
  name through the dylib manager. A name appears twice only where versions disagree on its
  signature (14's ``lookup_wrapper`` and GDB wrapper).
* Profiles (:data:`PROFILES`): what orc-executor serves, :func:`served`, derived from the
  table: ``14`` advertises exactly what the stock LLVM 14 executor advertises and answers
  14's by-name lookups without advertising them; ``modern`` advertises everything LLVM 19,
  22 and upstream use (no name has two signatures among them).

Pure: imports only the SPS codec (no trio, no cffi).
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Final

from .orc_types import (
    SPSExecutorAddrRange,
    SPSExecutorSymbolDef,
    SPSFinalizeRequest,
    SPSPerfJITRecordBatch,
    SPSRemoteSymbolLookupSet,
    SPSSharedMemoryFinalizeRequest,
)
from .sps import (
    Addr,
    Bool,
    Bytes,
    Empty,
    Error,
    ExpectedOf,
    Int32,
    Int64,
    OptionalOf,
    SequenceOf,
    SPSType,
    String,
    TupleOf,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    WrapperSignature,
    signature,
)

# ---- names, one namespace per service -----------------------------------------------------------


class Namespace:
    """Base of the name namespaces: class attributes holding names; never instantiated."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Every name this namespace defines, in definition order."""
        return tuple(
            v for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, str)
        )


class SimpleRemoteEPC(Namespace):
    """Data symbols of the dispatch function JIT'd code calls the controller through (the
    controller re-exports them to JIT'd code as ``__orc_rt_jit_dispatch`` and
    ``__orc_rt_jit_dispatch_ctx``). All LLVM versions."""

    dispatch_ctx: Final = "__llvm_orc_SimpleRemoteEPC_dispatch_ctx"
    dispatch_fn: Final = "__llvm_orc_SimpleRemoteEPC_dispatch_fn"


class SimpleExecutorDylibManager(Namespace):
    """``rt::SimpleExecutorDylibManager*Name``: open libraries, look symbols up."""

    _P = "__llvm_orc_SimpleExecutorDylibManager_"
    instance: Final = _P + "Instance"
    open: Final = _P + "open_wrapper"
    #: 14 and 19 (with different signatures: :data:`LOOKUP14`, :data:`LOOKUP19`).
    lookup: Final = _P + "lookup_wrapper"
    #: 22 and later.
    resolve: Final = _P + "resolve_wrapper"


class SimpleExecutorMemoryManager(Namespace):
    """``rt::SimpleExecutorMemoryManager*Name``: JIT memory. 14 and 19 use reserve / finalize /
    deallocate; 22 and later reserve / initialize / deinitialize / release."""

    _P = "__llvm_orc_SimpleExecutorMemoryManager_"
    instance: Final = _P + "Instance"
    reserve: Final = _P + "reserve_wrapper"
    finalize: Final = _P + "finalize_wrapper"
    deallocate: Final = _P + "deallocate_wrapper"
    initialize: Final = _P + "initialize_wrapper"
    deinitialize: Final = _P + "deinitialize_wrapper"
    release: Final = _P + "release_wrapper"


class ExecutorSharedMemoryMapperService(Namespace):
    """``rt::ExecutorSharedMemoryMapperService*Name``: memory shared with the controller
    (19 ``-use-shared-memory``, 22 ``-use-memmgr=shared``, kept upstream)."""

    _P = "__llvm_orc_ExecutorSharedMemoryMapperService_"
    instance: Final = _P + "Instance"
    reserve: Final = _P + "Reserve"
    initialize: Final = _P + "Initialize"
    deinitialize: Final = _P + "Deinitialize"
    release: Final = _P + "Release"


class Bootstrap(Namespace):
    """``__llvm_orc_bootstrap_*``: memory access, running code, and LLVM 14's EH-frame
    wrappers (``rt::MemoryWrite*WrapperName``, ``rt::RunAs*WrapperName``, ...)."""

    _P = "__llvm_orc_bootstrap_"
    mem_write_uint8s: Final = _P + "mem_write_uint8s_wrapper"
    mem_write_uint16s: Final = _P + "mem_write_uint16s_wrapper"
    mem_write_uint32s: Final = _P + "mem_write_uint32s_wrapper"
    mem_write_uint64s: Final = _P + "mem_write_uint64s_wrapper"
    mem_write_pointers: Final = _P + "mem_write_pointers_wrapper"
    mem_write_buffers: Final = _P + "mem_write_buffers_wrapper"
    mem_read_uint8s: Final = _P + "mem_read_uint8s_wrapper"
    mem_read_uint16s: Final = _P + "mem_read_uint16s_wrapper"
    mem_read_uint32s: Final = _P + "mem_read_uint32s_wrapper"
    mem_read_uint64s: Final = _P + "mem_read_uint64s_wrapper"
    mem_read_pointers: Final = _P + "mem_read_pointers_wrapper"
    mem_read_buffers: Final = _P + "mem_read_buffers_wrapper"
    mem_read_strings: Final = _P + "mem_read_strings_wrapper"
    run_as_main: Final = _P + "run_as_main_wrapper"
    run_as_void_function: Final = _P + "run_as_void_function_wrapper"
    run_as_int_function: Final = _P + "run_as_int_function_wrapper"
    register_ehframe_section: Final = _P + "register_ehframe_section_wrapper"
    deregister_ehframe_section: Final = _P + "deregister_ehframe_section_wrapper"


class EHFrame(Namespace):
    """EH-frame registration: 19's wrappers (also the names llvm-jitlink 14 looks up) and
    22's alloc actions (``rt::(De)RegisterEHFrameSectionAllocActionName``)."""

    register_section_wrapper: Final = "llvm_orc_registerEHFrameSectionWrapper"
    deregister_section_wrapper: Final = "llvm_orc_deregisterEHFrameSectionWrapper"
    register_alloc_action: Final = "llvm_orc_registerEHFrameAllocAction"
    deregister_alloc_action: Final = "llvm_orc_deregisterEHFrameAllocAction"


class JITLoaderGDB(Namespace):
    """The GDB JIT interface: 14/19's wrapper (looked up by name) and 22's alloc action
    (``rt::RegisterJITLoaderGDBAllocActionName``)."""

    register_wrapper: Final = "llvm_orc_registerJITLoaderGDBWrapper"
    register_alloc_action: Final = "llvm_orc_registerJITLoaderGDBAllocAction"


class JITLoaderPerf(Namespace):
    """perf support (LLVM's ``JITLoaderPerf.cpp``): looked up by name by
    ``llvm-jitlink -perf-support``, never advertised."""

    start: Final = "llvm_orc_registerJITLoaderPerfStart"
    end: Final = "llvm_orc_registerJITLoaderPerfEnd"
    impl: Final = "llvm_orc_registerJITLoaderPerfImpl"


class SimpleNativeMemoryMap(Namespace):
    """orc-rt's memory manager (``rt::orc_rt_SimpleNativeMemoryMapSPSSymbols``)."""

    _P = "orc_rt_ci_sps_SimpleNativeMemoryMap_"
    instance: Final = "orc_rt_ci_SimpleNativeMemoryMap_Instance"
    reserve: Final = _P + "reserve"
    initialize: Final = _P + "initialize"
    deinitialize_multiple: Final = _P + "deinitializeMultiple"
    release_multiple: Final = _P + "releaseMultiple"


class NativeDylibManager(Namespace):
    """orc-rt's dylib manager."""

    _P = "orc_rt_ci_sps_NativeDylibManager_"
    instance: Final = "orc_rt_ci_NativeDylibManager_Instance"
    load: Final = _P + "load"
    lookup: Final = _P + "lookup"


class CallSPSCI(Namespace):
    """orc-rt's SPS controller interface for running code (``rt::sps_ci::Call*``)."""

    call_main: Final = "orc_rt_ci_sps_call_main"
    call_int32_void: Final = "orc_rt_ci_sps_call_int32_void"
    call_int32_int32: Final = "orc_rt_ci_sps_call_int32_int32"
    call_void_void: Final = "orc_rt_ci_sps_call_void_void"


class MemoryAccessSPSCI(Namespace):
    """orc-rt's SPS controller interface for memory access."""

    _P = "orc_rt_ci_sps_"
    mem_write_uint8s: Final = _P + "mem_write_uint8s"
    mem_write_uint16s: Final = _P + "mem_write_uint16s"
    mem_write_uint32s: Final = _P + "mem_write_uint32s"
    mem_write_uint64s: Final = _P + "mem_write_uint64s"
    mem_write_pointers: Final = _P + "mem_write_pointers"
    mem_write_buffers: Final = _P + "mem_write_buffers"
    mem_read_uint8s: Final = _P + "mem_read_uint8s"
    mem_read_uint16s: Final = _P + "mem_read_uint16s"
    mem_read_uint32s: Final = _P + "mem_read_uint32s"
    mem_read_uint64s: Final = _P + "mem_read_uint64s"
    mem_read_pointers: Final = _P + "mem_read_pointers"
    mem_read_buffers: Final = _P + "mem_read_buffers"
    mem_read_strings: Final = _P + "mem_read_strings"


class DWARFEHFrameRegistrar(Namespace):
    """orc-rt's EH-frame registration alloc actions."""

    register_section: Final = "orc_rt_ci_aa_sps_DWARFEHFrameRegistrar_registerSection"
    deregister_section: Final = "orc_rt_ci_aa_sps_DWARFEHFrameRegistrar_deregisterSection"


class GDBJITRegistrar(Namespace):
    """orc-rt's GDB JIT interface alloc actions."""

    register: Final = "orc_rt_ci_aa_sps_GDBJITRegistrar_register"
    deregister: Final = "orc_rt_ci_aa_sps_GDBJITRegistrar_deregister"


#: Every namespace, in the order of docs/protocol.md.
NAMESPACES: Final[tuple[type[Namespace], ...]] = (
    SimpleRemoteEPC,
    SimpleExecutorDylibManager,
    SimpleExecutorMemoryManager,
    ExecutorSharedMemoryMapperService,
    Bootstrap,
    EHFrame,
    JITLoaderGDB,
    JITLoaderPerf,
    SimpleNativeMemoryMap,
    NativeDylibManager,
    CallSPSCI,
    MemoryAccessSPSCI,
    DWARFEHFrameRegistrar,
    GDBJITRegistrar,
)

# ---- SPS signatures ------------------------------------------------------------------------------

#: Dylib manager. ``open`` (all versions) and orc-rt ``load``: handle of ``path`` ("" = the
#: executor process), ``mode`` must be 0.
OPEN: Final = signature(ExpectedOf(Addr), Addr, String, UInt64)
#: 14 ``lookup``: u64 handle, plain addresses (0 = not found).
LOOKUP14: Final = signature(ExpectedOf(SequenceOf(Addr)), Addr, UInt64, SPSRemoteSymbolLookupSet)
#: 19 ``lookup``: ``ExecutorSymbolDef`` per name.
LOOKUP19: Final = signature(
    ExpectedOf(SequenceOf(SPSExecutorSymbolDef)), Addr, Addr, SPSRemoteSymbolLookupSet
)
#: 22 ``resolve``: no instance argument; ``None`` for a missing required symbol.
RESOLVE22: Final = signature(
    ExpectedOf(SequenceOf(OptionalOf(SPSExecutorSymbolDef))), Addr, SPSRemoteSymbolLookupSet
)
#: orc-rt ``lookup``: the instance argument again, plain optional addresses.
CI_LOOKUP: Final = signature(
    ExpectedOf(SequenceOf(OptionalOf(Addr))), Addr, Addr, SPSRemoteSymbolLookupSet
)

#: Memory manager: ``reserve(instance, size)`` → slab base.
RESERVE: Final = signature(ExpectedOf(Addr), Addr, UInt64)
#: 22 / orc-rt ``initialize`` → region key (lowest segment address).
INITIALIZE: Final = signature(ExpectedOf(Addr), Addr, SPSFinalizeRequest)
#: 14 / 19 ``finalize``.
FINALIZE: Final = signature(Error, Addr, SPSFinalizeRequest)
#: ``deinitialize`` / ``release`` / ``deallocate`` (and the shared-memory ``Deinitialize`` /
#: ``Release``): instance, a sequence of region keys or slab bases.
RELEASE: Final = signature(Error, Addr, SequenceOf(Addr))

#: Shared memory: ``Reserve`` → (mapping address, shm object name).
SHM_RESERVE: Final = signature(ExpectedOf(TupleOf(Addr, String)), Addr, UInt64)
#: Shared memory: ``Initialize(instance, reservation, request)`` → region key.
SHM_INITIALIZE: Final = signature(ExpectedOf(Addr), Addr, Addr, SPSSharedMemoryFinalizeRequest)

#: Running code: ``run_as_main(fn, argv)`` → ``int`` sign-extended.
RUN_AS_MAIN: Final = signature(Int64, Addr, SequenceOf(Bytes))
#: ``run_as_void_function(fn)``: calls ``int32_t fn(void)``.
RUN_AS_VOID: Final = signature(Int32, Addr)
#: ``run_as_int_function(fn, arg)``: calls ``int32_t fn(int32_t)``.
RUN_AS_INT: Final = signature(Int32, Addr, Int32)
#: orc-rt ``call_void_void(fn)``.
CALL_VOID_VOID: Final = signature(Empty, Addr)

#: EH-frame registration (every form): the ``.eh_frame`` range, terminator included.
EH_FRAME: Final = signature(Error, SPSExecutorAddrRange)
#: GDB JIT registration, 19 / 22 / orc-rt: (debug object range, auto-register).
GDB: Final = signature(Error, SPSExecutorAddrRange, Bool)
#: GDB JIT registration, 14 (no bool); also orc-rt's ``deregister``.
GDB14: Final = signature(Error, SPSExecutorAddrRange)
#: perf support: ``Start`` and ``End`` take nothing; ``Impl`` (an alloc action) a record batch.
PERF_START_END: Final = signature(Error)
PERF_IMPL: Final = signature(Error, SPSPerfJITRecordBatch)

_MEM_TYPES: Final[tuple[tuple[str, SPSType[int]], ...]] = (
    ("uint8s", UInt8),
    ("uint16s", UInt16),
    ("uint32s", UInt32),
    ("uint64s", UInt64),
    ("pointers", Addr),
)
#: Memory writes (no result): ``mem_write_<kind>`` → signature.
MEM_WRITE: Final[Mapping[str, WrapperSignature]] = types.MappingProxyType({
    **{k: signature(Empty, SequenceOf(TupleOf(Addr, t))) for k, t in _MEM_TYPES},
    "buffers": signature(Empty, SequenceOf(TupleOf(Addr, Bytes))),
})
#: Memory reads (a plain sequence, no ``Expected``): ``mem_read_<kind>`` → signature.
MEM_READ: Final[Mapping[str, WrapperSignature]] = types.MappingProxyType({
    **{k: signature(SequenceOf(t), SequenceOf(Addr)) for k, t in _MEM_TYPES},
    "buffers": signature(SequenceOf(Bytes), SequenceOf(SPSExecutorAddrRange)),
    "strings": signature(SequenceOf(Bytes), SequenceOf(Addr)),
})

# ---- the table -----------------------------------------------------------------------------------

#: LLVM versions: the Debian 14.0.6, 19.1.7 and 22.1.8 builds (captured on the wire), and
#: ``upstream`` (LLVM ``main`` after 22 and orc-rt, from their sources).
VERSIONS: Final = ("14", "19", "22", "upstream")

_V14: Final = frozenset({"14"})
_V19: Final = frozenset({"19"})
_V22: Final = frozenset({"22"})
_V14_19: Final = _V14 | _V19
_V19_22: Final = _V19 | _V22
_V14_22: Final = _V14 | _V19 | _V22
_UPSTREAM: Final = frozenset({"upstream"})
_V22_UP: Final = _V22 | _UPSTREAM
_V19_UP: Final = _V19_22 | _UPSTREAM
_ALL: Final = _V14_22 | _UPSTREAM
_NONE: Final[frozenset[str]] = frozenset()


@dataclass(frozen=True)
class BootstrapSymbol:
    """One name with one signature, and who uses it.

    ``signature`` is ``None`` for data symbols (``*_Instance``, the dispatch symbols).
    ``advertised_by``: versions whose executor lists the name in Setup. ``looked_up_by``:
    versions whose controller finds it by name through the dylib manager (llvm-jitlink 14
    and 19 for their EH-frame and GDB helpers) and then calls it as a wrapper function.
    ``also_served_by``: profiles that serve it although none of their versions uses it.
    ``never_advertised``: answered through dylib lookup only, in every profile (as the stock
    executors that have it do).
    """

    name: str
    signature: WrapperSignature | None
    advertised_by: frozenset[str] = _NONE
    looked_up_by: frozenset[str] = _NONE
    also_served_by: frozenset[str] = _NONE
    never_advertised: bool = False

    @property
    def versions(self) -> frozenset[str]:
        """Every version that uses this name with this signature."""
        return self.advertised_by | self.looked_up_by


_S = BootstrapSymbol
_B = Bootstrap
_CI = MemoryAccessSPSCI

#: Every name, with its signature per version.
TABLE: Final[tuple[BootstrapSymbol, ...]] = (
    _S(SimpleRemoteEPC.dispatch_ctx, None, _ALL),
    _S(SimpleRemoteEPC.dispatch_fn, None, _ALL),
    _S(SimpleExecutorDylibManager.instance, None, _V14_22),
    _S(SimpleExecutorDylibManager.open, OPEN, _V14_22),
    _S(SimpleExecutorDylibManager.lookup, LOOKUP14, _V14),
    _S(SimpleExecutorDylibManager.lookup, LOOKUP19, _V19),
    _S(SimpleExecutorDylibManager.resolve, RESOLVE22, _V22),
    _S(SimpleExecutorMemoryManager.instance, None, _ALL),
    _S(SimpleExecutorMemoryManager.reserve, RESERVE, _ALL),
    _S(SimpleExecutorMemoryManager.finalize, FINALIZE, _V14_19),
    _S(SimpleExecutorMemoryManager.deallocate, RELEASE, _V14_19),
    _S(SimpleExecutorMemoryManager.initialize, INITIALIZE, _V22_UP),
    _S(SimpleExecutorMemoryManager.deinitialize, RELEASE, _V22_UP),
    _S(SimpleExecutorMemoryManager.release, RELEASE, _V22_UP),
    _S(ExecutorSharedMemoryMapperService.instance, None, _V19_UP),
    _S(ExecutorSharedMemoryMapperService.reserve, SHM_RESERVE, _V19_UP),
    _S(ExecutorSharedMemoryMapperService.initialize, SHM_INITIALIZE, _V19_UP),
    _S(ExecutorSharedMemoryMapperService.deinitialize, RELEASE, _V19_UP),
    _S(ExecutorSharedMemoryMapperService.release, RELEASE, _V19_UP),
    _S(_B.mem_write_uint8s, MEM_WRITE["uint8s"], _V14_22),
    _S(_B.mem_write_uint16s, MEM_WRITE["uint16s"], _V14_22),
    _S(_B.mem_write_uint32s, MEM_WRITE["uint32s"], _V14_22),
    _S(_B.mem_write_uint64s, MEM_WRITE["uint64s"], _V14_22),
    _S(_B.mem_write_pointers, MEM_WRITE["pointers"], _V22),
    _S(_B.mem_write_buffers, MEM_WRITE["buffers"], _V14_22),
    _S(_B.mem_read_uint8s, MEM_READ["uint8s"], _V22),
    _S(_B.mem_read_uint16s, MEM_READ["uint16s"], _V22),
    _S(_B.mem_read_uint32s, MEM_READ["uint32s"], _V22),
    _S(_B.mem_read_uint64s, MEM_READ["uint64s"], _V22),
    _S(_B.mem_read_pointers, MEM_READ["pointers"], _V22),
    _S(_B.mem_read_buffers, MEM_READ["buffers"], _V22),
    _S(_B.mem_read_strings, MEM_READ["strings"], _V22),
    _S(_B.run_as_main, RUN_AS_MAIN, _V14_22),
    _S(_B.run_as_void_function, RUN_AS_VOID, _V19_22),
    _S(_B.run_as_int_function, RUN_AS_INT, _V19_22),
    # lli 14 runs these as alloc actions; llvm-jitlink 14 calls them under the EHFrame names.
    _S(_B.register_ehframe_section, EH_FRAME, _V14, also_served_by=frozenset({"modern"})),
    _S(_B.deregister_ehframe_section, EH_FRAME, _V14, also_served_by=frozenset({"modern"})),
    _S(EHFrame.register_section_wrapper, EH_FRAME, _V19, looked_up_by=_V14),
    _S(EHFrame.deregister_section_wrapper, EH_FRAME, _V19, looked_up_by=_V14),
    _S(EHFrame.register_alloc_action, EH_FRAME, _V22),
    _S(EHFrame.deregister_alloc_action, EH_FRAME, _V22),
    _S(JITLoaderGDB.register_wrapper, GDB14, looked_up_by=_V14),
    _S(JITLoaderGDB.register_wrapper, GDB, looked_up_by=_V19),
    _S(JITLoaderGDB.register_alloc_action, GDB, _V22),
    _S(JITLoaderPerf.start, PERF_START_END, looked_up_by=_V22, never_advertised=True),
    _S(JITLoaderPerf.end, PERF_START_END, looked_up_by=_V22, never_advertised=True),
    _S(JITLoaderPerf.impl, PERF_IMPL, looked_up_by=_V22, never_advertised=True),
    _S(SimpleNativeMemoryMap.instance, None, _UPSTREAM),
    _S(SimpleNativeMemoryMap.reserve, RESERVE, _UPSTREAM),
    _S(SimpleNativeMemoryMap.initialize, INITIALIZE, _UPSTREAM),
    _S(SimpleNativeMemoryMap.deinitialize_multiple, RELEASE, _UPSTREAM),
    _S(SimpleNativeMemoryMap.release_multiple, RELEASE, _UPSTREAM),
    _S(NativeDylibManager.instance, None, _UPSTREAM),
    _S(NativeDylibManager.load, OPEN, _UPSTREAM),
    _S(NativeDylibManager.lookup, CI_LOOKUP, _UPSTREAM),
    _S(CallSPSCI.call_main, RUN_AS_MAIN, _UPSTREAM),
    _S(CallSPSCI.call_int32_void, RUN_AS_VOID, _UPSTREAM),
    _S(CallSPSCI.call_int32_int32, RUN_AS_INT, _UPSTREAM),
    _S(CallSPSCI.call_void_void, CALL_VOID_VOID, _UPSTREAM),
    _S(_CI.mem_write_uint8s, MEM_WRITE["uint8s"], _UPSTREAM),
    _S(_CI.mem_write_uint16s, MEM_WRITE["uint16s"], _UPSTREAM),
    _S(_CI.mem_write_uint32s, MEM_WRITE["uint32s"], _UPSTREAM),
    _S(_CI.mem_write_uint64s, MEM_WRITE["uint64s"], _UPSTREAM),
    _S(_CI.mem_write_pointers, MEM_WRITE["pointers"], _UPSTREAM),
    _S(_CI.mem_write_buffers, MEM_WRITE["buffers"], _UPSTREAM),
    _S(_CI.mem_read_uint8s, MEM_READ["uint8s"], _UPSTREAM),
    _S(_CI.mem_read_uint16s, MEM_READ["uint16s"], _UPSTREAM),
    _S(_CI.mem_read_uint32s, MEM_READ["uint32s"], _UPSTREAM),
    _S(_CI.mem_read_uint64s, MEM_READ["uint64s"], _UPSTREAM),
    _S(_CI.mem_read_pointers, MEM_READ["pointers"], _UPSTREAM),
    _S(_CI.mem_read_buffers, MEM_READ["buffers"], _UPSTREAM),
    _S(_CI.mem_read_strings, MEM_READ["strings"], _UPSTREAM),
    _S(DWARFEHFrameRegistrar.register_section, EH_FRAME, _UPSTREAM),
    _S(DWARFEHFrameRegistrar.deregister_section, EH_FRAME, _UPSTREAM),
    _S(GDBJITRegistrar.register, GDB, _UPSTREAM),
    _S(GDBJITRegistrar.deregister, GDB14, _UPSTREAM),
)


def all_names() -> frozenset[str]:
    """Every name in :data:`TABLE`."""
    return frozenset(s.name for s in TABLE)


def stock_advertised(version: str) -> frozenset[str]:
    """The names ``version``'s executor advertises in Setup (14: 17, 19: 24, 22: 34 for the
    stock ``llvm-jitlink-executor``; ``upstream``: the orc-rt names and the LLVM names
    upstream keeps). ``ValueError`` for an unknown version."""
    _check(version, VERSIONS, "LLVM version")
    return frozenset(s.name for s in TABLE if version in s.advertised_by)


def looked_up_by_name(version: str) -> frozenset[str]:
    """The executor's own names ``version``'s llvm-jitlink finds through the dylib manager
    (``required=true``) instead of Setup, then calls as wrapper functions."""
    _check(version, VERSIONS, "LLVM version")
    return frozenset(s.name for s in TABLE if version in s.looked_up_by)


def signature_for(version: str, name: str) -> WrapperSignature | None:
    """The signature ``version`` uses for ``name`` (``None``: a data symbol). ``KeyError`` if
    ``version`` does not use ``name``."""
    for s in TABLE:
        if s.name == name and version in s.versions:
            return s.signature
    raise KeyError(f"LLVM {version} does not use {name!r}")


# ---- profiles --------------------------------------------------------------------------------

#: Executor profiles: ``14`` speaks LLVM 14's Setup layout and layouts, ``modern`` the rest.
PROFILES: Final = ("14", "modern")

#: The versions whose names (with their signatures) each profile serves.
PROFILE_VERSIONS: Final[Mapping[str, frozenset[str]]] = types.MappingProxyType({
    "14": _V14,
    "modern": _V19_UP,
})

#: Accepted ``--llvm-version`` / ``ORC_EXECUTOR_LLVM_VERSION`` values → profile.
VERSION_PROFILES: Final[Mapping[str, str]] = types.MappingProxyType({
    "14": "14", "19": "modern", "22": "modern", "modern": "modern",
})


def profile_for_version(requested: str) -> str:
    """The profile for an explicit ``--llvm-version`` value; ``ValueError`` if unsupported."""
    profile = VERSION_PROFILES.get(requested.strip().lower())
    if profile is None:
        choices = ", ".join(VERSION_PROFILES)
        raise ValueError(f"unsupported LLVM version {requested!r} (choose from {choices})")
    return profile


#: Profiles whose Setup advertises the names their controllers look up by name as well
#: (``14`` advertises exactly what the stock LLVM 14 executor does).
_ADVERTISE_LOOKUPS: Final = frozenset({"modern"})


@dataclass(frozen=True)
class ServedName:
    """One name a profile answers: its signature (``None`` for a data symbol) and whether
    Setup advertises it (else it is answered only through dylib lookup)."""

    name: str
    signature: WrapperSignature | None
    advertised: bool


@cache
def served(profile: str) -> Mapping[str, ServedName]:
    """Every name ``profile`` answers, by name (read-only). ``ValueError`` for an unknown
    profile; ``RuntimeError`` if two of the profile's versions give one name two signatures
    (a table error: such versions cannot share a profile)."""
    _check(profile, PROFILES, "profile")
    versions = PROFILE_VERSIONS[profile]
    out: dict[str, ServedName] = {}
    for s in TABLE:
        if not (s.versions & versions or profile in s.also_served_by):
            continue
        advertised = not s.never_advertised and bool(
            s.advertised_by & versions
            or profile in s.also_served_by
            or profile in _ADVERTISE_LOOKUPS
        )
        prev = out.get(s.name)
        if prev is not None:
            if prev.signature is not s.signature:
                raise RuntimeError(f"profile {profile}: {s.name} has two signatures")
            advertised = advertised or prev.advertised
        out[s.name] = ServedName(s.name, s.signature, advertised)
    return types.MappingProxyType(dict(sorted(out.items())))


def advertised(profile: str) -> frozenset[str]:
    """The bootstrap symbols ``profile``'s Setup lists."""
    return frozenset(n for n, e in served(profile).items() if e.advertised)


def lookup_only(profile: str) -> frozenset[str]:
    """Names ``profile`` answers through dylib lookup without listing them in Setup."""
    return frozenset(n for n, e in served(profile).items() if not e.advertised)


def _check(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r} (choose from {', '.join(choices)})")
