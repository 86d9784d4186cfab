"""Memory over the wire: the 22 and 14/19 memory-manager models, memory reads and writes of
every width, and the shared-memory mapper (code written through the controller's mapping)."""

from __future__ import annotations

import mmap
import os
import re
from pathlib import Path

import pytest

from orc_executor.controller import ControllerError
from orc_executor.protocol.orc_types import (
    ExecutorAddrRange,
    FinalizeRequest,
    SharedMemoryFinalizeRequest,
    SharedMemorySegFinalizeRequest,
)
from orc_executor.protocol.sps import Addr, ErrorValue, UInt8, UInt64
from tests.support.harness import (
    BOOT,
    DYLIB_INSTANCE,
    DYLIB_OPEN,
    DYLIB_RESOLVE,
    FINALIZE_SIG,
    MEM_INTS,
    MEM_READ_BUFFERS_SIG,
    MEM_READ_STRINGS_SIG,
    MEM_WRITE_BUFFERS_SIG,
    MM_DEALLOCATE,
    MM_DEINITIALIZE,
    MM_FINALIZE,
    MM_INSTANCE,
    MM_RELEASE,
    MM_RESERVE,
    OPEN_SIG,
    PAGE,
    RELEASE_SIG,
    RESERVE_SIG,
    RESOLVE_SIG,
    RET42,
    RUN_AS_VOID,
    RUN_AS_VOID_SIG,
    RW,
    RX,
    SHM,
    SHM_DEINITIALIZE_SIG,
    SHM_INITIALIZE_SIG,
    SHM_RESERVE_SIG,
    R,
    initialize,
    mem_read_sig,
    mem_write_sig,
    orc_executor,
    read_buffers,
    reserve,
    seg,
)

# ---- 22 memory manager -----------------------------------------------------------------------


async def test_reserve_initialize_deinitialize_release() -> None:
    async with orc_executor() as ex:
        inst = ex.sym(MM_INSTANCE)
        base = await reserve(ex, 3 * PAGE)
        assert base % PAGE == 0
        key = await initialize(
            ex,
            seg(R, base, 0x58, b"r" * 0x40),
            seg(RX, base + PAGE, 0x35, RET42),
            seg(RW, base + 2 * PAGE, 0),
        )
        assert key == base
        assert await read_buffers(ex, (base, 0x58), (base + PAGE, 6)) == [
            b"r" * 0x40 + bytes(0x18),
            RET42,
        ]
        # The code runs.
        assert await ex.call(RUN_AS_VOID, RUN_AS_VOID_SIG, base + PAGE) == 42
        assert await ex.call(MM_DEINITIALIZE, RELEASE_SIG, inst, [key]) is None
        # Memory stays reserved: the range can be initialized again.
        assert await initialize(ex, seg(RW, base, 8, b"again")) == base
        assert await read_buffers(ex, (base, 8)) == [b"again\x00\x00\x00"]
        assert await ex.call(MM_RELEASE, RELEASE_SIG, inst, [base]) is None
        # Unmapped now: reading fails out of band.
        read8 = ex.sym(BOOT + "mem_read_uint8s_wrapper")
        assert await ex.ctl.call_raw(read8, mem_read_sig(UInt8).encode_args([base])) == b""
        assert await ex.call(MM_RELEASE, RELEASE_SIG, inst, [base]) == ErrorValue(
            f"In release, {base:#x} is not part of any reserved address range"
        )
    assert ex.process.returncode == 0
    assert ex.stdout == b""


async def test_reserve_zero_huge_and_one_gib() -> None:
    async with orc_executor() as ex:
        assert await reserve(ex, 0) == 0
        huge = await ex.call(MM_RESERVE, RESERVE_SIG, ex.sym(MM_INSTANCE), 1 << 60)
        assert huge == ErrorValue("Cannot allocate memory")
        gib = await reserve(ex, 1 << 30)
        assert await initialize(ex, seg(RW, gib + (1 << 29), 16, b"mid")) == gib + (1 << 29)
        assert await ex.call(MM_RELEASE, RELEASE_SIG, ex.sym(MM_INSTANCE), [gib]) is None


async def test_initialize_errors() -> None:
    async with orc_executor() as ex:
        base = await reserve(ex, 2 * PAGE)
        assert await initialize(ex) == ErrorValue("Finalization request is empty")
        assert await initialize(ex, seg(RW, base, PAGE)) == base
        overlap = await initialize(ex, seg(RW, base + 0x800, 0x10))
        assert isinstance(overlap, ErrorValue) and "overlap" in overlap.message
        outside = await initialize(ex, seg(RW, base + PAGE, 2 * PAGE))
        assert isinstance(outside, ErrorValue)
        unknown = await initialize(ex, seg(RW, 0x1234000, PAGE))
        assert isinstance(unknown, ErrorValue)
        too_big = await initialize(ex, seg(RW, base + PAGE, 2, b"abc"))
        assert isinstance(too_big, ErrorValue)
        bad_prot = await initialize(ex, seg(0x40, base + PAGE, 8))
        assert isinstance(bad_prot, ErrorValue)
        # None of the failures left a region behind.
        assert await initialize(ex, seg(RW, base + PAGE, PAGE)) == base + PAGE
    assert ex.process.returncode == 0


async def test_deinitialize_and_release_unknown_addresses() -> None:
    async with orc_executor() as ex:
        inst = ex.sym(MM_INSTANCE)
        assert await ex.call(MM_DEINITIALIZE, RELEASE_SIG, inst, [0x1234000]) == ErrorValue(
            "In deinitialize, address 0x1234000 is not part of any reserved address range"
        )
        assert await ex.call(MM_RELEASE, RELEASE_SIG, inst, [0x1234000, 0x5678000]) == ErrorValue(
            "In release, 0x5678000 is not part of any reserved address range\n"
            "In release, 0x1234000 is not part of any reserved address range"
        )
        assert await ex.call(MM_RELEASE, RELEASE_SIG, inst, []) is None


async def test_writes_to_code_pages_fail_without_crashing() -> None:
    async with orc_executor() as ex:
        base = await reserve(ex, PAGE)
        assert await initialize(ex, seg(RX, base, PAGE, RET42)) == base
        name = BOOT + "mem_write_uint8s_wrapper"
        raw = await ex.ctl.call_raw(ex.sym(name), mem_write_sig(UInt8).encode_args([(base, 0x90)]))
        assert raw == b""
        assert await read_buffers(ex, (base, 6)) == [RET42]
        assert await ex.call(RUN_AS_VOID, RUN_AS_VOID_SIG, base) == 42
    assert ex.process.returncode == 0


# ---- 14/19 memory manager ------------------------------------------------------------------


async def test_finalize_and_deallocate() -> None:
    async with orc_executor() as ex:
        inst = ex.sym(MM_INSTANCE)
        base = await reserve(ex, 2 * PAGE)
        req = FinalizeRequest([seg(RX, base, PAGE, RET42), seg(RW, base + PAGE, 8, b"d")], [])
        assert await ex.call(MM_FINALIZE, FINALIZE_SIG, inst, req) is None
        assert await ex.call(RUN_AS_VOID, RUN_AS_VOID_SIG, base) == 42
        # An empty finalize request is a success in 14/19.
        assert await ex.call(MM_FINALIZE, FINALIZE_SIG, inst, FinalizeRequest([], [])) is None
        bad = await ex.call(MM_FINALIZE, FINALIZE_SIG, inst, req)
        assert isinstance(bad, ErrorValue)
        assert await ex.call(MM_DEALLOCATE, RELEASE_SIG, inst, [base]) is None
        again = await ex.call(MM_DEALLOCATE, RELEASE_SIG, inst, [base])
        assert isinstance(again, ErrorValue) and f"{base:#x}" in again.message


# ---- memory access -------------------------------------------------------------------------------


@pytest.mark.parametrize(("suffix", "t", "width"), MEM_INTS, ids=[m[0] for m in MEM_INTS])
async def test_mem_write_and_read_every_width(suffix: str, t: object, width: int) -> None:
    async with orc_executor() as ex:
        base = await reserve(ex, PAGE)
        assert await initialize(ex, seg(RW, base, PAGE)) == base
        top = (1 << (8 * width)) - 1
        values = [0, 1, top, top // 3]
        items = [(base + 16 * i + 1, v) for i, v in enumerate(values)]  # unaligned addresses
        assert await ex.call(BOOT + f"mem_write_{suffix}_wrapper", mem_write_sig(t), items) is None
        got = await ex.call(
            BOOT + f"mem_read_{suffix}_wrapper", mem_read_sig(t), [a for a, _ in items]
        )
        assert got == values
        # Little-endian, exactly `width` bytes written.
        (raw,) = await read_buffers(ex, (base + 1, width + 1))
        assert raw == bytes(width + 1)
        (raw,) = await read_buffers(ex, (base + 33, width + 1))
        assert raw == top.to_bytes(width, "little") + b"\x00"
        assert await ex.call(BOOT + f"mem_read_{suffix}_wrapper", mem_read_sig(t), []) == []


async def test_mem_buffers_and_strings() -> None:
    async with orc_executor() as ex:
        base = await reserve(ex, PAGE)
        assert await initialize(ex, seg(RW, base, PAGE)) == base
        items = [(base, b"hello\x00"), (base + 100, b"w\xffrld\x00"), (base + 200, b"")]
        name = BOOT + "mem_write_buffers_wrapper"
        assert await ex.call(name, MEM_WRITE_BUFFERS_SIG, items) is None
        assert await read_buffers(ex, (base, 6), (base + 100, 3), (base + 200, 0)) == [
            b"hello\x00",
            b"w\xffr",
            b"",
        ]
        strings = await ex.call(
            BOOT + "mem_read_strings_wrapper", MEM_READ_STRINGS_SIG, [base, base + 100, base + 50]
        )
        # mem_read_strings is declared Sequence<String>: raw bytes, NUL excluded.
        assert [s.encode("utf-8", "surrogateescape") for s in strings] == [
            b"hello",
            b"w\xffrld",
            b"",
        ]


async def test_mem_access_in_a_loaded_library(testlib: Path) -> None:
    async with orc_executor() as ex:
        h = await ex.call(DYLIB_OPEN, OPEN_SIG, ex.sym(DYLIB_INSTANCE), str(testlib), 0)
        syms = await ex.call(
            DYLIB_RESOLVE,
            RESOLVE_SIG,
            h,
            [("scratch", True), ("greeting", True), ("constant_u64", True)],
        )
        scratch, greeting, constant = (s.address for s in syms)
        (s,) = await ex.call(BOOT + "mem_read_strings_wrapper", MEM_READ_STRINGS_SIG, [greeting])
        assert s == "hello from testlib"
        read64 = BOOT + "mem_read_uint64s_wrapper"
        assert await ex.call(read64, mem_read_sig(UInt64), [constant]) == [0x1122334455667788]
        name = BOOT + "mem_write_pointers_wrapper"
        assert await ex.call(name, mem_write_sig(Addr), [(scratch, greeting)]) is None
        name = BOOT + "mem_read_pointers_wrapper"
        assert await ex.call(name, mem_read_sig(Addr), [scratch]) == [greeting]
        # Read-only data cannot be written: out-of-band failure, value unchanged.
        write64 = ex.sym(BOOT + "mem_write_uint64s_wrapper")
        raw = await ex.ctl.call_raw(write64, mem_write_sig(UInt64).encode_args([(constant, 0)]))
        assert raw == b""
        assert await ex.call(read64, mem_read_sig(UInt64), [constant]) == [0x1122334455667788]


@pytest.mark.parametrize(
    "name",
    [
        "mem_read_uint8s_wrapper",
        "mem_read_uint16s_wrapper",
        "mem_read_uint32s_wrapper",
        "mem_read_uint64s_wrapper",
        "mem_read_pointers_wrapper",
        "mem_read_strings_wrapper",
    ],
)
async def test_mem_read_bad_address_is_error_not_crash(name: str) -> None:
    async with orc_executor() as ex:
        payload = mem_read_sig(Addr).encode_args([0x10])
        assert await ex.ctl.call_raw(ex.sym(BOOT + name), payload) == b""
        with pytest.raises(ControllerError, match="deserializing"):
            await ex.call(BOOT + name, mem_read_sig(Addr), [0x10])
        assert await reserve(ex, 0) == 0
    assert ex.process.returncode == 0
    assert ex.stdout == b""


async def test_mem_read_buffers_bad_ranges() -> None:
    async with orc_executor() as ex:
        name = ex.sym(BOOT + "mem_read_buffers_wrapper")
        for start, end in [(0x10, 0x20), (0x2000, 0x1000)]:
            payload = MEM_READ_BUFFERS_SIG.encode_args([ExecutorAddrRange(start, end)])
            assert await ex.ctl.call_raw(name, payload) == b""
        assert await reserve(ex, 0) == 0


@pytest.mark.parametrize(("suffix", "t", "width"), MEM_INTS, ids=[m[0] for m in MEM_INTS])
async def test_mem_write_bad_address_is_error_not_crash(suffix: str, t: object, width: int) -> None:
    async with orc_executor() as ex:
        payload = mem_write_sig(t).encode_args([(0x10, 0)])
        assert len(payload) == 16 + width
        assert await ex.ctl.call_raw(ex.sym(BOOT + f"mem_write_{suffix}_wrapper"), payload) == b""
        payload = MEM_WRITE_BUFFERS_SIG.encode_args([(0x10, b"xyz")])
        assert await ex.ctl.call_raw(ex.sym(BOOT + "mem_write_buffers_wrapper"), payload) == b""
        assert await reserve(ex, 0) == 0
    assert ex.process.returncode == 0
    assert ex.stdout == b""


# ---- shared memory -------------------------------------------------------------------------------


async def test_shared_memory_reserve_initialize_deinitialize() -> None:
    async with orc_executor() as ex:
        inst = ex.sym(SHM + "Instance")
        size = 1 << 20
        result = await ex.call(SHM + "Reserve", SHM_RESERVE_SIG, inst, size)
        assert not isinstance(result, ErrorValue), result
        addr, name = result
        assert re.fullmatch(rf"/jitlink_{ex.process.pid}_1", name)
        shm_path = Path("/dev/shm") / name.lstrip("/")
        # The controller's side: map the same object read-write, then unlink the name.
        fd = os.open(shm_path, os.O_RDWR)
        try:
            view = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        os.unlink(shm_path)
        try:
            code_at = PAGE  # like 22: the first segment starts one page in
            view[code_at : code_at + len(RET42)] = RET42
            view[2 * PAGE : 2 * PAGE + 5] = b"data!"
            req = SharedMemoryFinalizeRequest(
                [
                    SharedMemorySegFinalizeRequest(RX, addr + code_at, PAGE),
                    SharedMemorySegFinalizeRequest(RW, addr + 2 * PAGE, PAGE),
                ],
                [],
            )
            key = await ex.call(SHM + "Initialize", SHM_INITIALIZE_SIG, inst, addr, req)
            assert key == addr + code_at
            assert await ex.call(RUN_AS_VOID, RUN_AS_VOID_SIG, addr + code_at) == 42
            assert await read_buffers(ex, (addr + 2 * PAGE, 5)) == [b"data!"]
            # Writes by the executor show through the controller's mapping.
            name8 = BOOT + "mem_write_buffers_wrapper"
            assert await ex.call(name8, MEM_WRITE_BUFFERS_SIG, [(addr + 2 * PAGE, b"DA")]) is None
            assert view[2 * PAGE : 2 * PAGE + 5] == b"DAta!"
            assert await ex.call(SHM + "Deinitialize", SHM_DEINITIALIZE_SIG, inst, [key]) is None
            # A key that names no initialized region is ignored, as by the stock service
            # (clang-repl deinitializes the allocation of a statement that failed to link).
            again = await ex.call(SHM + "Deinitialize", SHM_DEINITIALIZE_SIG, inst, [key])
            assert again is None
            # Reserve numbering goes on; Release unmaps.
            second = await ex.call(SHM + "Reserve", SHM_RESERVE_SIG, inst, PAGE)
            assert second[1] == f"/jitlink_{ex.process.pid}_2"
            os.unlink(Path("/dev/shm") / second[1].lstrip("/"))
            assert await ex.call(SHM + "Release", SHM_DEINITIALIZE_SIG, inst, [second[0]]) is None
        finally:
            view.close()
    assert ex.process.returncode == 0
    assert ex.stdout == b""


async def test_shared_memory_errors() -> None:
    async with orc_executor() as ex:
        inst = ex.sym(SHM + "Instance")
        assert isinstance(await ex.call(SHM + "Reserve", SHM_RESERVE_SIG, inst, 0), ErrorValue)
        # Initialize against something that is not a shared-memory reservation.
        base = await reserve(ex, PAGE)
        req = SharedMemoryFinalizeRequest([SharedMemorySegFinalizeRequest(RW, base, PAGE)], [])
        result = await ex.call(SHM + "Initialize", SHM_INITIALIZE_SIG, inst, base, req)
        assert isinstance(result, ErrorValue)
        result = await ex.call(SHM + "Initialize", SHM_INITIALIZE_SIG, inst, 0x1234000, req)
        assert isinstance(result, ErrorValue)
        # Unknown keys are ignored (the stock service's behaviour).
        assert await ex.call(SHM + "Deinitialize", SHM_DEINITIALIZE_SIG, inst, [0x1234000]) is None


async def test_exit_with_outstanding_shared_reservation() -> None:
    """19/22 controllers never call Release: the session still ends cleanly. llvm-jitlink
    unlinks the name right after mapping it; a controller that does not (or dies first) must
    not leave the object in /dev/shm: the executor unlinks its names at session end."""
    async with orc_executor() as ex:
        inst = ex.sym(SHM + "Instance")
        addr, name = await ex.call(SHM + "Reserve", SHM_RESERVE_SIG, inst, PAGE)
        assert addr
        path = Path("/dev/shm") / name.lstrip("/")
        assert path.exists()
    assert ex.process.returncode == 0
    assert not path.exists()
    assert "shm_unlink" not in ex.stderr
