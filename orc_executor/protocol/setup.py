"""The Setup message: what an executor announces before anything else
(``SimpleRemoteEPCExecutorInfo``: triple, page size, bootstrap map, bootstrap symbols; LLVM 14's
layout has no bootstrap map). Encoded by the executor, decoded by the controller.

Pure: imports only the SPS types (no trio, no cffi).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ControllerError, SPSDecodeError
from .orc_types import SPSSetupMessage, SPSSetupMessage14


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
        if self.layout14:
            return SPSSetupMessage14.encode((self.triple, self.page_size, self.symbols))
        return SPSSetupMessage.encode(
            (self.triple, self.page_size, self.bootstrap_map, self.symbols)
        )


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
