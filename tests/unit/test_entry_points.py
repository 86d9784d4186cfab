"""``python -m orc_executor …`` and the ``orc-executor`` command accept the same commands
(issue 22): both enter at :func:`orc_executor.launch.client.main`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXE = str(Path(sys.executable).parent / "orc-executor")


@pytest.mark.parametrize("args", [["serve", "--help"], ["install-launcher", "--help"],
                                  ["--help"], ["--version"]])
def test_module_and_command_accept_the_same_commands(args: list[str]) -> None:
    module = subprocess.run([sys.executable, "-P", "-m", "orc_executor", *args],
                            capture_output=True, timeout=60)
    command = subprocess.run([EXE, *args], capture_output=True, timeout=60)
    assert module.returncode == command.returncode == 0, module.stderr.decode()
    assert module.stdout == command.stdout
    assert module.stdout.startswith(b"Usage: orc-executor") or b"version" in module.stdout


def test_unknown_spec_is_a_usage_error_either_way() -> None:
    module = subprocess.run([sys.executable, "-P", "-m", "orc_executor", "bogus=1"],
                            capture_output=True, timeout=60)
    command = subprocess.run([EXE, "bogus=1"], capture_output=True, timeout=60)
    assert module.returncode == command.returncode == 2
    assert b"bogus=1" in module.stderr and module.stderr == command.stderr


@pytest.mark.parametrize("args", [["serve", "--help"], ["install-launcher", "--help"],
                                  ["--help"], ["--version"]])
def test_the_python_entry_point_accepts_the_same_commands(args: list[str]) -> None:
    """``orc-executor-py`` (the console script, without the native launcher) too."""
    py = str(Path(sys.executable).parent / "orc-executor-py")
    module = subprocess.run([sys.executable, "-P", "-m", "orc_executor", *args],
                            capture_output=True, timeout=60)
    script = subprocess.run([py, *args], capture_output=True, timeout=60)
    assert module.returncode == script.returncode == 0, script.stderr.decode()
    assert module.stdout == script.stdout
