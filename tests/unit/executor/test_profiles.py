"""Executor profiles (docs/protocol.md §5.3, §8.1, §8.2): the names and layouts of the ``14`` and
``modern`` profiles, the Setup layouts, choosing a profile (explicit version, detection from the
launching process through an injected ``/proc`` reader), and forward compatibility (Hangup)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio.testing
from click.testing import CliRunner

from orc_executor.cli import main as cli_main
from orc_executor.controller import decode_setup
from orc_executor.executor import bootstrap
from orc_executor.executor.bootstrap import (
    ProcFS,
    build_context,
    describe_profile,
    detect_profile,
    is_wrapper,
    llvm_version_of,
    parent_pid,
    profile_for_version,
    select_profile,
    setup_info,
)
from orc_executor.executor.context import ExecutorContext
from orc_executor.executor.services.dylib_manager import DylibManagerService
from orc_executor.executor.session import Session
from orc_executor.protocol.framing import FrameDecoder, Message, Opcode, encode_header
from orc_executor.protocol.orc_types import SPSSetupMessage, SPSSetupMessage14
from orc_executor.protocol.sps import SPSDecodeError, String

REPO = Path(__file__).resolve().parents[3]

# ---- the stock executors' Setup names (docs/protocol.md §5.3, captured) ----------------------

COMMON = {
    "__llvm_orc_SimpleRemoteEPC_dispatch_ctx",
    "__llvm_orc_SimpleRemoteEPC_dispatch_fn",
    "__llvm_orc_SimpleExecutorDylibManager_Instance",
    "__llvm_orc_SimpleExecutorDylibManager_open_wrapper",
    "__llvm_orc_SimpleExecutorMemoryManager_Instance",
    "__llvm_orc_SimpleExecutorMemoryManager_reserve_wrapper",
    "__llvm_orc_bootstrap_run_as_main_wrapper",
    *(f"__llvm_orc_bootstrap_mem_write_{t}_wrapper"
      for t in ("uint8s", "uint16s", "uint32s", "uint64s", "buffers")),
}
LEGACY_MM = {
    "__llvm_orc_SimpleExecutorDylibManager_lookup_wrapper",
    "__llvm_orc_SimpleExecutorMemoryManager_finalize_wrapper",
    "__llvm_orc_SimpleExecutorMemoryManager_deallocate_wrapper",
}
SHM = {f"__llvm_orc_ExecutorSharedMemoryMapperService_{n}"
       for n in ("Instance", "Reserve", "Initialize", "Deinitialize", "Release")}
RUN_VOID_INT = {
    "__llvm_orc_bootstrap_run_as_void_function_wrapper",
    "__llvm_orc_bootstrap_run_as_int_function_wrapper",
}
STOCK14 = COMMON | LEGACY_MM | {
    "__llvm_orc_bootstrap_register_ehframe_section_wrapper",
    "__llvm_orc_bootstrap_deregister_ehframe_section_wrapper",
}
STOCK19 = COMMON | LEGACY_MM | SHM | RUN_VOID_INT | {
    "llvm_orc_registerEHFrameSectionWrapper",
    "llvm_orc_deregisterEHFrameSectionWrapper",
}
STOCK22 = COMMON | SHM | RUN_VOID_INT | {
    "__llvm_orc_SimpleExecutorDylibManager_resolve_wrapper",
    "__llvm_orc_SimpleExecutorMemoryManager_initialize_wrapper",
    "__llvm_orc_SimpleExecutorMemoryManager_deinitialize_wrapper",
    "__llvm_orc_SimpleExecutorMemoryManager_release_wrapper",
    "__llvm_orc_bootstrap_mem_write_pointers_wrapper",
    *(f"__llvm_orc_bootstrap_mem_read_{t}_wrapper"
      for t in ("uint8s", "uint16s", "uint32s", "uint64s", "pointers", "buffers", "strings")),
    "llvm_orc_registerEHFrameAllocAction",
    "llvm_orc_deregisterEHFrameAllocAction",
    "llvm_orc_registerJITLoaderGDBAllocAction",
}
UPSTREAM = {
    "orc_rt_ci_sps_call_main",
    "orc_rt_ci_sps_call_int32_void",
    "orc_rt_ci_sps_call_int32_int32",
    "orc_rt_ci_sps_call_void_void",
    *(f"orc_rt_ci_sps_mem_write_{t}"
      for t in ("uint8s", "uint16s", "uint32s", "uint64s", "pointers", "buffers")),
    *(f"orc_rt_ci_sps_mem_read_{t}"
      for t in ("uint8s", "uint16s", "uint32s", "uint64s", "pointers", "buffers", "strings")),
    "orc_rt_ci_SimpleNativeMemoryMap_Instance",
    *(f"orc_rt_ci_sps_SimpleNativeMemoryMap_{n}"
      for n in ("reserve", "initialize", "deinitializeMultiple", "releaseMultiple")),
    "orc_rt_ci_NativeDylibManager_Instance",
    "orc_rt_ci_sps_NativeDylibManager_load",
    "orc_rt_ci_sps_NativeDylibManager_lookup",
}
#: Names llvm-jitlink 14 looks up by name through the dylib manager (docs/protocol.md §5.3).
LOOKUP14 = (
    "llvm_orc_registerEHFrameSectionWrapper",
    "llvm_orc_deregisterEHFrameSectionWrapper",
    "llvm_orc_registerJITLoaderGDBWrapper",
)


def test_stock_counts() -> None:
    assert (len(STOCK14), len(STOCK19), len(STOCK22)) == (17, 24, 34)


# ---- names and layouts ------------------------------------------------------------------------


def _sig(ctx: ExecutorContext, name: str) -> str:
    spec = ctx.registry.lookup(ctx.registry.addr_of[name])
    assert spec is not None, name
    return str(spec.sig)


def _dylib(ctx: ExecutorContext) -> DylibManagerService:
    return next(s for s in ctx.registry.services if isinstance(s, DylibManagerService))


def test_profile14_advertises_exactly_the_stock_14_names() -> None:
    ctx = build_context("14")
    assert set(setup_info(ctx).symbols) == STOCK14
    for name in LOOKUP14:
        assert name not in ctx.registry.symbols()


def test_profile14_layouts() -> None:
    ctx = build_context("14")
    assert _sig(ctx, "__llvm_orc_SimpleExecutorDylibManager_lookup_wrapper") == (
        "Expected<Sequence<ExecutorAddr>>(ExecutorAddr, uint64, Sequence<Tuple<String, bool>>)"
    )
    assert _sig(ctx, "__llvm_orc_SimpleExecutorMemoryManager_finalize_wrapper") == (
        "Error(ExecutorAddr, FinalizeRequest)"
    )
    assert _sig(ctx, "__llvm_orc_SimpleExecutorMemoryManager_deallocate_wrapper") == (
        "Error(ExecutorAddr, Sequence<ExecutorAddr>)"
    )
    lookup_only = _dylib(ctx).lookup_only
    assert set(lookup_only) == set(LOOKUP14)
    # In 14 the looked-up EH names are the bootstrap EH wrappers (same function).
    regs = ctx.registry.addr_of
    assert lookup_only["llvm_orc_registerEHFrameSectionWrapper"] == (
        regs["__llvm_orc_bootstrap_register_ehframe_section_wrapper"]
    )
    assert lookup_only["llvm_orc_deregisterEHFrameSectionWrapper"] == (
        regs["__llvm_orc_bootstrap_deregister_ehframe_section_wrapper"]
    )
    gdb = ctx.registry.lookup(lookup_only["llvm_orc_registerJITLoaderGDBWrapper"])
    assert gdb is not None and str(gdb.sig) == "Error(ExecutorAddrRange)"


def test_modern_is_the_union_of_19_22_and_upstream() -> None:
    ctx = build_context("modern")
    names = set(setup_info(ctx).symbols)
    assert names >= STOCK19 | STOCK22 | UPSTREAM
    # Nothing 14-only with a conflicting layout sneaks in; extras are known, harmless names.
    extras = names - STOCK19 - STOCK22 - UPSTREAM
    assert extras == {
        "__llvm_orc_bootstrap_register_ehframe_section_wrapper",
        "__llvm_orc_bootstrap_deregister_ehframe_section_wrapper",
        "llvm_orc_registerJITLoaderGDBWrapper",
        "orc_rt_ci_aa_sps_DWARFEHFrameRegistrar_registerSection",
        "orc_rt_ci_aa_sps_DWARFEHFrameRegistrar_deregisterSection",
        "orc_rt_ci_aa_sps_GDBJITRegistrar_register",
        "orc_rt_ci_aa_sps_GDBJITRegistrar_deregister",
    }


def test_modern_layouts_19_22_and_upstream() -> None:
    ctx = build_context("modern")
    assert _sig(ctx, "__llvm_orc_SimpleExecutorDylibManager_lookup_wrapper") == (
        "Expected<Sequence<ExecutorSymbolDef>>(ExecutorAddr, ExecutorAddr, "
        "Sequence<Tuple<String, bool>>)"
    )
    assert _sig(ctx, "__llvm_orc_SimpleExecutorDylibManager_resolve_wrapper") == (
        "Expected<Sequence<Optional<ExecutorSymbolDef>>>(ExecutorAddr, "
        "Sequence<Tuple<String, bool>>)"
    )
    assert _sig(ctx, "orc_rt_ci_sps_NativeDylibManager_lookup") == (
        "Expected<Sequence<Optional<ExecutorAddr>>>(ExecutorAddr, ExecutorAddr, "
        "Sequence<Tuple<String, bool>>)"
    )
    assert _sig(ctx, "__llvm_orc_SimpleExecutorMemoryManager_finalize_wrapper") == (
        "Error(ExecutorAddr, FinalizeRequest)"
    )
    assert _sig(ctx, "__llvm_orc_SimpleExecutorMemoryManager_initialize_wrapper") == (
        "Expected<ExecutorAddr>(ExecutorAddr, FinalizeRequest)"
    )
    # 19's GDB wrapper and 22's alloc action both take (AddrRange, bool).
    assert _sig(ctx, "llvm_orc_registerJITLoaderGDBWrapper") == "Error(ExecutorAddrRange, bool)"
    assert _sig(ctx, "llvm_orc_registerJITLoaderGDBAllocAction") == (
        "Error(ExecutorAddrRange, bool)"
    )
    for eh in ("llvm_orc_registerEHFrameSectionWrapper", "llvm_orc_deregisterEHFrameAllocAction"):
        assert _sig(ctx, eh) == "Error(ExecutorAddrRange)"
    assert _sig(ctx, "orc_rt_ci_sps_call_main") == "int64(ExecutorAddr, Sequence<Bytes>)"
    # The perf wrappers are found by lookup only (the stock executors do not advertise them).
    assert set(_dylib(ctx).lookup_only) == {
        "llvm_orc_registerJITLoaderPerfStart", "llvm_orc_registerJITLoaderPerfEnd",
        "llvm_orc_registerJITLoaderPerfImpl",
    }


def _open_process(ctx: ExecutorContext) -> int:
    spec = ctx.registry.lookup(
        ctx.registry.addr_of["__llvm_orc_SimpleExecutorDylibManager_open_wrapper"]
    )
    assert spec is not None
    inst = ctx.registry.addr_of["__llvm_orc_SimpleExecutorDylibManager_Instance"]
    result = spec.sig.decode_result(spec.invoke(spec.sig.encode_args(inst, "", 0)))
    assert isinstance(result, int)
    return result


def test_profile14_lookup_answers_helper_names_with_plain_addresses() -> None:
    ctx = build_context("14")
    handle = _open_process(ctx)
    spec = ctx.registry.lookup(
        ctx.registry.addr_of["__llvm_orc_SimpleExecutorDylibManager_lookup_wrapper"]
    )
    assert spec is not None
    inst = ctx.registry.addr_of["__llvm_orc_SimpleExecutorDylibManager_Instance"]
    wanted = [(n, True) for n in LOOKUP14] + [("printf", False), ("no_such_symbol_q", False)]
    raw = spec.invoke(spec.sig.encode_args(inst, handle, wanted))
    # Expected<Sequence<Addr>>: 01, count, then bare 8-byte addresses.
    assert raw[0] == 1 and struct.unpack_from("<Q", raw, 1)[0] == len(wanted)
    addrs = list(struct.unpack_from(f"<{len(wanted)}Q", raw, 9))
    assert len(raw) == 9 + 8 * len(wanted)
    assert addrs[:3] == [_dylib(ctx).lookup_only[n] for n in LOOKUP14]
    assert addrs[3] != 0 and addrs[4] == 0
    # A missing required symbol fails the whole lookup, as the stock 14 executor does.
    raw = spec.invoke(spec.sig.encode_args(inst, handle, [("no_such_symbol_q", True)]))
    assert raw[0] == 0
    assert String.decode(raw[1:]) == "Missing definition for no_such_symbol_q"


def test_modern_lookup19_finds_the_gdb_wrapper() -> None:
    ctx = build_context("modern")
    handle = _open_process(ctx)
    spec = ctx.registry.lookup(
        ctx.registry.addr_of["__llvm_orc_SimpleExecutorDylibManager_lookup_wrapper"]
    )
    assert spec is not None
    inst = ctx.registry.addr_of["__llvm_orc_SimpleExecutorDylibManager_Instance"]
    args = spec.sig.encode_args(inst, handle, [("llvm_orc_registerJITLoaderGDBWrapper", True)])
    res = spec.sig.decode_result(spec.invoke(args))
    assert res[0][0] == ctx.registry.addr_of["llvm_orc_registerJITLoaderGDBWrapper"]


# ---- Setup layouts ----------------------------------------------------------------------------


def test_setup14_uses_the_14_layout() -> None:
    info = setup_info(build_context("14"))
    assert info.layout14
    payload = info.encode()
    triple, page, syms = SPSSetupMessage14.decode(payload)
    assert triple == "x86_64-pc-linux-gnu" and page == os.sysconf("SC_PAGESIZE")
    assert set(syms) == STOCK14
    with pytest.raises(SPSDecodeError):
        SPSSetupMessage.decode(payload)
    decoded = decode_setup(payload)
    assert decoded.layout14 and decoded.symbols == syms
    # Same names → same size as the stock 14 executor's Setup (llvm14-hello.txt: 1130 bytes).
    assert len(payload) == 1130


def test_setup_modern_uses_the_map_layout() -> None:
    info = setup_info(build_context("modern"))
    assert not info.layout14
    triple, _page, bmap, syms = SPSSetupMessage.decode(info.encode())
    assert triple == "x86_64-pc-linux-gnu" and bmap == {}
    assert not decode_setup(info.encode()).layout14
    assert set(syms) >= STOCK19 | STOCK22


def test_unknown_profile_is_rejected() -> None:
    with pytest.raises(ValueError):
        build_context("19")


def test_describe_profile_marks_lookup_only_names() -> None:
    entries = {e.name: e for e in describe_profile("14")}
    assert sum(e.advertised for e in entries.values()) == 17
    assert not entries["llvm_orc_registerJITLoaderGDBWrapper"].advertised
    assert entries["llvm_orc_registerJITLoaderGDBWrapper"].signature == "Error(ExecutorAddrRange)"
    assert entries["__llvm_orc_SimpleRemoteEPC_dispatch_ctx"].signature is None


def test_docs_profile_table_is_generated() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "profile-table.py")],
        capture_output=True, text=True, check=True, cwd=REPO,
    ).stdout
    assert "| `llvm_orc_registerJITLoaderGDBWrapper` | lookup only:" in out
    assert (REPO / "docs" / "profiles.md").read_text() == out, (
        "docs/profiles.md is stale: "
        "run .venv/bin/python scripts/profile-table.py > docs/profiles.md"
    )


# ---- explicit version -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "profile"),
    [("14", "14"), ("19", "modern"), ("22", "modern"), ("modern", "modern"), (" 14 ", "14"),
     ("MODERN", "modern")],
)
def test_profile_for_version(requested: str, profile: str) -> None:
    assert profile_for_version(requested) == profile


@pytest.mark.parametrize("requested", ["15", "13", "abc", "", "14.0.6", "latest"])
def test_profile_for_version_rejects(requested: str) -> None:
    with pytest.raises(ValueError, match="unsupported LLVM version"):
        profile_for_version(requested)


class FakeProc:
    """An injected ``/proc``: pid → (exe, maps or None, ppid)."""

    def __init__(self, procs: dict[int, tuple[str, str | None, int]]) -> None:
        self.procs = procs
        self.reads: list[int] = []
        self.maps_reads: list[int] = []

    def _get(self, pid: int) -> tuple[str, str | None, int]:
        self.reads.append(pid)
        try:
            return self.procs[pid]
        except KeyError:
            raise FileNotFoundError(2, "No such file or directory") from None

    def status(self, pid: int) -> str:
        return f"Name:\tx\nPid:\t{pid}\nPPid:\t{self._get(pid)[2]}\nUid:\t0\t0\t0\t0\n"

    def exe(self, pid: int) -> str:
        return self._get(pid)[0]

    def maps(self, pid: int) -> str:
        self.maps_reads.append(pid)
        maps = self._get(pid)[1]
        if maps is None:
            raise PermissionError(13, "Permission denied")
        return maps


def _maps(*libs: str) -> str:
    lines = ["55d0c0a00000-55d0c0a01000 r--p 00000000 08:01 1234 /usr/bin/x"]
    for i, lib in enumerate(libs):
        lines.append(f"7f0000{i:02d}0000-7f0000{i:02d}1000 r-xp 00000000 08:01 99{i} {lib}")
    lines.append("7ffd0000000-7ffd0021000 rw-p 00000000 00:00 0 [stack]")
    return "\n".join(lines) + "\n"


JITLINK14 = (
    "/usr/lib/llvm-14/bin/llvm-jitlink", _maps("/usr/lib/x86_64-linux-gnu/libLLVM-14.so.1")
)
LLI19 = ("/usr/lib/llvm-19/bin/lli", _maps("/usr/lib/llvm-19/lib/libLLVM.so.19.1"))
JITLINK22 = ("/usr/lib/llvm-22/bin/llvm-jitlink", _maps("/usr/lib/llvm-22/lib/libLLVM.so.22.1"))
BASH = ("/usr/bin/bash", _maps("/usr/lib/x86_64-linux-gnu/libc.so.6"))
PYTHON = ("/usr/bin/python3.11", _maps("/usr/lib/x86_64-linux-gnu/libc.so.6"))


def test_explicit_version_wins_over_detection() -> None:
    proc = FakeProc({10: (*JITLINK22, 1)})
    assert select_profile("14", proc=proc, start_pid=10) == "14"
    proc = FakeProc({10: (*JITLINK14, 1)})
    assert select_profile("22", proc=proc, start_pid=10) == "modern"
    assert select_profile("19", proc=proc, start_pid=10) == "modern"
    assert select_profile("modern", proc=proc, start_pid=10) == "modern"
    assert proc.reads == []  # explicit: /proc is not even read
    assert select_profile(None, proc=proc, start_pid=10) == "14"
    with pytest.raises(ValueError):
        select_profile("15", proc=proc, start_pid=10)


def test_sockets_skip_detection_unless_explicit() -> None:
    proc = FakeProc({10: (*JITLINK14, 1)})
    assert select_profile(None, is_socket=True, proc=proc, start_pid=10) == "modern"
    assert proc.reads == []
    assert select_profile("14", is_socket=True, proc=proc, start_pid=10) == "14"


def test_select_profile_logs_why(caplog: pytest.LogCaptureFixture) -> None:
    proc = FakeProc({10: (*JITLINK14, 1)})
    with caplog.at_level("DEBUG", logger="orc_executor.executor.bootstrap"):
        select_profile(None, proc=proc, start_pid=10)
        select_profile("22")
    text = caplog.text
    assert "profile 14: pid 10 is LLVM 14 (exe /usr/lib/llvm-14/bin/llvm-jitlink)" in text
    assert "profile modern: requested LLVM version '22'" in text


def test_cli_rejects_bad_versions_cleanly() -> None:
    runner = CliRunner()
    for args, env in [
        (["--llvm-version", "15", "filedescs=0,1"], {}),
        (["filedescs=0,1"], {"ORC_EXECUTOR_LLVM_VERSION": "abc"}),
    ]:
        res = runner.invoke(cli_main, args, env=env)
        assert res.exit_code == 2, res.output
        assert "unsupported LLVM version" in res.output
        assert "Traceback" not in res.output
        assert not isinstance(res.exception, ValueError)


# ---- detection --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exe", "maps", "version"),
    [
        (*JITLINK14, 14),
        (*LLI19, 19),
        (*JITLINK22, 22),
        # Renamed binaries: the mapped libLLVM decides.
        ("/opt/tools/my-jit", _maps("/usr/lib/x86_64-linux-gnu/libLLVM-14.so.1"), 14),
        ("/opt/tools/my-jit", _maps("/opt/llvm/lib/libLLVM.so.19.1"), 19),
        ("/opt/tools/my-jit", _maps("/opt/llvm/lib/libLLVM-17.so"), 17),
        # A version in the executable's path wins over the maps (no read of them needed).
        ("/usr/lib/llvm-19/bin/lli", _maps("/opt/llvm/lib/libLLVM.so.22.1"), 19),
        ("/usr/local/bin/llvm-jitlink-14", _maps("/opt/llvm/lib/libLLVM.so.22.1"), 14),
        # An unversioned tool name: the maps decide.
        ("/usr/bin/llvm-jitlink", _maps("/usr/lib/llvm-22/lib/libLLVM.so.22.1"), 22),
        # Without libLLVM in the maps: the executable's path.
        ("/usr/lib/llvm-14/bin/llvm-jitlink", "", 14),
        ("/usr/local/bin/lli-19", "", 19),
        ("/usr/lib/llvm-14/bin/lli (deleted)", "", 14),
        ("/home/me/llvm-project/build/bin/llvm-jitlink", "", None),
    ],
)
def test_llvm_version_of(exe: str, maps: str, version: int | None) -> None:
    found = llvm_version_of(exe, maps)
    assert found is not None and found[0] == version


def test_detection_reads_maps_only_when_the_path_names_no_version() -> None:
    """Reading a fresh LLVM process's ``/proc/PID/maps`` costs ~0.15 ms before Setup: the
    path of Debian's tools names the version, so their maps are not read."""
    proc = FakeProc({10: (*BASH, 11), 11: (*JITLINK22, 1)})
    why = "pid 11 is LLVM 22 (exe /usr/lib/llvm-22/bin/llvm-jitlink)"
    assert detect_profile(proc, start_pid=10) == ("modern", why)
    assert proc.maps_reads == [10]  # the shell's (not an LLVM path), not the controller's
    renamed = FakeProc({10: ("/opt/tools/my-jit", JITLINK14[1], 1)})
    why = "pid 10 is LLVM 14 (maps libLLVM-14.so.1)"
    assert detect_profile(renamed, start_pid=10) == ("14", why)
    assert renamed.maps_reads == [10]


@pytest.mark.parametrize("exe", ["/usr/bin/bash", "/usr/bin/python3.11", "/usr/bin/make",
                                 "/usr/lib/llvm/bin/llvm-jitlink-executor"])
def test_llvm_version_of_non_llvm(exe: str) -> None:
    assert llvm_version_of(exe, _maps("/usr/lib/x86_64-linux-gnu/libc.so.6")) is None


def test_is_wrapper() -> None:
    for exe in ["/usr/bin/bash", "/bin/dash", "/usr/bin/sh", "/usr/bin/python3.11",
                "/usr/bin/python3", "/usr/bin/env", "/usr/bin/timeout", "/usr/bin/perl"]:
        assert is_wrapper(exe), exe
    for exe in ["/usr/lib/llvm-14/bin/llvm-jitlink", "/usr/bin/make", "/usr/sbin/sshd",
                "/usr/bin/pythonista-app"]:
        assert not is_wrapper(exe), exe


def test_parent_pid() -> None:
    assert parent_pid("Name:\tx\nState:\tS\nPPid:\t4242\nTracerPid:\t0\n") == 4242
    assert parent_pid("Name:\tx\n") is None


@pytest.mark.parametrize(
    ("procs", "profile", "why"),
    [
        # Direct parents.
        ({10: (*JITLINK14, 1)}, "14", "pid 10 is LLVM 14"),
        ({10: (*LLI19, 1)}, "modern", "pid 10 is LLVM 19"),
        ({10: (*JITLINK22, 1)}, "modern", "pid 10 is LLVM 22"),
        # epc-tap (python) and a shell wrapper script between controller and executor.
        ({10: (*PYTHON, 11), 11: (*BASH, 12), 12: (*JITLINK14, 1)}, "14", "pid 12 is LLVM 14"),
        ({10: (*BASH, 11), 11: (*LLI19, 1)}, "modern", "pid 11 is LLVM 19"),
        # Stops at the first LLVM match (a 19 controller run from a 14 tool).
        ({10: (*LLI19, 11), 11: (*JITLINK14, 1)}, "modern", "pid 10 is LLVM 19"),
        # Stops at the first process that is neither LLVM nor a wrapper.
        ({10: ("/usr/bin/make", "", 11), 11: (*JITLINK14, 1)}, "modern", "not an LLVM"),
        # Only wrappers up to init.
        ({10: (*BASH, 1), 1: ("/usr/lib/systemd/systemd", "", 0)}, "modern", "not an LLVM"),
        ({10: (*BASH, 0)}, "modern", "no LLVM controller"),
        # Unreadable maps: the exe path still identifies Debian's LLVM 14.
        ({10: ("/usr/lib/llvm-14/bin/lli", None, 1)}, "14", "exe /usr/lib/llvm-14/bin/lli"),
        # Gone process.
        ({}, "modern", "cannot read the executable of pid 10"),
        ({10: (*BASH, 11)}, "modern", "cannot read the executable of pid 11"),
        # A PPid loop ends at the ancestor limit.
        ({10: (*BASH, 10)}, "modern", "within 32 ancestors"),
        # An unversioned (static, upstream) llvm-jitlink is modern.
        ({10: ("/src/build/bin/llvm-jitlink", "", 1)}, "modern", "unversioned LLVM tool"),
    ],
)
def test_detect_profile(
    procs: dict[int, tuple[str, str | None, int]], profile: str, why: str
) -> None:
    got, reason = detect_profile(FakeProc(procs), start_pid=10)
    assert (got, why in reason) == (profile, True), reason


def _fake_proc_tree(root: Path, procs: dict[int, tuple[str, str, int]]) -> None:
    for pid, (exe, maps, ppid) in procs.items():
        d = root / str(pid)
        d.mkdir(parents=True)
        (d / "status").write_text(f"Name:\tx\nPid:\t{pid}\nPPid:\t{ppid}\n")
        (d / "maps").write_text(maps)
        os.symlink(exe, d / "exe")


def test_procfs_reader_on_a_fake_tree(tmp_path: Path) -> None:
    _fake_proc_tree(tmp_path, {20: (*PYTHON, 21), 21: (*JITLINK14, 1)})
    proc = ProcFS(str(tmp_path))
    assert proc.exe(21) == JITLINK14[0]
    assert parent_pid(proc.status(20)) == 21
    assert detect_profile(proc, start_pid=20)[0] == "14"
    assert select_profile(None, proc=proc, start_pid=20) == "14"
    assert select_profile(None, is_socket=True, proc=proc, start_pid=20) == "modern"


def test_detect_profile_on_the_real_proc() -> None:
    # pytest's ancestors are not LLVM tools.
    profile, reason = detect_profile()
    assert profile == "modern", reason


def test_default_reader_is_procfs(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    class Spy(ProcFS):
        def exe(self, pid: int) -> str:
            seen.append(self.root)
            return "/usr/lib/llvm-14/bin/llvm-jitlink"

        def maps(self, pid: int) -> str:
            return ""

    monkeypatch.setattr(bootstrap, "ProcFS", Spy)
    assert select_profile(None) == "14"
    assert seen == ["/proc"]


# ---- sessions: Setup layout on the wire, Hangup, Result tags ----------------------------------


async def _read_message(stream: trio.abc.ReceiveStream, dec: FrameDecoder) -> Message | None:
    while (msg := dec.next_message()) is None:
        data = await stream.receive_some(1 << 16)
        if not data:
            return None
        dec.feed(data)
    return msg


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\x00", "controller hung up"),
        (b"\x01" + String.encode("upstream says bye"), "controller hung up: upstream says bye"),
        (b"", "controller hung up"),
    ],
)
@pytest.mark.parametrize("profile", ["14", "modern"])
async def test_session_ends_cleanly_on_hangup(profile: str, payload: bytes, reason: str) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    session = Session(ours, build_context(profile))
    dec = FrameDecoder(1 << 20)
    result = []

    async def run() -> None:
        result.append(await session.run())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        setup = await _read_message(theirs, dec)
        assert setup is not None and setup.opcode == Opcode.SETUP
        assert (setup.seq, setup.tag) == (0, 0)
        assert decode_setup(setup.payload).layout14 == (profile == "14")
        # One ordinary call first: its Result carries tag 0 (14/19/22 drop non-zero tags).
        info = decode_setup(setup.payload)
        reserve = info.symbols["__llvm_orc_SimpleExecutorMemoryManager_reserve_wrapper"]
        inst = info.symbols["__llvm_orc_SimpleExecutorMemoryManager_Instance"]
        await theirs.send_all(
            encode_header(Opcode.CALL_WRAPPER, 5, reserve, 16) + struct.pack("<QQ", inst, 0)
        )
        res = await _read_message(theirs, dec)
        assert res is not None and (res.opcode, res.seq, res.tag) == (Opcode.RESULT, 5, 0)
        assert bytes(res.payload) == b"\x01" + bytes(8)
        await theirs.send_all(encode_header(Opcode.HANGUP, 0, 0, len(payload)) + payload)
        # The executor answers a Hangup with nothing (never a Hangup of its own): just EOF.
        assert await _read_message(theirs, dec) is None
    session.finish(result[0])
    assert result[0].clean and result[0].exit_status == 0
    assert result[0].reason == reason


async def test_session_sends_no_hangup_at_eof() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    session = Session(ours, build_context("14"))
    dec = FrameDecoder(1 << 20)
    ends = []

    async def run() -> None:
        ends.append(await session.run())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        setup = await _read_message(theirs, dec)
        assert setup is not None and setup.opcode == Opcode.SETUP
        await theirs.send_stream.aclose()  # EOF for the executor, as 14/19/22 end sessions
        assert await _read_message(theirs, dec) is None  # nothing after Setup, no Hangup
    session.finish(ends[0])
    assert ends[0].clean and ends[0].reason == "controller disconnected"


@pytest.mark.parametrize("profile", bootstrap.PROFILES)
def test_every_context_shares_the_wrapper_signatures(profile: str) -> None:
    """Signatures are built once per process, so a decoder generated for one session (or in
    the warm server's fork server, before it forks workers) serves every later session."""
    first, second = build_context(profile), build_context(profile)
    names = {spec.name: spec.sig for spec in first.registry.by_addr.values()}
    assert names
    for spec in second.registry.by_addr.values():
        assert spec.sig is names[spec.name], spec.name
