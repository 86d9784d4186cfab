#!/usr/bin/env python3
"""Where an llvm-jitlink run's time goes, seen from the controller: orc-executor against
llvm-jitlink-executor 22, interleaved.

Not a test: prints a markdown table of medians per phase, ours and the reference's.

  .venv/bin/python scripts/bench-phases.py [--reps 15] [--ours PATH ...] OBJ [ARG ...]

runs ``llvm-jitlink -oop-executor=EXE OBJ -args ARG ...`` with each executor in turn (random
order per repetition; ``--ours`` may be given twice or more, e.g. two installations'
launchers for an A/B comparison in the same run), with ``scripts/phases_shim.c`` (built here
with the system's C compiler) preloaded into llvm-jitlink alone. The shim timestamps
llvm-jitlink's fork and its reads and writes on the executor's pipes, so each phase is
measured where the controller sees it, whatever the executor does inside:

* llvm-jitlink's start-up: from the harness's start of it to its first constructor (the
  shim's);
* start → Setup: from llvm-jitlink's fork of the executor to the Setup header's arrival;
* call N: from the write of a CallWrapper's header to the arrival of the Result's header
  (its payload size in bytes in the label; Setup's and the calls' order is llvm-jitlink's);
* controller's own work: the rest of llvm-jitlink's life from its first constructor to its
  exit handlers (its start-up, linking and everything between calls);
* close → EOF: from llvm-jitlink's close of its pipe to the executor until it reads EOF;
* after exit handlers: from llvm-jitlink's exit handlers until the harness has its exit
  status and EOF on its stdout and stderr (llvm-jitlink's own teardown, and any executor
  process still holding the output);
* wall: the harness's time for the whole run.

With orc-executor's warm server (the default launch), run once before measuring so that a
server is up (the script does one unmeasured run of each executor first).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LLVM_JITLINK = "/usr/lib/llvm-22/bin/llvm-jitlink"
REFERENCE = "/usr/lib/llvm-22/bin/llvm-jitlink-executor"
SHIM_SOURCE = ROOT / "scripts" / "phases_shim.c"
HEADER = 32  # bytes of a SimpleRemoteEPC message header


@dataclass
class Event:
    t: float  # seconds, CLOCK_MONOTONIC
    op: str
    fd: int
    n: int
    r: int


def build_shim(workdir: Path) -> Path:
    """``phases_shim.so`` compiled into ``workdir``. Raises CalledProcessError."""
    cc = os.environ.get("CC") or shutil.which("cc") or "gcc"
    out = workdir / "phases_shim.so"
    subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(out), str(SHIM_SOURCE), "-ldl"],
                   check=True)
    return out


def read_events(path: Path) -> list[Event]:
    events = []
    for line in path.read_text().splitlines():
        t, op, fd, n, r = line.split()
        events.append(Event(float(t), op, int(fd), int(n), int(r)))
    return events


def phases(events: list[Event], wall_start: float, wall_end: float) -> dict[str, float]:
    """Milliseconds per phase of one run (see the module's docstring); ``wall_start`` and
    ``wall_end`` are the harness's CLOCK_MONOTONIC times before it started llvm-jitlink and
    once it had the exit status and EOF."""
    fork = next(e for e in events if e.op == "f")
    after = [e for e in events if e.t >= fork.t]
    setup = next(e for e in after if e.op == "R" and e.n == HEADER and e.r == HEADER)
    from_fd = setup.fd
    headers = [e for e in after if e.op == "R" and e.fd == from_fd and e.n == HEADER
               and e.r == HEADER]
    writes = [e for e in after if e.op == "w" and e.t > setup.t]
    to_fd = next(e.fd for e in writes if e.n == HEADER)
    start = next(e for e in events if e.op == "S")
    out: dict[str, float] = {"llvm-jitlink's start-up": (start.t - wall_start) * 1e3,
                             "start → Setup": (setup.t - fork.t) * 1e3}
    calls = 0.0
    call_writes = [e for e in writes if e.fd == to_fd]
    headers_written = [(i, w) for i, w in enumerate(call_writes) if w.n == HEADER]
    for number, (i, w) in enumerate(headers_written, 1):
        result = next((h for h in headers if h.t > w.t), None)
        if result is None:
            break
        payload = next((p.n for p in call_writes[i + 1:i + 2] if p.n != HEADER), 0)
        ms = (result.t - w.t) * 1e3
        out[f"call {number} ({payload} B)"] = ms
        calls += ms
    end = next(e for e in events if e.op == "E")
    out["calls, sum"] = calls
    out["controller's own work"] = (end.t - start.t) * 1e3 - calls - out["start → Setup"]
    close = [e for e in events if e.op == "C" and e.fd == to_fd]
    eof = [e for e in events if e.op == "R" and e.fd == from_fd and e.r == 0]
    if close and eof:
        out["close → EOF"] = (eof[-1].t - close[-1].t) * 1e3
    out["after exit handlers"] = (wall_end - end.t) * 1e3
    return out


def run_once(executor: str, obj: str, args: list[str], shim: Path, log: Path
             ) -> dict[str, float]:
    """One run of llvm-jitlink with ``executor``, in the current directory: its phases."""
    env = dict(os.environ, LD_PRELOAD=str(shim), PHASES_SHIM_OUT=str(log))
    cmd = [LLVM_JITLINK, f"-oop-executor={executor}", obj]
    if args:
        cmd += ["-args", *args]
    t0 = time.monotonic()
    subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True)
    t1 = time.monotonic()
    result = phases(read_events(log), t0, t1)
    result["wall"] = (t1 - t0) * 1e3
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--ours", action="append",
                    help="an orc-executor to measure (default: the venv's); repeatable")
    ap.add_argument("--sleep", type=float, default=0.5,
                    help="seconds between runs (a warm server refills its pool after each)")
    ap.add_argument("obj")
    ap.add_argument("args", nargs="*", help="the program's argv (argv[0] first)")
    opts = ap.parse_args()
    ours = opts.ours or [str(Path(sys.executable).parent / "orc-executor")]
    executors = {"llvm-jitlink-executor 22": REFERENCE}
    for i, path in enumerate(ours):
        executors[f"orc-executor{'' if len(ours) == 1 else f' {chr(65 + i)}'}"] = path
    results: dict[str, list[dict[str, float]]] = {k: [] for k in executors}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shim = build_shim(work)
        log = work / "events.txt"
        for exe in executors.values():  # a warm server up, caches filled
            run_once(exe, opts.obj, opts.args, shim, log)
        for _ in range(opts.reps):
            order = list(executors.items())
            random.shuffle(order)
            for name, exe in order:
                results[name].append(run_once(exe, opts.obj, opts.args, shim, log))
                time.sleep(opts.sleep)
    names = list(executors)
    print(f"\n{os.cpu_count()} CPUs; {opts.reps} repetitions, interleaved; median ms; "
          f"`{Path(opts.obj).name} {' '.join(opts.args)}`"
          + "".join(f"; {n}: {p}" for n, p in executors.items() if n != names[0]) + "\n")
    print("| phase | " + " | ".join(names) + " | " +
          " | ".join(f"{n} − ref" for n in names[1:]) + " |")
    print("|---" * (2 * len(names)) + "|")
    keys = list(dict.fromkeys(k for rs in results.values() for r in rs for k in r))
    for key in keys:
        meds = []
        for n in names:
            vals = [r[key] for r in results[n] if key in r]
            meds.append(statistics.median(vals) if vals else float("nan"))
        print(f"| {key} | " + " | ".join(f"{m:.2f}" for m in meds) + " | " +
              " | ".join(f"{m - meds[0]:+.2f}" for m in meds[1:]) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
