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


class MemoryAccessError(OrcExecutorError, OSError):
    """Reading or writing executor memory at a bad address (no crash: checked by the kernel).
    ``errno`` is the kernel's error."""


class JITDispatchError(OrcExecutorError):
    """An executor→controller call failed out of band (the message is the error text)."""


class ControllerError(OrcExecutorError):
    """The executor disconnected, sent something invalid, or a call failed."""
