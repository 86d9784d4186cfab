"""Calls from JIT'd code into the controller: the dispatch function
(``__llvm_orc_SimpleRemoteEPC_dispatch_fn``, C ``orc_dispatch_fn(ctx, tag, data, size)``) and
the table of calls waiting for their Result (LLVM: ``SimpleRemoteEPCServer::doJITDispatch``
and its ``PendingJITDispatchResults``).

The dispatch context (bootstrap symbol ``__llvm_orc_SimpleRemoteEPC_dispatch_ctx``) is an
address that identifies one session's :class:`ControllerCalls`: the C function passes it
back, and :func:`orc_py_dispatch` routes the call to that session only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ..errors import JITDispatchError, ProtocolError
from ..native.api import ffi, lib
from ..protocol.framing import Opcode, encode_header

DISPATCH_UNAVAILABLE = "jit_dispatch not available (EPC server shut down)"
#: The out-of-band error a pending executor→controller call gets when the connection drops
#: (the stock executor's text, ``SimpleRemoteEPCServer::handleDisconnect``).
DISPATCH_DISCONNECTED = "disconnecting"

#: Bytes of the extension's static dispatch-context storage (``orc_dispatch_ctx_token``): one
#: address each for that many sessions open at once in a process; more take heap addresses.
_CTX_SLOTS = 16

#: Open dispatch contexts: address → the session's table. Read without a lock (a dict
#: lookup is atomic); changed under ``_ctx_lock``.
_by_ctx: dict[int, ControllerCalls] = {}
_ctx_lock = threading.Lock()
_next_slot = 0


def open_contexts() -> int:
    """How many dispatch contexts route to a session now."""
    return len(_by_ctx)


class _Waiter:
    __slots__ = ("event", "result")

    def __init__(self) -> None:
        self.event = threading.Event()
        #: The Result payload, or the error to raise if the session went down first.
        self.result: bytes | JITDispatchError = JITDispatchError(DISPATCH_DISCONNECTED)


class ControllerCalls:
    """One session's calls into the controller. ``send(frame)`` sends a CallWrapper frame
    from any thread.

    Accepts calls between :meth:`open` and :meth:`close` only; :meth:`call` raises
    :class:`JITDispatchError` otherwise.
    """

    def __init__(self, send: Callable[[bytes], None]) -> None:
        self._send = send
        self._lock = threading.Lock()
        #: seq → the thread waiting for its Result; ``None`` while no calls are accepted.
        self._pending: dict[int, _Waiter] | None = None
        self._next_seq = 0
        #: The dispatch context address while open, and what keeps a heap one alive.
        self.ctx_addr: int | None = None
        self._ctx_storage: Any = None

    @property
    def pending(self) -> bool:
        """Some call waits for its Result."""
        return bool(self._pending)

    def open(self) -> int:
        """Accept calls; return the dispatch context address that routes the dispatch
        function's calls here (the value of ``__llvm_orc_SimpleRemoteEPC_dispatch_ctx``)."""
        global _next_slot
        with self._lock:
            self._pending = {}
        with _ctx_lock:
            base = int(lib.orc_dispatch_ctx_addr())
            for i in range(_CTX_SLOTS):
                slot = (_next_slot + i) % _CTX_SLOTS
                if base + slot not in _by_ctx:
                    _next_slot = slot + 1  # round robin: a closed slot is reused last
                    addr = base + slot
                    break
            else:
                self._ctx_storage = ffi.new("char[1]")
                addr = int(ffi.cast("uintptr_t", self._ctx_storage))
            _by_ctx[addr] = self
            self.ctx_addr = addr
        return addr

    def close(self) -> None:
        """Refuse further calls; wake every waiting caller with a ``disconnecting`` error.
        The dispatch context routes nowhere from now on."""
        with self._lock:
            pending, self._pending = self._pending, None
        with _ctx_lock:
            if self.ctx_addr is not None and _by_ctx.get(self.ctx_addr) is self:
                del _by_ctx[self.ctx_addr]
        for w in (pending or {}).values():
            w.result = JITDispatchError(DISPATCH_DISCONNECTED)
            w.event.set()

    def call(self, tag: int, data: bytes) -> bytes:
        """Send CallWrapper(tag, data) to the controller and block this thread for the Result.

        Returns the result bytes. Raises :class:`JITDispatchError` if the session is down
        (:data:`DISPATCH_UNAVAILABLE`) or goes down while waiting (:data:`DISPATCH_DISCONNECTED`).
        Must not be called from the trio thread.
        """
        waiter = _Waiter()
        with self._lock:
            pending = self._pending
            if pending is None:
                raise JITDispatchError(DISPATCH_UNAVAILABLE)
            seq = self._next_seq
            self._next_seq += 1
            pending[seq] = waiter
        self._send(encode_header(Opcode.CALL_WRAPPER, seq, tag, len(data)) + data)
        waiter.event.wait()
        if isinstance(waiter.result, JITDispatchError):
            raise waiter.result
        return waiter.result

    def handle_result(self, seq: int, payload: bytes | bytearray | memoryview) -> None:
        """The controller's Result for call ``seq``: wake its caller. Raises
        :class:`ProtocolError` if no call waits for ``seq``."""
        with self._lock:
            waiter = self._pending.pop(seq, None) if self._pending is not None else None
        if waiter is None:
            raise ProtocolError(f"No call for sequence number {seq}")
        waiter.result = bytes(payload)
        waiter.event.set()


@ffi.def_extern(onerror=lambda *exc: None)  # type: ignore[untyped-decorator]
def orc_py_dispatch(ctx: Any, tag: int, data: Any, size: int, out: Any) -> int:
    """Called by ``orc_dispatch_fn`` on the JIT'd thread; fills ``out`` (a
    ``CWrapperFunctionResult``) with a malloc'd copy of the controller's result. ``0``: no
    session has ``ctx`` as its dispatch context."""
    calls = _by_ctx.get(int(ffi.cast("uintptr_t", ctx)))
    if calls is None:
        return 0
    args = bytes(ffi.buffer(data, size)) if size else b""
    try:
        result = calls.call(tag, args)
    except JITDispatchError as e:
        # Out-of-band error: Size 0 and a malloc'd NUL-terminated message.
        msg = str(e).encode("utf-8", "replace") + b"\0"
        p = lib.malloc(len(msg))
        if p == ffi.NULL:
            return 0
        ffi.memmove(p, msg, len(msg))
        out.Size = 0
        out.Data.ValuePtr = ffi.cast("char *", p)
        return 1
    n = len(result)
    out.Size = n
    if n <= 8:
        if n:
            ffi.memmove(out.Data.Value, result, n)
        else:
            out.Data.ValuePtr = ffi.NULL
    else:
        p = lib.malloc(n)
        if p == ffi.NULL:
            out.Size = 0
            return 0
        ffi.memmove(p, result, n)
        out.Data.ValuePtr = ffi.cast("char *", p)
    return 1
