"""The Setup message: what an executor announces before anything else
(``SimpleRemoteEPCExecutorInfo``: triple, page size, bootstrap map, bootstrap symbols; LLVM 14's
layout has no bootstrap map). Encoded by the executor, decoded by the controller.

Pure: imports only the SPS types (no trio, no cffi).
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

from ..errors import ControllerError, SPSDecodeError
from .orc_types import SPSSetupMessage, SPSSetupMessage14
from .sps import Addr, Bytes, MapOf, String, TupleOf, UInt64

_SYMBOL = TupleOf(String, Addr, name="BootstrapSymbol")
_BOOTSTRAP_MAP = MapOf(String, Bytes)
_U64 = struct.Struct("<Q")


@functools.lru_cache(maxsize=4096)
def _symbol_entry(name: str, addr: int) -> bytes:
    """One bootstrap symbol as it appears in Setup's map (an executor announces the same
    names at the same addresses session after session: encoded once)."""
    return _SYMBOL.encode((name, addr))


@dataclass
class SetupInfo:
    """What the executor announces in Setup (``SimpleRemoteEPCExecutorInfo``): the target
    triple, the page size in bytes, the bootstrap map (name → bytes; always empty in the 14
    layout), the bootstrap symbols (name → ExecutorAddr), and whether the LLVM 14 layout is
    used."""

    triple: str
    page_size: int
    bootstrap_map: dict[str, bytes]
    symbols: dict[str, int]
    layout14: bool = False

    def encode(self) -> bytes:
        """The Setup payload (:data:`SPSSetupMessage`, or :data:`SPSSetupMessage14` for the 14
        layout)."""
        # The layout of SPSSetupMessage(14): the tuple's fields back to back, the symbols a
        # count and then (name, address) tuples.
        head = String.encode(self.triple) + UInt64.encode(self.page_size)
        if not self.layout14:
            head += _BOOTSTRAP_MAP.encode(self.bootstrap_map)
        return b"".join((head, _U64.pack(len(self.symbols)),
                         *(_symbol_entry(n, a) for n, a in self.symbols.items())))


def decode_setup(payload: bytes | bytearray | memoryview) -> SetupInfo:
    """Decode a Setup payload (LLVM 15+ layout, falling back to 14's). Raises
    :class:`~orc_executor.errors.ControllerError` if neither fits."""
    try:
        triple, page, bmap, syms = SPSSetupMessage.decode(payload)
        return SetupInfo(triple, page, bmap, syms)
    except SPSDecodeError:
        pass
    try:
        triple, page, syms = SPSSetupMessage14.decode(payload)
        return SetupInfo(triple, page, {}, syms, layout14=True)
    except SPSDecodeError as e:
        raise ControllerError(f"Could not deserialize setup message: {e}") from e
