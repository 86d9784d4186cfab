"""C programs under ``llvm-jitlink 22 -oop-executor``: orc-executor must behave exactly like the
stock ``llvm-jitlink-executor`` (same stdout, stderr and llvm-jitlink exit status), and both must
show the facts written down in ``tests/programs/cases.py`` (so "both broken" cannot pass).

Also: how the executor *process* ends (exit status / signal) for normal returns, exit(), abort()
and crashes, and a gdb breakpoint in JIT'd code (GDB JIT interface).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from tests.programs.cases import CASES, CASES_BY_NAME, Case
from tests.support.jitrun import (
    GdbRun,
    RunResult,
    compare_with_reference,
    gdb_breakpoint_run,
    normalize,
    reference_executor,
    run_case,
)

pytestmark = pytest.mark.usefixtures("llvm22_tools")


@pytest.fixture(scope="module")
def cold_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for every run here (reference and ours alike): points orc-executor's warm
    server socket at a path where no server listens, so that a warm server someone left running
    for this user cannot take over these sessions (the warm path is tested in test_warm.py)."""
    sock = tmp_path_factory.mktemp("no-warm-server") / "warm.sock"
    return {"ORC_EXECUTOR_WARM_SOCKET": str(sock)}


def check_expectations(case: Case, result: RunResult, who: str) -> None:
    """The known facts of ``case`` (tests/programs/cases.py) hold for ``result``."""
    where = f"{who} executor, case {case.name}\n{result.describe()}"
    if case.expect_returncode is not None:
        assert result.returncode == case.expect_returncode, where
    if case.expect_stdout is not None:
        assert result.stdout == case.expect_stdout.encode(), where
    if case.expect_stderr is not None:
        assert result.stderr == case.expect_stderr.encode(), where
    for text in case.expect_stdout_contains:
        assert text.encode() in result.stdout, where
    for text in case.expect_stderr_contains:
        assert text.encode() in result.stderr, where


def assert_same_outcome(case: Case, ref: RunResult, ours: RunResult) -> None:
    """Ours has the reference's stdout, stderr and llvm-jitlink exit status, and the case's
    documented facts."""
    context = f"\n--- reference:\n{ref.describe()}\n--- ours:\n{ours.describe()}"
    assert ours.stdout == ref.stdout, (
        "stdout differs: " + _first_difference(ref.stdout, ours.stdout) + context
    )
    assert ours.stderr == ref.stderr, (
        "stderr differs: " + _first_difference(ref.stderr, ours.stderr) + context
    )
    assert ours.returncode == ref.returncode, "llvm-jitlink exit status differs" + context
    check_expectations(case, ours, "our")


def _first_difference(a: bytes, b: bytes) -> str:
    n = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return f"first difference at byte {n}: reference {a[n : n + 80]!r} vs ours {b[n : n + 80]!r}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_program_matches_reference(
    case: Case, executor_path: Path, cold_env: dict[str, str], request: pytest.FixtureRequest
) -> None:
    if case.needs_orc_runtime:
        request.getfixturevalue("orc_rt_archive")
    ref, ours = compare_with_reference(case, executor_path, extra_env=cold_env)
    # The reference must show the documented facts; otherwise the environment (LLVM, gcc, libc)
    # differs from the one the expectations were written for.
    check_expectations(case, ref, "reference")
    assert_same_outcome(case, ref, ours)


# How the executor process itself ends. llvm-jitlink never looks at this (it does not even wait
# for the executor), but it decides what a wrapper or a shell sees, and whether C exit handlers
# and stdio flushing happen.
EXECUTOR_STATUS = {
    "args_exit": "exit 0",
    "late_exit_handler": "exit 0",
    "exit_with_on_exit_handlers": "exit 5",
    "abort": "signal 6",
    "segfault": "signal 11",
    "atexit_missing": "exit 0",
}


@pytest.mark.parametrize("name", sorted(EXECUTOR_STATUS))
def test_executor_process_status(name: str, executor_path: Path, cold_env: dict[str, str]) -> None:
    case = CASES_BY_NAME[name]
    ref, ours = compare_with_reference(case, executor_path, record_status=True, extra_env=cold_env)
    assert ref.executor_status == EXECUTOR_STATUS[name], ref.describe()
    assert ours.executor_status == ref.executor_status, f"{ref.describe()}\n---\n{ours.describe()}"
    # Going through the status wrapper must not change what the program shows.
    assert ours.triple == ref.triple, f"{ref.describe()}\n---\n{ours.describe()}"


def test_pythonunbuffered_does_not_change_c_stdio_buffering(
    executor_path: Path, cold_env: dict[str, str]
) -> None:
    """PYTHONUNBUFFERED=1 (common in CI and containers) makes CPython switch C stdio to
    unbuffered; JIT'd printf must still be fully buffered on a pipe, like under the stock
    executor, so the last stdout line still comes after the last stderr line."""
    base = CASES_BY_NAME["interleave_merged"]
    case = replace(base, name="interleave_pythonunbuffered", env={"PYTHONUNBUFFERED": "1"})
    ref, ours = compare_with_reference(case, executor_path, extra_env=cold_env)
    check_expectations(case, ref, "reference")
    assert ours.triple == ref.triple, f"{ref.describe()}\n---\n{ours.describe()}"


@pytest.mark.parametrize("usec", ["0", "2000"])
@pytest.mark.parametrize("name", ["threads", "qsort_asc", "stdin_echo", "bigdata"])
def test_busy_poll_setting_does_not_change_the_outcome(
    name: str, usec: str, executor_path: Path, cold_env: dict[str, str]
) -> None:
    """Busy polling off, and 2 ms of it (every wait for the next call starts awake): the
    program's output and status are the reference's, as with the default."""
    base = CASES_BY_NAME[name]
    case = replace(base, name=f"{name}_busy_poll_{usec}",
                   env={**base.env, "ORC_EXECUTOR_BUSY_POLL": usec})
    ref, ours = compare_with_reference(case, executor_path, extra_env=cold_env)
    check_expectations(case, ref, "reference")
    assert_same_outcome(case, ref, ours)


def test_stdin_is_left_to_the_program(executor_path: Path, cold_env: dict[str, str]) -> None:
    """Nothing in the executor reads or buffers stdin before the program does (the big-input
    variant is the ``stdin_big`` case)."""
    base = CASES_BY_NAME["stdin_echo"]
    data = b"first line\nsecond line\n"
    case = replace(base, name="stdin_small", stdin=data, args=["R>"])
    result = run_case(case, executor_path, extra_env=cold_env)
    assert result.stdout.startswith(b"R>1: first line\nR>2: second line\nlines=2 words=4"), (
        result.describe()
    )
    assert result.returncode == 2


# --------------------------------------------------------------------------------------------
# gdb

BREAKPOINT_HIT = re.compile(
    r"hit Breakpoint \d+, jitted_fn \(x=5\) at \S*debug_fn\.c:\d+", re.MULTILINE
)
BACKTRACE = re.compile(
    r"^#0 +jitted_fn \(x=5\) at \S*debug_fn\.c:\d+\n#1 +0x[0-9a-f]+ in main \(", re.MULTILINE
)


@pytest.mark.parametrize("which", ["reference", "ours"])
def test_gdb_breakpoint_in_jitted_code(
    which: str, executor_path: Path, cold_env: dict[str, str]
) -> None:
    assert shutil.which("gdb"), "gdb is missing: run scripts/bootstrap.sh"
    executor = reference_executor() if which == "reference" else executor_path
    run = gdb_breakpoint_run(CASES_BY_NAME["debug_info"], executor, "jitted_fn", extra_env=cold_env)
    if "ptrace: Operation not permitted" in run.output:
        pytest.skip("ptrace not permitted here")
    assert_stopped_in_jitted_fn(run)


def assert_stopped_in_jitted_fn(run: GdbRun) -> None:
    """gdb (run by :func:`gdb_breakpoint_run` on ``debug_info``) stopped at the breakpoint in
    the JIT'd ``jitted_fn``, showed its frame under ``main``, and after ``continue`` the
    program finished normally."""
    details = f"$ {run.command}\n{run.output}"
    assert "Catchpoint 1 (exec" in run.output, details
    assert BREAKPOINT_HIT.search(run.output), details
    assert BACKTRACE.search(run.output), details
    assert "jitted_fn(5) = 16" in run.output, details
    assert re.search(r"\[Inferior \d+ \(process \d+\) exited normally\]", run.output), details


# --------------------------------------------------------------------------------------------
# The manifest and harness themselves


def test_manifest_is_consistent() -> None:
    assert len(CASES) >= 12
    for case in CASES:
        assert case.sources, case.name
        for src in case.source_paths:
            assert src.is_file(), src
        if case.merge_stderr:
            assert case.expect_stderr in (None, ""), case.name


def test_normalize() -> None:
    data = b"/tmp/jitrun-abc/out.txt\n/usr/lib/llvm-22/bin/llvm-jitlink: Bad file descriptor\n"
    reps = {"/tmp/jitrun-abc": "{tmp}", "/usr/lib/llvm-22/bin/llvm-jitlink": "{jitlink}"}
    assert normalize(data, reps) == b"{tmp}/out.txt\n{jitlink}: Bad file descriptor\n"
    assert normalize(data, reps, racy_teardown=True) == b"{tmp}/out.txt\n"
