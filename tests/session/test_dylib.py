"""Dylib manager over the wire: open, resolve (22), lookup (19) and the orc-rt lookup."""

from __future__ import annotations

from pathlib import Path

import pytest

from orc_executor.protocol.orc_types import (
    ExecutorSymbolDef,
    JITSymbolFlags,
    SPSRemoteSymbolLookupSet,
)
from orc_executor.protocol.sps import (
    Addr,
    ErrorValue,
    ExpectedOf,
    OptionalOf,
    SequenceOf,
    signature,
)
from tests.support.harness import (
    DYLIB_INSTANCE,
    DYLIB_LOOKUP,
    DYLIB_OPEN,
    DYLIB_RESOLVE,
    LOOKUP19_SIG,
    OPEN_SIG,
    RESOLVE_SIG,
    Executor,
    orc_executor,
)

EXPORTED = JITSymbolFlags(0x10, 0)
MISSING = "definitely_missing_symbol_xyz"

CI_LOOKUP = "orc_rt_ci_sps_NativeDylibManager_lookup"
CI_LOOKUP_SIG = signature(
    ExpectedOf(SequenceOf(OptionalOf(Addr))), Addr, Addr, SPSRemoteSymbolLookupSet
)


async def open_dylib(ex: Executor, path: str = "") -> int:
    handle = await ex.call(DYLIB_OPEN, OPEN_SIG, ex.sym(DYLIB_INSTANCE), path, 0)
    assert isinstance(handle, int), handle
    return handle


async def test_open_process_and_resolve() -> None:
    async with orc_executor() as ex:
        h = await open_dylib(ex)
        result = await ex.call(
            DYLIB_RESOLVE,
            RESOLVE_SIG,
            h,
            [("printf", False), (MISSING, False), (MISSING, True), ("", False), ("malloc", True)],
        )
        printf, weak_missing, strong_missing, empty, malloc = result
        assert isinstance(printf, ExecutorSymbolDef)
        assert printf.address != 0 and printf.flags == EXPORTED
        # LLVM 22.1.8 encodings (docs/protocol.md §6.1).
        assert weak_missing == ExecutorSymbolDef(0, EXPORTED)
        assert strong_missing is None
        assert empty is None
        assert malloc is not None and malloc.address not in (0, printf.address)
    assert ex.process.returncode == 0


async def test_repeated_opens_give_working_handles() -> None:
    async with orc_executor() as ex:
        h1 = await open_dylib(ex)
        h2 = await open_dylib(ex)
        r1 = await ex.call(DYLIB_RESOLVE, RESOLVE_SIG, h1, [("printf", False)])
        r2 = await ex.call(DYLIB_RESOLVE, RESOLVE_SIG, h2, [("printf", False)])
        assert r1 == r2


async def test_resolve_own_bootstrap_names() -> None:
    """The executor's own helper names resolve to its own functions (14/19 look them up)."""
    async with orc_executor() as ex:
        h = await open_dylib(ex)
        name = "llvm_orc_registerEHFrameSectionWrapper"
        (d,) = await ex.call(DYLIB_RESOLVE, RESOLVE_SIG, h, [(name, True)])
        assert d == ExecutorSymbolDef(ex.sym(name), EXPORTED)


async def test_resolve_empty_set() -> None:
    async with orc_executor() as ex:
        h = await open_dylib(ex)
        assert await ex.call(DYLIB_RESOLVE, RESOLVE_SIG, h, []) == []


async def test_resolve_unknown_handle_fails() -> None:
    async with orc_executor() as ex:
        result = await ex.call(DYLIB_RESOLVE, RESOLVE_SIG, 0xBAD0, [("printf", False)])
        assert isinstance(result, ErrorValue)
        assert await open_dylib(ex)
    assert ex.process.returncode == 0


async def test_lookup_19_encodings() -> None:
    async with orc_executor() as ex:
        h = await open_dylib(ex)
        inst = ex.sym(DYLIB_INSTANCE)
        found = await ex.call(
            DYLIB_LOOKUP, LOOKUP19_SIG, inst, h, [("printf", True), (MISSING, False), ("", False)]
        )
        printf, weak, empty = found
        assert printf.address != 0 and printf.flags == EXPORTED
        assert weak == ExecutorSymbolDef(0, EXPORTED)
        assert empty == ExecutorSymbolDef(0, JITSymbolFlags(0, 0))
        failed = await ex.call(DYLIB_LOOKUP, LOOKUP19_SIG, inst, h, [(MISSING, True)])
        assert failed == ErrorValue(f"Missing definition for {MISSING}")


async def test_orc_rt_lookup() -> None:
    async with orc_executor() as ex:
        inst = ex.sym("orc_rt_ci_NativeDylibManager_Instance")
        h = await open_dylib(ex)
        result = await ex.call(
            CI_LOOKUP, CI_LOOKUP_SIG, inst, h, [("printf", True), (MISSING, False)]
        )
        assert result[0] and result[1] is None


async def test_open_library_by_path(testlib: Path) -> None:
    async with orc_executor() as ex:
        h = await open_dylib(ex, str(testlib))
        (answer,) = await ex.call(DYLIB_RESOLVE, RESOLVE_SIG, h, [("answer", True)])
        assert answer is not None and answer.address
        # RTLD_GLOBAL: the library's symbols are visible through the process handle too.
        p = await open_dylib(ex)
        (again,) = await ex.call(DYLIB_RESOLVE, RESOLVE_SIG, p, [("answer", True)])
        assert again == answer


async def test_open_bad_path_reports_dlerror() -> None:
    async with orc_executor() as ex:
        result = await ex.call(
            DYLIB_OPEN, OPEN_SIG, ex.sym(DYLIB_INSTANCE), "/nonexistent/libfoo.so", 0
        )
        assert result == ErrorValue(
            "/nonexistent/libfoo.so: cannot open shared object file: No such file or directory"
        )
        assert await open_dylib(ex)
    assert ex.process.returncode == 0


async def test_open_non_library_file_fails(tmp_path: Path) -> None:
    junk = tmp_path / "junk.so"
    junk.write_bytes(b"not an ELF file")
    async with orc_executor() as ex:
        result = await ex.call(DYLIB_OPEN, OPEN_SIG, ex.sym(DYLIB_INSTANCE), str(junk), 0)
        assert isinstance(result, ErrorValue)
        assert str(junk) in result.message


@pytest.mark.parametrize("mode", [1, 2, 1 << 63])
async def test_open_nonzero_mode_fails(mode: int) -> None:
    async with orc_executor() as ex:
        result = await ex.call(DYLIB_OPEN, OPEN_SIG, ex.sym(DYLIB_INSTANCE), "", mode)
        assert result == ErrorValue("open: non-zero mode bits not yet supported")
