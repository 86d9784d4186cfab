"""Fixtures for the cross-architecture tests: one aarch64 build (``scripts/cross.sh``) per
session, shared by every test. A failing build fails the tests (scripts/bootstrap.sh runs
scripts/cross.sh, which installs what it needs)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # ``tests.cross.crossrun`` / ``tests.programs.cases`` imports
    sys.path.insert(0, str(REPO))

from tests.cross.crossrun import LLVM_JITLINK, CrossBuild, cross_build  # noqa: E402


@pytest.fixture(scope="session")
def cross() -> CrossBuild:
    """The aarch64 orc-executor, the arm64 reference executor and ORC runtime."""
    if not LLVM_JITLINK.is_file():
        pytest.fail(f"{LLVM_JITLINK} not installed (run scripts/bootstrap.sh)")
    build = cross_build()
    for tool in (build.ours, build.reference, build.orc_runtime):
        if not tool.exists():
            pytest.fail(f"{tool} missing after scripts/cross.sh")
    for cc in ("aarch64-linux-gnu-gcc", "aarch64-linux-gnu-g++", "qemu-aarch64"):
        if shutil.which(cc) is None:
            pytest.fail(f"{cc} not installed (scripts/cross.sh installs it)")
    return build
