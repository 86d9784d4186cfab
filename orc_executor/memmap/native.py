"""Thin typed access to the compiled cffi module ``orc_executor.memmap._native``.

Everything that touches raw memory or calls native code goes through here; callers above this
package only see Python ints (ExecutorAddr), bytes and exceptions.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from ..errors import MemoryAccessError, NativeCallError
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


def call_wrapper(fn: int, args: bytes | bytearray | memoryview) -> bytes:
    """Call ``CWrapperFunctionResult fn(const char *argData, size_t argSize)`` natively.

    Runs on the calling thread with the GIL released. Returns the result bytes (the native
    buffer is freed as the C ABI requires); raises :class:`NativeCallError` for an out-of-band
    error result.
    """
    out = ffi.new("orc_cwfr *")
    n = len(args)
    if n:
        buf = ffi.from_buffer(args)
        lib.orc_call_wrapper(fn, buf, n, out)
    else:
        lib.orc_call_wrapper(fn, ffi.NULL, 0, out)
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
