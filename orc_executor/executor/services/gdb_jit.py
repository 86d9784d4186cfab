"""The GDB JIT interface: register in-memory debug objects with ``__jit_debug_descriptor``.

The descriptor and ``__jit_debug_register_code`` are real symbols of the native module, so gdb
sees JIT'd code (breakpoints, backtraces). Forms:

* 22: alloc action ``llvm_orc_registerJITLoaderGDBAllocAction``: ``Error(ExecutorAddrRange,
  bool autoRegister)``;
* 19: CallWrapper ``llvm_orc_registerJITLoaderGDBWrapper``: same arguments;
* 14: CallWrapper ``llvm_orc_registerJITLoaderGDBWrapper``: ``Error(ExecutorAddrRange)``.
"""

from __future__ import annotations

from collections.abc import Iterable

from ...memmap.native import lib
from ...sps import Bool, Error, ErrorValue, signature
from ...sps.orc import ExecutorAddrRange, SPSExecutorAddrRange
from ..context import ExecutorContext
from ..registry import Service, WrapperSpec

GDB_SIG = signature(Error, SPSExecutorAddrRange, Bool)
GDB_SIG14 = signature(Error, SPSExecutorAddrRange)


class GDBJITService(Service):
    """Appends debug objects to the GDB JIT list (``__jit_debug_descriptor``)."""

    service_name = "gdb-jit"

    def __init__(self, ctx: ExecutorContext, *, v14: bool = False, alloc_action: bool = True,
                 ci: bool = True) -> None:
        self.ctx = ctx
        self.v14 = v14
        self.alloc_action = alloc_action
        self.ci = ci

    def wrappers(self) -> Iterable[WrapperSpec]:
        if self.v14:
            yield WrapperSpec("llvm_orc_registerJITLoaderGDBWrapper", GDB_SIG14, self.register14)
        else:
            yield WrapperSpec("llvm_orc_registerJITLoaderGDBWrapper", GDB_SIG, self.register)
        if self.alloc_action:
            yield WrapperSpec("llvm_orc_registerJITLoaderGDBAllocAction", GDB_SIG, self.register)
        if self.ci:
            yield WrapperSpec("orc_rt_ci_aa_sps_GDBJITRegistrar_register", GDB_SIG, self.register)
            yield WrapperSpec(
                "orc_rt_ci_aa_sps_GDBJITRegistrar_deregister", GDB_SIG14, self.deregister
            )

    def register(self, r: ExecutorAddrRange, auto_register: bool) -> ErrorValue | None:
        if r.end < r.start or self.ctx.memmap.slab_containing(r.start, r.end - r.start) is None:
            return ErrorValue(f"debug object [{r.start:#x}, {r.end:#x}) is not in JIT'd memory")
        if lib.orc_gdb_register(r.start, r.end - r.start, 1 if auto_register else 0):
            return ErrorValue("out of memory registering a debug object")
        return None

    def register14(self, r: ExecutorAddrRange) -> ErrorValue | None:
        return self.register(r, True)

    def deregister(self, r: ExecutorAddrRange) -> ErrorValue | None:
        if lib.orc_gdb_deregister(r.start):
            return ErrorValue(f"no debug object registered at {r.start:#x}")
        return None
