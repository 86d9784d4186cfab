"""Run scripted ``clang-repl --oop-executor=EXECUTOR`` sessions (LLVM 22).

A session is the text piped to clang-repl's stdin, one statement or directive (``%undo``,
``%lib PATH``, ``%quit``) per line. :func:`run_repl` returns what the user sees: clang-repl's
stdout and stderr (the executor inherits both, so the JIT'd code's output is there too) and
its exit status; :func:`compare_repl` runs the same session with the stock
``llvm-jitlink-executor`` and with another executor.

C stdio in the executor is fully buffered when stdout is a pipe: what JIT'd code leaves in
the buffer is written when the executor exits, and whether that comes before or after
clang-repl's own last newline depends on when the executor exits (with the stock executor
too, after ``%quit``). Sessions that compare stdout flush it in their last statement; the
order of output left in the buffer at exit is tested on its own (test_clang_repl.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from tests.support.jitrun import llvm_bin, normalize, orc_runtime, reference_executor

CLANG_REPL = llvm_bin(22) / "clang-repl"


class ReplResult(NamedTuple):
    stdout: bytes
    stderr: bytes
    returncode: int


def repl_command(
    executor: Path | str, *, shared_memory: bool = False, c: bool = False,
    extra: Sequence[str] = (),
) -> list[str]:
    """clang-repl's command line for an out-of-process session run by ``executor``."""
    cmd = [str(CLANG_REPL), f"--oop-executor={executor}", f"--orc-runtime={orc_runtime()}"]
    if shared_memory:
        cmd.append("--use-shared-memory")
    if c:
        cmd.append("--Xcc=-xc")
    cmd.extend(extra)
    return cmd


#: The program counters of clang-repl's own stack dump when it aborts (they change from run
#: to run with ASLR; the symbols and offsets after them do not).
CRASH_DUMP_PC = re.compile(rb"(?m)^( *#\d+) 0x[0-9a-f]+")


class ReplHang(Exception):
    """clang-repl did not finish within the timeout (its process group was killed)."""


#: clang-repl 22 itself sometimes deadlocks after a statement that fails to link, with the
#: stock executor as with ours (about 1 run in 14 on this machine): one thread waits in
#: ``ELFDebugObjectPlugin::notifyFailed`` for a mutex another of its threads holds while the
#: executor waits for its answer to a ``push_initializers`` call. Sessions with such a
#: statement are run again once when that happens (``hang_retries``).
LINK_FAILURE_HANG_TIMEOUT = 30.0


def run_repl(
    executor: Path | str, script: str, *, shared_memory: bool = False, c: bool = False,
    extra: Sequence[str] = (), env: Mapping[str, str] | None = None,
    replacements: Mapping[str, str] | None = None, timeout: float = 120,
    hang_retries: int = 0,
) -> ReplResult:
    """Pipe ``script`` to clang-repl's stdin; stdout and stderr are pipes read to EOF (so
    output the executor writes after clang-repl exited is included). ``replacements``
    normalizes run-specific text in both streams (see :func:`jitrun.normalize`). A session
    still running after ``timeout`` seconds is killed (with the executor) and run again up
    to ``hang_retries`` times, then :class:`ReplHang` is raised."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    cmd = repl_command(executor, shared_memory=shared_memory, c=c, extra=extra)
    for _attempt in range(hang_retries + 1):
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=full_env, start_new_session=True)
        try:
            out, err = proc.communicate(script.encode(), timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            continue
        reps = {str(executor): "{executor}", **(replacements or {})}
        err = CRASH_DUMP_PC.sub(rb"\1 {pc}", normalize(err, reps))
        return ReplResult(normalize(out, reps), err, proc.returncode)
    raise ReplHang(f"clang-repl did not finish in {timeout}s ({hang_retries + 1} runs): "
                   f"{' '.join(cmd)}")


def compare_repl(
    executor: Path | str, script: str, *, shared_memory: bool = False, c: bool = False,
    replacements: Mapping[str, str] | None = None, timeout: float = 120,
    hang_retries: int = 0,
) -> tuple[ReplResult, ReplResult]:
    """``(reference, ours)``: the session run with ``llvm-jitlink-executor`` and with
    ``executor`` (arguments as for :func:`run_repl`)."""
    ref, ours = (
        run_repl(ex, script, shared_memory=shared_memory, c=c, replacements=replacements,
                 timeout=timeout, hang_retries=hang_retries)
        for ex in (reference_executor(22), executor)
    )
    return ref, ours


def show(r: ReplResult) -> str:
    """A readable dump of a result for assertion messages."""
    return (f"status {r.returncode}\n--- stdout\n{r.stdout.decode(errors='replace')}"
            f"--- stderr\n{r.stderr.decode(errors='replace')}")

