"""perf support end to end: ``llvm-jitlink -perf-support`` with orc-executor writes the
jitdump file and ``/tmp/perf-PID.map``, and ``perf report`` (directly, through the map, and
after ``perf inject --jit``, through the jitdump) names the JIT'd function a program spends
its time in. The stock Debian executor lacks the perf wrappers ("Symbols not found")."""

from __future__ import annotations

import glob
import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.jitrun import compile_c, llvm_jitlink, reference_executor

HOT = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((noinline)) unsigned long hot_loop(unsigned long n) {
    unsigned long x = 1;
    for (unsigned long i = 0; i < n; i++) x = x * 6364136223846793005UL + i;
    return x;
}
int main(int argc, char **argv) {
    unsigned long n = argc > 0 ? strtoul(argv[argc - 1], 0, 10) : 0;  /* -args N */
    if (n == 0) n = 1000;
    printf("%lu\n", hot_loop(n) & 1);
    return 0;
}
"""

#: llvm-jitlink 22 calls the perf End wrapper from the plugin's destructor, after it has
#: already disconnected from the executor, so it reports this and exits 0 (the jitdump file
#: simply lacks its JIT_CODE_CLOSE record, which perf does not need).
END_AFTER_DISCONNECT = b"llvm-jitlink error: FD-transport disconnected\n"


@pytest.fixture(scope="module")
def hot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_c(tmp_path_factory.mktemp("perf"), "hot", HOT)


@pytest.fixture
def jitdump_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    for dump in glob.glob(str(tmp_path / ".debug/jit/*/jit-*.dump")):
        pid = Path(dump).stem.removeprefix("jit-")
        Path(f"/tmp/perf-{pid}.map").unlink(missing_ok=True)


def _run(executor: Path | str, obj: Path, args: list[str], env: dict[str, str],
         wrap: list[str] | None = None) -> subprocess.CompletedProcess[bytes]:
    cmd = [*(wrap or []), str(llvm_jitlink(22)), "-perf-support",
           f"-oop-executor={executor}", str(obj), "-args", *args]
    return subprocess.run(cmd, capture_output=True, timeout=300, env={**os.environ, **env})


def _dump(d: Path) -> Path:
    (dump,) = glob.glob(str(d / ".debug/jit/llvm-IR-jit-*/jit-*.dump"))
    return Path(dump)


def _object_code(obj: Path, name: str) -> bytes:
    """The bytes of function ``name`` in ``obj``'s .text (no relocations inside)."""
    nm = subprocess.run(["nm", "-S", "--defined-only", str(obj)], capture_output=True,
                        text=True, check=True).stdout
    (off, size) = next((int(f[0], 16), int(f[1], 16)) for f in map(str.split, nm.splitlines())
                       if f[-1] == name)
    text = obj.with_suffix(".text.bin")
    subprocess.run(["objcopy", "-O", "binary", "--only-section=.text", str(obj), str(text)],
                   check=True)
    return text.read_bytes()[off:off + size]


@pytest.mark.usefixtures("llvm22_tools")
def test_jitdump_and_perf_map(executor_path: Path, hot: Path, jitdump_dir: Path) -> None:
    env = {"JITDUMPDIR": str(jitdump_dir)}
    r = _run(executor_path, hot, ["1000"], env)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"1\n", END_AFTER_DISCONNECT), r
    ref = _run(reference_executor(22), hot, ["1000"], env)
    assert ref.returncode == 1 and b"Symbols not found" in ref.stderr

    dump = _dump(jitdump_dir)
    pid = int(dump.stem.removeprefix("jit-"))
    data = dump.read_bytes()
    magic, version, size, mach, _pad, hpid, _ts, flags = struct.unpack_from("<IIIIIIQQ", data)
    assert (magic, version, size, mach, hpid, flags) == (0x4A695444, 1, 40, 62, pid, 0)
    code: dict[bytes, tuple[int, bytes]] = {}
    ids = []
    off = 40
    while off < len(data):
        rec_id, total = struct.unpack_from("<II", data, off)
        ids.append(rec_id)
        if rec_id == 0:  # JIT_CODE_LOAD
            rpid, _tid, vma, addr, csize, _index = struct.unpack_from("<IIQQQQ", data, off + 16)
            assert rpid == pid and vma == addr
            name, _, rest = data[off + 56:off + total].partition(b"\0")
            assert len(rest) == csize
            code[name] = (addr, rest)
        off += total
    assert off == len(data)
    assert ids[0] == 4 and set(ids[1:]) == {0}  # the unwinding record, then code loads
    assert set(code) == {b"hot_loop", b"main"}
    assert code[b"hot_loop"][1] == _object_code(hot, "hot_loop")
    lines = Path(f"/tmp/perf-{pid}.map").read_text().splitlines()
    assert sorted(lines) == sorted(f"{a:x} {len(c):x} {n.decode()}" for n, (a, c) in code.items())


def _perf_record_works(tmp: Path) -> str | None:
    """None if ``perf record`` can sample here, else why not."""
    perf = shutil.which("perf")
    if perf is None:
        pytest.fail("perf not installed (run scripts/bootstrap.sh: linux-perf)")
    r = subprocess.run([perf, "record", "-k", "1", "-o", str(tmp / "probe.data"), "--", "true"],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        paranoid = Path("/proc/sys/kernel/perf_event_paranoid")
        level = paranoid.read_text().strip() if paranoid.exists() else "?"
        return (f"perf record fails here (perf_event_paranoid={level}): "
                f"{r.stderr.strip()[-300:]}")
    return None


@pytest.mark.usefixtures("llvm22_tools")
def test_perf_report_names_the_jitted_function(
    executor_path: Path, hot: Path, jitdump_dir: Path
) -> None:
    """``perf record -k 1`` of a program that spends its time in ``hot_loop``; ``perf report``
    names it through /tmp/perf-PID.map, and again after ``perf inject --jit`` (which turns
    the jitdump's code loads into ``jitted-PID-N.so`` objects)."""
    why = _perf_record_works(jitdump_dir)
    if why is not None:
        pytest.skip(f"{why}; test_jitdump_and_perf_map checks the files perf would read")
    data = jitdump_dir / "perf.data"
    r = _run(executor_path, hot, ["300000000"], {"JITDUMPDIR": str(jitdump_dir)},
             wrap=["perf", "record", "-q", "-k", "1", "-o", str(data), "--"])
    assert r.returncode == 0, r.stderr
    report = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--sort", "sym"],
                            capture_output=True, text=True, check=True).stdout
    top = _top_symbol(report)
    assert top[1] == "hot_loop" and top[0] > 20, report[-2000:]

    injected = jitdump_dir / "perf.jit.data"
    subprocess.run(["perf", "inject", "--jit", "-i", str(data), "-o", str(injected)],
                   capture_output=True, check=True)
    report = subprocess.run(["perf", "report", "-i", str(injected), "--stdio", "--sort",
                             "dso,sym"], capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in report.splitlines() if line.strip()
            and not line.startswith("#")]
    hot_rows = [row for row in rows if row[-1] == "hot_loop"]
    assert hot_rows and hot_rows[0][1].startswith("jitted-"), report[-2000:]
    assert float(hot_rows[0][0].rstrip("%")) > 20


def _top_symbol(report: str) -> tuple[float, str]:
    for line in report.splitlines():
        fields = line.split()
        if fields and not line.startswith("#") and fields[0].endswith("%"):
            return float(fields[0].rstrip("%")), fields[-1]
    raise AssertionError(f"no samples in:\n{report}")
