"""The EH-frame service's checks before ``__register_frame``: the whole section must be
readable JIT'd memory (libgcc reads it), and its first CIE must name this architecture's
return-address register; the checks read a byte of each page and the section's start, not
the whole section."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orc_executor.executor.bootstrap import build_context
from orc_executor.executor.context import ExecutorContext
from orc_executor.executor.services.eh_frame import CIE_BYTES, EHFrameService
from orc_executor.host import EH_RETURN_ADDRESS_REGISTER
from orc_executor.native.api import mem_readable
from orc_executor.native.memmap import PAGE_SIZE
from orc_executor.protocol.orc_types import ExecutorAddrRange, SegFinalizeRequest

RW = 3


def cie(ra: int) -> bytes:
    """A version-1 CIE (augmentation "zR", code alignment 1, data alignment -8, return
    address register ``ra``), then the zero terminator of the section."""
    body = b"\0\0\0\0" + b"\x01" + b"zR\0" + b"\x01" + b"\x78" + bytes([ra]) + b"\x01\x1b"
    body += bytes(-(len(body) + 4) % 4)
    return len(body).to_bytes(4, "little") + body + bytes(4)


@pytest.fixture
def ctx() -> Iterator[ExecutorContext]:
    c = build_context()
    yield c
    c.registry.shutdown()


def service(ctx: ExecutorContext) -> EHFrameService:
    return next(s for s in ctx.registry.services if isinstance(s, EHFrameService))


def section(ctx: ExecutorContext, content: bytes, size: int) -> int:
    base = ctx.memmap.reserve(4 * PAGE_SIZE)
    ctx.memmap.initialize([SegFinalizeRequest(RW, base, size, content)], [], lambda call: None)
    return base


@pytest.mark.skipif(EH_RETURN_ADDRESS_REGISTER is None, reason="no CIE check on this host")
def test_a_section_for_this_architecture_registers_and_deregisters(ctx: ExecutorContext) -> None:
    assert EH_RETURN_ADDRESS_REGISTER is not None
    data = cie(EH_RETURN_ADDRESS_REGISTER)
    base = section(ctx, data, 2 * PAGE_SIZE)
    r = ExecutorAddrRange(base, base + 2 * PAGE_SIZE)  # two pages, larger than CIE_BYTES
    assert 2 * PAGE_SIZE > CIE_BYTES
    eh = service(ctx)
    assert eh.register(r) is None
    assert eh.deregister(r) is None
    err = eh.deregister(r)
    assert err is not None and "was not registered" in err.message


@pytest.mark.skipif(EH_RETURN_ADDRESS_REGISTER is None, reason="no CIE check on this host")
def test_a_section_for_another_architecture_is_refused(ctx: ExecutorContext) -> None:
    assert EH_RETURN_ADDRESS_REGISTER is not None
    base = section(ctx, cie(EH_RETURN_ADDRESS_REGISTER ^ 1), PAGE_SIZE)
    err = service(ctx).register(ExecutorAddrRange(base, base + 64))
    assert err is not None and "another architecture" in err.message


def test_a_section_reaching_unreadable_pages_is_refused(ctx: ExecutorContext) -> None:
    base = ctx.memmap.reserve(4 * PAGE_SIZE)
    ctx.memmap.initialize([SegFinalizeRequest(RW, base, PAGE_SIZE, bytes(16)),
                           SegFinalizeRequest(0, base + PAGE_SIZE, PAGE_SIZE, b"")],
                          [], lambda call: None)  # page 1: no access
    assert not mem_readable(base + PAGE_SIZE, 1)
    for start, end in ((base, base + PAGE_SIZE + 1), (base, base + 3 * PAGE_SIZE),
                       (base + PAGE_SIZE, base + PAGE_SIZE + 8)):
        err = service(ctx).register(ExecutorAddrRange(start, end))
        assert err is not None and "is not readable" in err.message


def test_a_section_outside_jit_memory_is_refused(ctx: ExecutorContext) -> None:
    err = service(ctx).register(ExecutorAddrRange(0x1000, 0x2000))
    assert err is not None and "not inside JIT'd memory" in err.message
