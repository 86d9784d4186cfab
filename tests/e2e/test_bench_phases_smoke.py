"""A short run of ``scripts/bench-phases.py`` (the phase-by-phase timing of llvm-jitlink runs
seen from the controller; figures in ``scripts/bench-notes.md``): its shim builds, and every
phase is found and timed for both executors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support.jitrun import compile_c

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench-phases.py"

HELLO_C = r"""
#include <stdio.h>
int main(int argc, char **argv) { printf("hello %d %s\n", argc, argv[argc - 1]); return 0; }
"""


def test_bench_phases_smoke(tmp_path: Path) -> None:
    obj = compile_c(tmp_path, "hello", HELLO_C)
    r = subprocess.run([sys.executable, str(SCRIPT), "--reps", "2", "--sleep", "0", str(obj),
                        "hello", "x"], capture_output=True, timeout=120, cwd=tmp_path,
                       env=dict(os.environ, ORC_EXECUTOR_COLD="1"))
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    rows = {m.group(1): [float(x) for x in m.group(2).split(" | ")]
            for m in re.finditer(r"^\| ([^|]+?) \| ([-+0-9. |]+?) \|$", r.stdout.decode(), re.M)}
    for phase in ("start → Setup", "calls, sum", "controller's own work", "close → EOF",
                  "after exit handlers", "wall"):
        ref, ours, _diff = rows[phase]
        assert ref >= 0 and ours >= 0, (phase, r.stdout.decode())
    calls = [k for k in rows if k.startswith("call ")]
    assert len(calls) >= 3, r.stdout.decode()  # open, lookup, run at least
    # the cold start dominates our side; the reference starts in milliseconds
    assert rows["start → Setup"][1] > rows["start → Setup"][0]
    assert rows["wall"][0] > rows["calls, sum"][0] > 0
