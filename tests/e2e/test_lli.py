"""Issue 3: ``lli --jit-kind=mcjit --remote-mcjit --mcjit-remote-process=orc-executor f.ll``.

lli launches the executor as ``PATH IN OUT`` (two pipe fds). Every IR file in
tests/programs/ll runs with the stock ``lli-child-target`` and with the executor under test
(conftest's ``executor_path``, orc-executor by default); stdout,
stderr and exit code must be equal, and equal to what is written down here.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROGRAMS = REPO / "tests" / "programs" / "ll"
LLVM = Path("/usr/lib/llvm-22/bin")
LLI = LLVM / "lli"
REFERENCE = LLVM / "lli-child-target"
# lli's own warning for every remote-MCJIT run (followed by an empty line).
LLI_WARNING = f"{LLI}: warning: remote mcjit does not support lazy compilation\n\n"


@dataclass(frozen=True)
class Run:
    stdout: str
    stderr: str
    returncode: int


def lli(executor: Path, ll: Path, args: list[str], timeout: float = 120) -> Run:
    p = subprocess.run(
        [str(LLI), "--jit-kind=mcjit", "--remote-mcjit", f"--mcjit-remote-process={executor}",
         str(ll), *args],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )
    return Run(p.stdout, p.stderr, p.returncode)


CASES = {
    "hello": ([], Run("hello lli 10!\n", LLI_WARNING, 7)),
    # Program arguments are not forwarded to the remote main.
    "args": (["a", "b"], Run("argc=0\n", LLI_WARNING, 0)),
    # lli does not run llvm.global_ctors/dtors for a remote target.
    "ctors": ([], Run("main 0\n", LLI_WARNING, 0)),
    "compute": ([], Run(
        "remote mcjit banner\nfib(10)=55\nop[0](6, 3)=9\nop[1](6, 3)=3\nop[2](6, 3)=18\n"
        "bss sum=5559680\nheap byte=90\n", LLI_WARNING, 74)),
    # A C++ exception through JIT'd frames: EH frames registered in the executor.
    "eh": ([], Run("caught 41\nafter: 42\n", LLI_WARNING, 42)),
}


def test_every_ll_file_has_a_case() -> None:
    assert sorted(p.stem for p in PROGRAMS.glob("*.ll")) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_remote_mcjit_matches_lli_child_target(executor_path: Path, name: str) -> None:
    args, expected = CASES[name]
    ll = PROGRAMS / f"{name}.ll"
    reference = lli(REFERENCE, ll, args)
    assert reference == expected, "lli-child-target's behaviour changed"
    assert lli(executor_path, ll, args) == reference
