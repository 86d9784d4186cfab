"""Busy polling (``--busy-poll USEC`` / ``$ORC_EXECUTOR_BUSY_POLL``): after a Result, the
session's reader polls without sleeping for that long before it sleeps waiting for the next
call. Seen from outside as the executor's CPU time while the controller is silent: the
setting must reach the session through the CLI and through the launch path that LLVM's tools
use (environment only), and ``0`` must turn it off."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from orc_executor.controller import Controller
from orc_executor.executor import session as session_mod
from orc_executor.protocol.sps import UInt8
from tests.support.harness import BOOT, _clean_env, mem_write_sig, proc_stat

WRITE8 = mem_write_sig(UInt8)
WRITE8_NAME = BOOT + "mem_write_uint8s_wrapper"


@asynccontextmanager
async def launched(argv: list[str], env: dict[str, str]) -> AsyncIterator[Controller]:
    with open(os.devnull, "wb") as null:
        ctl = await Controller.launch(argv, env=env, stdout=null.fileno())
        async with ctl:
            yield ctl
        assert ctl.process is not None
        with trio.fail_after(10):
            assert await ctl.process.wait() == 0


async def cpu_while_silent(ctl: Controller) -> float:
    """Executor CPU seconds in the 0.5 s after one no-op call."""
    await ctl.call(WRITE8_NAME, WRITE8, [])
    assert ctl.process is not None
    before = proc_stat(ctl.process.pid)[1]
    await trio.sleep(0.5)
    return proc_stat(ctl.process.pid)[1] - before


@pytest.mark.parametrize(("via", "usec", "spins"), [
    ("cli", "300000", True),
    ("cli", "0", False),
    ("env", "300000", True),
    ("env", "0", False),
])
async def test_busy_poll_setting_reaches_the_session(via: str, usec: str, spins: bool) -> None:
    env = _clean_env()
    if via == "cli":
        argv = [sys.executable, "-m", "orc_executor", "--busy-poll", usec]
    else:  # the launch path of `orc-executor filedescs=IN,OUT`: no CLI parser
        argv = [sys.executable, "-m", "orc_executor", "--cold"]
        env["ORC_EXECUTOR_BUSY_POLL"] = usec
    async with launched(argv, env) as ctl:
        cpu = await cpu_while_silent(ctl)
    if spins:
        assert cpu >= 0.15, f"{cpu:.3f} s of CPU: the 0.3 s busy poll did not run"
    else:
        assert cpu < 0.1, f"{cpu:.3f} s of CPU while the controller was silent"


def test_default_busy_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORC_EXECUTOR_BUSY_POLL", raising=False)
    monkeypatch.setattr(session_mod.os, "sched_getaffinity", lambda _pid: {0, 1})
    assert session_mod.default_busy_poll() == session_mod.BUSY_POLL
    # One usable CPU: polling would take the CPU the controller needs.
    monkeypatch.setattr(session_mod.os, "sched_getaffinity", lambda _pid: {0})
    assert session_mod.default_busy_poll() == 0.0
    monkeypatch.setenv("ORC_EXECUTOR_BUSY_POLL", "50")
    assert session_mod.default_busy_poll() == pytest.approx(50e-6)
    monkeypatch.setenv("ORC_EXECUTOR_BUSY_POLL", "0")
    assert session_mod.default_busy_poll() == 0.0


@pytest.mark.parametrize("value", ["fast", "-3", "inf", "nan", "1000001"])
def test_default_busy_poll_ignores_a_bad_setting(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, value: str
) -> None:
    """Not a number of microseconds from 0 to 1 s: a warning, and the default (an endless
    spin from ``inf`` would burn a CPU for the whole session)."""
    monkeypatch.setattr(session_mod.os, "sched_getaffinity", lambda _pid: {0, 1})
    monkeypatch.setenv("ORC_EXECUTOR_BUSY_POLL", value)
    assert session_mod.default_busy_poll() == session_mod.BUSY_POLL
    assert f"ORC_EXECUTOR_BUSY_POLL={value!r} is not a number" in caplog.text


@pytest.mark.parametrize("value", ["-1", "inf", "2000000"])
async def test_cli_refuses_a_bad_busy_poll(value: str) -> None:
    proc = await trio.run_process(
        [sys.executable, "-m", "orc_executor", "--busy-poll", value, "filedescs=0,1"],
        capture_stdout=True, capture_stderr=True, check=False, env=_clean_env(),
    )
    assert proc.returncode == 2  # click's usage error
    assert b"--busy-poll" in proc.stderr
    assert proc.stdout == b""
