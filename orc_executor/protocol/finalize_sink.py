"""Streaming (incremental) SPS decoding of the bulk-content calls, sans-I/O.

The arguments of ``SimpleExecutorMemoryManager::initialize`` (and of the 14 / 19 ``finalize``,
and orc-rt's ``SimpleNativeMemoryMap`` ``initialize``) are ``SPSTuple<SPSExecutorAddr,
SPSFinalizeRequest>`` — an instance address, then the segments, each with its content as an
``SPSSequence<char>``, then the alloc actions (``Shared/TargetProcessControlTypes.h``; byte
layout in docs/protocol.md §4.4)::

    u64 instance | u64 nsegs | nsegs × (u8 prot | u64 addr | u64 size | u64 n | n bytes)
                 | SPSSequence<SPSAllocActionCallPair> actions

Decoding those arguments from a complete payload buffer means the content crosses memory
twice: pipe → payload buffer → slab. :class:`FinalizeRequestSink` decodes them while they
arrive (it is a :class:`~orc_executor.protocol.framing.PayloadSink`) and asks a ``place``
callback, for each segment, where its content should land; the content is then read straight
into that destination (the slab itself) and reaches memory once.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Generator
from typing import Any, Protocol

from ..errors import SPSDecodeError
from .orc_types import FinalizeRequest, SegFinalizeRequest, SPSAllocActionCallPair
from .sps import SequenceOf

_HEAD = struct.Struct("<QQ")  # instance, segment count
_SEG = struct.Struct("<BQQQ")  # prot, addr, size, content length
_ACTIONS = SequenceOf(SPSAllocActionCallPair)
_DISCARD_CHUNK = 1 << 16
#: Largest buffer (bytes) allocated for content that has not arrived yet; longer content
#: grows in chunks of up to :data:`_GROW_MAX` bytes, each no larger than what arrived before.
_GROW_FROM = 1 << 16
_GROW_MAX = 1 << 22


class Placement(Protocol):
    """Where one segment's content is written: :attr:`view` (writable, exactly the content's
    length in bytes), held until :meth:`release`."""

    @property
    def view(self) -> memoryview: ...

    def release(self) -> None: ...


#: ``(addr, size, length)`` of a segment (executor address, segment size and content length
#: in bytes) → where to write its content, or ``None`` to collect it in an ordinary buffer.
Place = Callable[[int, int, int], "Placement | None"]


class StreamedArgs:
    """The outcome of a streamed decode: :attr:`args` (the decoded argument tuple) or
    :attr:`error`; :meth:`release` gives up the placements once the call is done."""

    __slots__ = ("_placements", "args", "error", "placed")

    def __init__(
        self,
        args: tuple[Any, ...] | None,
        error: SPSDecodeError | None,
        placements: list[Placement],
    ) -> None:
        self.args = args
        self.error = error
        self._placements = placements
        #: Content bytes that were written in place (not through a payload buffer).
        self.placed = sum(len(p.view) for p in placements)

    def release(self) -> None:
        """Release every placement (idempotent)."""
        placements, self._placements = self._placements, []
        _release_all(placements)


def _release_all(placements: list[Placement]) -> None:
    for p in placements:
        p.release()


class FinalizeRequestSink:
    """A payload sink decoding ``SPSTuple<SPSExecutorAddr, SPSFinalizeRequest>`` of ``length``
    bytes as it arrives, with segment contents written where ``place`` says.

    :meth:`result` returns a :class:`StreamedArgs`: ``(instance, FinalizeRequest)`` whose
    placed segments' ``content`` is the placement's view. Malformed bytes (counts beyond the
    payload, trailing bytes, bad actions) give a :class:`StreamedArgs` with the
    :class:`SPSDecodeError`; the rest of the payload is then skipped.
    """

    def __init__(self, length: int, place: Place) -> None:
        self._left = length
        self._place = place
        self._placements: list[Placement] = []
        self._value: tuple[Any, ...] | None = None
        self._error: SPSDecodeError | None = None
        self._scratch: bytearray | None = None
        self._steps = self._decode()
        self._cur = memoryview(b"")
        self._off = 0
        self._next()

    # ---- the PayloadSink interface --------------------------------------------------------

    def target(self) -> memoryview:
        if self._error is not None:
            if self._scratch is None:
                self._scratch = bytearray(min(_DISCARD_CHUNK, max(self._left, 1)))
            return memoryview(self._scratch)[: max(1, min(len(self._scratch), self._left))]
        return self._cur[self._off :]

    def advance(self, n: int) -> None:
        self._left -= n
        if self._error is not None:
            return
        self._off += n
        if self._off >= len(self._cur):
            self._next()

    def result(self) -> StreamedArgs:
        if self._error is None and self._value is None:
            self._error = SPSDecodeError("truncated FinalizeRequest: the payload ended early")
        if self._error is not None:
            self.discard()
            return StreamedArgs(None, self._error, [])
        return StreamedArgs(self._value, None, self._placements)

    def discard(self) -> None:
        placements, self._placements = self._placements, []
        _release_all(placements)

    # ---- the decoder ----------------------------------------------------------------------

    def _next(self) -> None:
        """Run the decoder to its next buffer (or its end, or an error). The decoder runs
        only when every byte offered so far has been written, so ``_left`` is exactly what
        the payload has still to bring."""
        try:
            self._cur = self._steps.send(None)
            self._off = 0
        except StopIteration as stop:
            self._value = stop.value
            self._cur = memoryview(b"")
        except SPSDecodeError as e:
            self._error = e
            self.discard()

    def _take(self, n: int, what: str) -> Generator[memoryview, None, memoryview]:
        """``n`` bytes of the payload, in a fresh buffer (yielded to be filled).

        ``n`` comes from a length field: beyond :data:`_GROW_FROM` bytes the buffer grows
        with the content as it arrives (chunks of at most what arrived so far, up to
        :data:`_GROW_MAX`), so a header announcing a gigabyte costs nothing until the
        gigabyte comes."""
        if n > self._left:
            raise SPSDecodeError(
                f"truncated {what}: need {n} byte(s), the payload has {self._left} left"
            )
        if n <= _GROW_FROM:
            buf = memoryview(bytearray(n))
            if n:
                yield buf
            return buf
        out = bytearray()
        chunk = bytearray(_GROW_FROM)
        while len(out) < n:
            if len(chunk) < min(len(out), _GROW_MAX):
                chunk = bytearray(min(len(out), _GROW_MAX))
            view = memoryview(chunk)[: n - len(out)]
            yield view
            out += view
        return memoryview(out)

    def _decode(self) -> Generator[memoryview, None, tuple[Any, ...]]:
        head = yield from self._take(_HEAD.size, "FinalizeRequest")
        inst, nsegs = _HEAD.unpack(head)
        if nsegs * _SEG.size > self._left:
            raise SPSDecodeError(
                f"truncated Sequence<SegFinalizeRequest>: {nsegs} segments need at least "
                f"{nsegs * _SEG.size} bytes, the payload has {self._left} left"
            )
        segs: list[SegFinalizeRequest] = []
        for _ in range(nsegs):
            fields = yield from self._take(_SEG.size, "SegFinalizeRequest")
            prot, addr, size, n = _SEG.unpack(fields)
            if n > self._left:
                raise SPSDecodeError(
                    f"truncated byte sequence: need {n} byte(s), the payload has {self._left} left"
                )
            placed = self._place(addr, size, n) if n else None
            content: memoryview
            if placed is None:
                content = yield from self._take(n, "byte sequence")
            else:
                self._placements.append(placed)
                content = placed.view
                yield content
            segs.append(SegFinalizeRequest(prot, addr, size, content))
        rest = yield from self._take(self._left, "actions")
        actions = _ACTIONS.decode(rest)
        return (inst, FinalizeRequest(segs, actions))
