#!/usr/bin/env python3
"""Issue 20's figures, orc-executor against llvm-jitlink-executor 22 in the same run (pipes):

* the RSS a 73-byte frame costs: the header of a 1 GiB ``initialize`` whose one segment lies
  outside every slab, and then nothing;
* a 512 MiB ``mem_read_buffers`` with a ``reserve`` pipelined 20 ms behind it: the read's
  time, the reserve's latency, and the peak RSS over the region read.

Not a test: prints one line per figure. ``scripts/bench-limits.py [--mib N]``.
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orc_executor.protocol.framing import Opcode, encode_header  # noqa: E402
from orc_executor.protocol.orc_types import FinalizeRequest, SegFinalizeRequest  # noqa: E402
from tests.support.harness import (  # noqa: E402
    INITIALIZE_SIG,
    MM_INITIALIZE,
    MM_INSTANCE,
    PAGE,
    RW,
    orc_executor_pipes,
    read_buffers,
    reference_executor,
    reserve,
)

MIB = 1 << 20


def status(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(name)


async def header(launch: Any, name: str) -> None:
    async with launch() as ex:
        await reserve(ex, PAGE)
        pid = ex.process.pid
        before = status(pid, "VmRSS")
        n = (1 << 30) - 32 - 16 - 25 - 8 - 64
        head = encode_header(Opcode.CALL_WRAPPER, 1, ex.sym(MM_INITIALIZE), 16 + 25 + n + 8)
        await ex.ctl.send_raw(
            head + struct.pack("<QQBQQQ", ex.sym(MM_INSTANCE), 1, RW, 0x10000, n, n))
        peak = before
        for _ in range(20):
            await trio.sleep(0.05)
            peak = max(peak, status(pid, "VmRSS"))
        print(f"{name}: 73-byte header of a 1 GiB initialize: RSS +{(peak - before) / MIB:.1f} MiB")
        ex.process.kill()


async def big_read(launch: Any, name: str, size: int) -> None:
    async with launch() as ex:
        base = await reserve(ex, size)
        req = FinalizeRequest([SegFinalizeRequest(RW, base, size, b"x" * size)], [])
        await ex.call(MM_INITIALIZE, INITIALIZE_SIG, ex.sym(MM_INSTANCE), req)
        pid = ex.process.pid
        hwm = status(pid, "VmHWM")
        took: dict[str, float] = {}

        async def read() -> None:
            t0 = trio.current_time()
            await read_buffers(ex, (base, size))
            took["read"] = trio.current_time() - t0

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await trio.sleep(0.02)
            t0 = trio.current_time()
            await reserve(ex, PAGE)
            took["reserve"] = trio.current_time() - t0
        grown = (status(pid, "VmHWM") - hwm) / MIB
        print(f"{name}: {size // MIB} MiB read {took['read']:.2f} s, pipelined reserve "
              f"{took['reserve'] * 1e3:.0f} ms, peak RSS +{grown:.0f} MiB over the region")


async def main(mib: int) -> None:
    for launch, name in [(orc_executor_pipes, "orc-executor"),
                         (reference_executor, "llvm-jitlink-executor 22")]:
        await header(launch, name)
        await big_read(launch, name, mib * MIB)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mib", type=int, default=512)
    trio.run(main, p.parse_args().mib)
