"""The native memory map: slabs of executable memory and the regions initialized in them.

Mirrors ``SimpleExecutorMemoryManager`` (LLVM 22) / orc-rt's ``SimpleNativeMemoryMap``:

* **reserve** ``size`` bytes → a *slab*: address space only (``PROT_NONE``, ``MAP_NORESERVE``),
  nothing committed until a page is initialized.
* **initialize** a *region* inside one slab: per segment copy the content, zero-fill to the
  segment size, apply page protections; then run the finalize alloc actions in order and keep
  the dealloc actions. The region's key is its lowest segment address.
* **deinitialize** a region: run its dealloc actions in reverse; the memory stays reserved and
  can be initialized again.
* **release** a slab: deinitialize every region left in it, then unmap it.

Bad requests (unknown addresses, segments outside a slab, overlapping live regions, invalid
protection bits, content larger than its segment) raise :class:`MemoryMapError` and leave the
map unchanged. All methods are thread-safe; alloc actions run without the lock held so they can
call back into the controller (which may initialize more memory meanwhile).
"""

from __future__ import annotations

import bisect
import errno
import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from ..errors import MemoryMapError
from ..host import NEEDS_ICACHE_SYNC
from ..host import PAGE_SIZE as PAGE_SIZE
from ..protocol.orc_types import (
    PROT_EXEC,
    PROT_READ,
    PROT_VALID_MASK,
    PROT_WRITE,
    AllocActionCallPair,
    SegFinalizeRequest,
    WrapperFunctionCall,
)
from .api import ffi, lib

log = logging.getLogger(__name__)

#: Runs one alloc action; returns ``None`` on success or an error message.
ActionRunner = Callable[[WrapperFunctionCall], "str | None"]



#: The protection of a fresh reservation (``mmap`` ``PROT_*`` bits).
_RW = lib.PROT_READ | lib.PROT_WRITE


def _protect(lo: int, hi: int, prot: int) -> None:
    """``mprotect`` the pages ``[lo, hi)``; raises :class:`MemoryMapError` if it fails."""
    e = lib.orc_protect(lo, hi - lo, prot)
    if e:
        raise MemoryMapError(f"mprotect({lo:#x}, {hi - lo}) failed: {os.strerror(e)}")


def _sync_icache(ranges: Iterable[tuple[int, int]]) -> None:
    """Make the new content of the executable ranges ``[lo, hi)`` visible to instruction fetch
    (``__builtin___clear_cache``), before anything can run in them. Only called on
    architectures whose instruction cache is not coherent with data writes
    (:data:`~orc_executor.host.NEEDS_ICACHE_SYNC`)."""
    for lo, hi in ranges:
        lib.orc_sync_icache(lo, hi - lo)


def _page_floor(a: int) -> int:
    return a & ~(PAGE_SIZE - 1)


def _page_ceil(a: int) -> int:
    return (a + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def native_prot(prot: int) -> int:
    """ORC ``MemProt`` bits (R=1, W=2, X=4) to ``mmap`` ``PROT_*`` bits."""
    p = 0
    if prot & PROT_READ:
        p |= lib.PROT_READ
    if prot & PROT_WRITE:
        p |= lib.PROT_WRITE
    if prot & PROT_EXEC:
        p |= lib.PROT_EXEC
    return p


class _SegmentPlan(NamedTuple):
    """An initialize request's segments, validated: the region key (lowest segment address),
    the segments with a non-zero size, their ``[lo, hi)`` ranges (sorted when there are two or
    more) and the ranges of the executable ones."""

    key: int
    nonempty: list[SegFinalizeRequest]
    ranges: list[tuple[int, int]]
    executable: list[tuple[int, int]]


def _validate_segments(segments: list[SegFinalizeRequest]) -> _SegmentPlan:
    """Check each segment on its own (protection bits, content no larger than the segment)
    and that no two overlap, in one pass. Raises :class:`MemoryMapError`."""
    key = segments[0].addr
    nonempty: list[SegFinalizeRequest] = []
    ranges: list[tuple[int, int]] = []
    executable: list[tuple[int, int]] = []
    for s in segments:
        prot, addr, size, content = s
        if prot & ~PROT_VALID_MASK:
            raise MemoryMapError(f"invalid protection flags {prot:#x} for segment at {addr:#x}")
        if len(content) > size:
            raise MemoryMapError(
                f"segment at {addr:#x}: content ({len(content)} bytes) exceeds "
                f"its size ({size} bytes)"
            )
        if addr < key:
            key = addr
        if size:
            nonempty.append(s)
            ranges.append((addr, addr + size))
            if prot & PROT_EXEC:
                executable.append((addr, addr + size))
    if len(ranges) > 1:
        ranges.sort()
        for (_, e1), (s2, _) in itertools.pairwise(ranges):
            if s2 < e1:
                raise MemoryMapError(f"segments overlap at {s2:#x}")
    return _SegmentPlan(key, nonempty, ranges, executable)


#: ``native_prot`` of each combination of the R, W and X bits.
_NATIVE_PROT = tuple(native_prot(p) for p in range(8))


@dataclass
class Region:
    """An initialized allocation inside a slab: its segment ranges and pending dealloc actions."""

    key: int
    ranges: list[tuple[int, int]]
    dealloc: list[WrapperFunctionCall] = field(default_factory=list)
    executable: list[tuple[int, int]] = field(default_factory=list)
    live: bool = False


@dataclass
class Slab:
    """A reserved address range ``[base, base + size)`` (bytes)."""

    base: int
    size: int
    mapped_size: int
    regions: dict[int, Region] = field(default_factory=dict)
    shared_name: str | None = None
    #: Ranges whose content is being written in place ahead of their initialize.
    claims: list[Claim] = field(default_factory=list)
    #: Released while claims were outstanding: unmapped when the last claim goes.
    unmap_deferred: bool = False
    #: Every page still has the read/write protection of the reservation (no initialize
    #: changed one yet), so making pages read/write needs no ``mprotect``. ``False`` for
    #: adopted (shared-memory) ranges.
    writable: bool = True

    @property
    def end(self) -> int:
        return self.base + self.size


class Claim:
    """A segment ``[lo, hi)`` of a slab claimed by :meth:`MemoryMap.place`: its pages are
    writable and :attr:`view` (the first ``length`` bytes, the content) may be written until
    :meth:`release`. While claimed, the range cannot be initialized by another request and
    the slab is not unmapped."""

    __slots__ = ("_map", "_slab", "hi", "lo", "view")

    def __init__(self, memmap: MemoryMap, slab: Slab, lo: int, hi: int, length: int) -> None:
        self.lo, self.hi = lo, hi
        self.view = memoryview(ffi.buffer(ffi.cast("char *", lo), length))
        self._map = memmap
        self._slab = slab

    def release(self) -> None:
        """Give the range back (idempotent); unmaps a slab released meanwhile."""
        self._map._drop_claim(self._slab, self)


class MemoryMap:
    """Slabs and regions of JIT'd memory in this process. See the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._slabs: dict[int, Slab] = {}
        self._bases: list[int] = []  # sorted slab bases, for address lookups

    # ---- queries ---------------------------------------------------------------------------

    def slab_containing(self, addr: int, size: int = 1) -> Slab | None:
        """The slab holding ``[addr, addr + size)``, or ``None``."""
        with self._lock:
            i = bisect.bisect_right(self._bases, addr) - 1
            if i < 0:
                return None
            slab = self._slabs[self._bases[i]]
            if addr + max(size, 1) <= slab.end:
                return slab
            return None

    def is_executable(self, addr: int) -> bool:
        """True if ``addr`` lies in an executable segment of an initialized region."""
        with self._lock:
            slab = self.slab_containing(addr)
            if slab is None:
                return False
            return any(
                s <= addr < e for r in slab.regions.values() if r.live for s, e in r.executable
            )

    def has_regions(self) -> bool:
        """True while any initialized region remains (in any slab)."""
        with self._lock:
            return any(s.regions for s in self._slabs.values())

    @property
    def slab_count(self) -> int:
        with self._lock:
            return len(self._slabs)

    # ---- reserve / release ------------------------------------------------------------------

    def reserve(self, size: int) -> int:
        """Reserve ``size`` bytes of address space; return the slab base (0 for size 0).

        Raises :class:`MemoryMapError` (with the ``strerror`` text) if the kernel refuses.
        """
        if size == 0:
            return 0
        if size < 0 or size > 1 << 47:
            raise MemoryMapError(os.strerror(12))
        mapped = _page_ceil(size)
        p = lib.orc_reserve(mapped)
        if p == ffi.NULL:
            raise MemoryMapError(os.strerror(ffi.errno))
        base = int(ffi.cast("uintptr_t", p))
        self._add_slab(Slab(base, size, mapped))
        return base

    def adopt(self, base: int, size: int, shared_name: str | None = None) -> None:
        """Track the already-mapped range ``[base, base + size)`` (bytes; e.g. a shared-memory
        reservation) as a slab. ``shared_name``: the shared-memory object unlinked when the
        slab is released."""
        self._add_slab(Slab(base, size, _page_ceil(size), shared_name=shared_name,
                            writable=False))

    def _add_slab(self, slab: Slab) -> None:
        with self._lock:
            self._slabs[slab.base] = slab
            bisect.insort(self._bases, slab.base)

    def release(
        self, bases: Iterable[int], run_action: ActionRunner, what: str = "release"
    ) -> None:
        """Release slabs, last to first: deinitialize their regions, then unmap.

        Every base is processed even if one fails; at the end one ``MemoryMapError`` carries
        all error messages joined by newlines in processing order, as ``llvm::joinErrors``
        does (stock wording "In release, 0x… is not part of any reserved address range").
        """
        errors: list[str] = []
        for base in reversed(list(bases)):
            with self._lock:
                slab = self._slabs.get(base)
                if slab is None:
                    errors.append(f"In {what}, {base:#x} is not part of any reserved address range")
                    continue
                regions = sorted(slab.regions.values(), key=lambda r: r.key, reverse=True)
                slab.regions.clear()
            # Dealloc actions run while the slab is still known (they may check addresses).
            for region in regions:
                err = self._run_dealloc(region, run_action)
                if err:
                    errors.append(err)
            with self._lock:
                if self._slabs.pop(base, None) is None:
                    continue  # released concurrently
                self._bases.remove(base)
                if slab.claims:
                    # Content is still being written into it: unmap with the last claim.
                    slab.unmap_deferred = True
                    continue
            err = self._unmap(slab)
            if err:
                errors.append(f"In {what}, {err}")
        if errors:
            raise MemoryMapError("\n".join(errors))

    @staticmethod
    def _unmap(slab: Slab) -> str | None:
        """Unmap a slab no longer tracked (and unlink its shared-memory name); the ``munmap``
        error message, or ``None``."""
        e = lib.orc_release(slab.base, slab.mapped_size)
        if slab.shared_name is not None:
            # The controller unlinks the name right after mapping it; if it did not (it
            # died first, or does not follow llvm-jitlink), the object must not outlive
            # the session in /dev/shm.
            u = lib.orc_shm_unlink(slab.shared_name.encode())
            if u and u != errno.ENOENT:
                log.warning("shm_unlink(%s): %s", slab.shared_name, os.strerror(u))
        return f"munmap of {slab.base:#x} failed: {os.strerror(e)}" if e else None

    # ---- content written in place (streaming initialize) ---------------------------------

    def place(self, addr: int, size: int, length: int) -> Claim | None:
        """Claim the segment ``[addr, addr + size)`` so its ``length`` content bytes can be
        written straight into the slab before the initialize that carries them is decoded.

        Returns ``None`` — the content then travels in an ordinary buffer and
        :meth:`initialize` reports any error as usual — unless the segment lies in a reserved
        (not shared-memory) slab, ``length <= size``, and none of its pages is part of an
        initialized region or another claim. The pages are made writable.
        """
        if length <= 0 or length > size:
            return None
        lo, hi = addr, addr + size
        plo, phi = _page_floor(lo), _page_ceil(hi)
        with self._lock:
            slab = self.slab_containing(lo, size)
            if slab is None or slab.shared_name is not None or slab.unmap_deferred:
                return None
            taken = itertools.chain(
                (rng for r in slab.regions.values() for rng in r.ranges),
                ((c.lo, c.hi) for c in slab.claims),
            )
            if any(plo < _page_ceil(e) and _page_floor(b) < phi for b, e in taken):
                return None
            if not slab.writable and lib.orc_protect(plo, phi - plo, _RW):
                return None
            claim = Claim(self, slab, lo, hi, length)
            slab.claims.append(claim)
        return claim

    def _drop_claim(self, slab: Slab, claim: Claim) -> None:
        with self._lock:
            if claim not in slab.claims:
                return
            slab.claims.remove(claim)
            unmap = slab.unmap_deferred and not slab.claims
        if unmap and (err := self._unmap(slab)):
            log.warning("%s", err)

    # ---- initialize / deinitialize ------------------------------------------------------------

    def initialize(
        self,
        segments: list[SegFinalizeRequest],
        actions: list[AllocActionCallPair],
        run_action: ActionRunner,
        *,
        copy_content: bool = True,
        allow_empty: bool = False,
    ) -> int:
        """Initialize a region; return its key (the lowest segment address).

        ``segments`` carry protection bits, address, size (bytes) and content. With
        ``copy_content=False`` (shared memory) contents are already in place and only
        protections are applied. Raises :class:`MemoryMapError` on a bad request or a failing
        finalize action (the dealloc actions of the completed pairs then run in reverse).
        """
        if not segments:
            if actions:
                raise MemoryMapError("Finalization actions attached to empty finalization request")
            if allow_empty:
                return 0
            raise MemoryMapError("Finalization request is empty")
        plan = _validate_segments(segments)
        slab, region, placed = self._place_region(plan)
        key = region.key
        try:
            if copy_content:
                self._copy_segments(slab, plan.nonempty, placed)
            self._protect_segments(slab, plan.nonempty)
            if NEEDS_ICACHE_SYNC:
                _sync_icache(plan.executable)
            self._run_finalize(region, actions, run_action)
        except BaseException:
            with self._lock:
                slab.regions.pop(key, None)
            raise
        region.live = True
        return key

    def _place_region(self, plan: _SegmentPlan) -> tuple[Slab, Region, set[int]]:
        """Find the slab that holds every segment of ``plan``, check the segments against its
        initialized regions and against content being received in place for other
        initializes, and record the new (not yet live) region. Returns the slab, the region
        and the ``id``s of segment contents already written in place (not to be copied
        again). Raises :class:`MemoryMapError`."""
        key, ranges = plan.key, plan.ranges
        with self._lock:
            slab = self.slab_containing(key)
            if slab is None:
                raise MemoryMapError(
                    f"In initialize, {key:#x} is not part of any reserved address range"
                )
            for lo, hi in ranges:
                if not (slab.base <= lo and hi <= slab.end):
                    raise MemoryMapError(
                        f"segment [{lo:#x}, {hi:#x}) is outside the slab [{slab.base:#x}, "
                        f"{slab.end:#x})"
                    )
            for r in slab.regions.values():
                for lo, hi in ranges:
                    for rs, re_ in r.ranges:
                        if lo < re_ and rs < hi:
                            raise MemoryMapError(
                                f"segment [{lo:#x}, {hi:#x}) overlaps the initialized region "
                                f"at {r.key:#x}"
                            )
            # Content this request's segments carry that was written in place (their claims):
            # not copied again. Any other claim is another initialize's range.
            placed: set[int] = set()
            if slab.claims:
                own = {id(s.content) for s in plan.nonempty}
                for c in slab.claims:
                    if id(c.view) in own:
                        placed.add(id(c.view))
                        continue
                    for lo, hi in ranges:
                        if lo < c.hi and c.lo < hi:
                            raise MemoryMapError(
                                f"segment [{lo:#x}, {hi:#x}) overlaps content being received "
                                f"for another initialize at {c.lo:#x}"
                            )
            if key in slab.regions:
                raise MemoryMapError(f"a region at {key:#x} is already initialized")
            region = Region(key, ranges, executable=plan.executable)
            slab.regions[key] = region
        return slab, region, placed

    def _copy_segments(
        self, slab: Slab, segs: list[SegFinalizeRequest], placed: set[int]
    ) -> None:
        """Copy each segment's content to its address (unless it was written there in place:
        ``id`` of the content in ``placed``) and zero-fill the rest of the segment. The
        pages are made writable first, unless they all still are (:attr:`Slab.writable`)."""
        if not slab.writable:
            for s in segs:
                _protect(_page_floor(s.addr), _page_ceil(s.addr + s.size), _RW)
        for s in segs:
            n = len(s.content)
            dst = ffi.cast("char *", s.addr)
            if n and id(s.content) not in placed:
                ffi.memmove(dst, s.content, n)
            if s.size > n:
                lib.memset(dst + n, 0, s.size - n)

    def _protect_segments(self, slab: Slab, segs: list[SegFinalizeRequest]) -> None:
        """Apply each segment's final protection to its pages, in order (a page shared by
        two segments ends with the later one's). A read/write segment of a slab whose pages
        all still are read/write is skipped, unless it shares a page with a segment of this
        request that changes protection."""
        pages: list[tuple[int, int, int]] = []
        changed: list[tuple[int, int]] = []
        for s in segs:
            lo, hi = _page_floor(s.addr), _page_ceil(s.addr + s.size)
            prot = _NATIVE_PROT[s.prot & 7]
            pages.append((lo, hi, prot))
            if prot != _RW:
                changed.append((lo, hi))
        was_writable = slab.writable
        if was_writable and not changed:
            return  # every page is read/write already, and stays so
        for lo, hi, prot in pages:
            if prot == _RW:
                if was_writable and not any(lo < ch and cl < hi for cl, ch in changed):
                    continue
            else:
                slab.writable = False
            _protect(lo, hi, prot)

    def _run_finalize(
        self, region: Region, actions: list[AllocActionCallPair], run_action: ActionRunner
    ) -> None:
        for i, pair in enumerate(actions):
            if pair.finalize.fn:
                err = run_action(pair.finalize)
                if err is not None:
                    # Undo the pairs that completed, in reverse.
                    for done in reversed(actions[:i]):
                        if done.dealloc.fn:
                            run_action(done.dealloc)
                    raise MemoryMapError(err)
            if pair.dealloc.fn:
                region.dealloc.append(pair.dealloc)

    def _run_dealloc(self, region: Region, run_action: ActionRunner) -> str | None:
        first: str | None = None
        while region.dealloc:
            call = region.dealloc.pop()
            err = run_action(call)
            if err is not None and first is None:
                first = err
        return first

    def dealloc_actions(self, keys: Iterable[int]) -> list[WrapperFunctionCall]:
        """The dealloc actions that :meth:`deinitialize` of ``keys`` would run (none for a key
        that is not an initialized region)."""
        calls: list[WrapperFunctionCall] = []
        with self._lock:
            for key in keys:
                slab = self.slab_containing(key)
                region = slab.regions.get(key) if slab is not None else None
                if region is not None:
                    calls.extend(region.dealloc)
        return calls

    def release_cost(self, bases: Iterable[int]) -> tuple[list[WrapperFunctionCall], int]:
        """What :meth:`release` of ``bases`` would do: the dealloc actions of the regions
        still initialized in those slabs, and the bytes it would unmap (bases that are not
        reserved slabs count for nothing)."""
        calls: list[WrapperFunctionCall] = []
        size = 0
        with self._lock:
            for base in bases:
                slab = self._slabs.get(base)
                if slab is not None:
                    size += slab.mapped_size
                    for region in slab.regions.values():
                        calls.extend(region.dealloc)
        return calls, size

    def deinitialize(
        self, keys: Iterable[int], run_action: ActionRunner, what: str = "deinitialize",
        *, ignore_unknown: bool = False,
    ) -> None:
        """Deinitialize regions by key, last to first: run their dealloc actions in reverse.

        Every key is processed; the error messages are joined by newlines as in
        :meth:`release` (stock wording "In deinitialize, address 0x… is not part of any
        reserved address range" / "… does not correspond to the start of any initialized
        region"). ``ignore_unknown``: keys that name no initialized region are skipped
        without error (``ExecutorSharedMemoryMapperService::deinitialize``).
        """
        errors: list[str] = []
        for key in reversed(list(keys)):
            with self._lock:
                slab = self.slab_containing(key)
                region = slab.regions.pop(key, None) if slab is not None else None
            if region is None and ignore_unknown:
                continue
            if slab is None:
                errors.append(
                    f"In {what}, address {key:#x} is not part of any reserved address range"
                )
                continue
            if region is None:
                errors.append(
                    f"In {what}, address {key:#x} does not correspond to the start of any "
                    "initialized region"
                )
                continue
            err = self._run_dealloc(region, run_action)
            if err:
                errors.append(err)
        if errors:
            raise MemoryMapError("\n".join(errors))

    def shutdown(self, run_action: ActionRunner) -> None:
        """Release every slab, newest first (running all outstanding dealloc actions, so code
        registered last — e.g. a JITDylib — is torn down before the ORC runtime it calls);
        errors are logged."""
        with self._lock:
            bases = list(self._slabs)  # reservation order; release() goes last to first
        if not bases:
            return
        try:
            self.release(bases, run_action, what="shutdown")
        except MemoryMapError as e:
            log.warning("releasing memory at session end: %s", e)
