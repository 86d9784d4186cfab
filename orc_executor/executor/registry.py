"""Wrapper functions by name: services register their bootstrap symbols here.

Each executor-side wrapper function has a name (the bootstrap symbol the controller looks
up), an SPS :class:`~orc_executor.protocol.sps.WrapperSignature`, a Python handler and a flag saying
whether it may block or run native code (then it runs on a worker thread, never on the event
loop). The registry gives every name a stable, distinct executor address (a byte in a static
array of the native module), so the addresses can appear as CallWrapper tags and as alloc-action
function addresses, exactly like the C++ executor's function pointers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import (
    JITFault,
    NativeCallError,
    OutOfBandError,
    SPSDecodeError,
    SPSEncodeError,
    WrapperError,
)
from ..native.api import lib
from ..protocol.finalize_sink import StreamedArgs
from ..protocol.framing import FramedPayload, PayloadSink
from ..protocol.sps import ErrorValue, WrapperSignature, failable

log = logging.getLogger(__name__)




@dataclass(frozen=True)
class WrapperSpec:
    """One executor-side wrapper function.

    ``handler`` receives the decoded arguments and returns the Python value of ``sig.ret``
    (or raises :class:`WrapperError`). ``blocking`` handlers run on a worker thread, unless
    ``inline_when`` is set and returns True for the decoded arguments of a call: that call
    cannot block (say, an initialize whose alloc actions are all the executor's own
    non-blocking wrappers) and runs on the event loop, without the hop to a thread.
    ``stream``, when set, makes a :class:`~orc_executor.protocol.framing.PayloadSink` that
    decodes a large argument payload (its length in bytes is the parameter) while it arrives;
    the session then calls :meth:`invoke_streamed` with the sink's :class:`StreamedArgs`.
    ``native``, when set, answers a call from its argument payload in one step (the encoded
    result bytes, exactly what decoding, ``handler`` and encoding give) or returns ``None``
    for the generic path (malformed arguments, whose error that path reports).
    """

    name: str
    sig: WrapperSignature
    handler: Callable[..., Any]
    blocking: bool = False
    stream: Callable[[int], PayloadSink] | None = None
    inline_when: Callable[..., bool] | None = None
    native: Callable[[bytes | bytearray | memoryview], bytes | None] | None = None

    def invoke(self, payload: bytes | bytearray | memoryview) -> bytes | FramedPayload:
        """Decode ``payload``, run the handler, encode the result (SPS bytes; a handler may
        return its result already encoded, as a :class:`FramedPayload`).

        Raises :class:`OutOfBandError` when the call fails and ``sig.ret`` cannot carry an
        error in-band.
        """
        if self.native is not None and (done := self.native(payload)) is not None:
            return done
        try:
            args = self.sig.decode_args(payload)
        except SPSDecodeError as e:
            return self._fail(f"{self.name}: could not deserialize arguments: {e}")
        return self._run(args)

    def invoke_if_inline(
        self, payload: bytes | bytearray | memoryview, streamed: StreamedArgs | None = None
    ) -> bytes | FramedPayload | None:
        """As :meth:`invoke` (or :meth:`invoke_streamed`, given ``streamed``) when the call
        may run on the event loop: the wrapper is not ``blocking``, or ``inline_when`` accepts
        the decoded arguments (undecodable ones fail without running anything). ``None``, with
        nothing run, when the call must go to a worker thread."""
        if streamed is not None:
            if self.blocking and streamed.args is not None and not self._inline(streamed.args):
                return None
            return self.invoke_streamed(streamed)
        if not self.blocking:
            return self.invoke(payload)
        if self.inline_when is None:
            return None
        try:
            args = self.sig.decode_args(payload)
        except SPSDecodeError as e:
            return self._fail(f"{self.name}: could not deserialize arguments: {e}")
        return self._run(args) if self._inline(args) else None

    def _inline(self, args: tuple[Any, ...]) -> bool:
        return self.inline_when is not None and bool(self.inline_when(*args))

    def invoke_streamed(self, streamed: StreamedArgs) -> bytes | FramedPayload:
        """As :meth:`invoke`, with arguments a :attr:`stream` sink decoded; releases the
        sink's placements afterwards."""
        try:
            if streamed.error is not None or streamed.args is None:
                return self._fail(
                    f"{self.name}: could not deserialize arguments: {streamed.error}"
                )
            return self._run(streamed.args)
        finally:
            streamed.release()

    def _run(self, args: tuple[Any, ...]) -> bytes | FramedPayload:
        try:
            value = self.handler(*args)
        except WrapperError as e:  # MemoryMapError too
            return self._fail(str(e))
        except JITFault as e:
            return self._fail(str(e))  # the session's log line names the wrapper
        except NativeCallError as e:
            return self._fail(f"{self.name}: {e}")
        except OutOfBandError:
            raise  # the handler's own out-of-band failure (a bad address): not internal
        except Exception as e:
            # One line at the default level; the traceback only when debugging (-vv).
            log.error("wrapper function %s failed: %s: %s", self.name, type(e).__name__, e,
                      exc_info=log.isEnabledFor(logging.DEBUG))
            return self._fail(f"{self.name}: internal error: {type(e).__name__}: {e}")
        if isinstance(value, FramedPayload):
            return value
        try:
            return self.sig.encode_result(value)
        except SPSEncodeError as e:
            log.error("wrapper function %s returned a bad value: %s", self.name, e)
            return self._fail(f"{self.name}: internal error: {e}")
        except MemoryError:
            log.error("wrapper function %s: out of memory encoding its result", self.name)
            return self._fail(f"{self.name}: out of memory encoding the result")

    def _fail(self, message: str) -> bytes:
        if failable(self.sig.ret):
            return self.sig.encode_result(ErrorValue(message))
        raise OutOfBandError(message)


class Service:
    """Base class of executor services (memory manager, dylib manager, ...).

    A service lists its wrapper functions and data symbols (e.g. ``*_Instance``); the
    registry assigns their addresses. :meth:`shutdown` runs at session end.
    """

    #: Name used in logs and in the profile tables.
    service_name = "service"

    def wrappers(self) -> Iterable[WrapperSpec]:
        return ()

    def data_symbols(self) -> Iterable[str]:
        """Names of opaque data symbols (instances) this service advertises."""
        return ()

    def shutdown(self) -> None:
        return None


class Registry:
    """Names → addresses → :class:`WrapperSpec` for the bootstrap symbols of one session."""

    def __init__(self) -> None:
        self._base = int(lib.orc_tag_base())
        self._capacity = int(lib.orc_tag_count())
        self._next = 0
        self.by_addr: dict[int, WrapperSpec] = {}
        self.addr_of: dict[str, int] = {}
        self.services: list[Service] = []

    def _new_addr(self, name: str) -> int:
        if name in self.addr_of:
            return self.addr_of[name]
        if self._next >= self._capacity:
            raise RuntimeError("out of bootstrap symbol addresses")
        addr = self._base + self._next
        self._next += 1
        self.addr_of[name] = addr
        return addr

    def add_symbol(self, name: str, addr: int | None = None) -> int:
        """Advertise a data symbol (or a native function at ``addr``); return its address."""
        if addr is None:
            return self._new_addr(name)
        self.addr_of[name] = addr
        return addr

    def add(self, spec: WrapperSpec) -> int:
        addr = self._new_addr(spec.name)
        self.by_addr[addr] = spec
        return addr

    def add_service(
        self, service: Service, serves: Callable[[str, WrapperSignature | None], bool] | None = None
    ) -> bool:
        """Register ``service``'s data symbols and wrapper functions, in the order it lists
        them: only those for which ``serves(name, signature)`` (``None`` for a data symbol)
        is true, when given. A service with nothing to register is not added. Returns
        whether it was added."""
        data = [n for n in service.data_symbols() if serves is None or serves(n, None)]
        specs = [s for s in service.wrappers() if serves is None or serves(s.name, s.sig)]
        if serves is not None and not data and not specs:
            return False
        self.services.append(service)
        for sym in data:
            self.add_symbol(sym)
        for spec in specs:
            self.add(spec)
        return True

    def alias(self, name: str, target: str) -> None:
        """Advertise ``name`` at the same address as ``target`` (same function, two names).
        Raises :class:`KeyError` if ``target`` is not advertised yet."""
        self.addr_of[name] = self.addr_of[target]

    def lookup(self, addr: int) -> WrapperSpec | None:
        return self.by_addr.get(addr)

    def symbols(self) -> dict[str, int]:
        """The bootstrap symbols map (name → ExecutorAddr) sent in Setup."""
        return dict(self.addr_of)

    def signatures(self) -> dict[str, WrapperSignature]:
        """Name → SPS signature of every advertised wrapper function (aliases included; data
        symbols left out)."""
        return {name: spec.sig for name, addr in self.addr_of.items()
                if (spec := self.by_addr.get(addr)) is not None}

    def shutdown(self) -> None:
        for svc in reversed(self.services):
            try:
                svc.shutdown()
            except Exception:
                log.exception("shutting down %s", svc.service_name)
