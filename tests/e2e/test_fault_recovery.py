"""Sessions that survive faults in JIT'd code (``--on-fault=recover``, the default under
clang-repl), with the real controllers: clang-repl 22 and llvm-jitlink 22.

A fault (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT) on the thread that runs a call from the
controller fails that call: the executor logs the signal and address, clang-repl reports the
statement as failed, and later statements define and run new code. Faults on threads the
program started, and faults in the executor's own code, still end the process; llvm-jitlink
and lli keep the stock executor's behaviour (``crash``) unless asked otherwise.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e import test_warm
from tests.programs.cases import CASES_BY_NAME
from tests.support.jitrun import compare_with_reference, reference_executor, run_case
from tests.support.replrun import CLANG_REPL, ReplResult, compare_repl, run_repl, show

MODES = [pytest.param(False, id="pipes"), pytest.param(True, id="shared-memory")]

#: A running ``orc-executor serve`` (the warm-start tests' fixture).
warm_server = test_warm.warm_server

#: The statement that failed: clang-repl's message for the call's out-of-band error.
FAILED_CALL = b"error: Error deserializing return value from blob in call\n"


@pytest.fixture(scope="session")
def clang_repl() -> Path:
    if not CLANG_REPL.is_file():
        pytest.fail(f"{CLANG_REPL} not installed (run scripts/bootstrap.sh)")
    return CLANG_REPL


def _faults(r: ReplResult) -> list[str]:
    """The faults the executor reported, in order."""
    return re.findall(r"JIT'd code raised (SIG[A-Z]+ \([^)]*\))", r.stderr.decode())


THREE_CELLS = r"""
#include <cstdio>
#include <cstdlib>
int before = 7;
std::printf("before %d\n", before); std::fflush(stdout);
*(volatile int *)0 = 1;
int zero = 0;
int quotient = 10 / zero;
std::abort();
int after(int x) { return x * before; }
struct Later { int v; Later() : v(after(6)) {} };
Later later;
std::printf("after %d\n", later.v); std::fflush(stdout);
"""


@pytest.mark.parametrize("shared_memory", MODES)
def test_session_survives_null_store_division_by_zero_and_abort(
    clang_repl: Path, executor_path: Path, shared_memory: bool
) -> None:
    """The issue's done criterion: three faulting cells, then new definitions (a function,
    a class with a constructor, a global initialized by it) that run."""
    ref, ours = compare_repl(executor_path, THREE_CELLS, shared_memory=shared_memory)
    assert ours.returncode == 0, show(ours)
    assert ours.stdout == b"before 7\nafter 42\n\n", show(ours)
    assert _faults(ours) == [
        "SIGSEGV (invalid memory access at address 0x0)",
        _faults(ours)[1],
        "SIGABRT (abort)",
    ], show(ours)
    assert re.fullmatch(r"SIGFPE \(integer divide by zero at address 0x[0-9a-f]+\)",
                        _faults(ours)[1])
    assert ours.stderr.count(FAILED_CALL) == 3, show(ours)
    # The stock executor dies at the first fault and takes the session with it.
    assert ref.returncode != 0 and b"after 42" not in ref.stdout, show(ref)


MANY_FAULTS = r"""
#include <cstdio>
#include <stdexcept>
int total = 0;
int rec(int n) { volatile char pad[256]; pad[0] = (char)n; return rec(n + 1) + pad[0]; }
int add(int n) { total += n; return total; }
int a1 = add(1);
int overflow = rec(0);
int a2 = add(2);
std::printf("%s %d\n", (const char *)1, 2);
int a3 = add(3);
throw std::runtime_error("uncaught");
int a4 = add(4);
int *p = nullptr;
int v = *p;
template <typename T> T twice(T x) { return x + x; }
int a5 = add(twice(5));
__builtin_trap();
std::printf("total %d\n", total); std::fflush(stdout);
"""


def test_several_faults_in_a_row(clang_repl: Path, executor_path: Path) -> None:
    """Stack overflow, a bad pointer inside printf, an uncaught exception, a null load and a
    trap, each followed by a statement that defines or runs new code."""
    ours = run_repl(executor_path, MANY_FAULTS)
    assert ours.returncode == 0, show(ours)
    assert ours.stdout == b"total 20\n\n", show(ours)
    kinds = [f.split()[0] for f in _faults(ours)]
    assert kinds == ["SIGSEGV", "SIGSEGV", "SIGABRT", "SIGSEGV", "SIGILL"], show(ours)
    assert b"terminate called after throwing an instance of 'std::runtime_error'" in ours.stderr
    assert ours.stderr.count(FAILED_CALL) == 5, show(ours)


RUNTIME_LOCK_FREE = r"""
#include <cstdio>
#include <thread>
*(volatile int *)0 = 1;
struct D { ~D() { std::printf("D dtor\n"); std::fflush(stdout); } };
void th() { static D d; std::printf("thread static\n"); std::fflush(stdout); }
std::thread t(th); t.join();
std::printf("done\n"); std::fflush(stdout);
"""


def test_orc_runtime_lock_is_free_after_a_fault(clang_repl: Path, executor_path: Path) -> None:
    """The ORC runtime runs a statement's initializers through ``dlupdate`` with its
    JITDylib-state mutex released, so a fault there leaves it free: a thread the program
    starts afterwards registers a destructor (``__cxa_atexit`` takes that mutex) and the
    destructor runs at exit."""
    ours = run_repl(executor_path, RUNTIME_LOCK_FREE, timeout=60)
    assert ours.returncode == 0, show(ours)
    assert ours.stdout == b"thread static\ndone\nD dtor\n\n", show(ours)
    assert [f.split()[0] for f in _faults(ours)] == ["SIGSEGV"]


THREAD_FAULT = r"""
#include <cstdio>
#include <thread>
std::printf("start\n"); std::fflush(stdout);
void crash() { *(volatile int *)0 = 1; }
std::thread t(crash); t.join();
std::printf("not reached\n"); std::fflush(stdout);
"""


def test_fault_on_a_program_thread_ends_the_process(
    clang_repl: Path, executor_path: Path
) -> None:
    """A fault on a thread the JIT'd program started is not recovered: the session ends as
    it ends with the stock executor."""
    ref, ours = compare_repl(executor_path, THREAD_FAULT)
    assert ours == ref, f"reference:\n{show(ref)}\norc-executor:\n{show(ours)}"
    assert ours.returncode != 0 and b"not reached" not in ours.stdout


EXECUTOR_FAULT = r"""
#include <cstddef>
#include <cstdio>
struct cwfr { char *p; size_t size; };
extern "C" char __orc_rt_jit_dispatch_ctx;
extern "C" cwfr __orc_rt_jit_dispatch(void *, const void *, const char *, size_t);
std::printf("start\n"); std::fflush(stdout);
cwfr r = __orc_rt_jit_dispatch(&__orc_rt_jit_dispatch_ctx, (void *)1, (const char *)8, 64);
std::printf("not reached\n"); std::fflush(stdout);
"""


def test_fault_in_the_executors_code_ends_the_process(
    clang_repl: Path, executor_path: Path
) -> None:
    """JIT'd code hands the dispatch function a bad argument buffer: the fault happens in
    the executor's own code (reading it), which is never recovered, even though a
    recovery point is armed for the statement that called it. (The stock executor does not
    fault there: it passes the buffer to write(2), which fails with EFAULT, and the session
    hangs; so no comparison.)"""
    ours = run_repl(executor_path, EXECUTOR_FAULT)
    assert ours.returncode != 0, show(ours)
    assert ours.stdout == b"start\n", show(ours)
    assert b"JIT'd code raised" not in ours.stderr, show(ours)
    assert b"LLVM ERROR: Failed to clean up IncrementalExecutor: disconnecting" in ours.stderr


def test_crash_policy_under_clang_repl(clang_repl: Path, executor_path: Path) -> None:
    """``ORC_EXECUTOR_ON_FAULT=crash``: the first fault ends the session exactly as with the
    stock executor."""
    script = '#include <cstdio>\nstd::printf("x\\n"); std::fflush(stdout);\n' \
             "*(volatile int *)0 = 1;\nint after = 1;\n"
    ref = run_repl(reference_executor(22), script)
    ours = run_repl(executor_path, script, env={"ORC_EXECUTOR_ON_FAULT": "crash"})
    assert ours == ref, f"reference:\n{show(ref)}\norc-executor:\n{show(ours)}"
    assert ours.returncode != 0


@pytest.mark.usefixtures("llvm22_tools")
@pytest.mark.parametrize("name,signo", [("segfault", 11), ("abort", 6)])
def test_llvm_jitlink_keeps_the_reference_behaviour(
    executor_path: Path, name: str, signo: int
) -> None:
    """Under llvm-jitlink the default is ``crash``: a faulting program ends the executor by
    the same signal, with the same output and status, as the stock executor."""
    ref, ours = compare_with_reference(CASES_BY_NAME[name], executor_path, record_status=True)
    assert (ours.stdout, ours.stderr, ours.returncode) == (ref.stdout, ref.stderr,
                                                            ref.returncode)
    assert ours.executor_status == ref.executor_status == f"signal {signo}"


@pytest.mark.usefixtures("llvm22_tools")
def test_llvm_jitlink_with_recover(executor_path: Path) -> None:
    """``ORC_EXECUTOR_ON_FAULT=recover`` under llvm-jitlink: ``run_as_main`` fails with the
    fault named, and the executor ends normally when llvm-jitlink hangs up."""
    r = run_case(CASES_BY_NAME["segfault"], executor_path, record_status=True,
                 extra_env={"ORC_EXECUTOR_ON_FAULT": "recover"})
    assert r.stdout == b"before segv: z\n"
    assert (b"__llvm_orc_bootstrap_run_as_main_wrapper: JIT'd code raised SIGSEGV "
            b"(invalid memory access at address 0x0); the call was abandoned\n") in r.stderr
    assert r.returncode == 1
    assert r.executor_status == "exit 0"


def test_warm_session_recovers(clang_repl: Path, executor_path: Path,
                               warm_server: dict[str, str]) -> None:
    """A session handed to a warm process (``orc-executor serve``) detects clang-repl from
    the launcher's parent and recovers the same way."""
    ours = run_repl(executor_path, THREE_CELLS, env=warm_server)
    assert ours.returncode == 0, show(ours)
    assert ours.stdout == b"before 7\nafter 42\n\n", show(ours)
    assert [f.split()[0] for f in _faults(ours)] == ["SIGSEGV", "SIGFPE", "SIGABRT"]
