"""Issue 20: bad or hostile input from a controller is refused with an error result, within a
bounded allocation and time, without a traceback — against a real ``orc-executor`` process."""

from __future__ import annotations

import logging
import resource
import struct
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from orc_executor.executor.registry import WrapperSpec
from orc_executor.protocol.framing import Opcode, encode_header
from orc_executor.protocol.orc_types import ExecutorAddrRange, FinalizeRequest, SegFinalizeRequest
from orc_executor.protocol.sps import Addr, Error, ErrorValue, signature
from tests.support.harness import (
    BOOT,
    EH_SIG,
    GDB_SIG,
    INITIALIZE_SIG,
    MEM_READ_BUFFERS_SIG,
    MEM_WRITE_BUFFERS_SIG,
    MM_INITIALIZE,
    MM_INSTANCE,
    MM_RESERVE,
    PAGE,
    RESERVE_SIG,
    RW,
    Executor,
    R,
    orc_executor,
    read_buffers,
    reserve,
)

GDB14_DEREGISTER = "orc_rt_ci_aa_sps_GDBJITRegistrar_deregister"


@pytest.mark.parametrize("deregister", [
    "llvm_orc_deregisterEHFrameSectionWrapper",
    "llvm_orc_deregisterEHFrameAllocAction",
    "orc_rt_ci_aa_sps_DWARFEHFrameRegistrar_deregisterSection",
])
async def test_deregistering_an_eh_frame_never_registered_is_an_error(deregister: str) -> None:
    """libgcc's ``__deregister_frame`` aborts the process for a section it does not know; the
    executor knows what its session registered and refuses the rest (also a second
    deregistration of the same section)."""
    register = deregister.replace("deregister", "register")
    async with orc_executor() as ex:
        base = await reserve(ex, PAGE)
        req = FinalizeRequest([SegFinalizeRequest(R, base, 64, b"")], [])
        assert await ex.call(MM_INITIALIZE, INITIALIZE_SIG, ex.sym(MM_INSTANCE), req) == base
        rng = ExecutorAddrRange(base, base + 4)  # an empty .eh_frame: the zero terminator
        result = await ex.call(deregister, EH_SIG, rng)
        assert isinstance(result, ErrorValue) and "not registered" in result.message
        assert await ex.call(register, EH_SIG, rng) is None
        assert await ex.call(deregister, EH_SIG, rng) is None
        again = await ex.call(deregister, EH_SIG, rng)
        assert isinstance(again, ErrorValue) and "not registered" in again.message
        # Registered twice, deregistered twice.
        assert await ex.call(register, EH_SIG, rng) is None
        assert await ex.call(register, EH_SIG, rng) is None
        assert await ex.call(deregister, EH_SIG, rng) is None
        assert await ex.call(deregister, EH_SIG, rng) is None
    assert ex.process.returncode == 0, ex.stderr
    assert "Traceback" not in ex.stderr


async def test_gdb_deregistration_of_an_unknown_object_is_an_error() -> None:
    async with orc_executor() as ex:
        base = await reserve(ex, PAGE)
        req = FinalizeRequest([SegFinalizeRequest(R, base, 64, b"")], [])
        assert await ex.call(MM_INITIALIZE, INITIALIZE_SIG, ex.sym(MM_INSTANCE), req) == base
        rng = ExecutorAddrRange(base, base + 64)
        from orc_executor.protocol.names import GDB14 as GDB_SIG14

        result = await ex.call(GDB14_DEREGISTER, GDB_SIG14, rng)
        assert isinstance(result, ErrorValue) and "no debug object" in result.message
        assert await ex.call("orc_rt_ci_aa_sps_GDBJITRegistrar_register", GDB_SIG, rng,
                             False) is None
        assert await ex.call(GDB14_DEREGISTER, GDB_SIG14, rng) is None
        assert isinstance(await ex.call(GDB14_DEREGISTER, GDB_SIG14, rng), ErrorValue)
    assert ex.process.returncode == 0, ex.stderr


@pytest.mark.parametrize("length", [1 << 63, (1 << 64) - 0x2000, 1 << 62])
async def test_huge_read_range_is_an_error_without_traceback(length: int) -> None:
    async with orc_executor() as ex:
        base = await reserve(ex, PAGE)
        start = 0x1000
        rs = [ExecutorAddrRange(start, start + length)]
        with pytest.raises(Exception, match="deserializing return value"):
            await ex.call(BOOT + "mem_read_buffers_wrapper", MEM_READ_BUFFERS_SIG, rs)
        assert await reserve(ex, PAGE) != base  # still serving
    assert ex.process.returncode == 0, ex.stderr
    assert "Traceback" not in ex.stderr, ex.stderr


@pytest.mark.parametrize(("level", "traceback"), [(logging.WARNING, False), (logging.DEBUG, True)])
def test_internal_error_in_a_wrapper_is_one_log_line(
    caplog: pytest.LogCaptureFixture, level: int, traceback: bool
) -> None:
    """A handler's unexpected exception becomes an error result and one log record, with
    the traceback only at debug level (``-vv``)."""
    def broken(_inst: int) -> None:
        raise RuntimeError("boom")

    spec = WrapperSpec("broken_wrapper", signature(Error, Addr), broken)
    logger = logging.getLogger("orc_executor")
    old = logger.level
    logger.setLevel(level)
    try:
        with caplog.at_level(level, logger="orc_executor"):
            result = spec.invoke(signature(Error, Addr).encode_args(0))
    finally:
        logger.setLevel(old)
    value = signature(Error, Addr).decode_result(result)
    assert isinstance(value, ErrorValue) and "RuntimeError: boom" in value.message
    records = [r for r in caplog.records if "broken_wrapper" in r.getMessage()]
    assert len(records) == 1
    assert "RuntimeError: boom" in records[0].getMessage()
    assert bool(records[0].exc_info) == traceback


# ---- memory: bounded by what was received --------------------------------------------------

MIB = 1 << 20


def vm_rss(pid: int) -> int:
    """Resident bytes of process ``pid`` (``VmRSS`` in ``/proc/PID/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def settled_rss(pid: int, seconds: float = 0.6) -> int:
    """The largest RSS seen over ``seconds`` (the executor had time to act on its input)."""
    peak = 0
    for _ in range(int(seconds / 0.05)):
        peak = max(peak, vm_rss(pid))
        await trio.sleep(0.05)
    return peak


def _gigabyte_initialize_head(ex: Executor, addr: int) -> bytes:
    """The first 73 bytes of a 1 GiB initialize: message header, instance, one segment at
    ``addr`` whose content announces nearly 1 GiB — and then nothing."""
    n = (1 << 30) - 32 - 16 - 25 - 8 - 64
    size = 32 + 16 + 25 + n + 8
    head = encode_header(Opcode.CALL_WRAPPER, 1, ex.sym(MM_INITIALIZE), size - 32)
    return head + struct.pack("<QQBQQQ", ex.sym(MM_INSTANCE), 1, RW, addr, n, n)


@pytest.mark.parametrize("where", ["outside every slab", "inside a slab, too long"])
async def test_a_73_byte_header_commits_no_gigabyte(where: str) -> None:
    """The header of a 1 GiB initialize with a segment that cannot be placed in a slab: the
    content buffer grows with the content instead of being allocated (and zero-filled) from
    the length field before any of it arrives. Then 8 MiB of it arrive: RSS follows."""
    async with orc_executor() as ex:
        base = await reserve(ex, PAGE)
        addr = 0x10000 if where == "outside every slab" else base
        pid = ex.process.pid
        before = await settled_rss(pid, 0.2)
        await ex.ctl.send_raw(_gigabyte_initialize_head(ex, addr))
        grown = await settled_rss(pid) - before
        assert grown < 16 * MIB, f"RSS grew by {grown / MIB:.0f} MiB for a 73-byte frame"
        await ex.ctl.send_raw(bytes(8 * MIB))
        grown = await settled_rss(pid) - before
        assert grown < 40 * MIB, f"RSS grew by {grown / MIB:.0f} MiB for 8 MiB of content"
        await ex.ctl.close()
        assert await ex.wait_exit() == 1  # EOF inside a message
    assert "Unexpected end-of-file inside a message" in ex.stderr
    assert "Traceback" not in ex.stderr


async def test_a_gigabyte_payload_header_commits_nothing() -> None:
    """A header announcing a 1 GiB ``mem_write_buffers`` payload (not streamed): its buffer is
    backed only as the content arrives, and not charged to the commit limit ahead."""
    async with orc_executor() as ex:
        pid = ex.process.pid
        before = await settled_rss(pid, 0.2)
        tag = ex.sym(BOOT + "mem_write_buffers_wrapper")
        await ex.ctl.send_raw(encode_header(Opcode.CALL_WRAPPER, 1, tag, (1 << 30) - 64))
        grown = await settled_rss(pid) - before
        assert grown < 16 * MIB, f"RSS grew by {grown / MIB:.0f} MiB for a 32-byte frame"
        await ex.ctl.close()
        assert await ex.wait_exit() == 1
    assert "Traceback" not in ex.stderr


def _read_call(s: Any, size: int) -> tuple[int, bytes]:
    """In the :class:`~tests.session.test_fuzz.LiveSession` ``s``: an initialized region of
    ``size`` bytes; the tag and arguments of a ``mem_read_buffers`` of all of it."""
    inst = s.symbols[MM_INSTANCE]
    base = RESERVE_SIG.ret.decode(s.call(s.symbols[MM_RESERVE],
                                         RESERVE_SIG.encode_args(inst, size)).payload)
    req = FinalizeRequest([SegFinalizeRequest(RW, base, size, b"x" * size)], [])
    key = INITIALIZE_SIG.ret.decode(s.call(s.symbols[MM_INITIALIZE],
                                           INITIALIZE_SIG.encode_args(inst, req)).payload)
    assert key == base
    args = MEM_READ_BUFFERS_SIG.encode_args([ExecutorAddrRange(base, base + size)])
    return s.symbols[BOOT + "mem_read_buffers_wrapper"], args


def test_a_controller_that_stops_reading_is_blocked_not_buffered() -> None:
    """2000 pipelined 256 KiB ``mem_read_buffers`` calls from a controller that reads none
    of the Results (their 112 KB fit in the socket's buffer): the session stops taking calls
    once a bounded amount waits for the controller, so its RSS stays bounded; then the controller
    reads, and every Result arrives, in order."""
    from tests.session.test_fuzz import LiveSession

    n, size = 2000, 256 << 10
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        s = LiveSession(out, err)
        try:
            tag, args = _read_call(s, size)
            frames = b"".join(encode_header(Opcode.CALL_WRAPPER, 100 + i, tag, len(args)) + args
                              for i in range(n))
            before = vm_rss(s.process.pid)
            s.sock.settimeout(None)
            sender = threading.Thread(target=s.sock.sendall, args=(frames,))
            sender.start()
            time.sleep(2.0)
            peak = max(vm_rss(s.process.pid) for _ in range(10) if time.sleep(0.05) is None)
            assert peak - before < 96 * MIB, f"RSS grew by {(peak - before) / MIB:.0f} MiB"
            s.sock.settimeout(30)
            for i in range(n):
                msg = s.next_message()
                assert (msg.opcode, msg.seq) == (Opcode.RESULT, 100 + i)
                assert len(msg.payload) == 16 + size
            sender.join(30)
            s.sock.close()
            assert s.process.wait(timeout=30) == 0
            err.seek(0)
            assert b"Traceback" not in err.read()
        finally:
            if s.process.poll() is None:
                s.process.kill()
                s.process.wait()


def vm_field(pid: int, name: str) -> int:
    """A ``/proc/PID/status`` size field in bytes (``VmHWM``, ``VmSize``...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {name}")


async def _region(ex: Executor, size: int) -> int:
    base = await reserve(ex, size)
    req = FinalizeRequest([SegFinalizeRequest(RW, base, size, b"")], [])
    assert await ex.call(MM_INITIALIZE, INITIALIZE_SIG, ex.sym(MM_INSTANCE), req) == base
    await ex.call(BOOT + "mem_write_buffers_wrapper", MEM_WRITE_BUFFERS_SIG,
                  [(base, b"head"), (base + size - 4, b"tail")])
    return base


async def test_a_large_read_runs_off_the_event_loop_and_is_copied_once() -> None:
    """A 128 MiB ``mem_read_buffers`` runs on a worker thread: a ``reserve`` sent right
    after it is answered without waiting for it. The memory is read straight into the
    Result's frame: the executor's peak RSS grows by about the read's size, not a multiple."""
    size = 128 * MIB
    async with orc_executor() as ex:
        base = await _region(ex, size)
        pid = ex.process.pid
        hwm = vm_field(pid, "VmHWM")
        took: dict[str, float] = {}

        async def big_read() -> None:
            t0 = trio.current_time()
            (data,) = await read_buffers(ex, (base, size))
            took["read"] = trio.current_time() - t0
            assert len(data) == size and data[:4] == b"head" and data[-4:] == b"tail"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(big_read)
            await trio.sleep(0.02)  # the read is sent first
            t0 = trio.current_time()
            await reserve(ex, PAGE)
            took["reserve"] = trio.current_time() - t0
        # Inline, the reserve waited for the whole read and its Result (its latency was the
        # read's); off the event loop it is answered at once.
        assert took["reserve"] < took["read"] / 3, took
        grown = vm_field(pid, "VmHWM") - hwm
        assert grown < size + 48 * MIB, f"peak RSS grew by {grown / MIB:.0f} MiB"
    assert ex.process.returncode == 0, ex.stderr


async def test_a_large_read_needs_one_copy_of_address_space_and_failing_is_an_error() -> None:
    """Under ``RLIMIT_AS`` of the current address space plus 1.7x a 128 MiB read, the read
    succeeds (one buffer); a read that cannot get its buffer is an error result, and the
    session goes on."""
    size = 128 * MIB
    async with orc_executor() as ex:
        base = await _region(ex, size)
        pid = ex.process.pid
        (small,) = await read_buffers(ex, (base, 8))  # the worker threads exist
        assert small[:4] == b"head"
        limit = vm_field(pid, "VmSize") + int(1.7 * size)
        resource.prlimit(pid, resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
        (data,) = await read_buffers(ex, (base, size))
        assert len(data) == size and data[-4:] == b"tail"
        with pytest.raises(Exception, match="deserializing return value"):
            await read_buffers(ex, (base, size), (base, size))  # 256 MiB: no room
        assert await reserve(ex, PAGE)  # still serving
    assert ex.process.returncode == 0, ex.stderr
    assert "Traceback" not in ex.stderr


def test_a_controller_that_stops_reading_and_goes_away_ends_the_session() -> None:
    """The Results pile up (the session waits for room), then the controller closes: the
    session ends at once instead of spinning on Results it can no longer send."""
    from tests.session.test_fuzz import LiveSession

    size = 256 << 10
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        s = LiveSession(out, err)
        try:
            tag, args = _read_call(s, size)
            s.sock.sendall(b"".join(encode_header(Opcode.CALL_WRAPPER, 100 + i, tag, len(args))
                                    + args for i in range(300)))
            time.sleep(1.0)  # backed up
            s.sock.close()
            # Never SIGPIPE, though the session process keeps the program's SIGPIPE
            # disposition (SIG_DFL, as llvm-jitlink-executor): on a socket every write is a
            # send(MSG_NOSIGNAL), so the write to the vanished controller fails with EPIPE.
            assert s.process.wait(timeout=10) in (0, 1)
            err.seek(0)
            assert b"Traceback" not in err.read()
        finally:
            if s.process.poll() is None:
                s.process.kill()
                s.process.wait()


async def test_a_read_beyond_the_message_limit_is_refused_before_its_buffer() -> None:
    """A ``mem_read_buffers`` of more than 1 GiB in all (here from a slab on into whatever
    follows) is an error result at once: its buffer is never made, so RSS does not grow."""
    async with orc_executor() as ex:
        base = await _region(ex, PAGE)
        pid = ex.process.pid
        hwm = vm_field(pid, "VmHWM")
        with pytest.raises(Exception, match="deserializing return value"):
            await read_buffers(ex, (base, 2 << 30))
        assert vm_field(pid, "VmHWM") - hwm < 16 * MIB
        assert await reserve(ex, PAGE)
    assert "more than 1073741824 in one call" in ex.stderr
    assert "Traceback" not in ex.stderr
