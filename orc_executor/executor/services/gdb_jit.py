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

from ...native.api import lib
from ...protocol.names import GDB, GDB14, GDBJITRegistrar, JITLoaderGDB
from ...protocol.orc_types import ExecutorAddrRange
from ...protocol.sps import ErrorValue
from ..context import ExecutorContext
from ..registry import Service, WrapperSpec


class GDBJITService(Service):
    """Appends debug objects to the GDB JIT list (``__jit_debug_descriptor``).

    Lists every name and layout (the GDB wrapper twice: 14's and 19's); the profile decides
    which are registered (:meth:`Registry.add_service`)."""

    service_name = "gdb-jit"

    def __init__(self, ctx: ExecutorContext) -> None:
        self.ctx = ctx

    def wrappers(self) -> Iterable[WrapperSpec]:
        yield WrapperSpec(JITLoaderGDB.register_wrapper, GDB14, self.register14)
        yield WrapperSpec(JITLoaderGDB.register_wrapper, GDB, self.register)
        yield WrapperSpec(JITLoaderGDB.register_alloc_action, GDB, self.register)
        yield WrapperSpec(GDBJITRegistrar.register, GDB, self.register)
        yield WrapperSpec(GDBJITRegistrar.deregister, GDB14, self.deregister)

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
