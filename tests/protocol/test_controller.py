"""The package controller's pipe fast paths (direct writes, reads before any wait, poll(2)
for Results while nothing else can run), against orc-executor and the stock LLVM 22
``llvm-jitlink-executor`` over pipes: frames stay whole when a write comes out partial,
other tasks and deadlines of the same trio run keep running while a call is outstanding,
and a closed controller refuses to send."""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
import trio

from orc_executor.controller import _nothing_else_runnable

from .harness import (
    BOOT,
    DYLIB_INSTANCE,
    DYLIB_OPEN,
    DYLIB_RESOLVE,
    MEM_WRITE_BUFFERS_SIG,
    OPEN_SIG,
    RESOLVE_SIG,
    RW,
    Executor,
    initialize,
    orc_executor_pipes,
    read_buffers,
    reference_executor,
    reserve,
    seg,
)

Launcher = Callable[[], AbstractAsyncContextManager[Executor]]
LAUNCHERS: dict[str, Launcher] = {
    "orc-executor": orc_executor_pipes,
    "llvm-22": reference_executor,
}
CHUNK = 60 << 10  # under the 64 KiB of the controller's direct-write path
WRITERS = 48  # 2.8 MiB: more than any pipe buffer (orc-executor asks for 1 MiB)


@pytest.mark.parametrize("which", LAUNCHERS)
async def test_writes_that_come_out_partial_still_send_whole_frames(which: str) -> None:
    """The executor is stopped (SIGSTOP) while 48 calls of 60 KiB are sent: the pipe fills,
    one direct write comes out partial and the rest of the frame and the later ones queue
    behind it; once the executor runs again every call is answered and every byte landed."""
    async with LAUNCHERS[which]() as ex:
        size = CHUNK * WRITERS
        base = await reserve(ex, size)
        assert await initialize(ex, seg(RW, base, size)) == base
        name = BOOT + "mem_write_buffers_wrapper"

        async def write(i: int) -> None:
            data = bytes([i + 1]) * CHUNK
            assert await ex.call(name, MEM_WRITE_BUFFERS_SIG, [(base + i * CHUNK, data)]) is None

        os.kill(ex.process.pid, signal.SIGSTOP)
        try:
            async with trio.open_nursery() as nursery:
                for i in range(WRITERS):
                    nursery.start_soon(write, i)
                await trio.sleep(0.2)  # every writer has written or is waiting to
                os.kill(ex.process.pid, signal.SIGCONT)
        finally:
            os.kill(ex.process.pid, signal.SIGCONT)
        got = await read_buffers(ex, *[(base + i * CHUNK, CHUNK) for i in range(WRITERS)])
        assert got == [bytes([i + 1]) * CHUNK for i in range(WRITERS)]
    assert ex.process.returncode == 0


@pytest.mark.parametrize("which", LAUNCHERS)
async def test_other_tasks_run_while_a_call_is_outstanding(which: str, testlib: Path) -> None:
    """A native wrapper function that sleeps 0.3 s: meanwhile a task ticking every 5 ms
    keeps ticking on time (the reader waits for the Result in poll(2) only while nothing
    else can run, at most 1 ms at a time)."""
    async with LAUNCHERS[which]() as ex:
        h = await ex.call(DYLIB_OPEN, OPEN_SIG, ex.sym(DYLIB_INSTANCE), str(testlib), 0)
        (slow,) = await ex.call(DYLIB_RESOLVE, RESOLVE_SIG, h, [("slow_action", True)])
        ticks: list[float] = []

        async def ticker() -> None:
            while True:
                await trio.sleep(0.005)
                ticks.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            await trio.sleep(0.01)
            assert await ex.ctl.call_raw(slow.address) == b"\x00"  # its empty Error
            nursery.cancel_scope.cancel()
        assert len(ticks) >= 30, ticks  # ~60 in 0.3 s; a stall of the loop gives ~2
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
        assert sorted(gaps)[len(gaps) // 2] < 0.02, gaps
    assert ex.process.returncode == 0


async def test_poll_only_while_nothing_else_can_run() -> None:
    assert _nothing_else_runnable()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.sleep, 0)
        assert not _nothing_else_runnable()  # that task is runnable
    with trio.move_on_after(0.001):
        assert not _nothing_else_runnable()  # a deadline is due within 2 ms
    with trio.move_on_after(0.5):
        assert _nothing_else_runnable()


async def test_send_after_close_is_refused() -> None:
    async with orc_executor_pipes() as ex:
        await ex.ctl.close()
        with pytest.raises(trio.ClosedResourceError):
            await ex.ctl.send(1, 0, 0, b"")
    assert ex.process.returncode == 0
