"""Bootstrap symbol sets (profiles) and the Setup message.

A *profile* decides which services and names an executor advertises and the Setup layout:

* ``modern``: LLVM 19 + 22 + upstream ``orc_rt_ci_*`` names, each with its own layout, with the
  15+ Setup layout (``SimpleRemoteEPCExecutorInfo``: triple, page size, bootstrap map,
  bootstrap symbols). 19/22 controllers ignore names they do not know.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass

from ..memmap.native import lib
from ..sps.orc import SPSSetupMessage, SPSSetupMessage14
from .context import ExecutorContext
from .registry import Registry
from .services.dylib_manager import DylibManagerService
from .services.eh_frame import EHFrameService
from .services.gdb_jit import GDBJITService
from .services.memory_access import MemoryAccessService
from .services.memory_manager import MemoryManagerService
from .services.run import RunService
from .services.shared_memory import SharedMemoryMapperService

TRIPLE = "x86_64-pc-linux-gnu"
DISPATCH_CTX = "__llvm_orc_SimpleRemoteEPC_dispatch_ctx"
DISPATCH_FN = "__llvm_orc_SimpleRemoteEPC_dispatch_fn"

PROFILES = ("modern",)


@dataclass
class SetupInfo:
    """What the executor announces in Setup (``SimpleRemoteEPCExecutorInfo``)."""

    triple: str
    page_size: int
    bootstrap_map: dict[str, bytes]
    symbols: dict[str, int]
    layout14: bool = False

    def encode(self) -> bytes:
        if self.layout14:
            return SPSSetupMessage14.encode((self.triple, self.page_size, self.symbols))
        return SPSSetupMessage.encode(
            (self.triple, self.page_size, self.bootstrap_map, self.symbols)
        )


def select_profile(requested: str | None, *, is_socket: bool = False) -> str:
    """The profile for a requested LLVM version (``None``: detect, else ``modern``)."""
    if requested is None:
        return "modern"
    if requested in PROFILES:
        return requested
    raise ValueError(f"unsupported LLVM version {requested!r} (choose from {', '.join(PROFILES)})")


def build_context(profile: str = "modern", *, shared_memory: bool = True) -> ExecutorContext:
    """A fresh :class:`ExecutorContext` with the services and names of ``profile``."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r} (choose from {', '.join(PROFILES)})")
    ctx = ExecutorContext(Registry())
    reg = ctx.registry
    reg.add_symbol(DISPATCH_CTX, int(lib.orc_dispatch_ctx_addr()))
    reg.add_symbol(DISPATCH_FN, int(lib.orc_dispatch_fn_addr()))
    reg.add_service(MemoryManagerService(ctx))
    reg.add_service(DylibManagerService(ctx))
    reg.add_service(MemoryAccessService())
    reg.add_service(RunService(ctx))
    reg.add_service(EHFrameService(ctx))
    reg.add_service(GDBJITService(ctx))
    if shared_memory:
        reg.add_service(SharedMemoryMapperService(ctx))
    return ctx


def setup_info(ctx: ExecutorContext) -> SetupInfo:
    """The Setup payload for ``ctx``'s registry."""
    return SetupInfo(TRIPLE, mmap.PAGESIZE, {}, ctx.registry.symbols())
