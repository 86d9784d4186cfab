"""``ExecutorSharedMemoryMapperService`` (19 ``-use-shared-memory``, 22 ``-use-memmgr=shared``).

* ``Reserve``: ``Expected<Tuple<Addr, String>>(Addr inst, u64 size)`` — create the POSIX shm
  object ``/jitlink_<pid>_<n>`` (``O_CREAT|O_EXCL``, mode 0700), map it ``PROT_NONE`` shared,
  return (address, name). The controller maps the same name and writes contents directly.
* ``Initialize``: ``Expected<Addr>(Addr inst, Addr reservation, SharedMemoryFinalizeRequest)``
  — apply protections, run finalize actions; return the region key.
* ``Deinitialize``: ``Error(Addr inst, Sequence<Addr> keys)`` — keys that name no
  initialized region are ignored (the stock service's behaviour).
* ``Release``: ``Error(Addr inst, Sequence<Addr> reservations)`` — never called by 19/22
  llvm-jitlink; everything is unmapped at session end anyway.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable

from ...errors import WrapperError
from ...native.api import ffi, lib
from ...protocol.names import RELEASE, SHM_INITIALIZE, SHM_RESERVE
from ...protocol.names import ExecutorSharedMemoryMapperService as Names
from ...protocol.orc_types import SegFinalizeRequest, SharedMemoryFinalizeRequest
from ..context import ExecutorContext
from ..registry import WrapperSpec
from .memory_manager import MemoryMapService


class SharedMemoryMapperService(MemoryMapService):
    """Memory shared with the controller: code bytes never travel over the protocol."""

    service_name = "shared-memory"

    def __init__(self, ctx: ExecutorContext) -> None:
        super().__init__(ctx)
        self._counter = itertools.count(1)

    def data_symbols(self) -> Iterable[str]:
        yield Names.instance

    def wrappers(self) -> Iterable[WrapperSpec]:
        yield WrapperSpec(Names.reserve, SHM_RESERVE, self.reserve)
        # Both run inline when their alloc actions cannot block (no content to copy here);
        # a release also when it unmaps at most INLINE_MAX_BYTES.
        yield WrapperSpec(Names.initialize, SHM_INITIALIZE, self.initialize, True,
                          inline_when=self._initialize_inline)
        yield WrapperSpec(Names.deinitialize, RELEASE, self.deinitialize, True,
                          inline_when=self._deinitialize_inline)
        yield WrapperSpec(Names.release, RELEASE, self.release, True,
                          inline_when=self._release_inline)

    def reserve(self, _inst: int, size: int) -> tuple[int, str]:
        if size <= 0:
            raise WrapperError("shared memory reservation of size 0")
        name = f"/jitlink_{os.getpid()}_{next(self._counter)}"
        p = lib.orc_shm_reserve(name.encode(), size)
        if p == ffi.NULL:
            raise WrapperError(f"{name}: {os.strerror(ffi.errno)}")
        base = int(ffi.cast("uintptr_t", p))
        self.ctx.memmap.adopt(base, size, shared_name=name)
        return base, name

    def initialize(self, _inst: int, reservation: int, req: SharedMemoryFinalizeRequest) -> int:
        slab = self.ctx.memmap.slab_containing(reservation)
        if slab is None or slab.shared_name is None:
            raise WrapperError(f"{reservation:#x} is not a shared memory reservation")
        segs = [SegFinalizeRequest(s.prot, s.addr, s.size, b"") for s in req.segments]
        # MemoryMapError becomes the Expected / Error failure (WrapperSpec.invoke).
        return self.ctx.memmap.initialize(segs, req.actions, self.ctx.run_action,
                                          copy_content=False)

    def _initialize_inline(
        self, _inst: int, _reservation: int, req: SharedMemoryFinalizeRequest
    ) -> bool:
        return self.ctx.cannot_block(p.finalize for p in req.actions)

    def deinitialize(self, _inst: int, keys: list[int]) -> None:
        # Keys that name no initialized region are ignored, as the stock service does:
        # clang-repl deinitializes the allocation of a statement that failed to link.
        self.ctx.memmap.deinitialize(keys, self.ctx.run_action, ignore_unknown=True)

    def release(self, _inst: int, bases: list[int]) -> None:
        self.ctx.memmap.release(bases, self.ctx.run_action)
