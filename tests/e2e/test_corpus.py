"""Real third-party programs (Lua 5.4, the SQLite shell, zstd, GNU bc and dc: Debian's
sources built by ``scripts/corpus.sh`` into ``.corpus/``) run by llvm-jitlink 22 give the
same outcome with orc-executor, cold and warm (an ``orc-executor serve`` running), as with
``llvm-jitlink-executor`` 22: exit status, stdout, stderr and every file left in the working
directory (content and mode), each run in a fresh working directory.

The cases are ``tests.support.corpus.CASES``: scripts computing, processing text, writing,
renaming and removing files by relative paths, a runtime error, ``exit()`` called by the
program, SQL building a database file and writing a CSV with ``.output``, zstd compressing
(two threads) and decompressing files and a pipe, arbitrary-precision arithmetic."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_warm_handover import Server
from tests.support import corpus

LLVM22 = Path("/usr/lib/llvm-22/bin")
EXE = str(Path(sys.executable).parent / "orc-executor")
REF = str(LLVM22 / "llvm-jitlink-executor")


@pytest.fixture(scope="module")
def built(llvm22_tools: None) -> Path:
    """The corpus directory; its absence fails (scripts/bootstrap.sh builds it)."""
    absent = corpus.missing()
    if absent:
        pytest.fail(f"corpus not built in {corpus.CORPUS} (missing {', '.join(absent)}): "
                    "run scripts/bootstrap.sh, or scripts/corpus.sh .corpus")
    return corpus.CORPUS


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("corpussock"))
    yield s
    s.stop()


def _env(server: Server, warm: bool) -> dict[str, str]:
    """Warm: the test's server; cold: a socket nobody listens on (no server, none started)."""
    sock = str(server.sock) if warm else str(server.sock.parent / "nobody.sock")
    return dict(os.environ, ORC_EXECUTOR_WARM_SOCKET=sock, ORC_EXECUTOR_AUTO_SERVE="0")


def _differences(ours: corpus.Outcome, ref: corpus.Outcome) -> list[str]:
    out = []
    for what in ("returncode", "stdout", "stderr"):
        a, b = getattr(ours, what), getattr(ref, what)
        if a != b:
            out.append(f"{what}: {a[:300] if isinstance(a, bytes) else a!r} != reference "
                       f"{b[:300] if isinstance(b, bytes) else b!r}")
    for name in sorted(set(ours.files) | set(ref.files)):
        a2, b2 = ours.files.get(name), ref.files.get(name)
        if a2 is None or b2 is None:
            out.append(f"file {name}: {'missing' if a2 is None else 'extra'}")
        elif a2 != b2:
            out.append(f"file {name}: mode {a2[0]:o}/{b2[0]:o}, {len(a2[1])}/{len(b2[1])} "
                       f"bytes, {'same' if a2[1] == b2[1] else 'different'} content")
    return out


@pytest.mark.parametrize("case", corpus.CASES, ids=lambda c: c.name)
def test_corpus_program_same_as_reference(built: Path, server: Server, tmp_path: Path,
                                          case: corpus.Case) -> None:
    cwds = {mode: tmp_path / mode for mode in ("ref", "cold", "warm")}
    for d in cwds.values():
        d.mkdir()
    ref = corpus.run(case, REF, cwds["ref"], _env(server, False), built)
    # The reference ran the program (a broken build would otherwise compare failures).
    assert ref.stdout or ref.files.keys() - case.files.keys() or ref.stderr, ref
    cold = corpus.run(case, EXE, cwds["cold"], _env(server, False), built)
    server.wait_idle(server.warm)
    idle = set(server.idle_workers())
    warm = corpus.run(case, EXE, cwds["warm"], _env(server, True), built)
    server.wait_idle(server.warm)
    assert set(server.idle_workers()) != idle, "the warm run was not served by the server"
    problems = [f"cold {p}" for p in _differences(cold, ref)]
    problems += [f"warm {p}" for p in _differences(warm, ref)]
    assert not problems, "\n".join(problems)
