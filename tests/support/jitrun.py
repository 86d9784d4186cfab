"""Run the C test programs of ``tests/programs/cases.py`` under ``llvm-jitlink -oop-executor``.

* :func:`compile_case` compiles a case's sources with gcc into a content-addressed cache
  (``$ORC_TEST_OBJ_CACHE``, default ``<repo>/.cache/e2e-objects``).
* :func:`run_case` runs ``llvm-jitlink -oop-executor=EXECUTOR [flags] objs... [-args ...]`` with a
  timeout and returns normalized ``(stdout, stderr, returncode)``.
* :func:`compare_with_reference` runs a case with the stock ``llvm-jitlink-executor`` and with
  another executor and returns both results.
* :func:`gdb_breakpoint_run` runs a case under gdb with a breakpoint on a JIT'd function.
* :func:`orc_runtime_for` gives the ORC runtime archive that belongs to an LLVM version (22:
  :func:`orc_runtime`; 14 and 19: fetched from Debian's ``libclang-rt-N-dev``), which
  ``{orc_rt}`` in a case's flags stands for when it runs under that version's llvm-jitlink.

Usable outside pytest, e.g.::

    python -c 'from tests.support.jitrun import *
    from tests.programs.cases import CASES_BY_NAME as C
    print(compare_with_reference(C["abort"], "/path/to/orc-executor"))'

Facts learned by experiment that shape this module (details in REFERENCE_NOTES.md):

* llvm-jitlink never waits for the executor: the executor can still be writing (e.g. flushing
  stdio at exit) after llvm-jitlink has exited. Output is therefore read from pipes until EOF,
  which only comes when every process holding them (executor included) has exited or closed
  them; output redirected to a file could be read too early.
* stdin must always be something (``/dev/null`` by default): with fd 0 closed, llvm-jitlink's
  pipe gets fd 0 and the session hangs.
* The only text that differs between two executors on the same case is the temporary directory
  (``{tmp}``) and, through wrappers, the executor path; llvm-jitlink's own path is normalized
  too so expectations do not depend on the LLVM version directory. After a link error
  llvm-jitlink's teardown messages are racy (``racy_teardown``), and are dropped.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # make ``tests.programs.cases`` importable when run directly
    sys.path.insert(0, str(REPO))

from tests.programs.cases import Case  # noqa: E402

CC = os.environ.get("CC", "gcc")
DEFAULT_LLVM_VERSION = 22
OBJ_CACHE = Path(os.environ.get("ORC_TEST_OBJ_CACHE", REPO / ".cache" / "e2e-objects"))

#: Lines of llvm-jitlink/executor chatter after a link error whose presence and order vary from
#: run to run with the stock executor (observed over 40 runs of atexit_missing):
#:   "{jitlink}: Bad file descriptor", "llvm-jitlink error: disconnecting",
#:   "SimpleRemoteEPCServer Bad file descriptor", "SimpleRemoteEPCServer FD-transport
#:   disconnected". Only dropped for cases marked ``racy_teardown``.
RACY_TEARDOWN_LINES = re.compile(
    rb"^(?:.*: Bad file descriptor"
    rb"|llvm-jitlink error: disconnecting"
    rb"|\{jitlink\}: disconnecting"
    rb"|SimpleRemoteEPCServer .*"
    rb")\n?",
    re.MULTILINE,
)

#: How the LLVM 14/19 controllers fail when they hit their own intermittent races: stderr text
#: a ``run_case(retry_if=...)`` predicate looks for (tests/e2e/test_versions.py,
#: tests/e2e/test_version_cases.py). "disconnecting" / "FD-transport disconnected": about once
#: in 40 runs of a two-object program with the stock 19 executor on a busy machine;
#: "llvm-jitlink error: Resource tracker 0x... became defunct": llvm-jitlink 19 after main
#: returned (exit status and stdout unchanged), 2 in about 130 runs of ``multi_object_reversed``
#: with the stock 19 executor (REFERENCE_NOTES.md).
LLVM_CONTROLLER_RACE = ("disconnecting", "FD-transport disconnected", "became defunct")


def llvm_bin(version: int = DEFAULT_LLVM_VERSION) -> Path:
    return Path(f"/usr/lib/llvm-{version}/bin")


def llvm_jitlink(version: int = DEFAULT_LLVM_VERSION) -> Path:
    return llvm_bin(version) / "llvm-jitlink"


def reference_executor(version: int = DEFAULT_LLVM_VERSION) -> Path:
    return llvm_bin(version) / "llvm-jitlink-executor"


#: What ``-preload`` gives llvm-jitlink for C++ programs.
LIBSTDCXX = "/usr/lib/x86_64-linux-gnu/libstdc++.so.6"
#: llvm-jitlink 22's last stderr line when the executor went away under it.
DISCONNECTING = f"{llvm_jitlink(22)}: disconnecting\n"


@dataclass(frozen=True)
class Outcome:
    """What a run of llvm-jitlink showed (text), for comparison with a written-down one."""

    stdout: str
    stderr: str
    returncode: int


@dataclass(frozen=True)
class RunResult:
    """One llvm-jitlink run, normalized (see :func:`normalize`)."""

    stdout: bytes
    stderr: bytes
    returncode: int
    #: How the executor process ended (``"exit N"`` / ``"signal N"``), when recorded.
    executor_status: str | None = None
    #: The command line that was run (for failure messages).
    command: str = ""
    #: How many runs it took (more than 1 only with ``run_case(retry_if=...)``).
    attempts: int = 1

    @property
    def triple(self) -> tuple[bytes, bytes, int]:
        return (self.stdout, self.stderr, self.returncode)

    def describe(self) -> str:
        return (
            f"$ {self.command}\n"
            f"returncode: {self.returncode}\n"
            f"executor status: {self.executor_status}\n"
            f"stdout ({len(self.stdout)} bytes): {_preview(self.stdout)}\n"
            f"stderr ({len(self.stderr)} bytes): {_preview(self.stderr)}"
            + (f"\nattempts: {self.attempts}" if self.attempts > 1 else "")
        )


class Comparison(NamedTuple):
    reference: RunResult
    ours: RunResult


class JitRunTimeout(AssertionError):
    """llvm-jitlink (or an executor still holding its stdout/stderr) ran past the timeout."""


class OrcRuntimeUnavailable(RuntimeError):
    pass


def _preview(data: bytes, limit: int = 2000) -> str:
    text = repr(data[:limit])
    return text + (f" ... (+{len(data) - limit} bytes)" if len(data) > limit else "")


# ---------------------------------------------------------------------------------------------
# Compilation


def _compiler_id() -> str:
    out = subprocess.run([CC, "--version"], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[0] if out.stdout else CC


_COMPILER_ID: str | None = None


def compile_source(source: Path, cflags: Sequence[str], cache_dir: Path | None = None) -> Path:
    """``gcc -c <cflags> source`` into the cache, keyed by (compiler, flags, source bytes)."""
    global _COMPILER_ID
    if _COMPILER_ID is None:
        _COMPILER_ID = _compiler_id()
    cache = cache_dir or OBJ_CACHE
    key = hashlib.sha256()
    for part in (_COMPILER_ID, "\0".join(cflags), str(source.resolve())):
        key.update(part.encode() + b"\0\0")
    key.update(source.read_bytes())
    obj = cache / f"{source.stem}-{key.hexdigest()[:20]}.o"
    if obj.is_file():
        return obj
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{source.stem}-", suffix=".o", dir=cache)
    os.close(fd)
    try:
        proc = subprocess.run(
            [CC, "-c", *cflags, str(source), "-o", tmp_name],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"compiling {source} failed:\n{proc.stderr}")
        os.replace(tmp_name, obj)  # atomic: concurrent runs never see a partial object
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return obj


def compile_c(tmp: Path, name: str, src: str) -> Path:
    """Write ``src`` as ``tmp/name.c`` and compile it (``gcc -c -fPIC -O1``); the object."""
    c = tmp / f"{name}.c"
    c.write_text(src)
    o = tmp / f"{name}.o"
    subprocess.run([CC, "-c", "-fPIC", "-O1", str(c), "-o", str(o)], check=True)
    return o


def compile_shared(tmp: Path, name: str, src: str, libdir: Path | None = None) -> Path:
    """Write ``src`` as ``tmp/name.c`` and build ``libNAME.so`` from it (``gcc -shared
    -fPIC``) in ``libdir`` (default ``tmp``); the library's path."""
    c = tmp / f"{name}.c"
    c.write_text(src)
    so = (libdir or tmp) / f"lib{name}.so"
    subprocess.run([CC, "-shared", "-fPIC", "-o", str(so), str(c)], check=True)
    return so


def compile_case(case: Case, cache_dir: Path | None = None) -> list[Path]:
    return [compile_source(src, case.cflags, cache_dir) for src in case.source_paths]


# ---------------------------------------------------------------------------------------------
# ORC runtime (for cases with needs_orc_runtime)

_ORC_RT: Path | None = None


def orc_runtime() -> Path:
    """Path of LLVM 22's ``liborc_rt-x86_64.a``: ``$ORC_RT_ARCHIVE``, or whatever
    ``scripts/fetch-orc-runtime.sh`` prints (it downloads Debian's libclang-rt-22-dev once)."""
    global _ORC_RT
    if _ORC_RT is not None:
        return _ORC_RT
    env = os.environ.get("ORC_RT_ARCHIVE")
    if env:
        path = Path(env)
    else:
        script = REPO / "scripts" / "fetch-orc-runtime.sh"
        if not script.is_file():
            raise OrcRuntimeUnavailable(f"{script} not found")
        proc = subprocess.run([str(script)], capture_output=True, text=True, timeout=600)
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            raise OrcRuntimeUnavailable(f"fetch-orc-runtime.sh failed:\n{proc.stderr}")
        path = Path(lines[-1])
    if not path.is_file():
        raise OrcRuntimeUnavailable(f"{path} does not exist")
    _ORC_RT = path
    return path


#: Name of the ORC runtime archive in a compiler-rt install: LLVM 15+ (per-target runtime
#: directory) and LLVM 14 (the older ``libclang_rt.<name>-<arch>.a`` layout).
ORC_RT_ARCHIVE_NAMES = ("liborc_rt-x86_64.a", "libclang_rt.orc-x86_64.a")


def orc_runtime_dir(version: int) -> Path:
    """Where :func:`fetch_orc_runtime` unpacks LLVM ``version``'s runtime archive."""
    return REPO / ".cache" / f"orc-rt-{version}"


def _cached_orc_runtime(version: int) -> Path | None:
    clang = orc_runtime_dir(version) / "usr" / "lib" / f"llvm-{version}" / "lib" / "clang"
    for name in ORC_RT_ARCHIVE_NAMES:
        for path in sorted(clang.glob(f"*/lib/linux/{name}")):
            if path.is_file() and path.stat().st_size > 0:
                return path
    return None


def fetch_orc_runtime(version: int) -> Path:
    """LLVM ``version``'s ORC runtime archive from Debian's ``libclang-rt-<version>-dev``,
    unpacked (not installed) into ``.cache/orc-rt-<version>`` once, at the path it has in the
    package (19: ``usr/lib/llvm-19/lib/clang/19/lib/linux/liborc_rt-x86_64.a``; 14:
    ``usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.orc-x86_64.a``). The package lists
    are refreshed (``apt-get update``) only when ``apt-get download`` fails."""
    cached = _cached_orc_runtime(version)
    if cached is not None:
        return cached
    dest = orc_runtime_dir(version)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest, prefix=".fetch."))
    try:
        get = ["apt-get", "download", f"libclang-rt-{version}-dev"]
        if subprocess.run(get, cwd=tmp, capture_output=True, timeout=600).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=600)
            subprocess.run(get, cwd=tmp, check=True, capture_output=True, timeout=600)
        (deb,) = tmp.glob("*.deb")
        root = tmp / "root"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, timeout=600)
        archives = [a for name in ORC_RT_ARCHIVE_NAMES for a in root.rglob(name)]
        if not archives:
            raise OrcRuntimeUnavailable(f"{deb.name} contains no ORC runtime archive")
        target = dest / archives[0].relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(archives[0], target)  # atomic: concurrent runs never see a partial archive
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def orc_runtime_for(version: int) -> Path:
    """The ORC runtime of LLVM ``version``: each llvm-jitlink needs its own version's runtime
    (the runtime's wrapper functions and the controller's platform code change together)."""
    return orc_runtime() if version == DEFAULT_LLVM_VERSION else fetch_orc_runtime(version)


# ---------------------------------------------------------------------------------------------
# Running


def normalize(
    data: bytes, replacements: Mapping[str, str], *, racy_teardown: bool = False
) -> bytes:
    """Replace run-specific strings (longest first) by placeholders; optionally drop the racy
    post-link-error teardown lines."""
    for old in sorted(replacements, key=len, reverse=True):
        if old:
            data = data.replace(old.encode(), replacements[old].encode())
    if racy_teardown:
        data = RACY_TEARDOWN_LINES.sub(b"", data)
    return data


def _status_wrapper(cache: Path) -> Path:
    """A tiny launcher: ``wrapper EXECUTOR_ARGS...`` forks, execs ``$JITRUN_EXECUTOR`` with the
    same arguments (argv[0] = the executor path, inherited fds untouched), waits for it and writes
    ``exit N`` / ``signal N`` to ``$JITRUN_STATUS_FILE``."""
    source = f"""#!{sys.executable}
import os, sys
exe = os.environ.pop("JITRUN_EXECUTOR")
status_file = os.environ.pop("JITRUN_STATUS_FILE")
pid = os.fork()
if pid == 0:
    try:
        os.execv(exe, [exe, *sys.argv[1:]])
    finally:
        os._exit(127)
_, st = os.waitpid(pid, 0)
text = f"signal {{os.WTERMSIG(st)}}" if os.WIFSIGNALED(st) else f"exit {{os.WEXITSTATUS(st)}}"
with open(status_file, "w") as f:
    f.write(text)
"""
    path = cache / f"status-wrapper-{hashlib.sha256(source.encode()).hexdigest()[:12]}.py"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(source)
        tmp.chmod(0o755)
        os.replace(tmp, path)
    return path


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def build_command(
    case: Case,
    executor: str | Path,
    objects: Sequence[Path],
    *,
    llvm_version: int = DEFAULT_LLVM_VERSION,
    tmp: str = "",
) -> list[str]:
    flags = list(case.jitlink_flags)
    if any("{orc_rt}" in f for f in flags):
        rt = str(orc_runtime_for(llvm_version))
        flags = [f.replace("{orc_rt}", rt) for f in flags]
    cmd = [str(llvm_jitlink(llvm_version)), f"-oop-executor={executor}", *flags]
    cmd += [str(o) for o in objects]
    if case.args:
        cmd += ["-args", *(a.replace("{tmp}", tmp) for a in case.args)]
    return cmd


def run_case(
    case: Case,
    executor: str | Path,
    *,
    llvm_version: int = DEFAULT_LLVM_VERSION,
    timeout: float | None = None,
    record_status: bool = False,
    extra_env: Mapping[str, str] | None = None,
    retry_if: Callable[[RunResult], bool] | None = None,
    attempts: int = 3,
) -> RunResult:
    """Compile (cached) and run ``case`` with ``executor`` under llvm-jitlink ``llvm_version``.

    Output is normalized: the run's temporary directory becomes ``{tmp}``, the executor path
    ``{executor}``, the llvm-jitlink path ``{jitlink}``. With ``record_status`` the executor is
    started through a small fork/exec wrapper that records how the executor process ended.

    ``retry_if`` recognizes a known intermittent failure of the *controller* (LLVM 14/19's
    llvm-jitlink races): a run it matches is repeated, ``attempts`` runs at most, and the last
    run is returned (its ``attempts`` field says how many there were).
    """
    attempt = 0
    while True:
        attempt += 1
        result = _run_case_once(
            case,
            executor,
            llvm_version=llvm_version,
            timeout=timeout,
            record_status=record_status,
            extra_env=extra_env,
        )
        if retry_if is None or attempt >= attempts or not retry_if(result):
            return result if attempt == 1 else replace(result, attempts=attempt)


def _run_case_once(
    case: Case,
    executor: str | Path,
    *,
    llvm_version: int,
    timeout: float | None,
    record_status: bool,
    extra_env: Mapping[str, str] | None,
) -> RunResult:
    objects = compile_case(case)
    timeout = case.timeout if timeout is None else timeout
    with tempfile.TemporaryDirectory(prefix="jitrun-") as tmp:
        cmd = build_command(case, executor, objects, llvm_version=llvm_version, tmp=tmp)
        env = dict(os.environ)
        env.update({k: v.replace("{tmp}", tmp) for k, v in case.env.items()})
        if extra_env:
            env.update(extra_env)
        status_file = Path(tmp) / ".executor-status"
        if record_status:
            env["JITRUN_EXECUTOR"] = str(executor)
            env["JITRUN_STATUS_FILE"] = str(status_file)
            cmd[1] = f"-oop-executor={_status_wrapper(OBJ_CACHE)}"
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE if case.stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if case.merge_stderr else subprocess.PIPE,
            env=env,
            cwd=tmp,
            start_new_session=True,  # own process group: a timeout kills the executor too
        )
        try:
            out, err = proc.communicate(case.stdin, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            jitlink_state = "running" if proc.poll() is None else f"exited {proc.returncode}"
            _kill_group(proc.pid)
            out, err = proc.communicate()
            raise JitRunTimeout(
                f"{case.name}: no EOF on stdout/stderr within {timeout}s (llvm-jitlink "
                f"{jitlink_state}; an executor still running after llvm-jitlink exited keeps "
                f"the pipes open)\n$ {shlex.join(cmd)}\n"
                f"stdout: {_preview(out or b'')}\nstderr: {_preview(err or b'')}"
            ) from exc
        # EOF on both pipes: every process holding them is gone or closed them. Reap
        # llvm-jitlink; leftovers of the group (a wrapper about to exit) get a moment.
        returncode = proc.wait(timeout=timeout)
        status: str | None = None
        if record_status:
            status = _wait_for_file(status_file, timeout=10.0)
        replacements = {tmp: "{tmp}", str(executor): "{executor}"}
        replacements[str(llvm_jitlink(llvm_version))] = "{jitlink}"
        return RunResult(
            stdout=normalize(out, replacements, racy_teardown=case.racy_teardown),
            stderr=normalize(err or b"", replacements, racy_teardown=case.racy_teardown),
            returncode=returncode,
            executor_status=status,
            command=shlex.join(cmd),
        )


def _wait_for_file(path: Path, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            text = path.read_text()
            if text:
                return text
        time.sleep(0.01)
    return None


def compare_with_reference(
    case: Case,
    executor_path: str | Path,
    llvm_version: int = DEFAULT_LLVM_VERSION,
    *,
    record_status: bool = False,
    extra_env: Mapping[str, str] | None = None,
    retry_if: Callable[[RunResult], bool] | None = None,
) -> Comparison:
    """Run ``case`` with the stock ``llvm-jitlink-executor`` of ``llvm_version`` and with
    ``executor_path`` (same environment, same ``retry_if`` for both); return both (normalized)
    results."""
    ref = run_case(
        case,
        reference_executor(llvm_version),
        llvm_version=llvm_version,
        record_status=record_status,
        extra_env=extra_env,
        retry_if=retry_if,
    )
    ours = run_case(
        case,
        executor_path,
        llvm_version=llvm_version,
        record_status=record_status,
        extra_env=extra_env,
        retry_if=retry_if,
    )
    return Comparison(ref, ours)


# ---------------------------------------------------------------------------------------------
# gdb


def gdb_command(
    jitlink_cmd: Sequence[str], breakpoint: str, *, backtrace_frames: int = 3
) -> list[str]:
    """gdb in batch mode on llvm-jitlink, with a breakpoint in JIT'd code.

    Recipe (verified with the stock executor and with a Python executor script):

    1. follow the fork into the child (``follow-fork-mode child``, ``detach-on-fork on``: the
       llvm-jitlink parent is detached and runs freely) and stop at the child's ``exec`` of the
       executor (``catch exec``; for a ``#!`` script this is the interpreter);
    2. from then on stay with the executor (``follow-fork-mode parent``), so helper processes the
       executor may fork (e.g. ``ldconfig`` run by ctypes.util) are detached, not followed;
    3. a pending breakpoint on the JIT'd function resolves when the executor registers the
       debug object through the GDB JIT interface (``__jit_debug_register_code``);
    4. on the hit print a backtrace and continue to the end.
    """
    exs = [
        "set pagination off",
        "set confirm off",
        "set width 0",
        "set breakpoint pending on",
        "set follow-fork-mode child",
        "set detach-on-fork on",
        "catch exec",
        "run",
        "set follow-fork-mode parent",
        "delete",
        f"break {breakpoint}",
        "continue",
        f"bt {backtrace_frames}",
        "continue",
    ]
    cmd = [
        "gdb",
        "-nx",
        "-batch",
        "-iex",
        "set debuginfod enabled off",
        "-iex",
        "set auto-load python-scripts off",
        "-iex",
        "set auto-load gdb-scripts off",
    ]
    for ex in exs:
        cmd += ["-ex", ex]
    return [*cmd, "--args", *jitlink_cmd]


@dataclass(frozen=True)
class GdbRun:
    output: str
    returncode: int
    command: str


def gdb_breakpoint_run(
    case: Case,
    executor: str | Path,
    breakpoint: str,
    *,
    llvm_version: int = DEFAULT_LLVM_VERSION,
    timeout: float = 120.0,
    extra_env: Mapping[str, str] | None = None,
) -> GdbRun:
    """Run ``case`` under gdb with a breakpoint on ``breakpoint`` (a function in the JIT'd
    object, which should be built with ``-g``); returns gdb's combined output (the program's
    stdout/stderr included)."""
    objects = compile_case(case)
    with tempfile.TemporaryDirectory(prefix="jitrun-gdb-") as tmp:
        cmd = gdb_command(
            build_command(case, executor, objects, llvm_version=llvm_version, tmp=tmp),
            breakpoint,
        )
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=tmp,
            env={**os.environ, **(extra_env or {})},
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            _kill_group(proc.pid)
            out, _ = proc.communicate()
            raise JitRunTimeout(f"gdb timed out:\n{out.decode(errors='replace')}") from exc
        _kill_group(proc.pid)  # nothing should be left; a stopped inferior would be
        return GdbRun(out.decode(errors="replace"), proc.returncode, shlex.join(cmd))
