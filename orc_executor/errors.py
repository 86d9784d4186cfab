"""Every exception orc-executor raises, in one tree (pure: no trio, no cffi).

::

    OrcExecutorError
    ├── FramingError        the byte stream is not a sequence of SimpleRemoteEPC messages
    ├── ProtocolError       the peer broke the SimpleRemoteEPC protocol; the session ends
    ├── SPSError            (also ValueError) bytes or values that do not fit an SPS type
    │   ├── SPSDecodeError
    │   └── SPSEncodeError
    ├── SpecError           (also ValueError) a connection spec or address that cannot be parsed
    ├── WrapperError        a wrapper function call fails; the message goes to the controller
    │   └── MemoryMapError  a reserve / initialize / deinitialize / release that cannot be honoured
    ├── OutOfBandError      a call fails and its result type cannot carry an error
    ├── NativeCallError     a native wrapper function returned an out-of-band error
    │   └── JITFault        JIT'd code raised a fault signal in a guarded call (recovered)
    ├── MemoryAccessError   (also OSError) executor memory at a bad address
    ├── JITDispatchError    an executor → controller call failed out of band
    └── ControllerError     (the package controller) the executor disconnected or sent garbage

Which ones end a session: :class:`FramingError` and :class:`ProtocolError` (with a reason on
stderr and exit status 1). Every other one becomes an error result of the call that raised it.
"""

from __future__ import annotations


class OrcExecutorError(Exception):
    """Base of every orc-executor exception."""


class FramingError(OrcExecutorError):
    """The byte stream is not a valid sequence of SimpleRemoteEPC messages (fatal)."""


class ProtocolError(OrcExecutorError):
    """The peer violated the SimpleRemoteEPC protocol; the session ends."""


class SPSError(OrcExecutorError, ValueError):
    """Bytes or a value that do not fit an SPS type."""


class SPSDecodeError(SPSError):
    """Raised when bytes do not match the SPS signature they are decoded with."""


class SPSEncodeError(SPSError):
    """Raised when a Python value cannot be encoded with an SPS signature."""


class SpecError(OrcExecutorError, ValueError):
    """A connection spec or address that cannot be parsed."""


class WrapperError(OrcExecutorError):
    """Raised by a wrapper function's handler to fail the call: becomes an ``Error`` /
    ``Expected`` failure (LLVM's ``SPSError``) when the signature can carry one, else an
    out-of-band error."""


class MemoryMapError(WrapperError):
    """A memory-map request that cannot be honoured; the message is sent to the controller."""


class OutOfBandError(OrcExecutorError):
    """The call failed and the result type cannot carry an error (C ABI: ``Size == 0`` with a
    message pointer). On the 14–22 wire this is an empty Result payload."""


class NativeCallError(OrcExecutorError):
    """A native wrapper function returned an out-of-band error (``Size == 0 && ValuePtr``)."""


class JITFault(NativeCallError):
    """JIT'd code raised a fault signal (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT) on the
    thread of a guarded call, which was abandoned. ``signo``, ``code`` (``si_code``) and
    ``addr`` (``si_addr``: the bad address for SIGSEGV/SIGBUS, the instruction for
    SIGFPE/SIGILL, 0 for SIGABRT) describe it."""

    def __init__(self, signo: int, code: int, addr: int) -> None:
        self.signo = signo
        self.code = code
        self.addr = addr
        super().__init__(f"JIT'd code raised {describe_fault(signo, code, addr)}; "
                         "the call was abandoned")


#: si_code FPE_INTDIV
_FPE_INTDIV = 1


def describe_fault(signo: int, code: int, addr: int) -> str:
    """``SIGSEGV (invalid memory access at address 0x0)`` and the like."""
    import signal  # (not at import: the Python launcher imports this module at its start)

    try:
        name = signal.Signals(signo).name
    except ValueError:
        name = f"signal {signo}"
    if signo == signal.SIGABRT:
        return f"{name} (abort)"
    what: dict[int, str] = {
        signal.SIGSEGV: "invalid memory access",
        signal.SIGBUS: "bus error",
        signal.SIGFPE: "integer divide by zero" if code == _FPE_INTDIV else "arithmetic error",
        signal.SIGILL: "illegal instruction",
    }
    return f"{name} ({what.get(signo, 'fault')} at address {addr:#x})"


class MemoryAccessError(OrcExecutorError, OSError):
    """Reading or writing executor memory at a bad address (no crash: checked by the kernel).
    ``errno`` is the kernel's error."""


class JITDispatchError(OrcExecutorError):
    """An executor→controller call failed out of band (the message is the error text)."""


class ControllerError(OrcExecutorError):
    """The executor disconnected, sent something invalid, or a call failed."""
