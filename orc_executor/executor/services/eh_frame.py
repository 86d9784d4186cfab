"""EH-frame registration (so C++ exceptions unwind through JIT'd frames).

All forms take ``Error(ExecutorAddrRange)``: the ``.eh_frame`` section including its zero
terminator; libgcc's ``__register_frame(start)`` walks it. Names by version:

* 14: ``__llvm_orc_bootstrap_(de)register_ehframe_section_wrapper`` (also looked up by
  llvm-jitlink 14 as ``llvm_orc_(de)registerEHFrameSectionWrapper``);
* 19: ``llvm_orc_(de)registerEHFrameSectionWrapper`` (CallWrapper or alloc action);
* 22: ``llvm_orc_(de)registerEHFrameAllocAction`` (alloc actions);
* orc-rt: ``orc_rt_ci_aa_sps_DWARFEHFrameRegistrar_(de)registerSection`` (layout assumed equal).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable

from ...errors import MemoryAccessError
from ...host import EH_RA_REGISTERS, EH_RETURN_ADDRESS_REGISTER, PROCESS_TRIPLE
from ...native.api import lib, mem_read, mem_readable
from ...protocol.names import EH_FRAME, Bootstrap, DWARFEHFrameRegistrar, EHFrame
from ...protocol.orc_types import ExecutorAddrRange
from ...protocol.sps import ErrorValue
from ..context import ExecutorContext
from ..registry import Service, WrapperSpec

#: Bytes read from the start of a section for its first CIE (:func:`cie_return_address_register`;
#: a CIE longer than this gives ``None``: nothing concluded).
CIE_BYTES = 512

#: Every EH-frame name, in registration order → True to register, False to deregister.
REGISTER_NAMES = {
    EHFrame.register_section_wrapper: True,
    EHFrame.deregister_section_wrapper: False,
    EHFrame.register_alloc_action: True,
    EHFrame.deregister_alloc_action: False,
    Bootstrap.register_ehframe_section: True,
    Bootstrap.deregister_ehframe_section: False,
    DWARFEHFrameRegistrar.register_section: True,
    DWARFEHFrameRegistrar.deregister_section: False,
}


class EHFrameService(Service):
    """``__register_frame`` / ``__deregister_frame`` of JIT'd ``.eh_frame`` sections.

    Only sections this service registered can be deregistered (libgcc aborts the process on
    an unknown one): any other start address gets an error result."""

    service_name = "eh-frame"

    def __init__(self, ctx: ExecutorContext) -> None:
        self.ctx = ctx
        #: Start addresses registered and not yet deregistered (a section may be registered
        #: twice; alloc actions run on several threads).
        self._registered: Counter[int] = Counter()
        self._lock = threading.Lock()

    def wrappers(self) -> Iterable[WrapperSpec]:
        for name, registering in REGISTER_NAMES.items():
            yield WrapperSpec(name, EH_FRAME, self.register if registering else self.deregister)

    def _check(self, r: ExecutorAddrRange, *, registering: bool = False) -> ErrorValue | None:
        if r.end <= r.start or self.ctx.memmap.slab_containing(r.start, r.end - r.start) is None:
            return ErrorValue(
                f"eh-frame range [{r.start:#x}, {r.end:#x}) is not inside JIT'd memory"
            )
        # libgcc reads the section: reserved-only (PROT_NONE) pages would crash us.
        if not mem_readable(r.start, r.end - r.start):
            return ErrorValue(f"eh-frame range [{r.start:#x}, {r.end:#x}) is not readable")
        if registering and EH_RETURN_ADDRESS_REGISTER is not None:
            try:
                head = mem_read(r.start, min(r.end - r.start, CIE_BYTES))
            except MemoryAccessError:
                return ErrorValue(f"eh-frame range [{r.start:#x}, {r.end:#x}) is not readable")
            ra = cie_return_address_register(head)
            if ra is not None and ra != EH_RETURN_ADDRESS_REGISTER:
                arch = next((a for a, n in EH_RA_REGISTERS.items() if n == ra), "unknown")
                return ErrorValue(
                    f"eh-frame at {r.start:#x} describes code for another architecture "
                    f"(return address register {ra}: {arch}); this executor runs "
                    f"{PROCESS_TRIPLE} (register {EH_RETURN_ADDRESS_REGISTER}): link for "
                    f"{PROCESS_TRIPLE}"
                )
        return None

    def register(self, r: ExecutorAddrRange) -> ErrorValue | None:
        err = self._check(r, registering=True)
        if err is not None:
            return err
        with self._lock:
            if lib.orc_register_eh_frame(r.start) != 0:
                return ErrorValue("__register_frame is not available (libgcc_s.so.1)")
            self._registered[r.start] += 1
        return None

    def deregister(self, r: ExecutorAddrRange) -> ErrorValue | None:
        err = self._check(r)
        if err is not None:
            return err
        with self._lock:
            if not self._registered[r.start]:
                del self._registered[r.start]
                return ErrorValue(
                    f"eh-frame section at {r.start:#x} was not registered by this session"
                )
            if lib.orc_deregister_eh_frame(r.start) != 0:
                return ErrorValue("__deregister_frame is not available (libgcc_s.so.1)")
            self._registered[r.start] -= 1
        return None


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def cie_return_address_register(data: bytes) -> int | None:
    """The return-address register of the CIE an ``.eh_frame`` section starts with (DWARF
    CIE: length, id 0, version 1 or 3, augmentation string, code and data alignment factors,
    then the register: one byte in version 1, ULEB128 in 3); ``None`` when the section does not
    start with a well-formed CIE (then nothing is concluded)."""
    try:
        if len(data) < 12 or int.from_bytes(data[0:4], "little") in (0, 0xFFFFFFFF):
            return None
        if data[4:8] != b"\0\0\0\0" or data[8] not in (1, 3):
            return None
        version = data[8]
        end = data.index(0, 9)
        if b"eh" in data[9:end]:
            return None  # an old-style augmentation with a pointer: not produced today
        pos = end + 1
        _, pos = _uleb(data, pos)  # code alignment factor
        _, pos = _uleb(data, pos)  # data alignment factor (SLEB128: same length rules)
        return data[pos] if version == 1 else _uleb(data, pos)[0]
    except (IndexError, ValueError):
        return None
