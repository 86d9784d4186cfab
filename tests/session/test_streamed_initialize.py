"""Streamed initialize / finalize over the wire: a call of ``STREAM_FROM`` (64 KiB) or more
is decoded while it arrives and its segment content is read straight into the slab.

Checked: the bytes land right (content, zero-fill tail, protections, code runs); the 22 and
14/19 memory-manager models; requests the slab cannot take in place still get the usual
errors and leave nothing claimed; malformed payloads and a controller dying mid-content end
cleanly."""

from __future__ import annotations

import os
import re

from orc_executor.protocol.framing import Opcode, encode_header
from orc_executor.protocol.orc_types import FinalizeRequest
from orc_executor.protocol.sps import ErrorValue
from tests.support.harness import (
    BOOT,
    FINALIZE_SIG,
    INITIALIZE_SIG,
    MEM_WRITE_BUFFERS_SIG,
    MM_DEALLOCATE,
    MM_FINALIZE,
    MM_INITIALIZE,
    MM_INSTANCE,
    MM_RELEASE,
    PAGE,
    RELEASE_SIG,
    RET42,
    RUN_AS_VOID,
    RUN_AS_VOID_SIG,
    RW,
    RX,
    Executor,
    R,
    initialize,
    orc_executor,
    read_buffers,
    reserve,
    seg,
)

MIB = 1 << 20
PLACED = re.compile(r"call seq=\d+: (\d+) content bytes received straight into the slab")


async def read(ex: Executor, addr: int, n: int) -> bytes:
    (buf,) = await read_buffers(ex, (addr, n))
    return buf


def placed_counts(stderr: str) -> list[int]:
    return [int(n) for n in PLACED.findall(stderr)]


async def test_large_initialize_lands_in_place() -> None:
    data = os.urandom(MIB) * 3 + b"tail"
    async with orc_executor("--log-level", "debug") as ex:
        base = await reserve(ex, 4 * MIB)
        # Stale bytes where the zero-fill tail goes: a placed segment must still be zeroed.
        stale = [(base + len(data), b"\xff" * 64)]
        await ex.call(BOOT + "mem_write_buffers_wrapper", MEM_WRITE_BUFFERS_SIG, stale)
        code = base + 4 * MIB - PAGE
        key = await initialize(ex, seg(RW, base, len(data) + 100, data), seg(RX, code, 16, RET42))
        assert key == base
        assert await read(ex, base, len(data) + 100) == data + bytes(100)
        assert await ex.call(RUN_AS_VOID, RUN_AS_VOID_SIG, code) == 42
        assert await ex.call(MM_RELEASE, RELEASE_SIG, ex.sym(MM_INSTANCE), [base]) is None
    assert ex.process.returncode == 0
    assert placed_counts(ex.stderr) == [len(data) + len(RET42)]
    assert ex.stdout == b""


async def test_streaming_starts_at_stream_from() -> None:
    """A payload of ``STREAM_FROM`` bytes or more streams (an ordinary object's text of a
    few hundred KiB, read from the pipe into the slab with no payload buffer); a smaller
    one is decoded whole, with the same outcome."""
    from orc_executor.executor.session import STREAM_FROM

    big = os.urandom(STREAM_FROM + 4000)
    small = os.urandom(STREAM_FROM - 4000)
    async with orc_executor("--log-level", "debug") as ex:
        base = await reserve(ex, 4 * MIB)
        assert await initialize(ex, seg(RX, base, len(big) + 50, big)) == base
        assert await initialize(ex, seg(R, base + MIB, len(small), small)) == base + MIB
        assert await read(ex, base, len(big) + 50) == big + bytes(50)
        assert await read(ex, base + MIB, len(small)) == small
        assert await ex.call(MM_RELEASE, RELEASE_SIG, ex.sym(MM_INSTANCE), [base]) is None
    assert ex.process.returncode == 0
    assert placed_counts(ex.stderr) == [len(big)]


async def test_large_finalize_lands_in_place() -> None:
    """The 14/19 model (``finalize`` / ``deallocate``) takes the same path."""
    data = bytes(range(256)) * (5 * MIB // 256)
    async with orc_executor("--log-level", "debug") as ex:
        inst = ex.sym(MM_INSTANCE)
        base = await reserve(ex, 6 * MIB)
        req = FinalizeRequest([seg(R, base, len(data), data)], [])
        assert await ex.call(MM_FINALIZE, FINALIZE_SIG, inst, req) is None
        assert await read(ex, base + len(data) - 256, 256) == bytes(range(256))
        assert await ex.call(MM_DEALLOCATE, RELEASE_SIG, inst, [base]) is None
    assert ex.process.returncode == 0
    assert placed_counts(ex.stderr) == [len(data)]


async def test_requests_not_placeable_get_the_usual_errors_and_leave_nothing_claimed() -> None:
    big = os.urandom(2 * MIB)
    async with orc_executor("--log-level", "debug") as ex:
        base = await reserve(ex, 4 * MIB)
        assert await initialize(ex, seg(RW, base, PAGE, b"live")) == base
        # Over a live region: not placed, and the overlap is reported.
        overlap = await initialize(ex, seg(RW, base, len(big), big))
        assert isinstance(overlap, ErrorValue) and "overlap" in overlap.message
        # Outside any slab.
        unknown = await initialize(ex, seg(RW, 0x1234000, len(big), big))
        assert unknown == ErrorValue(
            "In initialize, 0x1234000 is not part of any reserved address range"
        )
        # Content larger than its segment.
        too_big = await initialize(ex, seg(RW, base + MIB, MIB, big))
        assert isinstance(too_big, ErrorValue) and "exceeds its size" in too_big.message
        # Placed, then refused (invalid protection bits): the claim is released with the call,
        # so the same range initializes next time.
        bad_prot = await initialize(ex, seg(0x40, base + MIB, len(big), big))
        assert isinstance(bad_prot, ErrorValue) and "protection" in bad_prot.message
        assert await initialize(ex, seg(RW, base + MIB, len(big), big)) == base + MIB
        assert await read(ex, base + MIB, 64) == big[:64]
        assert await read(ex, base, 4) == b"live"
    assert ex.process.returncode == 0
    assert placed_counts(ex.stderr) == [0, 0, 0, len(big), len(big)]


async def test_malformed_large_payload_is_an_error_result_and_the_session_goes_on() -> None:
    async with orc_executor() as ex:
        inst = ex.sym(MM_INSTANCE)
        base = await reserve(ex, 4 * MIB)
        good = INITIALIZE_SIG.encode_args(inst, FinalizeRequest([seg(RW, base, 2 * MIB,
                                                                     bytes(2 * MIB))], []))
        tag = ex.sym(MM_INITIALIZE)
        # Trailing garbage after the actions.
        raw = await ex.ctl.call_raw(tag, good + b"junk")
        err = INITIALIZE_SIG.decode_result(raw)
        assert isinstance(err, ErrorValue) and "could not deserialize arguments" in err.message
        # A content length beyond the payload.
        cut = good[:16 + 25 - 8] + (1 << 40).to_bytes(8, "little") + good[16 + 25:]
        err = INITIALIZE_SIG.decode_result(await ex.ctl.call_raw(tag, cut))
        assert isinstance(err, ErrorValue) and "truncated" in err.message
        # Nothing stayed claimed: the intact request succeeds.
        assert INITIALIZE_SIG.decode_result(await ex.ctl.call_raw(tag, good)) == base
    assert ex.process.returncode == 0
    assert ex.stdout == b""


async def test_controller_dies_mid_content() -> None:
    async with orc_executor() as ex:
        inst = ex.sym(MM_INSTANCE)
        base = await reserve(ex, 4 * MIB)
        payload = INITIALIZE_SIG.encode_args(
            inst, FinalizeRequest([seg(RW, base, 3 * MIB, os.urandom(3 * MIB))], [])
        )
        frame = encode_header(Opcode.CALL_WRAPPER, 7, ex.sym(MM_INITIALIZE), len(payload))
        await ex.ctl.send_raw(frame + payload[: 2 * MIB])
        await ex.ctl.stream.send_eof()  # type: ignore[attr-defined]
        assert await ex.wait_exit() == 1
    assert "end-of-file" in ex.stderr
    assert "Traceback" not in ex.stderr
    assert ex.stdout == b""

