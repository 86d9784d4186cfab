"""MemoryMap: slabs, regions, protections, alloc-action ordering and error handling."""

from __future__ import annotations

import mmap
from collections.abc import Iterator

import pytest

from orc_executor.native.api import (
    MemoryAccessError,
    ffi,
    lib,
    mem_read,
    mem_readable,
    mem_write,
)
from orc_executor.native.memmap import PAGE_SIZE, MemoryMap, MemoryMapError
from orc_executor.protocol.orc_types import (
    AllocActionCallPair,
    SegFinalizeRequest,
    WrapperFunctionCall,
)

R, W, X = 1, 2, 4
RW, RX = R | W, R | X
NULL = WrapperFunctionCall(0, b"")


class Recorder:
    """A fake alloc-action runner: records (fn, args) and fails the functions in ``fail``."""

    def __init__(self, fail: dict[int, str] | None = None) -> None:
        self.calls: list[tuple[int, bytes]] = []
        self.fail = fail or {}

    def __call__(self, call: WrapperFunctionCall) -> str | None:
        self.calls.append((call.fn, call.args))
        return self.fail.get(call.fn)

    @property
    def fns(self) -> list[int]:
        return [fn for fn, _ in self.calls]


def pair(fin: int, dealloc: int) -> AllocActionCallPair:
    return AllocActionCallPair(
        WrapperFunctionCall(fin, f"fin{fin}".encode()) if fin else NULL,
        WrapperFunctionCall(dealloc, f"dealloc{dealloc}".encode()) if dealloc else NULL,
    )


def seg(prot: int, addr: int, size: int, content: bytes = b"") -> SegFinalizeRequest:
    return SegFinalizeRequest(prot, addr, size, content)


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def page_perms(addr: int) -> str:
    """The ``rwxp`` column of /proc/self/maps for the mapping holding ``addr``."""
    with open("/proc/self/maps") as f:
        for line in f:
            span, perms = line.split()[:2]
            lo, hi = (int(x, 16) for x in span.split("-"))
            if lo <= addr < hi:
                return perms[:3]
    return "unmapped"


@pytest.fixture
def mm() -> Iterator[MemoryMap]:
    m = MemoryMap()
    yield m
    m.shutdown(lambda call: None)
    assert m.slab_count == 0


# ---- reserve / release ---------------------------------------------------------------------


def test_reserve_zero_is_zero(mm: MemoryMap) -> None:
    assert mm.reserve(0) == 0
    assert mm.slab_count == 0


def test_reserve_is_address_space_only(mm: MemoryMap) -> None:
    base = mm.reserve(3 * PAGE_SIZE)
    assert base % PAGE_SIZE == 0
    assert mm.slab_count == 1
    # Like the stock executors' reservations: zero pages, readable and writable, but
    # MAP_NORESERVE, so nothing is committed until a page is touched.
    assert page_perms(base) == "rw-"
    assert mem_read(base, 8) == bytes(8)


def test_reserve_one_gib_does_not_commit(mm: MemoryMap) -> None:
    before = rss_bytes()
    base = mm.reserve(1 << 30)
    mm.initialize([seg(RW, base + (512 << 20), PAGE_SIZE, b"x")], [], Recorder())
    after = rss_bytes()
    assert after - before < 16 << 20, f"RSS grew by {after - before} bytes"
    slab = mm.slab_containing(base + (1 << 30) - 1)
    assert slab is not None and slab.base == base
    assert mm.slab_containing(base + (1 << 30)) is None


def test_reserve_absurd_size_fails(mm: MemoryMap) -> None:
    with pytest.raises(MemoryMapError, match="Cannot allocate memory"):
        mm.reserve(1 << 60)
    assert mm.slab_count == 0


def test_release_unmaps(mm: MemoryMap) -> None:
    base = mm.reserve(PAGE_SIZE)
    mm.initialize([seg(RW, base, 16, b"abc")], [], Recorder())
    mm.release([base], Recorder())
    assert mm.slab_count == 0
    assert mm.slab_containing(base) is None
    assert not mm.has_regions()
    with pytest.raises(MemoryAccessError):
        mem_read(base, 1)


def test_mem_readable_says_whether_every_page_of_a_range_can_be_read() -> None:
    area = mmap.mmap(-1, 3 * PAGE_SIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    base = int(ffi.cast("uintptr_t", ffi.from_buffer(area)))
    assert lib.orc_protect(base + PAGE_SIZE, PAGE_SIZE, 0) == 0  # a hole at page 1
    try:
        assert mem_readable(base, PAGE_SIZE)
        assert mem_readable(base + PAGE_SIZE - 1, 1)
        assert mem_readable(base + 2 * PAGE_SIZE, PAGE_SIZE)
        assert mem_readable(base, 0) and mem_readable(base + PAGE_SIZE, 0)
        assert not mem_readable(base, PAGE_SIZE + 1)
        assert not mem_readable(base + PAGE_SIZE - 1, 2)
        assert not mem_readable(base + PAGE_SIZE, 1)
        assert not mem_readable(base + 2 * PAGE_SIZE - 1, 2)
        assert not mem_readable(base, 3 * PAGE_SIZE)
        assert not mem_readable(2**64 - 8, 16)  # wraps around the address space
        assert not mem_readable(0, 1)
    finally:
        lib.orc_protect(base + PAGE_SIZE, PAGE_SIZE, mmap.PROT_READ | mmap.PROT_WRITE)
        area.close()


def test_release_unknown_bases_processes_every_base(mm: MemoryMap) -> None:
    a = mm.reserve(PAGE_SIZE)
    b = mm.reserve(PAGE_SIZE)
    with pytest.raises(MemoryMapError) as ei:
        mm.release([0x1234000, a, 0x5678000, b], Recorder())
    # Processed last to first; all messages kept, joined like llvm::joinErrors.
    assert str(ei.value) == (
        "In release, 0x5678000 is not part of any reserved address range\n"
        "In release, 0x1234000 is not part of any reserved address range"
    )
    assert mm.slab_count == 0


def test_release_of_address_inside_slab_is_error(mm: MemoryMap) -> None:
    base = mm.reserve(2 * PAGE_SIZE)
    with pytest.raises(MemoryMapError, match=f"In release, {base + 16:#x} is not part"):
        mm.release([base + 16], Recorder())
    assert mm.slab_count == 1


# ---- initialize --------------------------------------------------------------------------------


def test_initialize_content_zero_fill_and_protections(mm: MemoryMap) -> None:
    base = mm.reserve(4 * PAGE_SIZE)
    code = b"\xb8\x2a\x00\x00\x00\xc3"  # mov eax, 42; ret
    # Dirty the RW page first to prove the zero fill really writes zeros.
    mm.initialize([seg(RW, base + PAGE_SIZE, PAGE_SIZE, b"\xff" * PAGE_SIZE)], [], Recorder())
    mm.deinitialize([base + PAGE_SIZE], Recorder())
    key = mm.initialize(
        [
            seg(RX, base, PAGE_SIZE, code),
            seg(RW, base + PAGE_SIZE, 100, b"data"),
            seg(R, base + 2 * PAGE_SIZE, PAGE_SIZE, b"ro"),
        ],
        [],
        Recorder(),
    )
    assert key == base
    assert mem_read(base, len(code) + 4) == code + bytes(4)
    assert mem_read(base + PAGE_SIZE, 100) == b"data" + bytes(96)
    assert mem_read(base + 2 * PAGE_SIZE, 3) == b"ro\x00"
    assert page_perms(base) == "r-x"
    assert page_perms(base + PAGE_SIZE) == "rw-"
    assert page_perms(base + 2 * PAGE_SIZE) == "r--"
    assert page_perms(base + 3 * PAGE_SIZE) == "rw-"  # untouched: still reserved only
    assert mm.is_executable(base)
    assert mm.is_executable(base + PAGE_SIZE - 1)
    assert not mm.is_executable(base + PAGE_SIZE)
    assert mm.has_regions()


def test_write_into_rx_or_r_page_raises_instead_of_crashing(mm: MemoryMap) -> None:
    base = mm.reserve(4 * PAGE_SIZE)
    mm.initialize(
        [
            seg(RX, base, PAGE_SIZE, b"\xc3"),
            seg(R, base + PAGE_SIZE, PAGE_SIZE),
            seg(RW, base + 2 * PAGE_SIZE, PAGE_SIZE),
        ],
        [],
        Recorder(),
    )
    with pytest.raises(MemoryAccessError):
        mem_write(base, b"\x90")
    with pytest.raises(MemoryAccessError):
        mem_write(base + PAGE_SIZE, b"\x90")
    assert mem_read(base, 1) == b"\xc3"
    mem_write(base + 2 * PAGE_SIZE + 5, b"ok")
    assert mem_read(base + 2 * PAGE_SIZE + 4, 4) == b"\x00ok\x00"
    with pytest.raises(MemoryAccessError):
        mem_write(base + 2 * PAGE_SIZE - 1, b"xy")  # starts in the read-only page


def test_non_page_multiple_and_zero_size_segments(mm: MemoryMap) -> None:
    """lli sends exact sizes (0x58, 0x35) and zero-size segments (traces/lli22-mcjit.txt)."""
    base = mm.reserve(0x3000)
    rec = Recorder()
    key = mm.initialize(
        [
            seg(RW, base + 0x2000, 0, b""),
            seg(RX, base + 0x1000, 0x35, b"\xc3" * 0x35),
            seg(R, base + 0x0, 0x58, b"r" * 0x40),
        ],
        [],
        rec,
    )
    assert key == base  # lowest segment address
    assert mem_read(base, 0x58) == b"r" * 0x40 + bytes(0x18)
    assert mem_read(base + 0x1000, 0x35) == b"\xc3" * 0x35
    assert page_perms(base + 0x1000) == "r-x"
    # The zero-size segment neither maps nor protects anything.
    assert page_perms(base + 0x2000) == "rw-"
    # A region consisting only of a zero-size segment is keyed at that address.
    assert mm.initialize([seg(RW, base + 0x2800, 0)], [], rec) == base + 0x2800


def test_zero_size_segment_key_is_lowest_address(mm: MemoryMap) -> None:
    base = mm.reserve(0x2000)
    key = mm.initialize([seg(RW, base + 0x1000, 8, b"a"), seg(RW, base, 0)], [], Recorder())
    assert key == base


def test_empty_content_is_pure_zero_fill(mm: MemoryMap) -> None:
    base = mm.reserve(PAGE_SIZE)
    mm.initialize([seg(RW, base, 64)], [], Recorder())
    assert mem_read(base, 64) == bytes(64)


def test_initialize_empty_request(mm: MemoryMap) -> None:
    with pytest.raises(MemoryMapError, match="Finalization request is empty"):
        mm.initialize([], [], Recorder())
    assert mm.initialize([], [], Recorder(), allow_empty=True) == 0


def test_actions_without_segments_rejected(mm: MemoryMap) -> None:
    rec = Recorder()
    with pytest.raises(MemoryMapError, match="empty finalization request"):
        mm.initialize([], [pair(1, 2)], rec)
    assert rec.calls == []


def test_copy_content_false_only_protects(mm: MemoryMap) -> None:
    """Shared-memory mode: contents are already in place; only protections change."""
    base = mm.reserve(PAGE_SIZE)
    mm.initialize([seg(RW, base, PAGE_SIZE, b"abc")], [], Recorder())
    mm.deinitialize([base], Recorder())
    mm.initialize([seg(R, base, PAGE_SIZE, b"zzz")], [], Recorder(), copy_content=False)
    assert mem_read(base, 3) == b"abc"
    assert page_perms(base) == "r--"


# ---- alloc actions -------------------------------------------------------------------------------


def test_finalize_in_order_dealloc_in_reverse_at_deinitialize(mm: MemoryMap) -> None:
    base = mm.reserve(PAGE_SIZE)
    rec = Recorder()
    key = mm.initialize(
        [seg(RW, base, 8)], [pair(1, 11), pair(2, 0), pair(0, 13), pair(4, 14)], rec
    )
    assert rec.calls == [(1, b"fin1"), (2, b"fin2"), (4, b"fin4")]
    rec.calls.clear()
    mm.deinitialize([key], rec)
    assert rec.calls == [(14, b"dealloc14"), (13, b"dealloc13"), (11, b"dealloc11")]
    rec.calls.clear()
    # Memory stays reserved; a second release runs nothing more.
    assert mm.slab_count == 1
    mm.release([base], rec)
    assert rec.calls == []


def test_dealloc_in_reverse_at_release_across_regions(mm: MemoryMap) -> None:
    base = mm.reserve(3 * PAGE_SIZE)
    rec = Recorder()
    mm.initialize([seg(RW, base, 8)], [pair(1, 11), pair(2, 12)], rec)
    mm.initialize([seg(RW, base + 2 * PAGE_SIZE, 8)], [pair(3, 13)], rec)
    mm.initialize([seg(RW, base + PAGE_SIZE, 8)], [pair(4, 14), pair(5, 15)], rec)
    assert rec.fns == [1, 2, 3, 4, 5]
    rec.calls.clear()
    mm.release([base], rec)
    # Regions last to first (by key), each region's actions in reverse.
    assert rec.fns == [13, 15, 14, 12, 11]
    assert mm.slab_count == 0


def test_release_processes_bases_last_to_first(mm: MemoryMap) -> None:
    a = mm.reserve(PAGE_SIZE)
    b = mm.reserve(PAGE_SIZE)
    rec = Recorder()
    mm.initialize([seg(RW, a, 8)], [pair(1, 11)], rec)
    mm.initialize([seg(RW, b, 8)], [pair(2, 12)], rec)
    rec.calls.clear()
    mm.release([a, b], rec)
    assert rec.fns == [12, 11]


def test_deinitialize_keys_last_to_first(mm: MemoryMap) -> None:
    base = mm.reserve(2 * PAGE_SIZE)
    rec = Recorder()
    k1 = mm.initialize([seg(RW, base, 8)], [pair(1, 11)], rec)
    k2 = mm.initialize([seg(RW, base + PAGE_SIZE, 8)], [pair(2, 12)], rec)
    rec.calls.clear()
    mm.deinitialize([k2, k1], rec)
    assert rec.fns == [11, 12]


def test_failing_finalize_action_unwinds_completed_pairs(mm: MemoryMap) -> None:
    base = mm.reserve(PAGE_SIZE)
    rec = Recorder(fail={3: "action 3 failed"})
    with pytest.raises(MemoryMapError, match="action 3 failed"):
        mm.initialize(
            [seg(RW, base, 8, b"x")], [pair(1, 11), pair(2, 0), pair(3, 13), pair(4, 14)], rec
        )
    # fin1, fin2, fin3 (fails), then the completed pairs' deallocs in reverse: 11 only
    # (pair 2 has no dealloc); the failing pair's own dealloc and pair 4 never run.
    assert rec.fns == [1, 2, 3, 11]
    assert not mm.has_regions()
    assert mm.slab_count == 1
    # The range is free again.
    rec2 = Recorder()
    assert mm.initialize([seg(RW, base, 8)], [pair(5, 15)], rec2) == base
    rec2.calls.clear()
    mm.release([base], rec2)
    assert rec2.fns == [15]


def test_failing_first_action_runs_nothing_else(mm: MemoryMap) -> None:
    base = mm.reserve(PAGE_SIZE)
    rec = Recorder(fail={1: "nope"})
    with pytest.raises(MemoryMapError, match="nope"):
        mm.initialize([seg(RW, base, 8)], [pair(1, 11), pair(2, 12)], rec)
    assert rec.fns == [1]
    assert not mm.has_regions()


def test_failing_dealloc_actions_still_release(mm: MemoryMap) -> None:
    base = mm.reserve(PAGE_SIZE)
    rec = Recorder(fail={11: "dealloc 11 failed", 12: "dealloc 12 failed"})
    mm.initialize([seg(RW, base, 8)], [pair(1, 11), pair(2, 12), pair(3, 13)], rec)
    rec.calls.clear()
    with pytest.raises(MemoryMapError, match="dealloc 12 failed"):
        mm.release([base], rec)
    assert rec.fns == [13, 12, 11]  # every dealloc action ran
    assert mm.slab_count == 0


def test_deinitialize_then_reinitialize_same_range(mm: MemoryMap) -> None:
    base = mm.reserve(PAGE_SIZE)
    rec = Recorder()
    mm.initialize([seg(RX, base, PAGE_SIZE, b"\xc3")], [pair(1, 11)], rec)
    mm.deinitialize([base], rec)
    assert not mm.has_regions()
    assert not mm.is_executable(base)
    key = mm.initialize([seg(RW, base, PAGE_SIZE, b"again")], [pair(2, 12)], rec)
    assert key == base
    assert mem_read(base, 6) == b"again\x00"
    assert page_perms(base) == "rw-"
    assert rec.fns == [1, 11, 2]


class CountingLib:
    """``memmap.lib`` with ``orc_protect`` calls recorded as ``(addr, size, prot)``."""

    def __init__(self) -> None:
        self.protects: list[tuple[int, int, int]] = []

    def orc_protect(self, addr: int, size: int, prot: int) -> int:
        self.protects.append((addr, size, prot))
        return int(lib.orc_protect(addr, size, prot))

    def __getattr__(self, name: str) -> object:
        return getattr(lib, name)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> CountingLib:
    from orc_executor.native import memmap

    counter = CountingLib()
    monkeypatch.setattr(memmap, "lib", counter)
    return counter


def test_read_write_segments_of_a_fresh_slab_need_no_mprotect(
    mm: MemoryMap, counting: CountingLib
) -> None:
    base = mm.reserve(4 * PAGE_SIZE)
    mm.initialize([seg(RW, base, PAGE_SIZE, b"data"), seg(RW, base + PAGE_SIZE, 8)], [],
                  Recorder())
    assert counting.protects == []  # the reservation is read/write already
    assert mem_read(base, 5) == b"data\x00"
    assert page_perms(base) == "rw-"
    claim = mm.place(base + 2 * PAGE_SIZE, PAGE_SIZE, 4)  # in-place content: no mprotect
    assert claim is not None and counting.protects == []
    claim.release()


def test_read_write_segments_after_a_protection_change_are_protected(
    mm: MemoryMap, counting: CountingLib
) -> None:
    base = mm.reserve(4 * PAGE_SIZE)
    rwx = lib.PROT_READ | lib.PROT_WRITE
    # Text and data in one request: the text page changes, the data page is left as is.
    mm.initialize([seg(RX, base, PAGE_SIZE, b"\xc3"), seg(RW, base + PAGE_SIZE, 8, b"d")], [],
                  Recorder())
    assert [(a, p) for a, _, p in counting.protects] == [(base, lib.PROT_READ | lib.PROT_EXEC)]
    assert (page_perms(base), page_perms(base + PAGE_SIZE)) == ("r-x", "rw-")
    # From now on the slab is not known to be all read/write: copies and RW segments protect.
    counting.protects.clear()
    mm.initialize([seg(RW, base + 2 * PAGE_SIZE, 8, b"e")], [], Recorder())
    assert [(a, p) for a, _, p in counting.protects] == [(base + 2 * PAGE_SIZE, rwx)] * 2
    assert page_perms(base + 2 * PAGE_SIZE) == "rw-"


def test_a_read_write_segment_sharing_a_page_with_text_still_wins_that_page(
    mm: MemoryMap, counting: CountingLib
) -> None:
    base = mm.reserve(2 * PAGE_SIZE)
    # Segments are applied in order; the later RW segment shares the text's page.
    mm.initialize([seg(RX, base, 64, b"\xc3"), seg(RW, base + 64, 64, b"d")], [], Recorder())
    assert page_perms(base) == "rw-"
    assert len(counting.protects) == 2


def test_shared_memory_segments_are_always_protected(
    mm: MemoryMap, counting: CountingLib
) -> None:
    p = lib.orc_reserve(PAGE_SIZE)
    addr = int(ffi.cast("uintptr_t", p))
    lib.orc_protect(addr, PAGE_SIZE, 0)  # adopted ranges may start PROT_NONE
    mm.adopt(addr, PAGE_SIZE)
    mm.initialize([seg(RW, addr, PAGE_SIZE)], [], Recorder(), copy_content=False)
    assert page_perms(addr) == "rw-"
    assert len(counting.protects) == 1


# ---- errors --------------------------------------------------------------------------------------


def test_overlapping_segments_rejected(mm: MemoryMap) -> None:
    base = mm.reserve(2 * PAGE_SIZE)
    rec = Recorder()
    with pytest.raises(MemoryMapError, match="overlap"):
        mm.initialize([seg(RW, base, 0x800), seg(R, base + 0x7FF, 0x10)], [pair(1, 2)], rec)
    assert rec.calls == []
    assert not mm.has_regions()
    # Adjacent (touching) segments are fine.
    mm.initialize([seg(RW, base, 0x800), seg(RW, base + 0x800, 0x10)], [], rec)


def test_segment_outside_slab_rejected(mm: MemoryMap) -> None:
    base = mm.reserve(PAGE_SIZE)
    with pytest.raises(MemoryMapError, match="outside the slab"):
        mm.initialize([seg(RW, base + PAGE_SIZE - 8, 16)], [], Recorder())
    with pytest.raises(MemoryMapError, match="outside the slab"):
        mm.initialize([seg(RW, base, 8), seg(RW, base + 2 * PAGE_SIZE, 8)], [], Recorder())
    with pytest.raises(MemoryMapError, match="not part of any reserved address range"):
        mm.initialize([seg(RW, 0x1000, 8)], [], Recorder())
    assert not mm.has_regions()


def test_overlapping_initialized_region_rejected(mm: MemoryMap) -> None:
    base = mm.reserve(2 * PAGE_SIZE)
    rec = Recorder()
    mm.initialize([seg(RW, base + 0x100, 0x100, b"first")], [pair(1, 11)], rec)
    for addr, size in [(base, 0x101), (base + 0x1FF, 1), (base + 0x100, 0x100), (base, 0x1000)]:
        with pytest.raises(MemoryMapError, match="overlaps the initialized region"):
            mm.initialize([seg(RW, addr, size)], [pair(2, 12)], rec)
    assert rec.fns == [1]
    assert mem_read(base + 0x100, 5) == b"first"
    # Just outside is fine.
    mm.initialize([seg(RW, base + 0x200, 0x10)], [], rec)
    mm.initialize([seg(RW, base, 0x100)], [], rec)


@pytest.mark.parametrize("prot", [0x10, 0x20, 0x80, 0xFF])
def test_bad_protection_bits_rejected(mm: MemoryMap, prot: int) -> None:
    base = mm.reserve(PAGE_SIZE)
    with pytest.raises(MemoryMapError, match="protection"):
        mm.initialize([seg(prot, base, 8)], [], Recorder())
    assert not mm.has_regions()


def test_finalize_lifetime_bit_accepted(mm: MemoryMap) -> None:
    base = mm.reserve(PAGE_SIZE)
    assert mm.initialize([seg(RW | 0x8, base, 8)], [], Recorder()) == base


def test_content_larger_than_segment_rejected(mm: MemoryMap) -> None:
    base = mm.reserve(PAGE_SIZE)
    with pytest.raises(MemoryMapError, match="exceeds"):
        mm.initialize([seg(RW, base, 2, b"abc")], [], Recorder())
    assert not mm.has_regions()


def test_deinitialize_unknown_keys_processes_every_key(mm: MemoryMap) -> None:
    base = mm.reserve(2 * PAGE_SIZE)
    rec = Recorder()
    k1 = mm.initialize([seg(RW, base, 8)], [pair(1, 11)], rec)
    k2 = mm.initialize([seg(RW, base + PAGE_SIZE, 8)], [pair(2, 12)], rec)
    rec.calls.clear()
    with pytest.raises(MemoryMapError) as ei:
        mm.deinitialize([k1, 0x1234000, base + 8, k2], rec)
    assert rec.fns == [12, 11]  # the good keys were still deinitialized
    assert str(ei.value) == (
        f"In deinitialize, address {base + 8:#x} does not correspond to the start of any "
        "initialized region\n"
        "In deinitialize, address 0x1234000 is not part of any reserved address range"
    )
    assert not mm.has_regions()


def test_deinitialize_twice_is_error(mm: MemoryMap) -> None:
    base = mm.reserve(PAGE_SIZE)
    mm.initialize([seg(RW, base, 8)], [], Recorder())
    mm.deinitialize([base], Recorder())
    with pytest.raises(MemoryMapError, match="does not correspond"):
        mm.deinitialize([base], Recorder())


def test_shutdown_releases_everything() -> None:
    mm = MemoryMap()
    rec = Recorder(fail={21: "ignored at shutdown"})
    a = mm.reserve(PAGE_SIZE)
    b = mm.reserve(2 * PAGE_SIZE)
    mm.reserve(PAGE_SIZE)  # never initialized
    mm.initialize([seg(RW, a, 8)], [pair(1, 11)], rec)
    mm.initialize([seg(RX, b, 8, b"\xc3")], [pair(2, 21), pair(3, 22)], rec)
    mm.initialize([seg(RW, b + PAGE_SIZE, 8)], [pair(4, 23)], rec)
    rec.calls.clear()
    mm.shutdown(rec)  # errors are logged, not raised
    assert sorted(rec.fns) == [11, 21, 22, 23]
    assert rec.fns.index(22) < rec.fns.index(21)
    assert mm.slab_count == 0
    assert not mm.has_regions()
    for addr in (a, b):
        with pytest.raises(MemoryAccessError):
            mem_read(addr, 1)
    mm.shutdown(rec)  # idempotent


def test_adopt_tracks_existing_mapping(mm: MemoryMap) -> None:
    p = lib.orc_reserve(2 * PAGE_SIZE)
    assert p != ffi.NULL
    base = int(ffi.cast("uintptr_t", p))
    mm.adopt(base, 2 * PAGE_SIZE, shared_name="/test_name")
    slab = mm.slab_containing(base + PAGE_SIZE)
    assert slab is not None and slab.shared_name == "/test_name"
    assert mm.initialize([seg(RW, base + PAGE_SIZE, 4, b"shm")], [], Recorder()) == base + PAGE_SIZE
    assert mem_read(base + PAGE_SIZE, 3) == b"shm"
    mm.release([base], Recorder())
    assert page_perms(base) == "unmapped"


def test_slab_containing_bounds(mm: MemoryMap) -> None:
    base = mm.reserve(PAGE_SIZE)
    slab = mm.slab_containing(base)
    assert slab is not None and slab.shared_name is None
    assert mm.slab_containing(base - 1) is None
    assert mm.slab_containing(base, PAGE_SIZE) is slab
    assert mm.slab_containing(base, PAGE_SIZE + 1) is None


# ---- content written in place (streaming initialize) -------------------------------------


def test_placed_content_is_not_copied_again_and_tail_is_zeroed(mm: MemoryMap) -> None:
    base = mm.reserve(2 * PAGE_SIZE)
    mem_write(base, b"\xff" * 64)  # stale bytes where the zero-fill tail will be
    claim = mm.place(base, 64, 5)
    assert claim is not None and len(claim.view) == 5
    claim.view[:] = b"hello"
    key = mm.initialize([seg(R, base, 64, claim.view)], [], Recorder())
    claim.release()
    assert key == base
    assert mem_read(base, 64) == b"hello" + bytes(59)
    assert page_perms(base) == "r--"


def test_place_refuses_what_initialize_would_reject(mm: MemoryMap) -> None:
    base = mm.reserve(4 * PAGE_SIZE)
    mm.initialize([seg(RX, base, 16, b"\xc3")], [], Recorder())
    assert mm.place(base, 16, 1) is None  # a live region
    assert mm.place(base + 8, PAGE_SIZE, 1) is None  # shares its page
    assert mm.place(base + PAGE_SIZE, 4, 5) is None  # content larger than the segment
    assert mm.place(base + 3 * PAGE_SIZE, 2 * PAGE_SIZE, 1) is None  # past the slab
    assert mm.place(0x1234000, 16, 1) is None  # not reserved
    assert page_perms(base) == "r-x"  # nothing was made writable
    claim = mm.place(base + PAGE_SIZE, PAGE_SIZE, 8)
    assert claim is not None
    assert mm.place(base + PAGE_SIZE + 16, 8, 8) is None  # claimed already
    # Another request may not initialize over a claimed range; its own request may.
    with pytest.raises(MemoryMapError, match="being received"):
        mm.initialize([seg(RW, base + PAGE_SIZE, 8, b"other")], [], Recorder())
    claim.view[:] = b"mine!!!!"
    mm.initialize([seg(RW, base + PAGE_SIZE, PAGE_SIZE, claim.view)], [], Recorder())
    claim.release()
    assert mem_read(base + PAGE_SIZE, 8) == b"mine!!!!"


def test_release_while_claimed_defers_the_unmap(mm: MemoryMap) -> None:
    base = mm.reserve(PAGE_SIZE)
    claim = mm.place(base, PAGE_SIZE, 4)
    assert claim is not None
    mm.release([base], Recorder())
    assert mm.slab_count == 0 and mm.slab_containing(base) is None
    claim.view[:] = b"late"  # still mapped: the content can finish arriving
    assert mem_read(base, 4) == b"late"
    claim.release()
    claim.release()
    with pytest.raises(MemoryAccessError):
        mem_read(base, 1)
