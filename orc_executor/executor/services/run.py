"""Running JIT'd code: ``run_as_main`` / ``run_as_void_function`` / ``run_as_int_function`` and
the upstream ``orc_rt_ci_sps_call_*`` names.

* ``run_as_main``: ``int64(Addr fn, Sequence<String> args)`` — ``argv`` is exactly the strings
  received (no argv[0] is synthesized) plus a NULL; ``int`` result sign-extended.
* ``run_as_void_function``: ``int32(Addr fn)`` (calls ``int32_t fn(void)``).
* ``run_as_int_function``: ``int32(Addr fn, int32 arg)``.
* ``orc_rt_ci_sps_call_void_void``: ``void(Addr fn)``.

All run on a worker thread; the address must be JIT'd text or a loaded image. With
``--on-fault=recover`` a fault in the call fails it with an out-of-band error naming the
signal and address (:class:`~orc_executor.memmap.native.JITFault`).
"""

from __future__ import annotations

from collections.abc import Iterable

from ...errors import OutOfBandError
from ...memmap import native
from ...sps import Addr, Bytes, Empty, Int32, Int64, SequenceOf, signature
from ..context import ExecutorContext
from ..registry import Service, WrapperSpec

BOOT = "__llvm_orc_bootstrap_"

RUN_AS_MAIN = signature(Int64, Addr, SequenceOf(Bytes))
RUN_AS_VOID = signature(Int32, Addr)
RUN_AS_INT = signature(Int32, Addr, Int32)
CALL_VOID_VOID = signature(Empty, Addr)


class RunService(Service):
    """Calls into JIT'd entry points."""

    service_name = "run"

    def __init__(self, ctx: ExecutorContext, *, void_int: bool = True, ci: bool = True) -> None:
        self.ctx = ctx
        self.void_int = void_int
        self.ci = ci

    def wrappers(self) -> Iterable[WrapperSpec]:
        yield WrapperSpec(BOOT + "run_as_main_wrapper", RUN_AS_MAIN, self.run_as_main, True)
        if self.void_int:
            yield WrapperSpec(
                BOOT + "run_as_void_function_wrapper", RUN_AS_VOID, self.run_void, True
            )
            yield WrapperSpec(
                BOOT + "run_as_int_function_wrapper", RUN_AS_INT, self.run_int, True
            )
        if self.ci:
            yield WrapperSpec("orc_rt_ci_sps_call_main", RUN_AS_MAIN, self.run_as_main, True)
            yield WrapperSpec("orc_rt_ci_sps_call_int32_void", RUN_AS_VOID, self.run_void, True)
            yield WrapperSpec("orc_rt_ci_sps_call_int32_int32", RUN_AS_INT, self.run_int, True)
            yield WrapperSpec("orc_rt_ci_sps_call_void_void", CALL_VOID_VOID, self.call_void, True)

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
