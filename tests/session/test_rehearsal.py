"""The warm worker's rehearsed session (``orc_executor.serve.worker.rehearse_session``): it runs the
paths a real session takes (EH-frame alloc actions included), fails loudly when a call fails,
and leaves nothing behind."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from orc_executor.executor import jit_dispatch
from orc_executor.executor import session as session_module
from orc_executor.executor.services.eh_frame import EHFrameService
from orc_executor.native.api import lib
from orc_executor.protocol.sps import ErrorValue
from orc_executor.serve.worker import rehearse_session


def test_rehearsal_registers_and_deregisters_an_eh_frame(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    calls: list[tuple[str, int]] = []
    register, deregister = EHFrameService.register, EHFrameService.deregister

    def spy(kind: str, real: Any) -> Any:
        def wrapped(self: EHFrameService, r: Any) -> Any:
            result = real(self, r)
            calls.append((kind, r.end - r.start))
            assert result is None  # registered without an error
            return result
        return wrapped

    monkeypatch.setattr(EHFrameService, "register", spy("register", register))
    monkeypatch.setattr(EHFrameService, "deregister", spy("deregister", deregister))
    threads = threading.active_count()
    rehearse_session()
    # Register at initialize, deregister (the dealloc action) at release: an empty section.
    assert calls == [("register", 4), ("deregister", 4)]
    assert threading.active_count() == threads  # calls ran inline: no cached worker threads
    # No session state left behind: no dispatch context routes anywhere, and the next
    # session still resets C stdio first.
    assert jit_dispatch.open_contexts() == 0 and session_module.stdio_reset_pending()
    assert lib.orc_eh_frame_preload() == 0  # libgcc_s's entry points are there


def test_a_failing_rehearsal_call_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(EHFrameService, "register",
                        lambda self, r: ErrorValue("refused for the test"))
    with pytest.raises(Exception) as info:  # trio's nurseries wrap it in exception groups
        rehearse_session()
    assert any("initialize_wrapper: refused for the test" in m
               for m in leaf_messages(info.value))


def leaf_messages(e: BaseException) -> list[str]:
    if isinstance(e, BaseExceptionGroup):
        return [m for sub in e.exceptions for m in leaf_messages(sub)]
    return [str(e)]
