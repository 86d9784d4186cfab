"""Choosing what a fault in JIT'd code does (``--on-fault`` / ``ORC_EXECUTOR_ON_FAULT``, else
from the launching controller), with an injected ``/proc`` (``FakeProc``)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from orc_executor.cli import main
from orc_executor.errors import JITFault, describe_fault
from orc_executor.executor.bootstrap import build_context, find_controller
from orc_executor.executor.fault_policy import (
    apply_fault_policy,
    check_policy,
    select_fault_policy,
)
from orc_executor.native.api import lib
from tests.unit.executor.test_profiles import BASH, JITLINK22, LLI19, PYTHON, FakeProc, _maps

CLANG_REPL22 = ("/usr/lib/llvm-22/bin/clang-repl", _maps("/usr/lib/llvm-22/lib/libLLVM.so.22.1"))
#: A clang-repl built elsewhere, found through its libLLVM.
CLANG_REPL_RENAMED = ("/opt/bin/clang-repl", _maps("/opt/lib/libLLVM.so.22.1"))


@pytest.mark.parametrize(
    ("procs", "policy"),
    [
        ({10: (*CLANG_REPL22, 1)}, "recover"),
        ({10: (*CLANG_REPL_RENAMED, 1)}, "recover"),
        # clang-repl behind a wrapper script and epc-tap.
        ({10: (*PYTHON, 11), 11: (*BASH, 12), 12: (*CLANG_REPL22, 1)}, "recover"),
        ({10: (*JITLINK22, 1)}, "crash"),
        ({10: (*LLI19, 1)}, "crash"),
        # llvm-jitlink run from a clang-repl session: the nearest controller decides.
        ({10: (*JITLINK22, 11), 11: (*CLANG_REPL22, 1)}, "crash"),
        ({10: (*BASH, 1)}, "crash"),
        ({}, "crash"),
    ],
)
def test_default_follows_the_launching_controller(
    procs: dict[int, tuple[str, str | None, int]], policy: str
) -> None:
    assert select_fault_policy(None, proc=FakeProc(procs), start_pid=10) == policy


def test_find_controller_names_clang_repl() -> None:
    controller, why = find_controller(FakeProc({10: (*CLANG_REPL22, 1)}), start_pid=10)
    assert controller is not None and controller.is_clang_repl
    assert (controller.pid, controller.version) == (10, 22)
    assert "pid 10 is LLVM 22" in why


def test_explicit_policy_wins_and_sockets_crash() -> None:
    proc = FakeProc({10: (*CLANG_REPL22, 1)})
    assert select_fault_policy("crash", proc=proc, start_pid=10) == "crash"
    assert select_fault_policy("RECOVER", proc=FakeProc({}), start_pid=10) == "recover"
    assert select_fault_policy(None, is_socket=True, proc=proc, start_pid=10) == "crash"
    with pytest.raises(ValueError, match="unknown fault policy 'sometimes'"):
        check_policy("sometimes")


def test_apply_installs_handlers_only_for_recover() -> None:
    ctx = build_context("modern")
    apply_fault_policy(ctx, "crash")
    assert ctx.recover_faults is False
    apply_fault_policy(ctx, "recover")
    assert ctx.recover_faults is True
    assert lib.orc_fault_is_installed() == 1


def test_cli_rejects_a_bad_policy() -> None:
    r = CliRunner().invoke(main, ["--on-fault", "sometimes", "filedescs=0,1"])
    assert r.exit_code == 2
    assert "Invalid value for '--on-fault'" in r.output


def test_fault_messages() -> None:
    assert describe_fault(11, 1, 0) == "SIGSEGV (invalid memory access at address 0x0)"
    assert describe_fault(8, 1, 0x401000) == (
        "SIGFPE (integer divide by zero at address 0x401000)")
    assert describe_fault(6, -6, 0) == "SIGABRT (abort)"
    assert str(JITFault(7, 2, 0x10)) == (
        "JIT'd code raised SIGBUS (bus error at address 0x10); the call was abandoned")
