#!/usr/bin/env python3
"""Cross benchmark: the aarch64 orc-executor under qemu-user against the arm64
``llvm-jitlink-executor`` under the same qemu, driven by the x86_64 ``llvm-jitlink`` 22.

Not a test: prints a markdown table of end-to-end wall times (median of ``--reps`` runs, with
min and max) per program for the reference, orc-executor cold (no server: the launcher starts
the aarch64 interpreter) and warm (``bin/orc-executor serve`` running: the launcher hands the
session to a pre-started aarch64 session process), and the ratios ours / reference. Runs of
the three executors alternate, so load on the machine falls on all of them alike.

  .venv/bin/python scripts/bench-cross.py [--reps 5] [--dir .cross/aarch64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.cross.crossrun import (  # noqa: E402
    LIBSTDCXX,
    LLVM_JITLINK,
    CrossBuild,
    compile_aarch64,
    cross_build,
    prelink,
    start_warm_server,
)

PROGRAMS = ROOT / "tests" / "programs"


def programs(cross: CrossBuild, tmp: Path) -> dict[str, tuple[list[str], list[str]]]:
    """name → (llvm-jitlink arguments, program arguments)."""
    c = {n: str(compile_aarch64(PROGRAMS / f"{n}.c")) for n in
         ("args_exit", "qsort_cb", "bigdata", "multi_main", "multi_lib")}
    threads = str(compile_aarch64(PROGRAMS / "threads.c", ["-O1", "-pthread"]))
    lazy = {n: str(compile_aarch64(PROGRAMS / "lazy" / f"{n}.c"))
            for n in ("lazy_main", "lazy_a", "lazy_b")}
    cxx = [compile_aarch64(PROGRAMS / "cxx" / f"{n}.cpp", cxx=True)
           for n in ("exc_lib", "exc_main")]
    exc = str(prelink(cxx, tmp / "exc.o"))
    rt = f"-orc-runtime={cross.orc_runtime}"
    return {
        "args_exit": ([c["args_exit"]], ["3", "14", "25"]),
        "multi_object": ([c["multi_main"], c["multi_lib"]], ["x"]),
        "qsort_desc": ([c["qsort_cb"]], ["desc", "7", "5", "-3", "99"]),
        "threads (4)": ([threads], ["4", "100000"]),
        "bigdata (4 MiB .data)": ([c["bigdata"]], ["12345", "7"]),
        "lazy (-lazy, ORC rt)": ([rt, lazy["lazy_main"], "-lazy", lazy["lazy_a"], "-lazy",
                                  lazy["lazy_b"]], ["q"]),
        "C++ exceptions (ORC rt)": ([rt, f"-preload={LIBSTDCXX}", exc], []),
    }


def run_once(executor: Path, jit_args: Sequence[str], args: Sequence[str],
             env: dict[str, str]) -> float:
    cmd = [str(LLVM_JITLINK), f"-oop-executor={executor}", *jit_args]
    if args:
        cmd += ["-args", *args]
    t0 = time.perf_counter()
    # Pipes read to EOF: the run ends when the executor has exited (or closed them).
    subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL, env=env, timeout=600)
    return time.perf_counter() - t0


def fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:.0f} ({min(xs) * 1000:.0f}–{max(xs) * 1000:.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None,
                        help="an existing scripts/cross.sh build (default: build/refresh "
                             ".cross/aarch64)")
    opts = parser.parse_args()
    cross = CrossBuild(opts.dir.resolve()) if opts.dir else cross_build()
    with tempfile.TemporaryDirectory(prefix="bench-cross-") as tmp:
        progs = programs(cross, Path(tmp))
        cold_env = dict(os.environ, ORC_EXECUTOR_WARM_SOCKET=f"{tmp}/none/warm.sock")
        server, warm_env = start_warm_server(cross.ours, Path(tmp) / "warm", warm=2)
        try:
            times: dict[str, dict[str, list[float]]] = {}
            for name, (jit_args, args) in progs.items():
                t = times.setdefault(name, {"ref": [], "cold": [], "warm": []})
                run_once(cross.reference, jit_args, args, cold_env)  # page cache, objects
                for _ in range(opts.reps):
                    t["ref"].append(run_once(cross.reference, jit_args, args, cold_env))
                    t["cold"].append(run_once(cross.ours, jit_args, args, cold_env))
                    t["warm"].append(run_once(cross.ours, jit_args, args, warm_env))
        finally:
            server.terminate()
            server.wait(timeout=60)
    print(f"x86_64 llvm-jitlink 22 → aarch64 executor under qemu-aarch64; wall ms, median "
          f"(min–max) of {opts.reps}; ratio = ours / reference (medians)\n")
    print("| program | reference | ours cold | ours warm | cold ratio | warm ratio |")
    print("|---|---|---|---|---|---|")
    cold_r, warm_r = [], []
    for name, t in times.items():
        ref = statistics.median(t["ref"])
        cr, wr = statistics.median(t["cold"]) / ref, statistics.median(t["warm"]) / ref
        cold_r.append(cr)
        warm_r.append(wr)
        print(f"| {name} | {fmt(t['ref'])} | {fmt(t['cold'])} | {fmt(t['warm'])} "
              f"| {cr:.2f}× | {wr:.2f}× |")
    gm = statistics.geometric_mean
    print(f"| geometric mean | | | | {gm(cold_r):.2f}× | {gm(warm_r):.2f}× |")


if __name__ == "__main__":
    main()
