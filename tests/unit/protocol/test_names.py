"""``orc_executor.protocol.names``, the one table of bootstrap symbols and wrapper functions,
checked against what serves them:

* for every profile and every accepted ``--llvm-version``, the executor context the services
  build (its registry, the names answered only through dylib lookup, and the Setup payload)
  has exactly the names and SPS signatures the table gives that profile;
* the stock ``llvm-jitlink-executor`` / ``lli-child-target`` 14, 19 and 22 advertise exactly
  the table's names for their version, and orc-executor launched with ``--llvm-version N``
  advertises its profile's names (both read from the Setup message of the real process);
* the table imports without trio or cffi;
* docs/protocol.md names every entry, and its wrapper tables give each version's signature.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from orc_executor.controller import SetupInfo, decode_setup
from orc_executor.executor import bootstrap
from orc_executor.executor.bootstrap import build_context, profile_for_version, setup_info
from orc_executor.executor.context import ExecutorContext
from orc_executor.executor.services.dylib_manager import DylibManagerService
from orc_executor.protocol import names
from orc_executor.protocol.framing import FrameDecoder, Message, Opcode
from orc_executor.protocol.names import (
    ExecutorSharedMemoryMapperService,
    JITLoaderGDB,
    SimpleExecutorDylibManager,
    SimpleExecutorMemoryManager,
)
from orc_executor.protocol.sps import WrapperSignature

REPO = Path(__file__).resolve().parents[3]
PROTOCOL_DOC = REPO / "docs" / "protocol.md"
LLVM_VERSIONS = ("14", "19", "22")


def _sig(sig: WrapperSignature | None) -> str | None:
    return None if sig is None else str(sig)


def _lookup_only(ctx: ExecutorContext) -> dict[str, int]:
    dylib = next(s for s in ctx.registry.services if isinstance(s, DylibManagerService))
    return dict(dylib.lookup_only)


def _served_by_context(ctx: ExecutorContext) -> dict[str, tuple[str | None, bool]]:
    """name → (signature, advertised) of everything ``ctx`` answers: the registry's names
    (advertised) and the dylib manager's lookup-only names."""
    reg = ctx.registry
    out: dict[str, tuple[str | None, bool]] = {}
    for name, advertised_, addr in [
        *((n, True, a) for n, a in reg.addr_of.items()),
        *((n, False, a) for n, a in _lookup_only(ctx).items()),
    ]:
        spec = reg.lookup(addr)
        out[name] = (_sig(spec.sig) if spec is not None else None, advertised_)
    return out


def _served_by_table(profile: str) -> dict[str, tuple[str | None, bool]]:
    return {n: (_sig(e.signature), e.advertised) for n, e in names.served(profile).items()}


# ---- the table against the services -----------------------------------------------------------


def test_profiles_and_versions_match_bootstrap() -> None:
    assert names.PROFILES == bootstrap.PROFILES
    assert dict(names.VERSION_PROFILES) == bootstrap.VERSION_PROFILES


@pytest.mark.parametrize("profile", names.PROFILES)
def test_services_register_exactly_the_profile_names(profile: str) -> None:
    ctx = build_context(profile)
    assert _served_by_context(ctx) == _served_by_table(profile)
    assert set(ctx.registry.symbols()) == names.advertised(profile)
    assert set(_lookup_only(ctx)) == names.lookup_only(profile)
    # Every wrapper function a service registered is in the table under its own name.
    registered = {spec.name for spec in ctx.registry.by_addr.values()}
    wrappers = {n for n, e in names.served(profile).items() if e.signature is not None}
    assert registered <= wrappers
    # The rest are aliases: lookup-only names answered with another wrapper's address.
    assert wrappers - registered <= names.lookup_only(profile)


@pytest.mark.parametrize("profile", names.PROFILES)
def test_setup_payload_lists_exactly_the_advertised_names(profile: str) -> None:
    info = setup_info(build_context(profile))
    decoded = decode_setup(info.encode())
    assert decoded.layout14 == (profile == "14")
    assert set(decoded.symbols) == names.advertised(profile)


def test_modern_without_shared_memory_drops_only_that_service() -> None:
    ctx = build_context("modern", shared_memory=False)
    assert set(ctx.registry.symbols()) == (
        names.advertised("modern") - set(ExecutorSharedMemoryMapperService.names())
    )


@pytest.mark.parametrize("version", sorted(names.VERSION_PROFILES))
def test_each_llvm_version_gets_its_names_and_signatures(version: str) -> None:
    """``--llvm-version N`` builds a context serving every name LLVM N uses, each with the
    signature N uses (for 19 and 22 inside the modern union)."""
    profile = profile_for_version(version)
    ctx = build_context(profile)
    served = _served_by_context(ctx)
    assert served == _served_by_table(profile)
    stock_versions = (
        names.PROFILE_VERSIONS[profile] if version == "modern" else frozenset({version})
    )
    for v in stock_versions:
        for name in names.stock_advertised(v):
            assert served[name][1], f"{name} is not advertised for LLVM {v}"
            assert served[name][0] == _sig(names.signature_for(v, name)), name
        for name in names.looked_up_by_name(v):
            assert served[name][0] == _sig(names.signature_for(v, name)), name


def test_table_facts() -> None:
    # The stock executors' Setup sizes (captured: 17, 24, 34 symbols).
    assert [len(names.stock_advertised(v)) for v in LLVM_VERSIONS] == [17, 24, 34]
    assert names.looked_up_by_name("14") == {
        "llvm_orc_registerEHFrameSectionWrapper",
        "llvm_orc_deregisterEHFrameSectionWrapper",
        JITLoaderGDB.register_wrapper,
    }
    assert names.looked_up_by_name("19") == {JITLoaderGDB.register_wrapper}
    assert names.looked_up_by_name("22") == frozenset(names.JITLoaderPerf.names())
    # Same name, different layouts between 14 and 19 (never among 19, 22, upstream).
    assert str(names.signature_for("14", SimpleExecutorDylibManager.lookup)) == (
        "Expected<Sequence<ExecutorAddr>>(ExecutorAddr, uint64, Sequence<Tuple<String, bool>>)"
    )
    assert str(names.signature_for("19", SimpleExecutorDylibManager.lookup)) == (
        "Expected<Sequence<ExecutorSymbolDef>>(ExecutorAddr, ExecutorAddr, "
        "Sequence<Tuple<String, bool>>)"
    )
    assert str(names.signature_for("14", JITLoaderGDB.register_wrapper)) == (
        "Error(ExecutorAddrRange)"
    )
    assert str(names.signature_for("19", JITLoaderGDB.register_wrapper)) == (
        "Error(ExecutorAddrRange, bool)"
    )
    with pytest.raises(KeyError):
        names.signature_for("22", SimpleExecutorMemoryManager.finalize)
    assert names.signature_for("22", SimpleExecutorMemoryManager.instance) is None
    # Every namespace constant is in the table and every table name in a namespace.
    constants = [n for ns in names.NAMESPACES for n in ns.names()]
    assert len(constants) == len(set(constants))
    assert set(constants) == names.all_names()
    assert SimpleExecutorMemoryManager.reserve == (
        "__llvm_orc_SimpleExecutorMemoryManager_reserve_wrapper"
    )


def test_unknown_profile_and_version_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown profile '19'"):
        names.served("19")
    with pytest.raises(ValueError, match="unknown LLVM version '15'"):
        names.stock_advertised("15")
    with pytest.raises(ValueError, match="unknown LLVM version"):
        names.looked_up_by_name("modern")


def test_served_is_read_only() -> None:
    served = names.served("modern")
    with pytest.raises(TypeError):
        served["x"] = served[SimpleExecutorMemoryManager.reserve]  # type: ignore[index]


def test_names_import_without_trio_or_cffi() -> None:
    code = (
        "import sys\n"
        "from orc_executor.protocol import names\n"
        "assert len(names.served('modern')) == 74, len(names.served('modern'))\n"
        "bad = sorted(m for m in sys.modules"
        " if m.split('.')[0] in ('trio', 'cffi', '_cffi_backend')"
        " or m.startswith(('orc_executor.native', 'orc_executor.executor',"
        " 'orc_executor.io')))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-P", "-c", code], check=True, cwd=REPO, timeout=60)


def test_protocol_doc_names_every_entry() -> None:
    text = PROTOCOL_DOC.read_text(encoding="utf-8")
    missing = sorted(n for n in names.all_names() if f"`{n}`" not in text)
    assert not missing, f"docs/protocol.md does not name: {missing}"


_DOC_ROW = re.compile(
    r"^\| `(?P<name>[^`]+)` \| (?P<versions>[\w, ]+) \| (?P<sig>`[^`]+`|data) \|$"
)


def test_protocol_doc_signatures_match_the_table() -> None:
    """Every wrapper-table row of docs/protocol.md (``| `name` | versions | `signature` |``)
    gives the table's signature for each version it lists, and every (name, version) of the
    table has such a row."""
    rows: set[tuple[str, str]] = set()
    for line in PROTOCOL_DOC.read_text(encoding="utf-8").splitlines():
        m = _DOC_ROW.match(line)
        if m is None or m["name"] not in names.all_names():
            continue
        sig = None if m["sig"] == "data" else m["sig"].strip("`")
        for version in (v.strip() for v in m["versions"].split(",")):
            assert version in names.VERSIONS, line
            assert _sig(names.signature_for(version, m["name"])) == sig, line
            rows.add((m["name"], version))
    expected = {(s.name, v) for s in names.TABLE for v in s.versions}
    assert expected - rows == set(), "docs/protocol.md lacks rows for these (name, version)"


# ---- the table against real processes ---------------------------------------------------------

SETUP_TIMEOUT = 30.0


def _setup_of(
    argv: Callable[[int, int], list[str]], env: dict[str, str] | None = None
) -> SetupInfo:
    """Launch ``argv(in_fd, out_fd)`` with two pipes as a controller does, read its Setup
    message, close our end (EOF at a message boundary) and check that it exits 0."""
    c2e_r, c2e_w = os.pipe()
    e2c_r, e2c_w = os.pipe()
    try:
        proc = subprocess.Popen(
            argv(c2e_r, e2c_w), pass_fds=(c2e_r, e2c_w), env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
    finally:
        os.close(c2e_r)
        os.close(e2c_w)
    decoder = FrameDecoder()
    msg: Message | None = None
    deadline = time.monotonic() + SETUP_TIMEOUT
    try:
        while msg is None:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([e2c_r], [], [], max(left, 0))
            assert ready, f"no Setup from {argv(0, 1)} within {SETUP_TIMEOUT}s"
            data = os.read(e2c_r, 1 << 16)
            assert data, f"{argv(0, 1)} closed its pipe before Setup"
            decoder.feed(data)
            msg = decoder.next_message()
    finally:
        os.close(c2e_w)
        try:
            out, err = proc.communicate(timeout=SETUP_TIMEOUT)
        finally:
            os.close(e2c_r)
            if proc.poll() is None:
                proc.kill()
    assert (msg.opcode, msg.seq, msg.tag) == (Opcode.SETUP, 0, 0)
    assert proc.returncode == 0, err.decode(errors="replace")
    assert out == b""
    return decode_setup(msg.payload)


def _llvm_bin(version: str, tool: str) -> str:
    path = Path(f"/usr/lib/llvm-{version}/bin/{tool}")
    assert path.is_file(), f"{path} missing: scripts/bootstrap.sh installs llvm-{version}"
    return str(path)


@pytest.mark.parametrize("version", LLVM_VERSIONS)
def test_stock_executor_advertises_the_table_names(version: str) -> None:
    exe = _llvm_bin(version, "llvm-jitlink-executor")
    info = _setup_of(lambda i, o: [exe, f"filedescs={i},{o}"])
    assert info.layout14 == (version == "14")
    assert set(info.symbols) == names.stock_advertised(version)


@pytest.mark.parametrize("version", LLVM_VERSIONS)
def test_stock_child_target_is_the_executor_without_shared_memory(version: str) -> None:
    exe = _llvm_bin(version, "lli-child-target")
    info = _setup_of(lambda i, o: [exe, str(i), str(o)])
    assert set(info.symbols) == (
        names.stock_advertised(version) - set(ExecutorSharedMemoryMapperService.names())
    )


@pytest.mark.parametrize("version", sorted(names.VERSION_PROFILES))
def test_orc_executor_advertises_its_profile_names(version: str, tmp_path: Path) -> None:
    exe = str(Path(sys.executable).parent / "orc-executor")
    # Cold: a warm server other tests (or users) run must not answer this launch.
    env = {**os.environ, "ORC_EXECUTOR_COLD": "1",
           "ORC_EXECUTOR_WARM_SOCKET": str(tmp_path / "no-server.sock")}
    info = _setup_of(lambda i, o: [exe, "--llvm-version", version, f"filedescs={i},{o}"], env)
    profile = names.VERSION_PROFILES[version]
    assert info.layout14 == (profile == "14")
    assert set(info.symbols) == names.advertised(profile)
    if version in LLVM_VERSIONS:
        assert names.stock_advertised(version) <= set(info.symbols)
