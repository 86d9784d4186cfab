"""``SimpleExecutorMemoryManager`` (LLVM 14 to 22) and orc-rt's ``SimpleNativeMemoryMap`` names.

Both memory-manager models share one :class:`~orc_executor.memmap.memmap.MemoryMap`:

* 22 / upstream: ``reserve`` / ``initialize`` / ``deinitialize`` / ``release``
  (``Expected<Addr>(Addr, u64)``, ``Expected<Addr>(Addr, FinalizeRequest)``,
  ``Error(Addr, Sequence<Addr>)`` twice);
* 14 / 19: ``reserve`` / ``finalize`` / ``deallocate`` (``Error(Addr, FinalizeRequest)``,
  ``Error(Addr, Sequence<Addr>)``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ...sps import (
    Addr,
    Error,
    ExpectedOf,
    SequenceOf,
    UInt64,
    WrapperSignature,
    signature,
)
from ...sps.orc import FinalizeRequest, SPSFinalizeRequest
from ...sps.stream import FinalizeRequestSink
from ..context import ExecutorContext
from ..registry import Service, WrapperSpec

PREFIX = "__llvm_orc_SimpleExecutorMemoryManager_"
CI_PREFIX = "orc_rt_ci_sps_SimpleNativeMemoryMap_"

RESERVE = signature(ExpectedOf(Addr), Addr, UInt64)
INITIALIZE = signature(ExpectedOf(Addr), Addr, SPSFinalizeRequest)
FINALIZE = signature(Error, Addr, SPSFinalizeRequest)
RELEASE = signature(Error, Addr, SequenceOf(Addr))

_Entry = tuple[str, WrapperSignature, Callable[..., Any], bool]

#: An initialize whose segments total at most this many bytes (copy, zero-fill and page
#: faults: ~0.1 ms) and whose alloc actions cannot block, or a release that unmaps at most
#: this many bytes and whose dealloc actions cannot block, runs on the event loop, without
#: the hop to a worker thread (:attr:`WrapperSpec.inline_when`).
INLINE_MAX_BYTES = 1 << 20


class MemoryMapService(Service):
    """A service over the session's :class:`~orc_executor.memmap.memmap.MemoryMap`
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
    """Reserve / initialize / deinitialize / release (and finalize / deallocate) of JIT memory."""

    service_name = "memory-manager"

    def __init__(
        self, ctx: ExecutorContext, *, legacy: bool = True, ci: bool = True, v14: bool = False
    ) -> None:
        super().__init__(ctx)
        self.legacy = legacy
        self.ci = ci
        #: LLVM 14: only ``reserve`` / ``finalize`` / ``deallocate`` (no 22 or orc-rt names).
        self.v14 = v14

    def data_symbols(self) -> Iterable[str]:
        yield PREFIX + "Instance"
        if self.ci and not self.v14:
            yield "orc_rt_ci_SimpleNativeMemoryMap_Instance"

    def wrappers(self) -> Iterable[WrapperSpec]:
        if self.v14:
            yield self._spec(PREFIX + "reserve_wrapper", RESERVE, self.reserve, False)
            yield self._spec(PREFIX + "finalize_wrapper", FINALIZE, self.finalize, True)
            yield self._spec(PREFIX + "deallocate_wrapper", RELEASE, self.deallocate, True)
            return
        names: list[_Entry] = [
            ("reserve", RESERVE, self.reserve, False),
            ("initialize", INITIALIZE, self.initialize, True),
            ("deinitialize", RELEASE, self.deinitialize, True),
            ("release", RELEASE, self.release, True),
        ]
        for short, sig, fn, blocking in names:
            yield self._spec(f"{PREFIX}{short}_wrapper", sig, fn, blocking)
        if self.legacy:
            yield self._spec(PREFIX + "finalize_wrapper", FINALIZE, self.finalize, True)
            yield self._spec(PREFIX + "deallocate_wrapper", RELEASE, self.deallocate, True)
        if self.ci:
            ci: list[_Entry] = [
                ("reserve", RESERVE, self.reserve, False),
                ("initialize", INITIALIZE, self.initialize, True),
                ("deinitializeMultiple", RELEASE, self.deinitialize, True),
                ("releaseMultiple", RELEASE, self.release, True),
            ]
            for short, sig, fn, blocking in ci:
                yield self._spec(CI_PREFIX + short, sig, fn, blocking)

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
