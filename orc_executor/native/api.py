"""Thin typed access to the compiled cffi module ``orc_executor.native._native``.

Everything that touches raw memory or calls native code goes through here; callers above this
package only see Python ints (ExecutorAddr), bytes and exceptions.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from ..errors import JITFault, MemoryAccessError, NativeCallError
from ._native import ffi, lib

__all__ = [
    "call_wrapper",
    "ffi",
    "lib",
    "mem_read",
    "mem_read_into",
    "mem_write",
    "read_c_string",
]


#: What a guarded run_as_* call returns after a recovered fault (outside int32's range).
_FAULTED = int(lib.ORC_FAULTED)


def _last_fault() -> JITFault:
    """The calling thread's fault that a guarded call just recovered from."""
    f = ffi.new("orc_fault *")
    lib.orc_fault_last(f)
    return JITFault(int(f.signo), int(f.code), int(f.addr))


def run_as_main(fn: int, args: list[bytes], *, guarded: bool = False) -> int:
    """Call ``int fn(int argc, char **argv)`` with ``args`` (no argv[0] added); its result
    sign-extended. ``guarded``: a fault in the call raises :class:`JITFault` instead of
    ending the process (needs :func:`install_fault_handlers`)."""
    argv, _keep = c_argv(args)
    if not guarded:
        return int(lib.orc_run_as_main(fn, len(args), argv))
    r = int(lib.orc_guarded_run_as_main(fn, len(args), argv))
    if r == _FAULTED:
        raise _last_fault()
    return r


def run_as_void_function(fn: int, *, guarded: bool = False) -> int:
    """Call ``int32_t fn(void)``; ``guarded`` as for :func:`run_as_main`."""
    if not guarded:
        return int(lib.orc_run_as_void_function(fn))
    r = int(lib.orc_guarded_run_as_void_function(fn))
    if r == _FAULTED:
        raise _last_fault()
    return r


def run_as_int_function(fn: int, arg: int, *, guarded: bool = False) -> int:
    """Call ``int32_t fn(int32_t)``; ``guarded`` as for :func:`run_as_main`."""
    if not guarded:
        return int(lib.orc_run_as_int_function(fn, arg))
    r = int(lib.orc_guarded_run_as_int_function(fn, arg))
    if r == _FAULTED:
        raise _last_fault()
    return r


def run_void_void(fn: int, *, guarded: bool = False) -> None:
    """Call ``void fn(void)``; ``guarded`` as for :func:`run_as_main`."""
    if not guarded:
        lib.orc_run_void_void(fn)
    elif lib.orc_guarded_run_void_void(fn):
        raise _last_fault()


def install_fault_handlers() -> None:
    """Install the process's SIGSEGV/SIGBUS/SIGFPE/SIGILL/SIGABRT handlers that recover
    guarded calls (once; later calls do nothing). Raises ``OSError`` if that fails."""
    err = lib.orc_fault_install()
    if err:
        raise OSError(err, f"installing fault handlers: {os.strerror(err)}")


def call_wrapper(
    fn: int, args: bytes | bytearray | memoryview, *, guarded: bool = False
) -> bytes:
    """Call ``CWrapperFunctionResult fn(const char *argData, size_t argSize)`` natively.

    Runs on the calling thread with the GIL released. Returns the result bytes (the native
    buffer is freed as the C ABI requires); raises :class:`NativeCallError` for an out-of-band
    error result. ``guarded``: a fault in the call raises :class:`JITFault` instead of
    ending the process (needs :func:`install_fault_handlers`).
    """
    out = ffi.new("orc_cwfr *")
    n = len(args)
    buf = ffi.from_buffer(args) if n else ffi.NULL
    if guarded:
        if lib.orc_guarded_call_wrapper(fn, buf, n, out):
            raise _last_fault()
    else:
        lib.orc_call_wrapper(fn, buf, n, out)
    try:
        if lib.orc_cwfr_is_oob(out):
            raise NativeCallError(ffi.string(out.Data.ValuePtr).decode("utf-8", "replace"))
        size = out.Size
        if size == 0:
            return b""
        return bytes(ffi.buffer(lib.orc_cwfr_data(out), size))
    finally:
        lib.orc_cwfr_dispose(out)


def mem_write(addr: int, data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` at ``addr``; raises :class:`MemoryAccessError` if not mapped writable."""
    n = len(data)
    if not n:
        return
    err = lib.orc_mem_write(addr, ffi.from_buffer(data), n)
    if err:
        raise MemoryAccessError(err, f"cannot write {n} bytes at {addr:#x}: {os.strerror(err)}")


def mem_read(addr: int, size: int) -> bytes:
    """Read ``size`` bytes at ``addr``; raises :class:`MemoryAccessError` if not readable,
    or (``ENOMEM``) if no buffer of ``size`` bytes can be allocated for the copy."""
    if size <= 0:
        return b""
    try:
        buf = ffi.new("char[]", size)
    except (MemoryError, OverflowError):  # OverflowError: beyond size_t / ssize_t
        err = errno.ENOMEM
    else:
        err = lib.orc_mem_read(addr, buf, size)
    if err:
        raise MemoryAccessError(err, f"cannot read {size} bytes at {addr:#x}: {os.strerror(err)}")
    return bytes(ffi.buffer(buf, size))


def mem_readable(addr: int, size: int) -> bool:
    """Whether all ``size`` bytes at ``addr`` can be read (a byte of each page is read
    through the kernel: nothing faults, nothing of the range is copied)."""
    return size <= 0 or lib.orc_mem_readable(addr, size) == 0


def mem_read_into(addr: int, view: memoryview) -> None:
    """Read ``len(view)`` bytes at ``addr`` straight into ``view`` (writable); raises
    :class:`MemoryAccessError` if not readable."""
    n = len(view)
    if not n:
        return
    err = lib.orc_mem_read(addr, ffi.from_buffer("char[]", view, require_writable=True), n)
    if err:
        raise MemoryAccessError(err, f"cannot read {n} bytes at {addr:#x}: {os.strerror(err)}")


def read_c_string(addr: int, max_len: int = 1 << 20) -> bytes:
    """Read the NUL-terminated string at ``addr`` (at most ``max_len`` bytes, NUL excluded)."""
    n = lib.orc_strnlen_safe(addr, max_len)
    if n < 0:
        raise MemoryAccessError(-n, f"cannot read a string at {addr:#x}: {os.strerror(-n)}")
    return mem_read(addr, n)


def c_argv(args: list[bytes]) -> tuple[Any, list[Any]]:
    """A NULL-terminated ``char **argv`` for ``args``; keep the second value alive while used."""
    keep = [ffi.new("char[]", a) for a in args]
    argv = ffi.new("char *[]", [*keep, ffi.NULL])
    return argv, keep
