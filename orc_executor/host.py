"""Facts about the machine the executor runs on, as the controller needs them.

* :data:`PROCESS_TRIPLE`: the target triple Setup announces, spelled as LLVM's
  ``sys::getProcessTriple`` spells it in Debian's builds of the stock executor
  (``x86_64-pc-linux-gnu``, ``aarch64-unknown-linux-gnu``; ``<arch>-unknown-linux-gnu`` for any
  other architecture, ``-musl`` instead of ``-gnu`` without glibc).
* :data:`PAGE_SIZE`: the page size in bytes (``sysconf(_SC_PAGESIZE)``; aarch64 kernels use 4,
  16 or 64 KiB pages).
* :data:`EH_RETURN_ADDRESS_REGISTER`: the DWARF register an ``.eh_frame`` CIE names as the
  return address in this architecture's code (how code linked for another one is recognized).
* :data:`RETURN_ZERO_CODE`: ``int f(void) { return 0; }`` in this architecture's machine code.
* :data:`NEEDS_ICACHE_SYNC`: whether code written through the data side must be made visible
  to instruction fetch (``__builtin___clear_cache``) before it runs. x86 keeps the caches
  coherent, so nothing is done there; every other architecture syncs.
"""

from __future__ import annotations

import os

#: ``uname -m`` spellings of the same architecture → LLVM's architecture name.
_ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "i386": "i686", "i486": "i686",
                 "i586": "i686"}
#: The vendor field LLVM's Linux builds use per architecture (``pc`` for x86, else ``unknown``).
_VENDOR = {"x86_64": "pc", "i686": "pc"}


def _libc_suffix() -> str:
    try:
        os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        return "musl"
    return "gnu"


def process_triple(machine: str | None = None) -> str:
    """The triple of this process (or of a Linux ``machine`` as ``uname -m`` names it)."""
    arch = machine if machine is not None else os.uname().machine
    arch = _ARCH_ALIASES.get(arch, arch)
    return f"{arch}-{_VENDOR.get(arch, 'unknown')}-linux-{_libc_suffix()}"


def _is_x86(arch: str) -> bool:
    return arch in ("x86_64", "i686")


PROCESS_TRIPLE = process_triple()
PAGE_SIZE: int = os.sysconf("SC_PAGE_SIZE")
NEEDS_ICACHE_SYNC = not _is_x86(PROCESS_TRIPLE.split("-", 1)[0])

#: ``int f(void) { return 0; }`` per architecture, padded to 16 bytes with trapping
#: instructions (``int3`` / ``brk #0``).
_RETURN_ZERO = {
    "x86_64": b"\x31\xc0\xc3".ljust(16, b"\xcc"),  # xor eax, eax; ret
    "aarch64": b"\x00\x00\x80\x52\xc0\x03\x5f\xd6" + b"\x00\x00\x20\xd4" * 2,  # mov w0, #0; ret
}
#: This host's entry of the table above (``None`` for an architecture without one).
RETURN_ZERO_CODE: bytes | None = _RETURN_ZERO.get(PROCESS_TRIPLE.split("-", 1)[0])

#: DWARF return-address register of each architecture's CIEs (x86_64: 16 = RIP, i386: 8 = EIP,
#: aarch64: 30 = X30/LR, riscv: 1 = ra).
EH_RA_REGISTERS = {"x86_64": 16, "i686": 8, "aarch64": 30, "riscv64": 1}
#: This host's entry (``None`` for an architecture without one: nothing is checked).
EH_RETURN_ADDRESS_REGISTER: int | None = EH_RA_REGISTERS.get(PROCESS_TRIPLE.split("-", 1)[0])
