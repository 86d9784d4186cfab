"""Issue 24: the x86_64 ``llvm-jitlink`` 22 drives an aarch64 orc-executor under qemu-user.

Every program runs with the arm64 reference (Debian's ``llvm-jitlink-executor`` under the
same qemu) and with orc-executor (``scripts/cross.sh``'s ``bin/orc-executor``, the cold path);
both must give the same stdout, stderr and exit code, which must also show the facts written
down for the program (so the test cannot pass when both are broken the same way).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.cross.crossrun import (
    LIBSTDCXX,
    REPO,
    CrossBuild,
    Result,
    compile_aarch64,
    jitlink,
    prelink,
    start_warm_server,
)
from tests.e2e.test_lazy import LAZY_C_STDOUT
from tests.e2e.test_orc_runtime import CTORS_STDOUT, EXCEPTIONS_STDOUT, TLS_STDOUT
from tests.programs.cases import CASES_BY_NAME, Case

PROGRAMS = REPO / "tests" / "programs"
#: qemu-user's own report when the emulated program dies of a signal.
QEMU_SIGNAL_LINE = re.compile(rb"^qemu: uncaught target signal .*\n", re.MULTILINE)

#: C programs of tests/programs/cases.py: argv, libc callbacks, several objects, > 1 MiB of
#: data (4 MiB .data, 16 MiB .bss), threads, stdin, environment, libm, a constructor with the
#: ORC runtime, abort and a segfault (same status as the reference).
C_CASES = ["args_exit", "multi_object", "bigdata", "qsort_desc", "threads", "stdin_echo",
           "getenv", "libm", "constructor_with_orc_runtime", "abort", "segfault"]


def run_case(case: Case, executor: Path, cross: CrossBuild, tmp: str) -> Result:
    objs = [compile_aarch64(src, case.cflags) for src in case.source_paths]
    flags = [f.replace("{orc_rt}", str(cross.orc_runtime)) for f in case.jitlink_flags]
    env = {k: v.replace("{tmp}", tmp) for k, v in case.env.items()}
    result = jitlink(executor, objs, [a.replace("{tmp}", tmp) for a in case.args] or None,
                     flags=flags, stdin=case.stdin, env=env, timeout=max(case.timeout, 240))
    return Result(result.stdout.replace(tmp.encode(), b"{tmp}"),
                  result.stderr.replace(tmp.encode(), b"{tmp}"), result.returncode)


def check_facts(case: Case, result: Result) -> None:
    out, _, rc = result.text
    err = QEMU_SIGNAL_LINE.sub(b"", result.stderr).decode(errors="replace")
    if case.expect_returncode is not None:
        assert rc == case.expect_returncode
    if case.expect_stdout is not None:
        assert out == case.expect_stdout
    if case.expect_stderr is not None:
        assert err == case.expect_stderr
    for part in case.expect_stdout_contains:
        assert part in out
    for part in case.expect_stderr_contains:
        assert part in err


@pytest.mark.parametrize("name", C_CASES)
def test_c_program_over_pipes(cross: CrossBuild, name: str) -> None:
    case = CASES_BY_NAME[name]
    with tempfile.TemporaryDirectory(prefix="cross-") as tmp:
        reference = run_case(case, cross.reference, cross, tmp)
    check_facts(case, reference)
    with tempfile.TemporaryDirectory(prefix="cross-") as tmp:
        ours = run_case(case, cross.ours, cross, tmp)
    assert ours.text == reference.text


@pytest.mark.parametrize("flag", ["-use-memmgr=shared", "-debugger-support"])
def test_shared_memory_and_gdb_registration(cross: CrossBuild, flag: str) -> None:
    """The shared-memory mapper (the controller writes content into a POSIX shared memory
    object both processes map) and the GDB JIT interface (a -g object registered with
    ``__jit_debug_register_code``) on aarch64."""
    case = CASES_BY_NAME["debug_info"]
    objs = [compile_aarch64(src, case.cflags) for src in case.source_paths]
    reference = jitlink(cross.reference, objs, case.args, flags=[flag])
    check_facts(case, reference)
    assert jitlink(cross.ours, objs, case.args, flags=[flag]).text == reference.text


# ---- C++ with the aarch64 ORC runtime ------------------------------------------------------------


def cxx(cross: CrossBuild, objs: list[Path], args: list[str] | None,
        executor: Path) -> Result:
    return jitlink(executor, objs, args,
                   flags=[f"-orc-runtime={cross.orc_runtime}", f"-preload={LIBSTDCXX}"])


def check_cxx(cross: CrossBuild, objs: list[Path], args: list[str] | None,
              expected: tuple[str, str, int], reference_attempts: int = 1) -> None:
    for _ in range(reference_attempts):
        reference = cxx(cross, objs, args, cross.reference)
        if reference.text == expected:
            break
    assert reference.text == expected, "the reference executor's behaviour changed"
    assert cxx(cross, objs, args, cross.ours).text == expected


def test_cxx_static_init_across_objects(cross: CrossBuild) -> None:
    objs = [compile_aarch64(PROGRAMS / "cxx" / f"{n}.cpp", cxx=True)
            for n in ("ctors_a", "ctors_b", "ctors_main")]
    check_cxx(cross, objs, ["x", "y"], (CTORS_STDOUT, "", 4))


def test_cxx_exceptions(cross: CrossBuild, tmp_path: Path) -> None:
    objs = [compile_aarch64(PROGRAMS / "cxx" / f"{n}.cpp", cxx=True)
            for n in ("exc_lib", "exc_main")]
    check_cxx(cross, [prelink(objs, tmp_path / "exc.o")], None, (EXCEPTIONS_STDOUT, "", 8))


def test_cxx_thread_local_storage(cross: CrossBuild) -> None:
    """TLS at -O0 (JITLink rejects gcc's TLSLD relocations); thread_local destructors."""
    obj = compile_aarch64(PROGRAMS / "cxx" / "tls.cpp", ["-O0"], cxx=True)
    check_cxx(cross, [obj], None, (TLS_STDOUT, "", 0), reference_attempts=3)


def test_lazy_linking(cross: CrossBuild) -> None:
    """``-lazy``: JIT'd aarch64 code calls back into the controller through reentry stubs."""
    main, a, b = (compile_aarch64(PROGRAMS / "lazy" / f"{n}.c") for n in
                  ("lazy_main", "lazy_a", "lazy_b"))
    objs: list[Path | str] = [main, "-lazy", a, "-lazy", b]
    flags = [f"-orc-runtime={cross.orc_runtime}"]
    reference = jitlink(cross.reference, objs, ["q"], flags=flags)
    assert reference.text == (LAZY_C_STDOUT, "", 11)
    assert jitlink(cross.ours, objs, ["q"], flags=flags).text == reference.text


# ---- TCP -----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Poll /proc/net/tcp (a probe connection would become a session)."""
    deadline = time.monotonic() + timeout
    hexport = f":{port:04X}"
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(hexport) and fields[3] == "0A":
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


def test_c_program_over_tcp(cross: CrossBuild) -> None:
    """``bin/orc-executor --listen 127.0.0.1:PORT --once`` and ``-oop-executor-connect``: the
    program's output (on the executor's stdout and stderr) and the exit code are the
    reference's over pipes (over TCP the stock executor leaves llvm-jitlink waiting at the
    end, docs/protocol.md §3.4)."""
    case = CASES_BY_NAME["qsort_desc"]
    with tempfile.TemporaryDirectory(prefix="cross-") as tmp:
        reference = run_case(case, cross.reference, cross, tmp)
    check_facts(case, reference)
    port = _free_port()
    server = subprocess.Popen([str(cross.ours), "--listen", f"127.0.0.1:{port}", "--once"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL)
    try:
        _wait_listening(port, server)
        objs = [compile_aarch64(src, case.cflags) for src in case.source_paths]
        ctl = jitlink(None, objs, case.args, connect=f"127.0.0.1:{port}")
        out, err = server.communicate(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0, err
    assert (ctl.stdout, ctl.stderr) == (b"", b"")
    assert (out, err, ctl.returncode) == (reference.stdout, reference.stderr,
                                          reference.returncode)


# ---- bad input -----------------------------------------------------------------------------------


def test_x86_64_objects_are_refused_before_they_run(cross: CrossBuild, tmp_path: Path) -> None:
    """x86_64 objects for an aarch64 executor: llvm-jitlink 22 links them without complaint
    and the arm64 reference runs the foreign bytes (SIGILL under qemu, "disconnecting").
    orc-executor refuses the object's eh-frame (its CIE names x86_64's return address
    register) when the controller registers it, before anything runs: a clear link error,
    and the executor ends normally."""
    src = PROGRAMS / "args_exit.c"
    obj = tmp_path / "args_exit_x86_64.o"
    subprocess.run(["gcc", "-c", "-fPIC", "-O1", str(src), "-o", str(obj)], check=True)
    reference = jitlink(cross.reference, [obj], ["1"])
    assert reference.returncode == 1
    assert reference.stderr.startswith(b"qemu: uncaught target signal 4 (Illegal instruction)")
    ours = jitlink(cross.ours, [obj], ["1"])
    assert ours.returncode == 1
    assert ours.stdout == b""
    first = ours.stderr.splitlines()[0].decode()
    assert re.fullmatch(
        r"llvm-jitlink error: eh-frame at 0x[0-9a-f]+ describes code for another architecture "
        r"\(return address register 16: x86_64\); this executor runs aarch64-unknown-linux-gnu "
        r"\(register 30\): link for aarch64-unknown-linux-gnu", first), first
    assert b"qemu:" not in ours.stderr


# ---- the warm server under qemu ------------------------------------------------------------------


def test_warm_server_under_qemu(cross: CrossBuild, tmp_path: Path) -> None:
    """``bin/orc-executor serve`` (the mode the README recommends under emulation): the
    launcher hands sessions to pre-started aarch64 session processes; same output as the
    reference for a callback-heavy program and a threaded one."""
    server, env = start_warm_server(cross.ours, tmp_path / "warm")
    try:
        for name in ("qsort_desc", "threads"):
            case = CASES_BY_NAME[name]
            with tempfile.TemporaryDirectory(prefix="cross-") as tmp:
                reference = run_case(case, cross.reference, cross, tmp)
                objs = [compile_aarch64(src, case.cflags) for src in case.source_paths]
                ours = jitlink(cross.ours, objs, case.args, env=env)
            check_facts(case, ours)
            assert ours.text == reference.text
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_native_warm_server_refuses_the_emulated_launcher(cross: CrossBuild,
                                                            tmp_path: Path) -> None:
    """An x86_64 ``orc-executor serve`` on the same warm socket: the aarch64 launcher's
    handover names its machine, the server refuses it, and the launch runs cold (aarch64)."""
    native = Path(sys.executable).parent / "orc-executor"
    server, env = start_warm_server(native, tmp_path / "warm", timeout=60)
    try:
        case = CASES_BY_NAME["args_exit"]
        objs = [compile_aarch64(src, case.cflags) for src in case.source_paths]
        ours = jitlink(cross.ours, objs, case.args, env=env)
        check_facts(case, ours)
    finally:
        server.terminate()
        _, err = server.communicate(timeout=60)
    assert b"warm handover refused: the launcher runs on 'aarch64', this server on 'x86_64'" \
        in err


# ---- Setup ---------------------------------------------------------------------------------------


async def test_setup_announces_aarch64_like_the_reference(cross: CrossBuild) -> None:
    """The package's controller reads both executors' Setup: the same triple (as LLVM's
    ``sys::getProcessTriple`` spells it on Debian's arm64 build) and page size."""
    from orc_executor.controller import Controller

    setups = []
    for executor in (cross.reference, cross.ours):
        async with await Controller.launch([str(executor)]) as c:
            setups.append(await c.wait_setup())
    reference, ours = setups
    assert reference.triple == ours.triple == "aarch64-unknown-linux-gnu"
    assert reference.page_size == ours.page_size == os.sysconf("SC_PAGE_SIZE")
    for name in ("__llvm_orc_SimpleRemoteEPC_dispatch_ctx",
                 "__llvm_orc_SimpleRemoteEPC_dispatch_fn"):
        assert name in reference.symbols and name in ours.symbols
