"""The Setup payload's encoder (:class:`~orc_executor.protocol.setup.SetupInfo`) writes
exactly what the generic SPS encoders of ``SimpleRemoteEPCExecutorInfo`` (and LLVM 14's
layout) write, and :func:`~orc_executor.protocol.setup.decode_setup` reads it back."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from orc_executor.protocol.orc_types import SPSSetupMessage, SPSSetupMessage14
from orc_executor.protocol.setup import SetupInfo, decode_setup

names = st.text(max_size=40)
addrs = st.integers(min_value=0, max_value=2**64 - 1)


@given(triple=names, page=st.integers(min_value=0, max_value=2**64 - 1),
       bmap=st.dictionaries(names, st.binary(max_size=16), max_size=4),
       symbols=st.dictionaries(names, addrs, max_size=80), layout14=st.booleans())
def test_setup_payload_is_the_sps_encoding(triple: str, page: int, bmap: dict[str, bytes],
                                           symbols: dict[str, int], layout14: bool) -> None:
    info = SetupInfo(triple, page, {} if layout14 else bmap, symbols, layout14=layout14)
    data = info.encode()
    if layout14:
        assert data == SPSSetupMessage14.encode((triple, page, symbols))
        return
    assert data == SPSSetupMessage.encode((triple, page, bmap, symbols))
    back = decode_setup(data)
    assert (back.triple, back.page_size, back.bootstrap_map, back.symbols) == (
        triple, page, bmap, symbols)
