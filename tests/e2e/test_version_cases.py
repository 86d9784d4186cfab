"""Issue 5: the whole C case set of ``tests/programs/cases.py`` under llvm-jitlink 14 and 19.

``test_programs.py`` runs every case under llvm-jitlink 22; here every case also runs under
``/usr/lib/llvm-14/bin/llvm-jitlink`` and ``/usr/lib/llvm-19/bin/llvm-jitlink`` with
``-oop-executor=<orc-executor>`` (the profile detected from the launching process) and with that
version's own ``llvm-jitlink-executor``: identical stdout, stderr and exit status, and the
case's ``expect_*`` facts, through the same ``jitrun`` machinery (``compare_with_reference``
with ``llvm_version``). Cases with ``-orc-runtime`` use the runtime of the same LLVM version
(Debian's ``libclang-rt-N-dev``, fetched by ``jitrun.orc_runtime_for``).

Where a version's own reference shows other facts than the LLVM 22 ones written in cases.py,
:data:`VERSION_FACTS` holds the facts measured with that version's reference and the reason
(details in REFERENCE_NOTES.md, "LLVM 14 and 19"). No case is excluded.

Also per version: how the executor process ends (``EXECUTOR_STATUS`` of test_programs.py), and
a gdb breakpoint in JIT'd code.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import fields, replace
from pathlib import Path

import pytest

from tests.e2e.test_programs import (
    EXECUTOR_STATUS,
    assert_same_outcome,
    assert_stopped_in_jitted_fn,
    check_expectations,
)
from tests.programs.cases import CASES, CASES_BY_NAME, Case
from tests.support.jitrun import (
    LLVM_CONTROLLER_RACE,
    RunResult,
    compare_with_reference,
    gdb_breakpoint_run,
    llvm_jitlink,
    reference_executor,
    run_case,
)

VERSIONS = (14, 19)


# --------------------------------------------------------------------------------------------
# Facts that differ by version (measured with each version's own llvm-jitlink-executor)

#: ``(version, case name)`` → (the case with the facts that hold under that version, why).
VERSION_FACTS: dict[tuple[int, str], tuple[Case, str]] = {
    (14, "atexit_missing"): (
        replace(
            CASES_BY_NAME["atexit_missing"],
            expect_stderr=(
                "JIT session error: Symbols not found: [ atexit ]\n"
                "{jitlink}: Failed to materialize symbols: { (main, { main }) }\n"
            ),
        ),
        "llvm-jitlink 14 words the link error differently (a 'JIT session error' line, then "
        "the failed materialization of main); 19 and 22 print 'llvm-jitlink error: Symbols "
        "not found: [ atexit ]'",
    ),
    (14, "atexit_with_orc_runtime"): (
        replace(
            CASES_BY_NAME["atexit_with_orc_runtime"], expect_stdout="main 1 b\natexit handler\n"
        ),
        "llvm-jitlink 14 runs the ORC runtime's deinitializers when main has returned, so the "
        "handler registered with the runtime's atexit() runs; 19 and 22 never run it",
    ),
    **{
        (14, name): (
            replace(
                CASES_BY_NAME[name],
                expect_stderr_contains=[
                    "JIT session error: .bss section data [{buf}+0x",
                    "] not within bounds of the given debug object buffer [{buf} - {buf}+0x",
                ],
            ),
            "llvm-jitlink 14's debug-object plugin checks the 16 MiB NOBITS .bss's file range "
            "(sh_offset + sh_size) against the 4 MiB object file and reports a JIT session "
            "error (the object is not registered with the debugger; the program runs normally). "
            "Its executor addresses are compared relative to the debug object buffer",
        )
        for name in ("bigdata", "bigdata_other_index")
    },
}


def case_for(version: int, case: Case) -> Case:
    entry = VERSION_FACTS.get((version, case.name))
    return entry[0] if entry else case


# LLVM 14's debug-object error names executor addresses, which differ from run to run (ASLR);
# they are made relative to the debug object buffer's start, which keeps any real difference
# in layout visible.
DEBUG_OBJECT_BOUNDS = re.compile(
    rb"\[0x([0-9a-f]+) - 0x([0-9a-f]+)\] not within bounds of the given debug object buffer "
    rb"\[0x([0-9a-f]+) - 0x([0-9a-f]+)\]"
)


def _relative(addr: bytes, base: int) -> bytes:
    offset = int(addr, 16) - base
    if offset == 0:
        return b"{buf}"
    return b"{buf}+%#x" % offset if offset > 0 else b"{buf}-%#x" % -offset


def debug_buffer_relative(result: RunResult) -> RunResult:
    def sub(m: re.Match[bytes]) -> bytes:
        base = int(m.group(3), 16)
        a, b, c, d = (_relative(m.group(i), base) for i in range(1, 5))
        return b"[%s - %s] not within bounds of the given debug object buffer [%s - %s]" % (
            a, b, c, d,
        )

    return replace(result, stderr=DEBUG_OBJECT_BOUNDS.sub(sub, result.stderr))


def controller_race(case: Case) -> Callable[[RunResult], bool]:
    """A run that shows the LLVM 14/19 controllers' intermittent race (``disconnecting`` /
    ``FD-transport disconnected`` where the case expects no such line) is run again, for the
    reference and ours alike (twice at most, as in test_versions.py)."""
    expected = (case.expect_stderr or "") + "".join(case.expect_stderr_contains)

    def racy(result: RunResult) -> bool:
        text = result.stderr + (result.stdout if case.merge_stderr else b"")
        return any(s.encode() in text and s not in expected for s in LLVM_CONTROLLER_RACE)

    return racy


# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module", autouse=True)
def clean_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """No inherited version/log settings (the profile must come from detection), and no warm
    server: every session is a cold orc-executor process (the warm path is test_warm.py's)."""
    for version in VERSIONS:
        for tool in (llvm_jitlink(version), reference_executor(version)):
            assert tool.is_file(), f"{tool} is missing: run scripts/bootstrap.sh"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("ORC_EXECUTOR_LLVM_VERSION", raising=False)
        mp.delenv("ORC_EXECUTOR_LOG", raising=False)
        sock = tmp_path_factory.mktemp("no-warm-server") / "warm.sock"
        yield {"ORC_EXECUTOR_WARM_SOCKET": str(sock), "ORC_EXECUTOR_COLD": "1"}


# --------------------------------------------------------------------------------------------
# Every case, per version


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("version", VERSIONS)
def test_case_matches_version_reference(
    version: int, case: Case, executor_path: Path, clean_environment: dict[str, str]
) -> None:
    case = case_for(version, case)
    ref, ours = compare_with_reference(
        case, executor_path, version, extra_env=clean_environment,
        retry_if=controller_race(case),
    )
    ref, ours = debug_buffer_relative(ref), debug_buffer_relative(ours)
    # The reference must show the facts (cases.py, or VERSION_FACTS for this version).
    check_expectations(case, ref, f"LLVM {version} reference")
    assert_same_outcome(case, ref, ours)


def test_version_facts_only_change_facts() -> None:
    """Every VERSION_FACTS entry is a real case, run the same way (sources, flags, arguments,
    input), with at least one of its ``expect_*`` facts changed, and gives a reason."""
    for (version, name), (case, reason) in VERSION_FACTS.items():
        base = CASES_BY_NAME[name]
        assert version in VERSIONS and reason, (version, name)
        assert case != base, (version, name)
        for f in fields(Case):
            if not f.name.startswith("expect_"):
                assert getattr(case, f.name) == getattr(base, f.name), (version, name, f.name)


# --------------------------------------------------------------------------------------------
# How the executor process ends, per version


@pytest.mark.parametrize("name", sorted(EXECUTOR_STATUS))
@pytest.mark.parametrize("version", VERSIONS)
def test_executor_process_status(
    version: int, name: str, executor_path: Path, clean_environment: dict[str, str]
) -> None:
    case = case_for(version, CASES_BY_NAME[name])
    ref, ours = compare_with_reference(
        case, executor_path, version, record_status=True, extra_env=clean_environment,
        retry_if=controller_race(case),
    )
    assert ref.executor_status == EXECUTOR_STATUS[name], ref.describe()
    assert ours.executor_status == ref.executor_status, f"{ref.describe()}\n---\n{ours.describe()}"
    assert ours.triple == ref.triple, f"{ref.describe()}\n---\n{ours.describe()}"
    check_expectations(case, ours, "our")


# --------------------------------------------------------------------------------------------
# gdb, per version


@pytest.mark.parametrize("which", ["reference", "ours"])
@pytest.mark.parametrize("version", VERSIONS)
def test_gdb_breakpoint_in_jitted_code(
    version: int, which: str, executor_path: Path, clean_environment: dict[str, str]
) -> None:
    """llvm-jitlink 14 registers the debug object through a looked-up wrapper (the 14 layout),
    19 through the (range, bool) wrapper: either way gdb resolves the pending breakpoint."""
    assert shutil.which("gdb"), "gdb is missing: run scripts/bootstrap.sh"
    executor = reference_executor(version) if which == "reference" else executor_path
    run = gdb_breakpoint_run(CASES_BY_NAME["debug_info"], executor, "jitted_fn",
                             llvm_version=version, extra_env=clean_environment)
    assert_stopped_in_jitted_fn(run)


# --------------------------------------------------------------------------------------------
# Bulk content read straight into the slab, per version


PLACED = re.compile(rb"(\d+) content bytes received straight into the slab")


@pytest.mark.parametrize("version", (*VERSIONS, 22))
def test_bulk_content_is_received_in_place(
    version: int, executor_path: Path, clean_environment: dict[str, str]
) -> None:
    """``bigdata``'s 4 MiB ``.data`` arrives in one initialize (22) / finalize (14, 19) of more
    than 1 MiB: that call is decoded while it arrives and the content read straight into the
    slab (debug log), and the program still sees every byte (its checksum, as the reference)."""
    case = case_for(version, CASES_BY_NAME["bigdata"])
    ref, ours = compare_with_reference(
        case, executor_path, version, extra_env=clean_environment,
        retry_if=controller_race(case),
    )
    assert_same_outcome(case, debug_buffer_relative(ref), debug_buffer_relative(ours))
    debug = run_case(
        case, executor_path, llvm_version=version,
        extra_env={**clean_environment, "ORC_EXECUTOR_LOG": "debug"},
        retry_if=controller_race(case),
    )
    assert (debug.stdout, debug.returncode) == (ref.stdout, ref.returncode), debug.describe()
    placed = [int(n) for n in PLACED.findall(debug.stderr)]
    assert placed and max(placed) >= 4 << 20, debug.describe()
