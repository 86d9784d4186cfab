"""The host facts Setup announces (orc_executor/host.py)."""

from __future__ import annotations

import os

from orc_executor import host
from orc_executor.executor.bootstrap import build_context, setup_info
from orc_executor.executor.services.eh_frame import cie_return_address_register
from orc_executor.native.api import ffi, lib


def test_triples_are_spelled_as_llvm_spells_them() -> None:
    # What Debian's stock llvm-jitlink-executor sends (x86_64: tests/data/traces; arm64: its
    # LLVM_HOST_TRIPLE, and the cross tests compare with it under qemu).
    assert host.process_triple("x86_64") == "x86_64-pc-linux-gnu"
    assert host.process_triple("aarch64") == "aarch64-unknown-linux-gnu"
    assert host.process_triple("arm64") == "aarch64-unknown-linux-gnu"
    assert host.process_triple("riscv64") == "riscv64-unknown-linux-gnu"


def test_setup_announces_this_host() -> None:
    info = setup_info(build_context())
    assert info.triple == host.process_triple(os.uname().machine)
    assert info.page_size == os.sysconf("SC_PAGE_SIZE") == host.PAGE_SIZE


def test_return_zero_code_matches_the_architecture() -> None:
    arch = os.uname().machine
    coherent = arch in ("x86_64", "i686")
    assert host.NEEDS_ICACHE_SYNC is not coherent
    if arch == "x86_64":
        assert host.RETURN_ZERO_CODE == b"\x31\xc0\xc3" + b"\xcc" * 13
    # syncing any readable range is harmless (a no-op on x86)
    buf = bytearray(64)
    lib.orc_sync_icache(int(ffi.cast("uintptr_t", ffi.from_buffer(buf))), len(buf))


def _cie(version: int, augmentation: bytes, ra: bytes) -> bytes:
    body = b"\0\0\0\0" + bytes([version]) + augmentation + b"\0" + b"\x01\x78" + ra + b"\x01\x1b"
    return len(body).to_bytes(4, "little") + body + bytes(4)


def test_cie_return_address_register() -> None:
    """What gcc emits: version 1, "zR", code align 1 (x86_64) or 4, data align -8, RA byte."""
    assert cie_return_address_register(_cie(1, b"zR", b"\x10")) == 16
    assert cie_return_address_register(_cie(1, b"zR", b"\x1e")) == 30
    assert cie_return_address_register(_cie(3, b"zR", b"\x80\x01")) == 128  # ULEB128 in v3
    # not a CIE first, truncated, or unknown versions: nothing concluded
    assert cie_return_address_register(bytes(16)) is None
    assert cie_return_address_register(_cie(1, b"zR", b"\x10")[:10]) is None
    assert cie_return_address_register(_cie(2, b"zR", b"\x10")) is None
    assert cie_return_address_register(b"\x10\0\0\0\x01\0\0\0" + bytes(12)) is None
