"""Protocol-test harness: a real ``orc-executor`` subprocess (or the stock LLVM 22 executor)
driven by the package's :class:`~orc_executor.controller.Controller`, the names and SPS
signatures of the wrappers under test, and the source of a tiny native test library."""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
import trio

from orc_executor.controller import Controller
from orc_executor.protocol.orc_types import (
    ExecutorAddrRange,
    FinalizeRequest,
    SegFinalizeRequest,
    SPSExecutorAddrRange,
    SPSExecutorSymbolDef,
    SPSFinalizeRequest,
    SPSRemoteSymbolLookupSet,
    SPSSharedMemoryFinalizeRequest,
)
from orc_executor.protocol.sps import (
    Addr,
    Bool,
    Bytes,
    Empty,
    Error,
    ExpectedOf,
    Int32,
    Int64,
    OptionalOf,
    SequenceOf,
    String,
    TupleOf,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    signature,
)

REFERENCE_EXECUTOR = Path("/usr/lib/llvm-22/bin/llvm-jitlink-executor")

# ---- wrapper names and signatures (written from docs/protocol.md §6, not imported from the
# services, so a layout mistake in the package cannot hide itself) -------------------------

MM = "__llvm_orc_SimpleExecutorMemoryManager_"
MM_INSTANCE = MM + "Instance"
MM_RESERVE = MM + "reserve_wrapper"
MM_INITIALIZE = MM + "initialize_wrapper"
MM_DEINITIALIZE = MM + "deinitialize_wrapper"
MM_RELEASE = MM + "release_wrapper"
MM_FINALIZE = MM + "finalize_wrapper"
MM_DEALLOCATE = MM + "deallocate_wrapper"

DYLIB = "__llvm_orc_SimpleExecutorDylibManager_"
DYLIB_INSTANCE = DYLIB + "Instance"
DYLIB_OPEN = DYLIB + "open_wrapper"
DYLIB_RESOLVE = DYLIB + "resolve_wrapper"
DYLIB_LOOKUP = DYLIB + "lookup_wrapper"

SHM = "__llvm_orc_ExecutorSharedMemoryMapperService_"
BOOT = "__llvm_orc_bootstrap_"
RUN_AS_MAIN = BOOT + "run_as_main_wrapper"
RUN_AS_VOID = BOOT + "run_as_void_function_wrapper"
RUN_AS_INT = BOOT + "run_as_int_function_wrapper"

RESERVE_SIG = signature(ExpectedOf(Addr), Addr, UInt64)
INITIALIZE_SIG = signature(ExpectedOf(Addr), Addr, SPSFinalizeRequest)
FINALIZE_SIG = signature(Error, Addr, SPSFinalizeRequest)
RELEASE_SIG = signature(Error, Addr, SequenceOf(Addr))
OPEN_SIG = signature(ExpectedOf(Addr), Addr, String, UInt64)
RESOLVE_SIG = signature(
    ExpectedOf(SequenceOf(OptionalOf(SPSExecutorSymbolDef))), Addr, SPSRemoteSymbolLookupSet
)
LOOKUP19_SIG = signature(
    ExpectedOf(SequenceOf(SPSExecutorSymbolDef)), Addr, Addr, SPSRemoteSymbolLookupSet
)
RUN_AS_MAIN_SIG = signature(Int64, Addr, SequenceOf(String))
RUN_AS_VOID_SIG = signature(Int32, Addr)
RUN_AS_INT_SIG = signature(Int32, Addr, Int32)
SHM_RESERVE_SIG = signature(ExpectedOf(TupleOf(Addr, String)), Addr, UInt64)
SHM_INITIALIZE_SIG = signature(ExpectedOf(Addr), Addr, Addr, SPSSharedMemoryFinalizeRequest)
SHM_DEINITIALIZE_SIG = signature(Error, Addr, SequenceOf(Addr))
EH_SIG = signature(Error, SPSExecutorAddrRange)
GDB_SIG = signature(Error, SPSExecutorAddrRange, Bool)

#: (name suffix, element type, byte width) of the integer memory-access wrappers.
MEM_INTS = [
    ("uint8s", UInt8, 1),
    ("uint16s", UInt16, 2),
    ("uint32s", UInt32, 4),
    ("uint64s", UInt64, 8),
    ("pointers", Addr, 8),
]
MEM_WRITE_BUFFERS_SIG = signature(Empty, SequenceOf(TupleOf(Addr, Bytes)))
MEM_READ_BUFFERS_SIG = signature(SequenceOf(Bytes), SequenceOf(SPSExecutorAddrRange))
MEM_READ_STRINGS_SIG = signature(SequenceOf(String), SequenceOf(Addr))


def proc_stat(pid: int) -> tuple[int, float]:
    """``(parent pid, CPU seconds in user and system mode)`` of process ``pid``, from
    ``/proc/PID/stat``. Raises :class:`OSError` if the process is gone."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mem_write_sig(t: Any) -> Any:
    return signature(Empty, SequenceOf(TupleOf(Addr, t)))


def mem_read_sig(t: Any) -> Any:
    return signature(SequenceOf(t), SequenceOf(Addr))


#: Native code the tests load into the executor with dylib open (its path) and then call.
TESTLIB_SOURCE = r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    union { char *ValuePtr; char Value[8]; } Data;
    size_t Size;
} CWFR;

/* run_as_main: copy argv so the test can read it back with mem_read_strings. */
char argv_copy[16][256];
int32_t last_argc = -1;
int32_t argv_null_terminated = 0;

int record_main(int argc, char **argv) {
    last_argc = argc;
    argv_null_terminated = argv[argc] == NULL;
    memset(argv_copy, 0, sizeof argv_copy);
    for (int i = 0; i < argc && i < 16; i++) strncpy(argv_copy[i], argv[i], 255);
    return 100 + argc;
}

int return_minus_one(int argc, char **argv) { (void)argc; (void)argv; return -1; }

int32_t answer(void) { return 42; }

int32_t twice_plus_one(int32_t x) { return (int32_t)((uint32_t)x * 2u + 1u); }

/* memory access targets */
uint8_t scratch[4096];
const char greeting[] = "hello from testlib";
const uint64_t constant_u64 = 0x1122334455667788ull;

/* alloc actions and native wrapper functions: CWrapperFunctionResult fn(data, size) */
char action_log[4096];
uint64_t action_log_len = 0;

static CWFR small_result(const char *bytes, size_t n) {
    CWFR r;
    memset(&r, 0, sizeof r);
    memcpy(r.Data.Value, bytes, n);
    r.Size = n;
    return r;
}

CWFR record_action(const char *data, size_t size) {
    if (action_log_len + size + 1 < sizeof action_log) {
        memcpy(action_log + action_log_len, data, size);
        action_log_len += size;
        action_log[action_log_len++] = ';';
    }
    return small_result("\0", 1); /* SPS Error: success */
}

CWFR failing_action(const char *data, size_t size) {
    static const char msg[] = "failing_action says no";
    uint64_t n = sizeof msg - 1;
    CWFR r;
    (void)data; (void)size;
    r.Size = 1 + 8 + n;
    r.Data.ValuePtr = (char *)malloc(r.Size);
    r.Data.ValuePtr[0] = 1;
    memcpy(r.Data.ValuePtr + 1, &n, 8);
    memcpy(r.Data.ValuePtr + 9, msg, n);
    return r;
}

CWFR oob_action(const char *data, size_t size) {
    CWFR r;
    (void)data; (void)size;
    r.Size = 0;
    r.Data.ValuePtr = strdup("oob_action failed");
    return r;
}

/* An alloc action that takes 0.3 s (as native code may: it must not stall the session). */
CWFR slow_action(const char *data, size_t size) {
    (void)data; (void)size;
    usleep(300000);
    return small_result("\0", 1);
}

CWFR empty_action(const char *data, size_t size) {
    CWFR r;
    (void)data; (void)size;
    memset(&r, 0, sizeof r);
    return r;
}

/* JIT dispatch: call __llvm_orc_SimpleRemoteEPC_dispatch_fn like the ORC runtime does. */
typedef CWFR (*dispatch_fn_t)(void *ctx, const void *tag, const char *data, size_t size);
uint64_t dispatch_fn_addr, dispatch_ctx_addr, dispatch_tag;
char dispatch_result[256];
int64_t dispatch_result_size = -1;

int dispatch_main(int argc, char **argv) {
    dispatch_fn_t fn = (dispatch_fn_t)(uintptr_t)dispatch_fn_addr;
    const char *arg = argc > 0 ? argv[0] : "";
    CWFR r = fn((void *)(uintptr_t)dispatch_ctx_addr, (const void *)(uintptr_t)dispatch_tag,
                arg, strlen(arg));
    memset(dispatch_result, 0, sizeof dispatch_result);
    if (r.Size == 0 && r.Data.ValuePtr) { /* out-of-band error */
        strncpy(dispatch_result, r.Data.ValuePtr, sizeof dispatch_result - 1);
        free(r.Data.ValuePtr);
        dispatch_result_size = -2;
        return -2;
    }
    const char *p = r.Size > 8 ? r.Data.ValuePtr : r.Data.Value;
    memcpy(dispatch_result, p, r.Size < sizeof dispatch_result ? r.Size : sizeof dispatch_result);
    dispatch_result_size = (int64_t)r.Size;
    if (r.Size > 8) free(r.Data.ValuePtr);
    return (int)r.Size;
}

CWFR echo_wrapper(const char *data, size_t size) {
    CWFR r;
    memset(&r, 0, sizeof r);
    r.Size = size;
    if (size <= 8) {
        if (size) memcpy(r.Data.Value, data, size);
    } else {
        r.Data.ValuePtr = (char *)malloc(size);
        memcpy(r.Data.ValuePtr, data, size);
    }
    return r;
}
"""


@dataclass
class Executor:
    """A running executor: the controller connected to it and its process and output files.

    ``stdout`` / ``stderr`` can be read while it runs and after the context exits (the output
    is captured when the files are closed).
    """

    ctl: Controller
    process: trio.Process
    _stdout: IO[bytes]
    _stderr: IO[bytes]
    _captured: tuple[bytes, bytes] | None = None

    @staticmethod
    def _read(f: IO[bytes]) -> bytes:
        f.flush()
        f.seek(0)
        return f.read()

    def capture(self) -> None:
        self._captured = (self._read(self._stdout), self._read(self._stderr))

    @property
    def stdout(self) -> bytes:
        return self._captured[0] if self._captured else self._read(self._stdout)

    @property
    def stderr(self) -> str:
        raw = self._captured[1] if self._captured else self._read(self._stderr)
        return raw.decode("utf-8", "replace")

    async def wait_exit(self, timeout: float = 10) -> int:
        with trio.fail_after(timeout):
            return await self.process.wait()

    async def call(self, name: str, sig: Any, *args: Any) -> Any:
        return await self.ctl.call(name, sig, *args)

    def sym(self, name: str) -> int:
        return self.ctl.symbol(name)


@asynccontextmanager
async def _running(ctl: Controller, out: IO[bytes], err: IO[bytes]) -> AsyncIterator[Executor]:
    proc = ctl.process
    assert proc is not None
    ex = Executor(ctl, proc, out, err)
    try:
        with trio.fail_after(20):
            async with ctl:
                yield ex
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        ex.capture()


def _clean_env() -> dict[str, str]:
    """The test environment without ``ORC_EXECUTOR_*`` settings (log level, LLVM version,
    warm server) that would change what the executor under test does; always cold."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORC_EXECUTOR_")}
    env["ORC_EXECUTOR_COLD"] = "1"
    return env


@asynccontextmanager
async def orc_executor(*extra_args: str) -> AsyncIterator[Executor]:
    """Launch ``python -m orc_executor socket:adopt=FD`` on one end of a socketpair and yield
    a connected controller (Setup already received). On exit the controller closes its end;
    the executor must then exit; the caller checks status and output."""
    ours, theirs = socket.socketpair()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        argv = [
            sys.executable,
            "-m",
            "orc_executor",
            f"socket:adopt={theirs.fileno()}",
            "--idle-close",
            "0",
            *extra_args,
        ]
        proc = await trio.lowlevel.open_process(
            argv, pass_fds=(theirs.fileno(),), stdout=out, stderr=err, env=_clean_env()
        )
        theirs.close()
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        ctl = Controller.over(stream)
        ctl.process = proc
        async with _running(ctl, out, err) as ex:
            yield ex


@asynccontextmanager
async def orc_executor_pipes(*extra_args: str) -> AsyncIterator[Executor]:
    """``python -m orc_executor ... filedescs=IN,OUT`` over two pipes, as LLVM's tools launch
    it (the controller's pipe fast paths: direct writes, reads, poll(2) for Results)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        ctl = await Controller.launch(
            [sys.executable, "-m", "orc_executor", *extra_args],
            env=_clean_env(), stdout=out.fileno(), stderr=err.fileno(),
        )
        async with _running(ctl, out, err) as ex:
            yield ex


@asynccontextmanager
async def reference_executor() -> AsyncIterator[Executor]:
    """The stock ``llvm-jitlink-executor`` 22 over two pipes (``filedescs=IN,OUT``)."""
    if not REFERENCE_EXECUTOR.exists():
        pytest.fail(f"{REFERENCE_EXECUTOR} is not installed (scripts/bootstrap.sh installs it)")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        ctl = await Controller.launch(
            [str(REFERENCE_EXECUTOR)], stdout=out.fileno(), stderr=err.fileno()
        )
        async with _running(ctl, out, err) as ex:
            yield ex


# ---- memory helpers shared by the memory tests -------------------------------------------------

R, RW, RX = 1, 3, 5  # MemProt bits
PAGE = 4096
RET42 = b"\xb8\x2a\x00\x00\x00\xc3"  # mov eax, 42; ret


def seg(prot: int, addr: int, size: int, content: bytes = b"") -> SegFinalizeRequest:
    return SegFinalizeRequest(prot, addr, size, content)


async def reserve(ex: Executor, size: int = PAGE) -> int:
    """Reserve ``size`` bytes (22 memory manager); the slab base."""
    base = await ex.call(MM_RESERVE, RESERVE_SIG, ex.sym(MM_INSTANCE), size)
    assert isinstance(base, int), base
    return int(base)


async def initialize(ex: Executor, *segs: SegFinalizeRequest) -> object:
    """Initialize ``segs`` without actions; the region key, or the ``ErrorValue``."""
    req = FinalizeRequest(list(segs), [])
    return await ex.call(MM_INITIALIZE, INITIALIZE_SIG, ex.sym(MM_INSTANCE), req)


async def read_buffers(ex: Executor, *ranges: tuple[int, int]) -> list[bytes]:
    """The bytes at each ``(address, length)`` (``mem_read_buffers``)."""
    rs = [ExecutorAddrRange(a, a + n) for a, n in ranges]
    result = await ex.call(BOOT + "mem_read_buffers_wrapper", MEM_READ_BUFFERS_SIG, rs)
    return [bytes(b) for b in result]
