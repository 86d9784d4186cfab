"""Running JIT'd code: ``run_as_main`` / ``run_as_void_function`` / ``run_as_int_function`` and
the upstream ``orc_rt_ci_sps_call_*`` names.

* ``run_as_main``: ``int64(Addr fn, Sequence<String> args)`` — ``argv`` is exactly the strings
  received (no argv[0] is synthesized) plus a NULL; ``int`` result sign-extended.
* ``run_as_void_function``: ``int32(Addr fn)`` (calls ``int32_t fn(void)``).
* ``run_as_int_function``: ``int32(Addr fn, int32 arg)``.
* ``orc_rt_ci_sps_call_void_void``: ``void(Addr fn)``.

All run on a worker thread; the address must be JIT'd text or a loaded image. With
``--on-fault=recover`` a fault in the call fails it with an out-of-band error naming the
signal and address (:class:`~orc_executor.native.api.JITFault`).
"""

from __future__ import annotations

from collections.abc import Iterable

from ...errors import OutOfBandError
from ...native import api as native
from ...protocol.names import (
    CALL_VOID_VOID,
    RUN_AS_INT,
    RUN_AS_MAIN,
    RUN_AS_VOID,
    Bootstrap,
    CallSPSCI,
)
from ..context import ExecutorContext
from ..registry import Service, WrapperSpec


class RunService(Service):
    """Calls into JIT'd entry points (every name; the profile decides which are registered)."""

    service_name = "run"

    def __init__(self, ctx: ExecutorContext) -> None:
        self.ctx = ctx

    def wrappers(self) -> Iterable[WrapperSpec]:
        yield WrapperSpec(Bootstrap.run_as_main, RUN_AS_MAIN, self.run_as_main, True)
        yield WrapperSpec(Bootstrap.run_as_void_function, RUN_AS_VOID, self.run_void, True)
        yield WrapperSpec(Bootstrap.run_as_int_function, RUN_AS_INT, self.run_int, True)
        yield WrapperSpec(CallSPSCI.call_main, RUN_AS_MAIN, self.run_as_main, True)
        yield WrapperSpec(CallSPSCI.call_int32_void, RUN_AS_VOID, self.run_void, True)
        yield WrapperSpec(CallSPSCI.call_int32_int32, RUN_AS_INT, self.run_int, True)
        yield WrapperSpec(CallSPSCI.call_void_void, CALL_VOID_VOID, self.call_void, True)

    def _check(self, fn: int) -> None:
        if not self.ctx.is_native_function(fn):
            raise OutOfBandError(f"{fn:#x} is not the address of executable code")

    def run_as_main(self, fn: int, args: list[bytes]) -> int:
        self._check(fn)
        return native.run_as_main(fn, args, guarded=self.ctx.recover_faults)

    def run_void(self, fn: int) -> int:
        self._check(fn)
        return native.run_as_void_function(fn, guarded=self.ctx.recover_faults)

    def run_int(self, fn: int, arg: int) -> int:
        self._check(fn)
        return native.run_as_int_function(fn, arg, guarded=self.ctx.recover_faults)

    def call_void(self, fn: int) -> None:
        self._check(fn)
        native.run_void_void(fn, guarded=self.ctx.recover_faults)
