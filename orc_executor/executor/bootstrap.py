"""Bootstrap symbol sets (profiles), the Setup message, and choosing a profile.

A *profile* decides which names an executor serves and advertises, with which layouts, and
the Setup layout (docs/protocol.md §5, §8.2). The names come from the per-version table
:mod:`orc_executor.protocol.names` (:func:`~orc_executor.protocol.names.served`), the rest
from :mod:`.profiles`; every service lists all the names it can answer and registers those
the profile serves:

* ``14``: LLVM 14's Setup layout (triple, page size, bootstrap symbols — no bootstrap map) and
  its 17 names with 14 layouts: dylib ``lookup_wrapper`` with a u64 handle and plain-address
  results, ``reserve``/``finalize``/``deallocate``, the ``__llvm_orc_bootstrap_*`` EH-frame
  wrappers, the five ``mem_write`` wrappers and ``run_as_main``. The helper names llvm-jitlink 14
  looks up *by name* through the dylib manager (``llvm_orc_(de)registerEHFrameSectionWrapper``,
  ``llvm_orc_registerJITLoaderGDBWrapper`` with the 14 ``Error(AddrRange)`` layout) are answered
  from the executor's own table without being advertised.
* ``modern``: the union of LLVM 19, 22 and upstream ``orc_rt_ci_*`` names, each with its own
  layout (19, 22 and upstream never share a name with different layouts), with the 15+ Setup
  layout (``SimpleRemoteEPCExecutorInfo``: triple, page size, bootstrap map, bootstrap
  symbols). 19/22 controllers ignore names they do not know.

The profile is chosen by :func:`select_profile`: an explicit version wins
(:func:`~orc_executor.protocol.names.profile_for_version`), else the launching
process is inspected (:func:`detect_profile`), else ``modern``.
"""

from __future__ import annotations

import logging
import os
import re
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..host import PAGE_SIZE, PROCESS_TRIPLE
from ..native.api import lib
from ..protocol.names import PROFILES as PROFILES  # re-exported
from ..protocol.names import VERSION_PROFILES as VERSION_PROFILES  # re-exported
from ..protocol.names import SimpleRemoteEPC
from ..protocol.names import profile_for_version as profile_for_version  # re-exported
from ..protocol.setup import SetupInfo as SetupInfo  # re-exported
from ..protocol.sps import WrapperSignature
from .context import ExecutorContext
from .profiles import Profile
from .profiles import profile as profile_row
from .registry import Registry, Service
from .services.dylib_manager import DylibManagerService
from .services.eh_frame import EHFrameService
from .services.gdb_jit import GDBJITService
from .services.memory_access import MemoryAccessService
from .services.memory_manager import MemoryManagerService
from .services.perf import PerfService
from .services.run import RunService
from .services.shared_memory import SharedMemoryMapperService

log = logging.getLogger(__name__)

#: The triple Setup announces: this host's (:data:`~orc_executor.host.PROCESS_TRIPLE`).
TRIPLE = PROCESS_TRIPLE
DISPATCH_CTX = SimpleRemoteEPC.dispatch_ctx
DISPATCH_FN = SimpleRemoteEPC.dispatch_fn


# ---- choosing a profile --------------------------------------------------------------------------


class ProcReader(Protocol):
    """Reads the bits of ``/proc/PID`` detection needs; each method raises ``OSError`` when
    the process is gone or unreadable. Tests inject fakes."""

    def status(self, pid: int) -> str:
        """Contents of ``/proc/PID/status``."""
        ...

    def exe(self, pid: int) -> str:
        """Target of ``/proc/PID/exe``."""
        ...

    def maps(self, pid: int) -> str:
        """Contents of ``/proc/PID/maps``."""
        ...


class ProcFS:
    """:class:`ProcReader` over a real (or fake, for tests) ``/proc`` directory tree."""

    def __init__(self, root: str = "/proc") -> None:
        self.root = root

    def _path(self, pid: int, name: str) -> str:
        return os.path.join(self.root, str(pid), name)

    def status(self, pid: int) -> str:
        with open(self._path(pid, "status"), encoding="utf-8", errors="replace") as f:
            return f.read()

    def exe(self, pid: int) -> str:
        return os.readlink(self._path(pid, "exe"))

    def maps(self, pid: int) -> str:
        with open(self._path(pid, "maps"), encoding="utf-8", errors="replace") as f:
            return f.read()


_PPID_RE = re.compile(r"^PPid:\s*(\d+)\s*$", re.MULTILINE)
#: ``libLLVM-14.so.1`` (14 to 17 style), ``libLLVM.so.19.1`` (18+), ``libLLVM-17.so``.
_LIBLLVM_RE = re.compile(r"/libLLVM[-.](?:so\.)?(\d+)\b")
#: Debian's ``/usr/lib/llvm-14/bin/llvm-jitlink``.
_LLVM_DIR_RE = re.compile(r"/llvm-(\d+)/bin/[^/]+$")
#: ``llvm-jitlink-14``, ``lli-19``, ``clang-repl-22`` (versioned tool names).
_TOOL_RE = re.compile(r"^(?:llvm-jitlink|lli|clang-repl)(?:-(\d+))?$")
#: Processes that sit between a controller and its executor without being one: shells running
#: wrapper scripts, interpreters (``epc-tap`` is Python), and exec-style launchers.
_WRAPPER_RE = re.compile(
    r"^(?:(?:ba|da|z|k|mk|c|tc|fi|a|y)?sh|busybox|env|python[\d.]*|pypy[\d.]*|perl[\d.]*"
    r"|ruby[\d.]*|node|timeout|strace|ltrace|nice|nohup|stdbuf|setsid|sudo|su|time|xargs"
    r"|taskset|ionice|unshare|nsenter|chroot|script|tini|dumb-init|valgrind.*)$"
)

MAX_ANCESTORS = 32


def parent_pid(status: str) -> int | None:
    """``PPid`` from the text of ``/proc/PID/status`` (``None`` if absent)."""
    m = _PPID_RE.search(status)
    return int(m.group(1)) if m else None


def _exe_path(exe: str) -> str:
    return exe.removesuffix(" (deleted)")


def versioned_path(exe: str) -> tuple[int, str] | None:
    """The LLVM version an executable's path names: ``(version, evidence)`` for Debian's
    ``/usr/lib/llvm-N/bin/…`` and versioned tool names (``llvm-jitlink-N``, ``lli-N``), else
    ``None``. Needs no read of ``/proc/PID/maps``."""
    path = _exe_path(exe)
    m = _LLVM_DIR_RE.search(path)
    if m:
        return int(m.group(1)), f"exe {path}"
    m = _TOOL_RE.match(os.path.basename(path))
    if m and m.group(1):
        return int(m.group(1)), f"exe {path}"
    return None


def llvm_version_of(exe: str, maps: str) -> tuple[int | None, str] | None:
    """Whether a process is an LLVM tool, and which version: ``(version or None, evidence)``.

    A version in the executable's path wins (:func:`versioned_path`), then the libLLVM mapped
    into the process (``maps``: the text of ``/proc/PID/maps``; this catches renamed
    binaries). An ``llvm-jitlink`` or ``lli`` without a version and without a libLLVM (e.g. a
    static upstream build) yields ``(None, …)``; any other process ``None``.
    """
    found = versioned_path(exe)
    return found if found is not None else _version_from_maps(exe, maps)


def _version_from_maps(exe: str, maps: str) -> tuple[int | None, str] | None:
    """:func:`llvm_version_of` for an executable whose path names no version."""
    m = _LIBLLVM_RE.search(maps)
    if m:
        start = maps.rfind("/", 0, m.end())
        line_end = maps.find("\n", m.end())
        lib_name = maps[start + 1 : line_end if line_end >= 0 else len(maps)].strip()
        return int(m.group(1)), f"maps {lib_name}"
    path = _exe_path(exe)
    if _TOOL_RE.match(os.path.basename(path)):
        return None, f"exe {path}"
    return None


def is_wrapper(exe: str) -> bool:
    """True for processes to look through (shells, interpreters, launchers)."""
    return bool(_WRAPPER_RE.match(os.path.basename(_exe_path(exe))))


def profile_for_detected(version: int | None) -> str:
    """14 and older speak the 14 layout; 15+ (and unversioned builds) the modern one."""
    return "14" if version is not None and version <= 14 else "modern"


@dataclass(frozen=True)
class Controller:
    """The LLVM tool found among this process's ancestors (:func:`find_controller`)."""

    pid: int
    exe: str
    version: int | None
    evidence: str

    @property
    def is_clang_repl(self) -> bool:
        """clang-repl (``clang-repl``, ``clang-repl-22``...), whose sessions go on after a
        failed statement."""
        return os.path.basename(self.exe).startswith("clang-repl")


def find_controller(
    proc: ProcReader | None = None, *, start_pid: int | None = None
) -> tuple[Controller | None, str]:
    """Find the controller among this process's ancestors: ``(controller or None, why)``.

    Walks up from ``start_pid`` (default: the parent) through ``PPid``, skipping wrappers
    (:func:`is_wrapper`), and stops at the first LLVM tool (:func:`llvm_version_of`) or at the
    first other process.
    """
    reader: ProcReader = proc if proc is not None else ProcFS()
    pid: int | None = os.getppid() if start_pid is None else start_pid
    for _ in range(MAX_ANCESTORS):
        if pid is None or pid <= 0:
            return None, "no LLVM controller among the ancestors"
        try:
            exe = reader.exe(pid)
        except OSError as e:
            return None, f"cannot read the executable of pid {pid}: {e.strerror or e}"
        found: tuple[int | None, str] | None = versioned_path(exe)
        if found is None:
            try:
                maps = reader.maps(pid)
            except OSError:
                maps = ""
            found = _version_from_maps(exe, maps)
        if found is not None:
            version, evidence = found
            shown = f"LLVM {version}" if version is not None else "unversioned LLVM tool"
            return (Controller(pid, _exe_path(exe), version, evidence),
                    f"pid {pid} is {shown} ({evidence})")
        if not is_wrapper(exe) or pid == 1:
            return None, f"pid {pid} ({_exe_path(exe)}) is not an LLVM controller"
        try:
            pid = parent_pid(reader.status(pid))
        except OSError as e:
            return None, f"cannot read the parent of pid {pid}: {e.strerror or e}"
    return None, f"no LLVM controller within {MAX_ANCESTORS} ancestors"


def detect_profile(
    proc: ProcReader | None = None, *, start_pid: int | None = None
) -> tuple[str, str]:
    """The profile of the controller among this process's ancestors (:func:`find_controller`):
    ``(profile, why)``; ``modern`` when no LLVM tool is found."""
    controller, why = find_controller(proc, start_pid=start_pid)
    return (profile_for_detected(controller.version) if controller else "modern"), why


def select_profile(
    requested: str | None,
    *,
    is_socket: bool = False,
    proc: ProcReader | None = None,
    start_pid: int | None = None,
) -> str:
    """The profile for this session.

    An explicit version (``--llvm-version`` / ``ORC_EXECUTOR_LLVM_VERSION``) wins: ``14`` → the
    14 profile; ``19``, ``22``, ``modern`` → modern; anything else raises ``ValueError``.
    Otherwise sockets (no parent relation) get ``modern`` and fd pairs are detected from the
    launching process (:func:`detect_profile`).
    """
    if requested is not None:
        profile = profile_for_version(requested)
        why = f"requested LLVM version {requested!r}"
    elif is_socket:
        profile, why = "modern", "socket connection (no launching controller to inspect)"
    else:
        profile, why = detect_profile(proc, start_pid=start_pid)
    log.debug("profile %s: %s", profile, why)
    return profile


# ---- building a context ------------------------------------------------------------------------

_profile_of: weakref.WeakKeyDictionary[ExecutorContext, str] = weakref.WeakKeyDictionary()


def build_context(profile: str = "modern", *, shared_memory: bool = True) -> ExecutorContext:
    """A fresh :class:`ExecutorContext` serving exactly the names of ``profile``
    (:func:`~orc_executor.protocol.names.served`), each with its profile's signature; without
    the shared-memory service when ``shared_memory`` is false. ``ValueError`` for an unknown
    profile.

    The registry holds the advertised names (the Setup bootstrap symbols, in registration
    order: the dispatch symbols, then each service's names in the order it lists them); the
    dylib manager's ``lookup_only`` the names answered only through dylib lookup (their own
    wrapper function, or an alias's target: :attr:`Profile.aliases`).
    """
    row = profile_row(profile)
    ctx = ExecutorContext(Registry())
    reg = ctx.registry
    reg.add_symbol(DISPATCH_CTX, int(lib.orc_dispatch_ctx_addr()))
    reg.add_symbol(DISPATCH_FN, int(lib.orc_dispatch_fn_addr()))
    dylib = DylibManagerService(ctx)
    services: list[Service] = [
        MemoryManagerService(ctx),
        dylib,
        MemoryAccessService(),
        RunService(ctx),
        EHFrameService(ctx),
        GDBJITService(ctx),
    ]
    if shared_memory:
        services.append(SharedMemoryMapperService(ctx))
    services.append(PerfService(ctx))
    serves = _serves(row)
    for service in services:
        reg.add_service(service, serves)
    for name in sorted(row.lookup_only):
        target = row.aliases.get(name)
        dylib.lookup_only[name] = reg.addr_of[target] if target else reg.addr_of.pop(name)
    _profile_of[ctx] = profile
    return ctx


def _serves(row: Profile) -> Callable[[str, WrapperSignature | None], bool]:
    """Whether ``row`` serves a name with a signature (``None``: a data symbol) as a
    registered symbol of its own (aliases are not)."""
    served = row.served

    def serves(name: str, sig: WrapperSignature | None) -> bool:
        entry = served.get(name)
        if entry is None or name in row.aliases:
            return False
        if sig is None or entry.signature is None:
            return sig is entry.signature
        # Services may decode differently (e.g. into views): the layout is what must match.
        return sig is entry.signature or str(sig) == str(entry.signature)

    return serves


@dataclass(frozen=True)
class ProfileEntry:
    """One name a profile answers: its SPS signature (``None`` for data symbols such as
    ``*_Instance``) and whether Setup advertises it (else it is found only by dylib lookup)."""

    name: str
    signature: str | None
    advertised: bool


def describe_profile(profile: str) -> list[ProfileEntry]:
    """Every name ``profile`` answers, sorted by name (for docs and tests)."""
    ctx = build_context(profile)
    reg = ctx.registry
    names = dict(reg.addr_of)
    hidden: dict[str, int] = {}
    for svc in reg.services:
        if isinstance(svc, DylibManagerService):
            hidden.update(svc.lookup_only)
    out = []
    for name, addr in sorted({**hidden, **names}.items()):
        spec = reg.lookup(addr)
        out.append(ProfileEntry(name, str(spec.sig) if spec else None, name in names))
    return out


def profile_of(ctx: ExecutorContext) -> str:
    """The profile ``ctx`` was built with (``modern`` for contexts built elsewhere)."""
    return _profile_of.get(ctx, "modern")


def setup_info(ctx: ExecutorContext) -> SetupInfo:
    """The Setup payload for ``ctx``'s registry (14 layout for the 14 profile)."""
    return SetupInfo(
        TRIPLE, PAGE_SIZE, {}, ctx.registry.symbols(),
        layout14=profile_row(profile_of(ctx)).setup_layout14,
    )
