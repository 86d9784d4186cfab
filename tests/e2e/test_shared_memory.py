"""The shared-memory mapper end to end: ``llvm-jitlink -use-memmgr=shared`` (LLVM 22) writes
code through its own mapping of our POSIX shared-memory reservation; only addresses, sizes
and protections travel over the protocol."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.jitrun import compile_c

LLVM22 = Path("/usr/lib/llvm-22/bin")
EXE = str(Path(sys.executable).parent / "orc-executor")
REF = str(LLVM22 / "llvm-jitlink-executor")

PROG = r"""
#include <stdio.h>
#include <string.h>
static char big[3 << 20] = {1};
int main(int argc, char **argv) {
    unsigned long sum = 0;
    for (int i = 0; i < argc; i++) sum += strlen(argv[i]);
    memset(big + 1, 2, sizeof big - 1);
    for (size_t i = 0; i < sizeof big; i += 4096) sum += big[i];
    printf("shared argc=%d sum=%lu\n", argc, sum);
    return (int)(sum % 97);
}
"""


@pytest.fixture(scope="module")
def obj(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_c(tmp_path_factory.mktemp("shm"), "s", PROG)


def _run(executor: str, obj: Path, args: list[str]) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, ORC_EXECUTOR_COLD="1")
    cmd = [str(LLVM22 / "llvm-jitlink"), "-use-memmgr=shared", f"-oop-executor={executor}",
           str(obj), "-args", *args]
    return subprocess.run(cmd, capture_output=True, timeout=60, env=env)


@pytest.mark.parametrize("args", [["a"], ["xyz", "pq"]])
def test_shared_memory_matches_reference(obj: Path, args: list[str]) -> None:
    before = set(glob.glob("/dev/shm/jitlink_*"))
    ours = _run(EXE, obj, args)
    ref = _run(REF, obj, args)
    assert (ours.stdout, ours.stderr, ours.returncode) == (ref.stdout, ref.stderr, ref.returncode)
    total = sum(len(a) for a in args) + 1 + 2 * ((3 << 20) // 4096 - 1)
    assert ours.stdout == f"shared argc={len(args)} sum={total}\n".encode()
    assert ours.returncode == total % 97
    assert set(glob.glob("/dev/shm/jitlink_*")) <= before  # nothing left behind
