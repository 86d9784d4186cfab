"""Which calls of the blocking memory wrappers run on the event loop (``WrapperSpec.inline_when``):
only those that cannot block — alloc actions that are all the executor's own non-blocking
wrappers, and for an initialize at most ``INLINE_MAX_BYTES`` of segments, for a release at
most that many bytes to unmap."""

from __future__ import annotations

import pytest

from orc_executor.executor.bootstrap import build_context
from orc_executor.executor.context import ExecutorContext
from orc_executor.executor.registry import WrapperSpec
from orc_executor.executor.services import memory_manager as mm
from orc_executor.executor.services import shared_memory as shm
from orc_executor.native.memmap import PAGE_SIZE
from orc_executor.protocol.names import ExecutorSharedMemoryMapperService as SHM
from orc_executor.protocol.names import SimpleExecutorMemoryManager as MM
from orc_executor.protocol.names import SimpleNativeMemoryMap
from orc_executor.protocol.orc_types import (
    AllocActionCallPair,
    FinalizeRequest,
    SegFinalizeRequest,
    SharedMemoryFinalizeRequest,
    SharedMemorySegFinalizeRequest,
    WrapperFunctionCall,
)

RW = 3
NONE = WrapperFunctionCall(0, b"")
#: An address that is no wrapper of ours: native code, which may block.
NATIVE = 0x1234_5000


@pytest.fixture
def ctx() -> ExecutorContext:
    return build_context()


def spec(ctx: ExecutorContext, name: str) -> WrapperSpec:
    found = ctx.registry.lookup(ctx.registry.addr_of[name])
    assert found is not None and found.blocking and found.inline_when is not None
    return found


def action(ctx: ExecutorContext, fn: str | int) -> WrapperFunctionCall:
    return WrapperFunctionCall(ctx.registry.addr_of[fn] if isinstance(fn, str) else fn, b"")


def test_initialize_inline_only_when_it_cannot_block(ctx: ExecutorContext) -> None:
    init = spec(ctx, MM.initialize)
    inst = ctx.registry.addr_of[MM.instance]
    base = ctx.memmap.reserve(4 << 20)
    eh = action(ctx, "llvm_orc_registerEHFrameAllocAction")
    run_main = action(ctx, "__llvm_orc_bootstrap_run_as_main_wrapper")  # ours, but blocking

    def req(size: int, *finalize: WrapperFunctionCall) -> FinalizeRequest:
        return FinalizeRequest([SegFinalizeRequest(RW, base, size, b"")],
                               [AllocActionCallPair(f, NONE) for f in finalize])

    assert init.inline_when is not None
    assert init.inline_when(inst, req(PAGE_SIZE))
    assert init.inline_when(inst, req(PAGE_SIZE, eh, NONE))
    assert init.inline_when(inst, req(mm.INLINE_MAX_BYTES, eh))
    assert not init.inline_when(inst, req(mm.INLINE_MAX_BYTES + 1))
    assert not init.inline_when(inst, req(PAGE_SIZE, eh, action(ctx, NATIVE)))
    assert not init.inline_when(inst, req(PAGE_SIZE, run_main))


def test_deinitialize_inline_only_when_its_dealloc_actions_cannot_block(
        ctx: ExecutorContext) -> None:
    deinit = spec(ctx, MM.deinitialize)
    inst = ctx.registry.addr_of[MM.instance]
    base = ctx.memmap.reserve(2 * PAGE_SIZE)
    eh = action(ctx, "llvm_orc_deregisterEHFrameAllocAction")
    for addr, dealloc in ((base, eh), (base + PAGE_SIZE, action(ctx, NATIVE))):
        segs = [SegFinalizeRequest(RW, addr, 8, b"")]
        ctx.memmap.initialize(segs, [AllocActionCallPair(NONE, dealloc)], lambda _c: None)
    assert deinit.inline_when is not None
    assert deinit.inline_when(inst, [base])
    assert deinit.inline_when(inst, [0x10])  # not a region: fails without running anything
    assert not deinit.inline_when(inst, [base + PAGE_SIZE])
    assert not deinit.inline_when(inst, [base, base + PAGE_SIZE])


def test_shared_memory_initialize_inline_whatever_its_size(ctx: ExecutorContext) -> None:
    init = spec(ctx, SHM.initialize)
    inst = ctx.registry.addr_of[SHM.instance]

    def req(*finalize: WrapperFunctionCall) -> SharedMemoryFinalizeRequest:
        return SharedMemoryFinalizeRequest(
            [SharedMemorySegFinalizeRequest(RW, 0x10000, 1 << 30)],
            [AllocActionCallPair(f, NONE) for f in finalize])

    assert init.inline_when is not None
    assert init.inline_when(inst, 0x10000, req(action(ctx, "llvm_orc_registerEHFrameAllocAction")))
    assert not init.inline_when(inst, 0x10000, req(action(ctx, NATIVE)))
    assert spec(ctx, SHM.deinitialize).inline_when is not None


@pytest.mark.parametrize("name", [MM.release, MM.deallocate,
                                  SimpleNativeMemoryMap.release_multiple])
def test_release_inline_only_when_small_and_its_dealloc_actions_cannot_block(
        ctx: ExecutorContext, name: str) -> None:
    release = spec(ctx, name)
    inst = ctx.registry.addr_of[MM.instance]
    small, other = ctx.memmap.reserve(2 * PAGE_SIZE), ctx.memmap.reserve(PAGE_SIZE)
    large = ctx.memmap.reserve(mm.INLINE_MAX_BYTES + PAGE_SIZE)
    exact = ctx.memmap.reserve(mm.INLINE_MAX_BYTES)
    eh = action(ctx, "llvm_orc_deregisterEHFrameAllocAction")
    for addr, dealloc in ((small, eh), (other, action(ctx, NATIVE))):
        segs = [SegFinalizeRequest(RW, addr, 8, b"")]
        ctx.memmap.initialize(segs, [AllocActionCallPair(NONE, dealloc)], lambda _c: None)
    assert release.inline_when is not None
    assert release.inline_when(inst, [small])
    assert release.inline_when(inst, [exact])
    assert release.inline_when(inst, [0x10])  # not a slab: fails without running anything
    assert not release.inline_when(inst, [other])  # a native dealloc action may block
    assert not release.inline_when(inst, [large])  # a large munmap
    assert not release.inline_when(inst, [small, exact])  # together over the bound


def test_shared_memory_release_inline_only_when_small(ctx: ExecutorContext) -> None:
    release = spec(ctx, SHM.release)
    inst = ctx.registry.addr_of[SHM.instance]
    service = shm.SharedMemoryMapperService(ctx)  # shares ctx.memmap with the registered one
    small, _ = service.reserve(inst, PAGE_SIZE)
    large, _ = service.reserve(inst, mm.INLINE_MAX_BYTES + PAGE_SIZE)
    try:
        assert release.inline_when is not None
        assert release.inline_when(inst, [small])
        assert not release.inline_when(inst, [large])
    finally:
        service.release(inst, [small, large])
