"""``SimpleExecutorDylibManager`` (LLVM 19/22) and orc-rt's ``NativeDylibManager`` names.

* ``open_wrapper``: ``Expected<Addr handle>(Addr inst, String path, u64 mode)``; empty path
  is the executor process itself; libraries are opened ``RTLD_LAZY | RTLD_GLOBAL``.
* ``lookup_wrapper`` (19): ``Expected<Sequence<ExecutorSymbolDef>>(Addr inst, Addr handle,
  RemoteSymbolLookupSet)``.
* ``resolve_wrapper`` (22): ``Expected<Sequence<Optional<ExecutorSymbolDef>>>(Addr handle,
  RemoteSymbolLookupSet)`` — no instance argument.
* ``lookup_wrapper`` (14, instead of the above): ``Expected<Sequence<Addr>>(Addr inst,
  u64 handle, RemoteSymbolLookupSet)``.
* ``orc_rt_ci_sps_NativeDylibManager_lookup``: ``Expected<Sequence<Optional<Addr>>>(Addr inst,
  Addr handle, RemoteSymbolLookupSet)``.

Handles are opaque tokens (one space for all three lookups). The executor's own helper names
(``llvm_orc_registerEHFrameSectionWrapper`` …) are answered from the registry before ``dlsym``,
because a Python process does not export them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from ...errors import WrapperError
from ...native.api import ffi, lib
from ...protocol.names import (
    CI_LOOKUP,
    LOOKUP14,
    LOOKUP19,
    OPEN,
    RESOLVE22,
    NativeDylibManager,
    SimpleExecutorDylibManager,
)
from ...protocol.orc_types import (
    FLAG_EXPORTED,
    ExecutorSymbolDef,
    JITSymbolFlags,
    SPSJITSymbolFlags,
)
from ..context import ExecutorContext
from ..registry import Service, WrapperSpec

EXPORTED = JITSymbolFlags(FLAG_EXPORTED, 0)
#: EXPORTED as SPS encodes it (orc_resolve22 writes these two bytes after an address).
_EXPORTED_BYTES = SPSJITSymbolFlags.encode(EXPORTED)

#: Libraries the stock executors (C++ programs) have in their global scope. A Python process
#: lacks them, yet JIT'd code resolves through the process handle: the ORC runtime needs
#: libstdc++ even for C programs, and libgcc_s has ``__register_frame`` and ``_Unwind_*``.
PROCESS_LIBRARIES = ("libgcc_s.so.1", "libstdc++.so.6")

_process_libs_once = threading.Lock()
_process_libs_loaded = False


def load_process_libraries() -> None:
    """Load :data:`PROCESS_LIBRARIES` ``RTLD_GLOBAL`` once (missing ones are skipped)."""
    global _process_libs_loaded
    with _process_libs_once:
        if _process_libs_loaded:
            return
        for name in PROCESS_LIBRARIES:
            lib.dlopen(name.encode(), lib.RTLD_NOW | lib.RTLD_GLOBAL)
        _process_libs_loaded = True


class DylibManagerService(Service):
    """Open libraries and resolve symbols in the executor process.

    Lists every name and layout (``lookup_wrapper`` twice: 14's and 19's); the profile
    decides which are registered (:meth:`Registry.add_service`)."""

    service_name = "dylib-manager"

    def __init__(self, ctx: ExecutorContext) -> None:
        self.ctx = ctx
        #: Names answered by lookup/resolve but not advertised in Setup (e.g. the helper names
        #: llvm-jitlink 14 looks up by name), name → executor address.
        self.lookup_only: dict[str, int] = {}
        self._lock = threading.Lock()
        self._handles: dict[int, Any] = {}
        self._next_token = 1
        #: The executor's own names for orc_resolve22 (see _own_names).
        self._own: tuple[tuple[int, int], Any, Any, int, list[Any]] | None = None

    def data_symbols(self) -> Iterable[str]:
        yield SimpleExecutorDylibManager.instance
        yield NativeDylibManager.instance

    def wrappers(self) -> Iterable[WrapperSpec]:
        dm = SimpleExecutorDylibManager
        yield WrapperSpec(dm.open, OPEN, self.open, False)
        yield WrapperSpec(dm.lookup, LOOKUP14, self.lookup14, False)
        yield WrapperSpec(dm.resolve, RESOLVE22, self.resolve22, False,
                          native=self.resolve22_native)
        yield WrapperSpec(dm.lookup, LOOKUP19, self.lookup19_, False)
        yield WrapperSpec(NativeDylibManager.load, OPEN, self.open, False)
        yield WrapperSpec(NativeDylibManager.lookup, CI_LOOKUP, self.ci_lookup, False)

    # ---- open ----------------------------------------------------------------------------

    def open(self, _inst: int, path: str, mode: int) -> int:
        if mode != 0:
            raise WrapperError("open: non-zero mode bits not yet supported")
        return self.open_handle(path)

    def open_handle(self, path: str) -> int:
        """``dlopen`` ``path`` (empty: the process) and return a new opaque handle token."""
        if path:
            h = lib.dlopen(path.encode("utf-8", "surrogateescape"), lib.RTLD_LAZY | lib.RTLD_GLOBAL)
        else:
            load_process_libraries()
            h = lib.dlopen(ffi.NULL, lib.RTLD_LAZY | lib.RTLD_GLOBAL)
        if h == ffi.NULL:
            err = lib.dlerror()
            msg = ffi.string(err).decode("utf-8", "replace") if err != ffi.NULL else path
            raise WrapperError(msg)
        with self._lock:
            token = self._next_token
            self._next_token += 1
            self._handles[token] = h
        return token

    # ---- lookup ----------------------------------------------------------------------------

    def addresses_of(self, handle: int, names: list[str]) -> list[int]:
        """Address of each of ``names`` via ``handle`` (0 where missing): the executor's own
        names from the registry, the others through ``dlsym`` in one native call. Raises
        :class:`WrapperError` for an unknown handle."""
        h = self._handles.get(handle)
        if h is None:
            raise WrapperError(f"No dylib for handle {handle:#x}")
        own, only = self.ctx.registry.addr_of, self.lookup_only
        out: list[int] = []
        wanted: list[int] = []  # indexes of the names dlsym looks up
        for name in names:
            addr = own.get(name)
            if addr is None:
                addr = only.get(name)
            if addr is None:
                addr = 0
                if name:
                    wanted.append(len(out))
            out.append(addr)
        if not wanted:
            return out
        raw = [names[i].encode("utf-8", "surrogateescape") for i in wanted]
        packed = b"\0".join(raw) + b"\0"
        if packed.count(0) != len(raw):  # a NUL inside a name: dlsym sees what precedes it
            for i, encoded in zip(wanted, raw, strict=True):
                out[i] = int(ffi.cast("uintptr_t", lib.dlsym(h, encoded)))
            return out
        found = ffi.new("uint64_t[]", len(raw))
        lib.orc_dlsym_all(h, packed, len(raw), found)
        for i, addr in zip(wanted, ffi.unpack(found, len(raw)), strict=True):
            out[i] = addr
        return out

    def resolve22_native(self, payload: bytes | bytearray | memoryview) -> bytes | None:
        """:meth:`resolve22`'s encoded result for the argument ``payload`` in one native call
        (``orc_resolve22``: the set decoded, the executor's own names and ``dlsym`` looked up
        and the result encoded in C), or ``None`` for the generic path: an unknown handle or
        malformed arguments (its error reports them)."""
        n = len(payload)
        if n < 16:
            return None
        h = self._handles.get(int.from_bytes(payload[:8], "little"))
        if h is None:
            return None
        _, names, addrs, count, _keep = self._own_names()
        cap = 9 + 11 * ((n - 16) // 9)  # each symbol: at least 9 bytes in, at most 11 out
        out = ffi.new("uint8_t[]", cap)
        args = ffi.from_buffer("uint8_t[]", payload)
        got = lib.orc_resolve22(h, args + 8, n - 8, names, addrs, count, _EXPORTED_BYTES,
                                out, cap)
        return bytes(ffi.buffer(out, got)) if got >= 0 else None

    def _own_names(self) -> tuple[tuple[int, int], Any, Any, int, list[Any]]:
        """The names :meth:`addresses_of` answers before ``dlsym`` (the registry's, then
        :attr:`lookup_only`'s), sorted by their bytes as C's ``strcmp`` orders them, with
        their addresses, as native arrays. Built at the first resolve (the names are those
        Setup advertised, fixed by then), again if their number changed."""
        own, only = self.ctx.registry.addr_of, self.lookup_only
        key = (len(own), len(only))
        if self._own is None or self._own[0] != key:
            merged = {**only, **own}  # a registry name wins, as in addresses_of
            encoded = sorted((name.encode("utf-8", "surrogateescape"), addr)
                             for name, addr in merged.items() if name and "\0" not in name)
            keep = [ffi.new("char[]", name) for name, _ in encoded]
            self._own = (key, ffi.new("char *[]", keep),
                         ffi.new("uint64_t[]", [addr for _, addr in encoded]),
                         len(encoded), keep)
        return self._own

    def resolve22(
        self, handle: int, symbols: list[tuple[str, bool]]
    ) -> list[ExecutorSymbolDef | None]:
        addrs = self.addresses_of(handle, [name for name, _ in symbols])
        out: list[ExecutorSymbolDef | None] = []
        for (name, required), addr in zip(symbols, addrs, strict=True):
            if addr:
                out.append(ExecutorSymbolDef(addr, EXPORTED))
            elif required or not name:
                out.append(None)
            else:
                out.append(ExecutorSymbolDef(0, EXPORTED))
        return out

    def lookup19_(
        self, _inst: int, handle: int, symbols: list[tuple[str, bool]]
    ) -> list[ExecutorSymbolDef]:
        addrs = self.addresses_of(handle, [name for name, _ in symbols])
        out: list[ExecutorSymbolDef] = []
        for (name, required), addr in zip(symbols, addrs, strict=True):
            if addr:
                out.append(ExecutorSymbolDef(addr, EXPORTED))
            elif required:
                raise WrapperError(f"Missing definition for {name}")
            else:
                out.append(ExecutorSymbolDef(0, EXPORTED if name else JITSymbolFlags(0, 0)))
        return out

    def lookup14(self, _inst: int, handle: int, symbols: list[tuple[str, bool]]) -> list[int]:
        addrs = self.addresses_of(handle, [name for name, _ in symbols])
        out: list[int] = []
        for (name, required), addr in zip(symbols, addrs, strict=True):
            if not addr and required:
                raise WrapperError(f"Missing definition for {name}")
            out.append(addr)
        return out

    def ci_lookup(
        self, _inst: int, handle: int, symbols: list[tuple[str, bool]]
    ) -> list[int | None]:
        return [addr or None for addr in self.addresses_of(handle, [n for n, _ in symbols])]
