"""perf support wrappers (``llvm_orc_registerJITLoaderPerf{Start,Impl,End}``) over the
protocol: found by dylib lookup (not advertised in Setup), the jitdump records they write,
and clean error results for malformed records. End to end with llvm-jitlink and perf:
tests/e2e/test_perf.py."""

from __future__ import annotations

import glob
import os
import struct
from pathlib import Path

import pytest

from orc_executor.protocol.names import PERF_IMPL as PERF_IMPL_SIG
from orc_executor.protocol.names import PERF_START_END as PERF_SIG
from orc_executor.protocol.orc_types import (
    CodeLoadRecord,
    DebugEntry,
    DebugInfoRecord,
    UnwindingRecord,
)
from orc_executor.protocol.sps import ErrorValue
from tests.support.harness import (
    DYLIB_INSTANCE,
    DYLIB_OPEN,
    DYLIB_RESOLVE,
    OPEN_SIG,
    PAGE,
    RESOLVE_SIG,
    RET42,
    RX,
    Executor,
    initialize,
    orc_executor,
    reserve,
    seg,
)

NAMES = ["llvm_orc_registerJITLoaderPerfStart", "llvm_orc_registerJITLoaderPerfEnd",
         "llvm_orc_registerJITLoaderPerfImpl"]
NO_UNWIND = UnwindingRecord((4, 0), 0, 0, 0, 0, b"", 0)


async def _perf(ex: Executor) -> tuple[int, int, int]:
    assert not set(NAMES) & set(ex.ctl.setup.symbols)  # type: ignore[union-attr]
    h = await ex.call(DYLIB_OPEN, OPEN_SIG, ex.sym(DYLIB_INSTANCE), "", 0)
    defs = await ex.call(DYLIB_RESOLVE, RESOLVE_SIG, h, [(n, True) for n in NAMES])
    start, end, impl = (d.address for d in defs)
    return start, end, impl


def _code(addr: int, size: int, name: bytes = b"f", index: int = 0) -> CodeLoadRecord:
    return CodeLoadRecord((0, 56 + len(name) + 1 + size), 0, 0, addr, addr, size, index, name)


def _records(data: bytes) -> list[tuple[int, bytes]]:
    out, off = [], 40
    while off < len(data):
        rec_id, total = struct.unpack_from("<II", data, off)
        out.append((rec_id, data[off:off + total]))
        off += total
    return out


async def test_perf_records_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JITDUMPDIR", str(tmp_path))
    async with orc_executor() as ex:
        start, end, impl = await _perf(ex)
        batch = ([_code(0x1000, 6)], [], NO_UNWIND)
        # Before Start: as LLVM, "PerfState not initialized".
        assert await ex.call(impl, PERF_IMPL_SIG, batch) == ErrorValue("PerfState not initialized")
        assert await ex.call(end, PERF_SIG) == ErrorValue("PerfState not initialized")
        assert await ex.call(start, PERF_SIG) is None
        (dump,) = glob.glob(str(tmp_path / ".debug/jit/llvm-IR-jit-*/jit-*.dump"))
        pid = ex.process.pid
        assert dump.endswith(f"/jit-{pid}.dump")

        base = await reserve(ex)
        key = await initialize(ex, seg(RX, base, PAGE, RET42))
        assert key == base
        good = _code(base, len(RET42), b"ret42", 7)
        debug = DebugInfoRecord((2, 32 + 16 + 4), base, [DebugEntry(base + 0x40, 3, 0, b"a.c")])
        assert await ex.call(impl, PERF_IMPL_SIG, ([good], [debug], NO_UNWIND)) is None
        size_after_good = os.path.getsize(dump)

        bad = {
            "wrong id": ([good._replace(prefix=(1, good.prefix[1]))], [], NO_UNWIND),
            "wrong total": ([good._replace(prefix=(0, 999))], [], NO_UNWIND),
            "outside JIT'd memory": ([_code(0x1000, 6)], [], NO_UNWIND),
            "huge code size": ([_code(base, 0x7FFF0000)], [], NO_UNWIND),
            "NUL in name": ([_code(base, 6, b"a\0b")], [], NO_UNWIND),
            "debug total": ([], [debug._replace(prefix=(2, 5))], NO_UNWIND),
            "unwind header size": ([], [], UnwindingRecord((4, 40 + 8), 8, 9, 0, 0, b"", base)),
            "unwind header bytes": ([], [], UnwindingRecord((4, 40 + 8), 8, 4, 0, 0, b"ab",
                                                            base)),
        }
        for why, b in bad.items():
            result = await ex.call(impl, PERF_IMPL_SIG, b)
            assert isinstance(result, ErrorValue), why
            assert "malformed record" in result.message, (why, result.message)
        # Undecodable arguments: an error result too.
        raw = await ex.ctl.call_raw(impl, b"\x01\x00")
        assert isinstance(PERF_SIG.decode_result(raw), ErrorValue)
        assert os.path.getsize(dump) == size_after_good  # nothing written for bad batches

        assert await ex.call(end, PERF_SIG) is None
        data = Path(dump).read_bytes()
        magic, version, hsize, mach, _pad, hpid, _ts, flags = struct.unpack_from("<IIIIIIQQ",
                                                                                 data)
        assert (magic, version, hsize, mach, hpid, flags) == (0x4A695444, 1, 40, 62, pid, 0)
        recs = _records(data)
        assert [r[0] for r in recs] == [2, 0, 3]
        clr = recs[1][1]
        rpid, tid, vma, addr, size, index = struct.unpack_from("<IIQQQQ", clr, 16)
        assert (rpid, vma, addr, size, index) == (pid, base, base, len(RET42), 7)
        assert tid > 0
        assert clr[56:] == b"ret42\0" + RET42
        assert recs[0][1][32:] == struct.pack("<QII", base + 0x40, 3, 0) + b"a.c\0"
        perf_map = Path(f"/tmp/perf-{pid}.map")
        assert perf_map.read_text() == f"{base:x} 6 ret42\n"
        perf_map.unlink()
