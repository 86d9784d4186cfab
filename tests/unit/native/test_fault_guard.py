"""Guarded calls into native code (``orc_executor/native/fault.c``) in this process: a fault
raises :class:`JITFault` naming the signal and address, and the thread (main thread or worker
thread) goes on calling, fault after fault."""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from orc_executor.native import api as native

SOURCE = r"""
#include <signal.h>
#include <stdlib.h>
int ok(void) { return 42; }
int add_one(int x) { return x + 1; }
int segv(void) { return *(volatile int *)16; }
int fpe(void) { volatile int z = 0; return 7 / z; }
int abrt(void) { abort(); }
int ill(void) { __builtin_trap(); }
int recurse(int n) { volatile char pad[512]; pad[0] = (char)n; return recurse(n + 1) + pad[0]; }
int overflow(void) { return recurse(0); }
int main_like(int argc, char **argv) {
    return argc == 2 && argv[1][0] == 'x' ? 5 : *(volatile int *)0;
}
"""


@pytest.fixture(scope="module")
def funcs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    d = tmp_path_factory.mktemp("faults")
    (d / "f.c").write_text(SOURCE)
    so = d / "libf.so"
    subprocess.run(["gcc", "-O0", "-shared", "-fPIC", "-o", str(so), str(d / "f.c")], check=True)
    lib = ctypes.CDLL(str(Path(so)))
    native.install_fault_handlers()
    names = ("ok", "add_one", "segv", "fpe", "abrt", "ill", "overflow", "main_like")
    return {n: ctypes.cast(getattr(lib, n), ctypes.c_void_p).value or 0 for n in names}


def _faults(funcs: dict[str, int]) -> list[tuple[str, int]]:
    out = []
    for name in ("segv", "fpe", "abrt", "ill", "overflow", "segv"):
        with pytest.raises(native.JITFault) as info:
            native.run_as_void_function(funcs[name], guarded=True)
        out.append((name, info.value.signo))
        # The five signals, blocked while the handler ran, are unblocked again.
        assert not FAULT_SIGNALS & signal.pthread_sigmask(signal.SIG_BLOCK, [])
        assert native.run_as_void_function(funcs["ok"], guarded=True) == 42
        assert native.run_as_int_function(funcs["add_one"], 9, guarded=True) == 10
    return out


FAULT_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGABRT}
EXPECTED = [("segv", 11), ("fpe", 8), ("abrt", 6), ("ill", 4), ("overflow", 11), ("segv", 11)]


def test_faults_in_a_row_on_the_main_thread(funcs: dict[str, int]) -> None:
    assert _faults(funcs) == EXPECTED


def test_faults_in_a_row_on_a_worker_thread(funcs: dict[str, int]) -> None:
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(_faults(funcs)))
    t.start()
    t.join()
    assert result == [EXPECTED]


def test_fault_details(funcs: dict[str, int]) -> None:
    with pytest.raises(native.JITFault) as info:
        native.run_as_void_function(funcs["segv"], guarded=True)
    assert (info.value.signo, info.value.addr) == (11, 16)
    assert "SIGSEGV (invalid memory access at address 0x10)" in str(info.value)
    with pytest.raises(native.JITFault) as info:
        native.run_as_void_function(funcs["fpe"], guarded=True)
    assert info.value.code == 1  # FPE_INTDIV; addr: the faulting instruction
    assert info.value.addr != 0


def test_run_as_main_and_void_void(funcs: dict[str, int]) -> None:
    assert native.run_as_main(funcs["main_like"], [b"prog", b"x"], guarded=True) == 5
    with pytest.raises(native.JITFault):
        native.run_as_main(funcs["main_like"], [b"prog"], guarded=True)
    with pytest.raises(native.JITFault):
        native.run_void_void(funcs["abrt"], guarded=True)
    native.run_void_void(funcs["ok"], guarded=True)


CHILD = r"""
import ctypes, sys
from orc_executor.native import api as native
libc = ctypes.CDLL(None)
native.install_fault_handlers()
sleep = ctypes.cast(libc.sleep, ctypes.c_void_p).value
print("armed", flush=True)
native.run_as_int_function(sleep, 30, guarded=True)
print("not reached", flush=True)
"""


@pytest.mark.parametrize("signo", [11, 6])
def test_signal_sent_by_another_process_is_not_recovered(signo: int) -> None:
    """kill(2) of SIGSEGV / SIGABRT while a guarded call runs is not a fault of that call:
    the process ends by the signal, as it would without the handlers."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"armed\n"
    time.sleep(0.2)  # inside sleep(30)
    proc.send_signal(signo)
    assert proc.wait(timeout=20) == -signo
    assert proc.stdout.read() == b""
