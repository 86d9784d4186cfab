"""Running native code over the wire: run_as_main/void/int, native wrapper functions as
CallWrapper tags and alloc actions, EH-frame and GDB registration, and executor→controller
calls made by native code through ``__llvm_orc_SimpleRemoteEPC_dispatch_fn``."""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path

import pytest
import trio

from orc_executor.protocol.orc_types import (
    AllocActionCallPair,
    ExecutorAddrRange,
    FinalizeRequest,
    SegFinalizeRequest,
    WrapperFunctionCall,
)
from orc_executor.protocol.sps import Addr, ErrorValue, Int32, UInt64
from tests.support.harness import (
    BOOT,
    DYLIB_INSTANCE,
    DYLIB_OPEN,
    DYLIB_RESOLVE,
    EH_SIG,
    GDB_SIG,
    INITIALIZE_SIG,
    MEM_READ_BUFFERS_SIG,
    MEM_READ_STRINGS_SIG,
    MM_DEINITIALIZE,
    MM_INITIALIZE,
    MM_INSTANCE,
    MM_RELEASE,
    OPEN_SIG,
    RELEASE_SIG,
    RESOLVE_SIG,
    RUN_AS_INT,
    RUN_AS_INT_SIG,
    RUN_AS_MAIN,
    RUN_AS_MAIN_SIG,
    RUN_AS_VOID,
    RUN_AS_VOID_SIG,
    Executor,
    mem_read_sig,
    mem_write_sig,
    orc_executor,
    reserve,
)

PAGE = 4096
RW = 3
NULL_CALL = WrapperFunctionCall(0, b"")

LIB_SYMBOLS = [
    "record_main",
    "return_minus_one",
    "answer",
    "twice_plus_one",
    "argv_copy",
    "last_argc",
    "argv_null_terminated",
    "scratch",
    "action_log",
    "record_action",
    "failing_action",
    "oob_action",
    "empty_action",
    "slow_action",
    "echo_wrapper",
    "dispatch_main",
    "dispatch_fn_addr",
    "dispatch_ctx_addr",
    "dispatch_tag",
    "dispatch_result",
    "dispatch_result_size",
]


async def load_testlib(ex: Executor, testlib: Path) -> dict[str, int]:
    h = await ex.call(DYLIB_OPEN, OPEN_SIG, ex.sym(DYLIB_INSTANCE), str(testlib), 0)
    assert isinstance(h, int), h
    defs = await ex.call(DYLIB_RESOLVE, RESOLVE_SIG, h, [(n, True) for n in LIB_SYMBOLS])
    assert all(d is not None and d.address for d in defs)
    return {n: d.address for n, d in zip(LIB_SYMBOLS, defs, strict=True)}


async def read_i32(ex: Executor, addr: int) -> int:
    (v,) = await ex.call(BOOT + "mem_read_uint32s_wrapper", mem_read_sig(Int32), [addr])
    return int(v)


async def read_string(ex: Executor, addr: int) -> str:
    (s,) = await ex.call(BOOT + "mem_read_strings_wrapper", MEM_READ_STRINGS_SIG, [addr])
    return str(s)


def call(fn: int, tag: str) -> WrapperFunctionCall:
    return WrapperFunctionCall(fn, tag.encode())


# ---- run_as_* -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["a", "b"],
        [],
        ["", "with space", "ünïcödé", "\udcff\udcferaw", "-x=1"],
        [str(i) for i in range(16)],
    ],
    ids=["two", "empty", "odd", "sixteen"],
)
async def test_run_as_main_passes_argv_exactly(testlib: Path, args: list[str]) -> None:
    async with orc_executor() as ex:
        s = await load_testlib(ex, testlib)
        assert await ex.call(RUN_AS_MAIN, RUN_AS_MAIN_SIG, s["record_main"], args) == 100 + len(
            args
        )
        assert await read_i32(ex, s["last_argc"]) == len(args)
        assert await read_i32(ex, s["argv_null_terminated"]) == 1
        copies = await ex.call(
            BOOT + "mem_read_strings_wrapper",
            MEM_READ_STRINGS_SIG,
            [s["argv_copy"] + 256 * i for i in range(len(args))],
        )
        assert copies == args
    assert ex.process.returncode == 0
    assert ex.stdout == b""


async def test_run_as_main_result_is_sign_extended(testlib: Path) -> None:
    async with orc_executor() as ex:
        s = await load_testlib(ex, testlib)
        payload = RUN_AS_MAIN_SIG.encode_args(s["return_minus_one"], [])
        assert await ex.ctl.call_raw(ex.sym(RUN_AS_MAIN), payload) == b"\xff" * 8


async def test_run_as_void_and_int(testlib: Path) -> None:
    async with orc_executor() as ex:
        s = await load_testlib(ex, testlib)
        assert await ex.call(RUN_AS_VOID, RUN_AS_VOID_SIG, s["answer"]) == 42
        for x in (0, 7, -5, 0x7FFFFFFF, -(1 << 31)):
            expected = ((x * 2 + 1) + (1 << 31)) % (1 << 32) - (1 << 31)
            assert await ex.call(RUN_AS_INT, RUN_AS_INT_SIG, s["twice_plus_one"], x) == expected


async def test_run_jitted_code() -> None:
    async with orc_executor() as ex:
        base = await reserve(ex, 2 * PAGE)
        # int main(int argc, char **argv) { return argc * 3; }  → lea eax,[rdi+rdi*2]; ret
        main = b"\x8d\x04\x7f\xc3"
        # int32 f(int32 x) { return x - 1; } → lea eax,[rdi-1]; ret
        dec = b"\x8d\x47\xff\xc3"
        req = FinalizeRequest(
            [SegFinalizeRequest(5, base, 8, main), SegFinalizeRequest(5, base + PAGE, 4, dec)], []
        )
        assert await ex.call(MM_INITIALIZE, INITIALIZE_SIG, ex.sym(MM_INSTANCE), req) == base
        assert await ex.call(RUN_AS_MAIN, RUN_AS_MAIN_SIG, base, ["x", "y"]) == 6
        assert await ex.call(RUN_AS_INT, RUN_AS_INT_SIG, base + PAGE, -41) == -42


@pytest.mark.parametrize(
    "target", ["low", "lib_data", "instance", "rw_jit", "reserved", "released"]
)
async def test_run_at_non_code_address_fails_without_crash(testlib: Path, target: str) -> None:
    async with orc_executor() as ex:
        s = await load_testlib(ex, testlib)
        base = await reserve(ex, 2 * PAGE)
        req = FinalizeRequest([SegFinalizeRequest(RW, base, PAGE, b"\xc3")], [])
        assert await ex.call(MM_INITIALIZE, INITIALIZE_SIG, ex.sym(MM_INSTANCE), req) == base
        gone = await reserve(ex)
        assert await ex.call(MM_RELEASE, RELEASE_SIG, ex.sym(MM_INSTANCE), [gone]) is None
        addr = {
            "low": 0x10,
            "lib_data": s["scratch"],
            "instance": ex.sym(MM_INSTANCE),
            "rw_jit": base,
            "reserved": base + PAGE,
            "released": gone,
        }[target]
        for name, payload in [
            (RUN_AS_MAIN, RUN_AS_MAIN_SIG.encode_args(addr, ["a"])),
            (RUN_AS_VOID, RUN_AS_VOID_SIG.encode_args(addr)),
            (RUN_AS_INT, RUN_AS_INT_SIG.encode_args(addr, 1)),
        ]:
            assert await ex.ctl.call_raw(ex.sym(name), payload) == b""
        # Also as a CallWrapper tag and as an alloc action.
        assert await ex.ctl.call_raw(addr, b"") == b""
        base2 = await reserve(ex)
        pair = AllocActionCallPair(WrapperFunctionCall(addr, b""), NULL_CALL)
        req = FinalizeRequest([SegFinalizeRequest(RW, base2, 8, b"")], [pair])
        result = await ex.call(MM_INITIALIZE, INITIALIZE_SIG, ex.sym(MM_INSTANCE), req)
        assert isinstance(result, ErrorValue)
        assert await ex.call(RUN_AS_VOID, RUN_AS_VOID_SIG, s["answer"]) == 42
    assert ex.process.returncode == 0
    assert ex.stdout == b""


# ---- native wrapper functions ------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 8, 9, 1000, 100_000])
async def test_native_wrapper_as_call_tag(testlib: Path, size: int) -> None:
    async with orc_executor() as ex:
        s = await load_testlib(ex, testlib)
        payload = bytes(i % 251 for i in range(size))
        assert await ex.ctl.call_raw(s["echo_wrapper"], payload) == payload


async def test_native_alloc_actions_order(testlib: Path) -> None:
    async with orc_executor() as ex:
        s = await load_testlib(ex, testlib)
        rec = s["record_action"]
        inst = ex.sym(MM_INSTANCE)
        base = await reserve(ex, 2 * PAGE)
        actions = [
            AllocActionCallPair(call(rec, "A"), call(rec, "a")),
            AllocActionCallPair(call(rec, "B"), NULL_CALL),
            AllocActionCallPair(NULL_CALL, call(rec, "c")),
            AllocActionCallPair(call(rec, "D"), call(rec, "d")),
        ]
        req = FinalizeRequest([SegFinalizeRequest(RW, base, 8, b"")], actions)
        assert await ex.call(MM_INITIALIZE, INITIALIZE_SIG, inst, req) == base
        assert await read_string(ex, s["action_log"]) == "A;B;D;"
        req2 = FinalizeRequest(
            [SegFinalizeRequest(RW, base + PAGE, 8, b"")],
            [AllocActionCallPair(call(rec, "E"), call(rec, "e"))],
        )
        assert await ex.call(MM_INITIALIZE, INITIALIZE_SIG, inst, req2) == base + PAGE
        assert await ex.call(MM_DEINITIALIZE, RELEASE_SIG, inst, [base + PAGE]) is None
        assert await read_string(ex, s["action_log"]) == "A;B;D;E;e;"
        # Release runs what is left, in reverse.
        assert await ex.call(MM_RELEASE, RELEASE_SIG, inst, [base]) is None
        assert await read_string(ex, s["action_log"]) == "A;B;D;E;e;d;c;a;"


async def test_native_alloc_actions_run_off_the_event_loop(testlib: Path) -> None:
    """An initialize or deinitialize whose alloc actions are native code runs on a worker
    thread (those whose actions are all the executor's own non-blocking wrappers are answered
    on the event loop): while a slow native action runs, other calls are answered."""
    async with orc_executor() as ex:
        s = await load_testlib(ex, testlib)
        slow, inst = s["slow_action"], ex.sym(MM_INSTANCE)
        base = await reserve(ex, PAGE)
        req = FinalizeRequest([SegFinalizeRequest(RW, base, 8, b"")],
                              [AllocActionCallPair(call(slow, ""), call(slow, ""))])

        async def answers(slow_call: Awaitable[object]) -> list[object]:
            """``slow_call``'s result and a quick read sent 50 ms after it, as answered."""
            answered: list[object] = []

            async def quick() -> None:
                await trio.sleep(0.05)
                answered.append(("quick", await read_i32(ex, s["last_argc"])))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(quick)
                answered.append(await slow_call)
            return answered

        assert await answers(ex.call(MM_INITIALIZE, INITIALIZE_SIG, inst, req)) == [
            ("quick", -1), base]
        assert await answers(ex.call(MM_DEINITIALIZE, RELEASE_SIG, inst, [base])) == [
            ("quick", -1), None]


async def test_failing_native_finalize_action_unwinds(testlib: Path) -> None:
    async with orc_executor() as ex:
        s = await load_testlib(ex, testlib)
        rec, fail = s["record_action"], s["failing_action"]
        inst = ex.sym(MM_INSTANCE)
        base = await reserve(ex)
        actions = [
            AllocActionCallPair(call(rec, "A"), call(rec, "a")),
            AllocActionCallPair(call(rec, "B"), call(rec, "b")),
            AllocActionCallPair(call(fail, "X"), call(rec, "x")),
            AllocActionCallPair(call(rec, "C"), call(rec, "c")),
        ]
        req = FinalizeRequest([SegFinalizeRequest(RW, base, 8, b"")], actions)
        result = await ex.call(MM_INITIALIZE, INITIALIZE_SIG, inst, req)
        assert result == ErrorValue("failing_action says no")
        assert await read_string(ex, s["action_log"]) == "A;B;b;a;"
        # No region was left behind: the range initializes again, release runs nothing old.
        ok = FinalizeRequest([SegFinalizeRequest(RW, base, 8, b"")], [])
        assert await ex.call(MM_INITIALIZE, INITIALIZE_SIG, inst, ok) == base
        assert await ex.call(MM_RELEASE, RELEASE_SIG, inst, [base]) is None
        assert await read_string(ex, s["action_log"]) == "A;B;b;a;"


@pytest.mark.parametrize(
    ("fn", "match"), [("oob_action", "oob_action failed"), ("empty_action", "")]
)
async def test_native_action_without_error_result_fails(testlib: Path, fn: str, match: str) -> None:
    async with orc_executor() as ex:
        s = await load_testlib(ex, testlib)
        base = await reserve(ex)
        pair = AllocActionCallPair(call(s[fn], "x"), NULL_CALL)
        req = FinalizeRequest([SegFinalizeRequest(RW, base, 8, b"")], [pair])
        result = await ex.call(MM_INITIALIZE, INITIALIZE_SIG, ex.sym(MM_INSTANCE), req)
        assert isinstance(result, ErrorValue)
        assert match in result.message


# ---- EH frames and GDB ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("register", "deregister"),
    [
        ("llvm_orc_registerEHFrameSectionWrapper", "llvm_orc_deregisterEHFrameSectionWrapper"),
        ("llvm_orc_registerEHFrameAllocAction", "llvm_orc_deregisterEHFrameAllocAction"),
    ],
)
async def test_eh_frame_wrappers(register: str, deregister: str) -> None:
    async with orc_executor() as ex:
        base = await reserve(ex, 2 * PAGE)
        # An empty .eh_frame (just the zero terminator) in initialized memory.
        req = FinalizeRequest([SegFinalizeRequest(1, base, 16, b"")], [])
        assert await ex.call(MM_INITIALIZE, INITIALIZE_SIG, ex.sym(MM_INSTANCE), req) == base
        good = ExecutorAddrRange(base, base + 4)
        assert await ex.call(register, EH_SIG, good) is None
        assert await ex.call(deregister, EH_SIG, good) is None
        for bad in [
            ExecutorAddrRange(0x10, 0x20),
            ExecutorAddrRange(base + 4, base),
            ExecutorAddrRange(base, base),
            ExecutorAddrRange(base + PAGE, base + 3 * PAGE),  # runs off the slab
        ]:
            assert isinstance(await ex.call(register, EH_SIG, bad), ErrorValue), bad
            assert isinstance(await ex.call(deregister, EH_SIG, bad), ErrorValue), bad
    assert ex.process.returncode == 0
    assert ex.stdout == b""


async def test_eh_frame_alloc_actions_run_at_initialize_and_release() -> None:
    async with orc_executor() as ex:
        inst = ex.sym(MM_INSTANCE)
        base = await reserve(ex)
        rng = EH_SIG.encode_args(ExecutorAddrRange(base, base + 4))
        pair = AllocActionCallPair(
            WrapperFunctionCall(ex.sym("llvm_orc_registerEHFrameAllocAction"), rng),
            WrapperFunctionCall(ex.sym("llvm_orc_deregisterEHFrameAllocAction"), rng),
        )
        req = FinalizeRequest([SegFinalizeRequest(1, base, 16, b"")], [pair])
        assert await ex.call(MM_INITIALIZE, INITIALIZE_SIG, inst, req) == base
        assert await ex.call(MM_RELEASE, RELEASE_SIG, inst, [base]) is None
        # An alloc action with a bad range fails the initialize with its message.
        base2 = await reserve(ex)
        bad = EH_SIG.encode_args(ExecutorAddrRange(0x10, 0x20))
        pair = AllocActionCallPair(
            WrapperFunctionCall(ex.sym("llvm_orc_registerEHFrameAllocAction"), bad), NULL_CALL
        )
        req = FinalizeRequest([SegFinalizeRequest(1, base2, 16, b"")], [pair])
        result = await ex.call(MM_INITIALIZE, INITIALIZE_SIG, inst, req)
        assert isinstance(result, ErrorValue) and "eh-frame" in result.message


@pytest.mark.parametrize(
    "name", ["llvm_orc_registerJITLoaderGDBAllocAction", "llvm_orc_registerJITLoaderGDBWrapper"]
)
async def test_gdb_registration(name: str) -> None:
    async with orc_executor() as ex:
        inst = ex.sym(MM_INSTANCE)
        base = await reserve(ex)
        req = FinalizeRequest([SegFinalizeRequest(1, base, 64, b"\x7fELF")], [])
        assert await ex.call(MM_INITIALIZE, INITIALIZE_SIG, inst, req) == base
        for auto in (True, False):
            assert await ex.call(name, GDB_SIG, ExecutorAddrRange(base, base + 64), auto) is None
        result = await ex.call(name, GDB_SIG, ExecutorAddrRange(0x10, 0x50), True)
        assert isinstance(result, ErrorValue)
        # As an alloc action with a null dealloc half (how llvm-jitlink 22 sends it).
        base2 = await reserve(ex)
        args = GDB_SIG.encode_args(ExecutorAddrRange(base2, base2 + 64), True)
        pair = AllocActionCallPair(WrapperFunctionCall(ex.sym(name), args), NULL_CALL)
        req = FinalizeRequest([SegFinalizeRequest(1, base2, 64, b"\x7fELF")], [pair])
        assert await ex.call(MM_INITIALIZE, INITIALIZE_SIG, inst, req) == base2
        assert await ex.call(MM_RELEASE, RELEASE_SIG, inst, [base, base2]) is None
    assert ex.process.returncode == 0


# ---- executor -> controller calls ----------------------------------------------------------------


async def _set_dispatch(ex: Executor, s: dict[str, int], tag: int) -> None:
    items = [
        (s["dispatch_fn_addr"], ex.sym("__llvm_orc_SimpleRemoteEPC_dispatch_fn")),
        (s["dispatch_ctx_addr"], ex.sym("__llvm_orc_SimpleRemoteEPC_dispatch_ctx")),
        (s["dispatch_tag"], tag),
    ]
    name = BOOT + "mem_write_uint64s_wrapper"
    assert await ex.call(name, mem_write_sig(UInt64), items) is None


async def _dispatch_result(ex: Executor, s: dict[str, int], n: int) -> bytes:
    rng = ExecutorAddrRange(s["dispatch_result"], s["dispatch_result"] + n)
    (data,) = await ex.call(BOOT + "mem_read_buffers_wrapper", MEM_READ_BUFFERS_SIG, [rng])
    return bytes(data)


@pytest.mark.parametrize("answer", [b"", b"tiny", b"exactly8", b"a longer result than eight"])
async def test_native_code_calls_the_controller(testlib: Path, answer: bytes) -> None:
    async with orc_executor() as ex:
        s = await load_testlib(ex, testlib)
        tag = 0x7A6
        seen: list[tuple[int, bytes]] = []

        async def handler(t: int, data: bytes) -> bytes:
            seen.append((t, data))
            return answer

        ex.ctl.handlers[tag] = handler
        await _set_dispatch(ex, s, tag)
        n = await ex.call(RUN_AS_MAIN, RUN_AS_MAIN_SIG, s["dispatch_main"], ["ping"])
        assert n == len(answer)
        assert seen == [(tag, b"ping")]
        assert await _dispatch_result(ex, s, len(answer)) == answer


async def test_controller_serves_calls_while_native_code_waits(testlib: Path) -> None:
    """The lazy-JIT pattern (docs/protocol.md §9.2): while an executor thread blocks in an E→C call,
    the controller issues C→E calls that must be answered before it replies."""
    async with orc_executor() as ex:
        s = await load_testlib(ex, testlib)
        tag = 0x1A2

        async def handler(t: int, data: bytes) -> bytes:
            base = await reserve(ex)
            req = FinalizeRequest([SegFinalizeRequest(RW, base, 8, data)], [])
            assert await ex.call(MM_INITIALIZE, INITIALIZE_SIG, ex.sym(MM_INSTANCE), req) == base
            name = BOOT + "mem_write_pointers_wrapper"
            assert await ex.call(name, mem_write_sig(Addr), [(base, base)]) is None
            return base.to_bytes(8, "little")

        ex.ctl.handlers[tag] = handler
        await _set_dispatch(ex, s, tag)
        with trio.fail_after(10):
            n = await ex.call(RUN_AS_MAIN, RUN_AS_MAIN_SIG, s["dispatch_main"], ["lazy"])
        assert n == 8
        base = int.from_bytes(await _dispatch_result(ex, s, 8), "little")
        (ptr,) = await ex.call(BOOT + "mem_read_pointers_wrapper", mem_read_sig(Addr), [base])
        assert ptr == base


async def test_concurrent_native_calls_into_the_controller(testlib: Path) -> None:
    """Several executor threads block in E→C calls at once; answers in reverse order."""
    async with orc_executor() as ex:
        s = await load_testlib(ex, testlib)
        tag = 0x5EE
        arrived = trio.Semaphore(0)
        release = trio.Event()

        async def handler(t: int, data: bytes) -> bytes:
            arrived.release()
            await release.wait()
            return data

        ex.ctl.handlers[tag] = handler
        await _set_dispatch(ex, s, tag)
        results: list[int] = []

        async def run(arg: str) -> None:
            results.append(await ex.call(RUN_AS_MAIN, RUN_AS_MAIN_SIG, s["answer"], [arg]))

        async def dispatching(arg: str) -> None:
            n = await ex.call(RUN_AS_MAIN, RUN_AS_MAIN_SIG, s["dispatch_main"], [arg])
            results.append(n)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(dispatching, "one")
                await arrived.acquire()
                # Another call is served while the first thread blocks.
                await run("x")
                nursery.start_soon(dispatching, "second")
                await arrived.acquire()
                release.set()
        assert sorted(results) == [3, 6, 42]
