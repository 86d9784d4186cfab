"""State shared by the services of one session: the memory map, the registry, and how to run
a function by executor address (one of ours, or native code)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from ..errors import NativeCallError, OutOfBandError, SPSDecodeError
from ..native.api import call_wrapper, lib
from ..native.memmap import MemoryMap
from ..protocol.framing import FramedPayload
from ..protocol.orc_types import WrapperFunctionCall
from ..protocol.sps import Error, ErrorValue
from .registry import Registry

log = logging.getLogger(__name__)


class ExecutorContext:
    """Per-session state: :attr:`memmap`, :attr:`registry`, and the address dispatch rules.

    An address is either one of the executor's own wrapper functions (dispatched to Python)
    or native code: inside an executable segment of an initialized JIT region, or inside a
    loaded image (``dladdr``). Anything else is refused instead of jumped to.
    """

    def __init__(self, registry: Registry | None = None, memmap: MemoryMap | None = None) -> None:
        self.registry = registry if registry is not None else Registry()
        self.memmap = memmap if memmap is not None else MemoryMap()
        #: Calls into JIT'd code are guarded: a fault in them fails the call instead of
        #: ending the process (``--on-fault=recover``; the fault handlers must be installed).
        self.recover_faults = False

    def is_native_function(self, addr: int) -> bool:
        """True if ``addr`` may be called as native code (JIT'd text or a loaded image)."""
        if addr == 0:
            return False
        return self.memmap.is_executable(addr) or bool(lib.orc_addr_in_image(addr))

    def cannot_block(self, calls: Iterable[WrapperFunctionCall]) -> bool:
        """True if every call (alloc actions, say) is empty or targets one of the executor's
        own non-blocking wrapper functions, so running them cannot block or run native code."""
        for c in calls:
            if c.fn:
                spec = self.registry.lookup(c.fn)
                if spec is None or spec.blocking:
                    return False
        return True

    def deinitialize_cannot_block(self, keys: Iterable[int]) -> bool:
        """True if deinitializing the regions ``keys`` runs only dealloc actions that cannot
        block (:meth:`cannot_block`)."""
        return self.cannot_block(self.memmap.dealloc_actions(keys))

    def release_cannot_block(self, bases: Iterable[int], max_unmap: int) -> bool:
        """True if releasing the slabs ``bases`` runs only dealloc actions that cannot block
        (:meth:`cannot_block`) and unmaps at most ``max_unmap`` bytes."""
        actions, size = self.memmap.release_cost(bases)
        return size <= max_unmap and self.cannot_block(actions)

    def call(self, fn: int, args: bytes | bytearray | memoryview) -> bytes:
        """Call the wrapper function at ``fn`` with SPS ``args``; return the result bytes.

        Raises :class:`OutOfBandError` for an out-of-band failure, a recovered fault in the
        native code (:attr:`recover_faults`), or an address that is neither ours nor native
        code. Native calls block the calling thread.
        """
        spec = self.registry.lookup(fn)
        if spec is not None:
            result = spec.invoke(args)
            return bytes(result.payload) if isinstance(result, FramedPayload) else result
        if not self.is_native_function(fn):
            raise OutOfBandError(f"{fn:#x} is not a known wrapper function address")
        try:
            return call_wrapper(fn, args, guarded=self.recover_faults)
        except NativeCallError as e:
            raise OutOfBandError(str(e)) from e

    def run_action(self, call: WrapperFunctionCall) -> str | None:
        """Run an alloc action; ``None`` on success, else the error message.

        The result must be an SPS ``Error`` (``shared::WrapperFunctionCall::
        runWithSPSRetErrorMerged``).
        """
        try:
            result = self.call(call.fn, call.args)
        except OutOfBandError as e:
            return str(e)
        try:
            err = Error.decode(result)
        except SPSDecodeError as e:
            return f"alloc action at {call.fn:#x} returned a malformed result: {e}"
        if isinstance(err, ErrorValue):
            return err.message
        return None
