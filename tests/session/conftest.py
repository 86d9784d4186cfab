"""Fixtures for protocol tests (helpers live in ``harness.py``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.harness import TESTLIB_SOURCE


@pytest.fixture(scope="session")
def testlib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of the compiled test library (fails when no C compiler is installed:
    scripts/bootstrap.sh installs gcc)."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.fail("no C compiler to build the native test library (run scripts/bootstrap.sh)")
    d = tmp_path_factory.mktemp("testlib")
    src = d / "testlib.c"
    src.write_text(TESTLIB_SOURCE)
    out = d / "libtestlib.so"
    subprocess.run(
        [cc, "-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o", str(out), str(src)],
        check=True,
    )
    return out
