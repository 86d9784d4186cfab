"""Session-level behaviour of a real executor: Setup, clean and unclean ends, malformed frames,
unknown tags and bad argument bytes. The executor's stdout must stay empty throughout."""

from __future__ import annotations

import struct

import pytest
import trio

from orc_executor.controller import ControllerError
from orc_executor.protocol.framing import Opcode, encode_header
from orc_executor.protocol.orc_types import FinalizeRequest, SegFinalizeRequest
from orc_executor.protocol.sps import ErrorValue
from tests.support.harness import (
    INITIALIZE_SIG,
    MM_INITIALIZE,
    MM_INSTANCE,
    MM_RELEASE,
    MM_RESERVE,
    RELEASE_SIG,
    RESERVE_SIG,
    Executor,
    orc_executor,
    reserve,
)

#: The 34 names the stock LLVM 22 executor advertises (docs/protocol.md §5.3).
STOCK22_NAMES = {
    "__llvm_orc_SimpleRemoteEPC_dispatch_ctx",
    "__llvm_orc_SimpleRemoteEPC_dispatch_fn",
    "__llvm_orc_SimpleExecutorDylibManager_Instance",
    "__llvm_orc_SimpleExecutorDylibManager_open_wrapper",
    "__llvm_orc_SimpleExecutorDylibManager_resolve_wrapper",
    "__llvm_orc_SimpleExecutorMemoryManager_Instance",
    "__llvm_orc_SimpleExecutorMemoryManager_reserve_wrapper",
    "__llvm_orc_SimpleExecutorMemoryManager_initialize_wrapper",
    "__llvm_orc_SimpleExecutorMemoryManager_deinitialize_wrapper",
    "__llvm_orc_SimpleExecutorMemoryManager_release_wrapper",
    *(
        f"__llvm_orc_ExecutorSharedMemoryMapperService_{n}"
        for n in ("Instance", "Reserve", "Initialize", "Deinitialize", "Release")
    ),
    *(
        f"__llvm_orc_bootstrap_mem_write_{n}_wrapper"
        for n in ("uint8s", "uint16s", "uint32s", "uint64s", "buffers", "pointers")
    ),
    *(
        f"__llvm_orc_bootstrap_mem_read_{n}_wrapper"
        for n in ("uint8s", "uint16s", "uint32s", "uint64s", "pointers", "buffers", "strings")
    ),
    "__llvm_orc_bootstrap_run_as_main_wrapper",
    "__llvm_orc_bootstrap_run_as_void_function_wrapper",
    "__llvm_orc_bootstrap_run_as_int_function_wrapper",
    "llvm_orc_registerEHFrameAllocAction",
    "llvm_orc_deregisterEHFrameAllocAction",
    "llvm_orc_registerJITLoaderGDBAllocAction",
}


async def assert_alive(ex: Executor) -> None:
    """The session still answers calls."""
    assert await reserve(ex, 0) == 0


async def test_setup_advertises_stock_22_names() -> None:
    async with orc_executor() as ex:
        setup = await ex.ctl.wait_setup()
        assert not setup.layout14
        assert setup.triple == "x86_64-pc-linux-gnu"
        assert setup.page_size == 4096
        assert set(setup.symbols) >= STOCK22_NAMES
        assert len(STOCK22_NAMES) == 34
        addrs = [setup.symbols[n] for n in STOCK22_NAMES]
        assert all(addrs), "no symbol at address 0"
        # Distinct functions have distinct addresses.
        assert len(set(addrs)) == len(addrs)
    assert ex.process.returncode == 0
    assert ex.stdout == b""


async def test_eof_at_boundary_exits_zero_silently() -> None:
    async with orc_executor() as ex:
        base = await reserve(ex, 8192)
        assert base
    assert ex.process.returncode == 0
    assert ex.stdout == b""
    assert ex.stderr == ""


@pytest.mark.parametrize("cut", [1, 31, 32, 40])
async def test_eof_inside_a_message(cut: int) -> None:
    """The controller dies mid-message: "Unexpected end-of-file", non-zero exit."""
    async with orc_executor() as ex:
        inst = ex.sym(MM_INSTANCE)
        frame = encode_header(Opcode.CALL_WRAPPER, 0, ex.sym(MM_RESERVE), 16)
        frame += RESERVE_SIG.encode_args(inst, 4096)
        await ex.ctl.send_raw(frame[:cut])
        await ex.ctl.stream.send_eof()  # type: ignore[attr-defined]
        assert await ex.wait_exit() != 0
    assert "end-of-file" in ex.stderr
    assert ex.stdout == b""


async def test_unknown_opcode_exits_one() -> None:
    async with orc_executor() as ex:
        await ex.ctl.send(7, 0, 0, b"")
        assert await ex.wait_exit() == 1
    assert "opcode" in ex.stderr.lower()
    assert ex.stdout == b""


async def test_result_for_unknown_seq_is_fatal() -> None:
    async with orc_executor() as ex:
        await ex.ctl.send(Opcode.RESULT, 99, 0, b"\x00")
        assert await ex.wait_exit() != 0
    assert "No call for sequence number 99" in ex.stderr
    assert ex.stdout == b""


async def test_setup_from_controller_is_fatal() -> None:
    async with orc_executor() as ex:
        await ex.ctl.send(Opcode.SETUP, 0, 0, b"")
        assert await ex.wait_exit() != 0
    assert "Setup" in ex.stderr
    assert ex.stdout == b""


async def test_size_too_small_is_fatal() -> None:
    async with orc_executor() as ex:
        await ex.ctl.send_raw(struct.pack("<4Q", 8, Opcode.CALL_WRAPPER, 0, 0))
        assert await ex.wait_exit() != 0
    assert "too small" in ex.stderr
    assert ex.stdout == b""


@pytest.mark.parametrize("size", [4097, 1 << 40, (1 << 64) - 1])
async def test_oversized_message_is_fatal(size: int) -> None:
    async with orc_executor("--max-message-size", "4096") as ex:
        # Legal sizes up to the limit still work.
        inst = ex.sym(MM_INSTANCE)
        big = RESERVE_SIG.encode_args(inst, 0) + b"\x00" * (4096 - 32 - 16)
        raw = await ex.ctl.call_raw(ex.sym(MM_RESERVE), big)  # trailing bytes → failure
        assert isinstance(RESERVE_SIG.decode_result(raw), ErrorValue)
        await ex.ctl.send_raw(struct.pack("<4Q", size, Opcode.CALL_WRAPPER, 1, 0))
        assert await ex.wait_exit() != 0
    assert "exceeds the maximum of 4096" in ex.stderr
    assert ex.stdout == b""


async def test_hangup_ends_session_cleanly() -> None:
    async with orc_executor() as ex:
        await reserve(ex)
        await ex.ctl.send(Opcode.HANGUP, 0, 0, b"\x00")
        assert await ex.wait_exit() == 0
    assert ex.stdout == b""


async def test_hangup_with_error_reason_still_exits_zero() -> None:
    """Like the stock 22 executor: a Hangup ends the session with status 0
    (docs/protocol.md §3.3)."""
    async with orc_executor() as ex:
        payload = b"\x01" + struct.pack("<Q", 4) + b"oops"
        await ex.ctl.send(Opcode.HANGUP, 0, 0, payload)
        assert await ex.wait_exit() == 0
    assert ex.stdout == b""


async def test_unknown_tag_gets_empty_result_and_session_goes_on() -> None:
    async with orc_executor() as ex:
        for tag in (0, 0x10, 0xDEADBEEF000, (1 << 64) - 1):
            assert await ex.ctl.call_raw(tag, b"\x01\x02\x03") == b""
        await assert_alive(ex)
    assert ex.process.returncode == 0
    assert ex.stdout == b""


async def test_data_symbol_as_tag_gets_empty_result() -> None:
    """An Instance symbol is data, not a function: it must not be jumped to."""
    async with orc_executor() as ex:
        assert await ex.ctl.call_raw(ex.sym(MM_INSTANCE), b"") == b""
        await assert_alive(ex)
    assert ex.process.returncode == 0


@pytest.mark.parametrize("cut", [0, 1, 8, 15])
async def test_truncated_arguments(cut: int) -> None:
    """Truncated argument bytes: an Expected failure (or an empty out-of-band result, as the
    stock executors send); the session goes on."""
    async with orc_executor() as ex:
        args = RESERVE_SIG.encode_args(ex.sym(MM_INSTANCE), 4096)
        raw = await ex.ctl.call_raw(ex.sym(MM_RESERVE), args[:cut])
        assert raw == b"" or isinstance(RESERVE_SIG.decode_result(raw), ErrorValue)
        await assert_alive(ex)
    assert ex.process.returncode == 0
    assert ex.stdout == b""


async def test_trailing_argument_bytes_fail() -> None:
    async with orc_executor() as ex:
        inst = ex.sym(MM_INSTANCE)
        base = await reserve(ex)
        args = RELEASE_SIG.encode_args(inst, [base]) + b"\x00"
        raw = await ex.ctl.call_raw(ex.sym(MM_RELEASE), args)
        result = RELEASE_SIG.decode_result(raw)
        assert isinstance(result, ErrorValue)
        # Nothing was released: the well-formed call still succeeds.
        assert await ex.call(MM_RELEASE, RELEASE_SIG, inst, [base]) is None
    assert ex.process.returncode == 0


async def test_wrong_signature_for_void_wrapper_is_empty_and_harmless() -> None:
    async with orc_executor() as ex:
        name = "__llvm_orc_bootstrap_mem_write_uint8s_wrapper"
        # A count of 5 elements with only one present.
        raw = await ex.ctl.call_raw(ex.sym(name), struct.pack("<QQB", 5, 0x10, 1))
        assert raw == b""
        await assert_alive(ex)
    assert ex.process.returncode == 0
    assert ex.stdout == b""


async def test_huge_sequence_count_in_arguments() -> None:
    async with orc_executor() as ex:
        payload = struct.pack("<QQ", ex.sym(MM_INSTANCE), 1 << 60)
        raw = await ex.ctl.call_raw(ex.sym(MM_RELEASE), payload)
        assert isinstance(RELEASE_SIG.decode_result(raw), ErrorValue)
        await assert_alive(ex)
    assert ex.process.returncode == 0


async def test_pipelined_calls_are_matched_by_seq() -> None:
    async with orc_executor() as ex:
        inst = ex.sym(MM_INSTANCE)
        results: dict[int, int] = {}

        async def one(i: int) -> None:
            results[i] = await ex.call(MM_RESERVE, RESERVE_SIG, inst, 4096 * (i + 1))

        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(one, i)
        bases = list(results.values())
        assert len(set(bases)) == 40 and all(bases)
        assert await ex.call(MM_RELEASE, RELEASE_SIG, inst, bases) is None
    assert ex.process.returncode == 0


async def test_controller_call_after_executor_exit_raises() -> None:
    async with orc_executor() as ex:
        await ex.ctl.send(7, 0, 0, b"")
        await ex.wait_exit()
        with trio.fail_after(5):
            await ex.ctl.eof.wait()
        with pytest.raises((ControllerError, trio.BrokenResourceError, OSError)):
            await reserve(ex)


async def test_idle_close_after_final_release() -> None:
    """Socket sessions (LLVM 14-22 never close TCP): once everything is released and the
    controller stays silent, the executor closes the connection and exits 0."""
    async with orc_executor("--idle-close", "0.2") as ex:
        inst = ex.sym(MM_INSTANCE)
        base = await reserve(ex)
        seg = SegFinalizeRequest(3, base, 16, b"x")
        assert await ex.call(MM_INITIALIZE, INITIALIZE_SIG, inst, FinalizeRequest([seg], [])) == (
            base
        )
        # A region is still initialized: no close yet.
        await trio.sleep(0.5)
        assert not ex.ctl.eof.is_set()
        assert await ex.call(MM_RELEASE, RELEASE_SIG, inst, [base]) is None
        with trio.fail_after(5):
            await ex.ctl.eof.wait()
        assert await ex.wait_exit() == 0
    assert ex.stdout == b""
