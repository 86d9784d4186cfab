"""Fixtures for the end-to-end tests (``jitrun.py`` harness).

``executor_path`` is orc-executor's console script next to the running Python (the venv's
``bin/orc-executor``); ``ORC_TEST_EXECUTOR=/path/to/executor`` overrides it, e.g. to check the
harness itself against the stock executor::

    ORC_TEST_EXECUTOR=/usr/lib/llvm-22/bin/llvm-jitlink-executor pytest tests/e2e/test_programs.py
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # ``tests.programs.cases`` / ``tests.support.jitrun`` imports
    sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def executor_path() -> Path:
    """The executor under test."""
    override = os.environ.get("ORC_TEST_EXECUTOR")
    path = Path(override) if override else Path(sys.executable).parent / "orc-executor"
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"executor under test not found or not executable: {path}")
    return path


@pytest.fixture(scope="session")
def llvm22_tools() -> None:
    """Fail when LLVM 22's llvm-jitlink / llvm-jitlink-executor or gcc are missing (a
    missing dependency must not pass as skipped tests: scripts/bootstrap.sh installs them)."""
    from tests.support import jitrun

    for tool in (jitrun.llvm_jitlink(22), jitrun.reference_executor(22)):
        if not tool.is_file():
            pytest.fail(f"{tool} not installed (run scripts/bootstrap.sh)")
    if shutil.which(jitrun.CC) is None:
        pytest.fail(f"{jitrun.CC} not installed (run scripts/bootstrap.sh)")


@pytest.fixture(scope="session")
def orc_rt_archive() -> Path:
    """LLVM 22's ORC runtime archive (fetched by scripts/fetch-orc-runtime.sh; its absence
    fails the test: scripts/bootstrap.sh installs it)."""
    from tests.support import jitrun

    return jitrun.orc_runtime()


@pytest.fixture(scope="session")
def orc_runtime(orc_rt_archive: Path) -> Path:
    """The same archive, under the name the ORC runtime tests use."""
    return orc_rt_archive
