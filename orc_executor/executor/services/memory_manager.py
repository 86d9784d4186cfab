"""``SimpleExecutorMemoryManager`` (LLVM 14 to 22) and orc-rt's ``SimpleNativeMemoryMap`` names.

Both memory-manager models share one :class:`~orc_executor.native.memmap.MemoryMap`:

* 22 / upstream: ``reserve`` / ``initialize`` / ``deinitialize`` / ``release``
  (``Expected<Addr>(Addr, u64)``, ``Expected<Addr>(Addr, FinalizeRequest)``,
  ``Error(Addr, Sequence<Addr>)`` twice);
* 14 / 19: ``reserve`` / ``finalize`` / ``deallocate`` (``Error(Addr, FinalizeRequest)``,
  ``Error(Addr, Sequence<Addr>)``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ...protocol.finalize_sink import FinalizeRequestSink
from ...protocol.names import (
    FINALIZE,
    INITIALIZE,
    RELEASE,
    RESERVE,
    SimpleExecutorMemoryManager,
    SimpleNativeMemoryMap,
)
from ...protocol.orc_types import FinalizeRequest
from ...protocol.sps import WrapperSignature
from ..context import ExecutorContext
from ..registry import Service, WrapperSpec

_Entry = tuple[str, WrapperSignature, Callable[..., Any], bool]

#: An initialize whose segments total at most this many bytes (copy, zero-fill and page
#: faults) and whose alloc actions cannot block, or a release that unmaps at most
#: this many bytes and whose dealloc actions cannot block, runs on the event loop, without
#: the hop to a worker thread (:attr:`WrapperSpec.inline_when`).
INLINE_MAX_BYTES = 1 << 20


class MemoryMapService(Service):
    """A service over the session's :class:`~orc_executor.native.memmap.MemoryMap`
    (``ctx.memmap``), with the ``inline_when`` predicates its deinitialize and release
    wrappers share: whether they can run on the event loop."""

    def __init__(self, ctx: ExecutorContext) -> None:
        self.ctx = ctx

    def _deinitialize_inline(self, _inst: int, keys: list[int]) -> bool:
        """Every dealloc action the deinitialize of ``keys`` would run cannot block."""
        return self.ctx.deinitialize_cannot_block(keys)

    def _release_inline(self, _inst: int, bases: list[int]) -> bool:
        """Besides, the release of ``bases`` unmaps at most :data:`INLINE_MAX_BYTES`."""
        return self.ctx.release_cannot_block(bases, INLINE_MAX_BYTES)


class MemoryManagerService(MemoryMapService):
    """Reserve / initialize / deinitialize / release (and finalize / deallocate) of JIT memory.

    Lists every name of both models; the profile decides which are registered
    (:meth:`Registry.add_service`)."""

    service_name = "memory-manager"

    def data_symbols(self) -> Iterable[str]:
        yield SimpleExecutorMemoryManager.instance
        yield SimpleNativeMemoryMap.instance

    def wrappers(self) -> Iterable[WrapperSpec]:
        mm, ci = SimpleExecutorMemoryManager, SimpleNativeMemoryMap
        entries: list[_Entry] = [
            (mm.reserve, RESERVE, self.reserve, False),
            (mm.initialize, INITIALIZE, self.initialize, True),
            (mm.deinitialize, RELEASE, self.deinitialize, True),
            (mm.release, RELEASE, self.release, True),
            (mm.finalize, FINALIZE, self.finalize, True),
            (mm.deallocate, RELEASE, self.deallocate, True),
            (ci.reserve, RESERVE, self.reserve, False),
            (ci.initialize, INITIALIZE, self.initialize, True),
            (ci.deinitialize_multiple, RELEASE, self.deinitialize, True),
            (ci.release_multiple, RELEASE, self.release, True),
        ]
        for name, sig, fn, blocking in entries:
            yield self._spec(name, sig, fn, blocking)

    def _spec(
        self, name: str, sig: WrapperSignature, fn: Callable[..., Any], blocking: bool
    ) -> WrapperSpec:
        """The wrapper of ``fn``: (Addr, FinalizeRequest) signatures stream their content
        and run inline when small with actions that cannot block; ``deinitialize`` runs
        inline when the dealloc actions it would run cannot block, ``release`` /
        ``deallocate`` when besides that it unmaps at most :data:`INLINE_MAX_BYTES`."""
        if sig is INITIALIZE or sig is FINALIZE:
            return WrapperSpec(name, sig, fn, blocking, self.stream, self._initialize_inline)
        if fn == self.deinitialize:
            return WrapperSpec(name, sig, fn, blocking, inline_when=self._deinitialize_inline)
        if fn == self.release or fn == self.deallocate:
            return WrapperSpec(name, sig, fn, blocking, inline_when=self._release_inline)
        return WrapperSpec(name, sig, fn, blocking)

    def _initialize_inline(self, _inst: int, req: FinalizeRequest) -> bool:
        return (sum(s.size for s in req.segments) <= INLINE_MAX_BYTES
                and self.ctx.cannot_block(p.finalize for p in req.actions))

    def stream(self, length: int) -> FinalizeRequestSink:
        """A sink decoding ``(instance, FinalizeRequest)`` of ``length`` bytes as it arrives,
        segment contents written straight into their slab (:meth:`MemoryMap.place`)."""
        return FinalizeRequestSink(length, self.ctx.memmap.place)

    # MemoryMapError raised here becomes the Error / Expected failure (WrapperSpec.invoke).

    def reserve(self, _inst: int, size: int) -> int:
        return self.ctx.memmap.reserve(size)

    def initialize(self, _inst: int, req: FinalizeRequest) -> int:
        return self.ctx.memmap.initialize(req.segments, req.actions, self.ctx.run_action)

    def finalize(self, _inst: int, req: FinalizeRequest) -> None:
        self.ctx.memmap.initialize(
            req.segments, req.actions, self.ctx.run_action, allow_empty=True
        )

    def deinitialize(self, _inst: int, keys: list[int]) -> None:
        self.ctx.memmap.deinitialize(keys, self.ctx.run_action)

    def release(self, _inst: int, bases: list[int]) -> None:
        self.ctx.memmap.release(bases, self.ctx.run_action)

    def deallocate(self, _inst: int, bases: list[int]) -> None:
        self.ctx.memmap.release(bases, self.ctx.run_action, what="deallocate")

    def shutdown(self) -> None:
        self.ctx.memmap.shutdown(self.ctx.run_action)
