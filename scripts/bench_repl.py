#!/usr/bin/env python3
"""clang-repl and fault-recovery figures: orc-executor against llvm-jitlink-executor 22.

Not a test: prints a markdown table of medians (min–max) and ratios ours/reference.

  .venv/bin/python scripts/bench_repl.py [--reps 5] [--warm]

* clang-repl 22 session wall time (a short C++ session: includes, a template, a vector,
  printing), piped to stdin, each executor in alternation;
* the same session under ``--on-fault=recover`` (our default under clang-repl) and
  ``crash``: what guarding every call into JIT'd code costs end to end;
* in process: a native call (``run_as_void_function`` of libc's ``getpid``) unguarded and
  guarded (the ``sigsetjmp`` recovery point and its signal-mask syscalls).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orc_executor.native import api as native  # noqa: E402
from tests.support.jitrun import orc_runtime, reference_executor  # noqa: E402
from tests.support.replrun import repl_command  # noqa: E402

OURS = str(Path(sys.executable).parent / "orc-executor")
SESSION = r"""
#include <cstdio>
#include <vector>
template <typename T> T twice(T x) { return x + x; }
std::vector<int> v{1, 2, 3};
std::printf("%d %zu\n", twice(21), v.size()); std::fflush(stdout);
"""


def time_session(executor: str, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(repl_command(executor), input=SESSION.encode(), capture_output=True,
                          env={**os.environ, **env}, timeout=120, check=False)
    dt = time.perf_counter() - t0
    if proc.returncode != 0 or b"42 3" not in proc.stdout:
        raise SystemExit(f"{executor}: session failed: {proc.stderr.decode()[-500:]}")
    return dt


def fmt(xs: list[float], unit: float, digits: int) -> str:
    return (f"{statistics.median(xs) * unit:.{digits}f} "
            f"({min(xs) * unit:.{digits}f}–{max(xs) * unit:.{digits}f})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--calls", type=int, default=200000)
    ap.add_argument("--warm", action="store_true",
                    help="run our sessions through a warm server (orc-executor serve)")
    args = ap.parse_args()
    orc_runtime()
    ref = str(reference_executor(22))
    ours_env: dict[str, str] = {}
    server: subprocess.Popen[bytes] | None = None
    tmp = tempfile.mkdtemp()
    if args.warm:
        sock = Path(tmp) / "warm.sock"
        ours_env = {"ORC_EXECUTOR_WARM_SOCKET": str(sock)}
        server = subprocess.Popen([OURS, "serve", "--warm", "2"], env={**os.environ, **ours_env},
                                  stderr=subprocess.DEVNULL)
        while not sock.exists():
            time.sleep(0.05)
        time.sleep(1)
    runs: dict[str, list[float]] = {"reference": [], "recover": [], "crash": []}
    try:
        for _ in range(args.reps):
            runs["reference"].append(time_session(ref, {}))
            for policy in ("recover", "crash"):
                # (a warm session reads the policy from the server's environment, so a warm
                # "crash" row runs with the detected default, recover)
                runs[policy].append(time_session(OURS, {**ours_env,
                                                        "ORC_EXECUTOR_ON_FAULT": policy}))
    finally:
        if server is not None:
            server.terminate()
            server.wait()
    base = statistics.median(runs["reference"])
    print("| clang-repl session | wall ms, median (min–max) | ours / reference |")
    print("|---|---|---|")
    for name, xs in runs.items():
        print(f"| {name} | {fmt(xs, 1e3, 0)} | {statistics.median(xs) / base:.2f} |")

    getpid = ctypes.cast(ctypes.CDLL(None).getpid, ctypes.c_void_p).value or 0
    native.install_fault_handlers()
    per: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.reps):
        for guarded in (False, True):
            t0 = time.perf_counter()
            for _ in range(args.calls):
                native.run_as_void_function(getpid, guarded=guarded)
            per[guarded].append((time.perf_counter() - t0) / args.calls)
    print()
    print("| in-process native call | µs per call, median (min–max) |")
    print("|---|---|")
    for guarded, xs in per.items():
        print(f"| {'guarded' if guarded else 'unguarded'} | {fmt(xs, 1e6, 3)} |")


if __name__ == "__main__":
    main()
