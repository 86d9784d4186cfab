#!/usr/bin/env python3
"""Benchmarks: orc-executor against llvm-jitlink-executor 22, in the same run.

Not a test: prints a markdown table of medians (with min/max) and ratios ours/reference.

  .venv/bin/python scripts/bench.py [--reps 5] [--calls 10000] [--mib 64] [--quick]
  .venv/bin/python scripts/bench.py --corpus [DIR] [--reps 5] [--no-cold]   (real programs)

Figures: start→Setup latency; no-op wrapper round trip (empty ``mem_write_uint8s``);
round trip of a call that runs native code on a worker thread (``run_as_void_function`` of
libc's ``getpid``) — the round trips with both executors' sessions open at once and batches
of calls alternating in random order (:func:`round_robin`); pipelined small-call throughput;
initialize + deinitialize of one page;
bulk ``initialize`` of N MiB over pipes and through shared memory, with two plain pipe copies
of the same bytes for scale (``cat`` into /dev/null: a cache-resident buffer; ``dd bs=N M``:
one N MiB buffer, the work a slab's content costs);
llvm-jitlink end-to-end wall time on C programs and on an object with N MiB of ``.data``
(over pipes and with ``-use-memmgr=shared``, and in llvm-jitlink's own process for the floor).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orc_executor.controller import Controller, decode_setup  # noqa: E402
from orc_executor.protocol import names  # noqa: E402
from orc_executor.protocol.framing import (  # noqa: E402
    FrameDecoder,
    Message,
    Opcode,
    encode_header,
)
from orc_executor.protocol.names import Bootstrap  # noqa: E402
from orc_executor.protocol.names import ExecutorSharedMemoryMapperService as shm  # noqa: E402
from orc_executor.protocol.names import SimpleExecutorDylibManager as dm  # noqa: E402
from orc_executor.protocol.names import SimpleExecutorMemoryManager as mm  # noqa: E402
from orc_executor.protocol.orc_types import (  # noqa: E402
    FinalizeRequest,
    SegFinalizeRequest,
    SharedMemoryFinalizeRequest,
    SharedMemorySegFinalizeRequest,
)
from orc_executor.protocol.sps import (  # noqa: E402
    ErrorValue,
)

LLVM = Path("/usr/lib/llvm-22/bin")
REFERENCE = str(LLVM / "llvm-jitlink-executor")
OURS = str(ROOT / ".venv" / "bin" / "orc-executor")
WRITE8 = names.MEM_WRITE["uint8s"]
WRITE8_NAME = Bootstrap.mem_write_uint8s

PROGRAMS = {
    "hello": r'''#include <stdio.h>
int main(int argc, char **argv) { printf("hello %d\n", argc); return 0; }''',
    "qsort": r'''#include <stdio.h>
#include <stdlib.h>
static int cmp(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }
int main(void) { static int v[100000]; for (int i = 0; i < 100000; i++) v[i] = (i * 7919) % 100003;
qsort(v, 100000, sizeof v[0], cmp); printf("%d %d\n", v[0], v[99999]); return 0; }''',
    "bigdata": r'''#include <stdio.h>
#define N (1 << 20)
static unsigned data[N] = {1, 2, 3, [N - 1] = 7};
int main(void) { unsigned s = 0; for (int i = 0; i < N; i++) s += data[i]; printf("%u\n", s);
return 0; }''',
}

BULK_MAIN = r'''#include <stdio.h>
extern const unsigned char blob[], blob_end[];
int main(void) { unsigned long s = 0;
for (const unsigned char *p = blob; p < blob_end; p += 4096) s += *p;
printf("%lu %lu\n", (unsigned long)(blob_end - blob), s); return 0; }'''


def build_bulk_program(tmp: Path, mib: int) -> Path:
    """An object with ``mib`` MiB of random initialized ``.data`` (assembled with
    ``.incbin``) and a main that reads one byte per page of it: the content llvm-jitlink
    sends in its initialize, end to end."""
    blob = tmp / "blob.bin"
    blob.write_bytes(os.urandom(mib << 20))
    (tmp / "blob.s").write_text(
        f'.section .data\n.globl blob\n.p2align 12\nblob:\n.incbin "{blob}"\n'
        '.globl blob_end\nblob_end:\n.section .note.GNU-stack,"",@progbits\n')
    (tmp / "bulk_main.c").write_text(BULK_MAIN)
    subprocess.run(["as", str(tmp / "blob.s"), "-o", str(tmp / "blob.o")], check=True)
    subprocess.run(["gcc", "-c", "-fPIC", "-O1", str(tmp / "bulk_main.c"), "-o",
                    str(tmp / "bulk_main.o")], check=True)
    out = tmp / "bulk.o"
    subprocess.run(["ld", "-r", str(tmp / "blob.o"), str(tmp / "bulk_main.o"), "-o", str(out)],
                   check=True)
    return out


SETTLE = 0.1
"""Seconds of quiet before each bulk-copy timing starts (content built, reader ready). On this
machine a ``cat`` copy of 64 MiB timed right after building a fresh 64 MiB buffer ran at
~0.67× the speed of one timed after a pause, so every bulk figure starts from the same state."""


def stats(xs: list[float]) -> tuple[float, float, float]:
    return min(xs), statistics.median(xs), max(xs)


async def _launch(exe: str) -> tuple[Controller, float]:
    t0 = time.perf_counter()
    c = await Controller.launch([exe], stdout=subprocess.DEVNULL)
    return c, t0


async def time_setup(exe: str) -> float:
    t0 = time.perf_counter()
    c = await Controller.launch([exe], env=dict(os.environ))
    async with c:
        t = time.perf_counter() - t0
    return t


async def noop_call(c: Controller) -> tuple[int, bytes]:
    """The no-op call: an empty ``mem_write_uint8s`` (tag, argument bytes)."""
    return c.symbol(WRITE8_NAME), WRITE8.encode_args([])


async def native_call(c: Controller) -> tuple[int, bytes]:
    """``run_as_void_function`` of libc's ``getpid``: a call the executor must run on a
    worker thread (native code may block)."""
    handle = await c.call(dm.open, names.OPEN,
                          c.symbol(dm.instance), "", 0)
    found = await c.call(dm.resolve, names.RESOLVE22, handle,
                         [("getpid", False)])
    if isinstance(found, ErrorValue) or not found or not found[0]:
        raise RuntimeError(f"getpid not resolved: {found}")
    tag = c.symbol(Bootstrap.run_as_void_function)
    return tag, names.RUN_AS_VOID.encode_args(found[0].address)


async def round_robin(
    exes: dict[str, str], call: Callable[[Controller], Awaitable[tuple[int, bytes]]],
    rounds: int, batch: int,
) -> dict[str, list[float]]:
    """Seconds per call, one at a time, per executor: one sample per batch of ``batch``
    calls. Every executor's session is open at once and each of ``rounds`` rounds runs one
    batch on each, in a fresh random order, so that the machine's changes of mode (this VM
    moves between a fast and a slow mode within minutes) hit every executor alike, which
    repetitions of whole runs in turn do not guarantee."""
    out: dict[str, list[float]] = {name: [] for name in exes}
    async with AsyncExitStack() as stack:
        sessions = {}
        for name, exe in exes.items():
            c = await stack.enter_async_context(await Controller.launch([exe]))
            tag, payload = await call(c)
            for _ in range(100):
                await c.call_raw(tag, payload)
            sessions[name] = (c, tag, payload)
        for _ in range(rounds):
            for name in random.sample(list(exes), len(exes)):
                c, tag, payload = sessions[name]
                t0 = time.perf_counter()
                for _ in range(batch):
                    await c.call_raw(tag, payload)
                out[name].append((time.perf_counter() - t0) / batch)
    return out


async def time_pipelined(exe: str, calls: int, inflight: int = 64) -> float:
    """Calls per second with ``inflight`` calls outstanding."""
    async with await Controller.launch([exe]) as c:
        tag = c.symbol(WRITE8_NAME)
        payload = WRITE8.encode_args([])
        per = calls // inflight

        async def worker() -> None:
            for _ in range(per):
                await c.call_raw(tag, payload)

        t0 = time.perf_counter()
        async with trio.open_nursery() as n:
            for _ in range(inflight):
                n.start_soon(worker)
        return per * inflight / (time.perf_counter() - t0)


class RawController:
    """A minimal blocking controller for the per-call figures: frames are pre-encoded and
    written with ``os.write``, results read in bulk and split with the package's
    :class:`FrameDecoder`; no event loop, so the controller costs a few µs per call and the
    figure is bound by the executor rather than by the Python controller."""

    def __init__(self, exe: str) -> None:
        to_r, self.to_w = os.pipe()
        self.from_r, from_w = os.pipe()
        self.proc = subprocess.Popen([exe, f"filedescs={to_r},{from_w}"],
                                     pass_fds=(to_r, from_w))
        os.close(to_r)
        os.close(from_w)
        self.decoder = FrameDecoder(1 << 31)
        setup = self.next_message()
        self.symbols = decode_setup(setup.payload).symbols

    def next_message(self) -> Message:
        while (msg := self.decoder.next_message()) is None:
            data = os.read(self.from_r, 1 << 16)
            if not data:
                raise EOFError("executor hung up")
            self.decoder.feed(data)
        return msg

    def frame(self, name: str, args: bytes, seq: int) -> bytes:
        """A call frame of wrapper ``name`` with ``args`` (SPS bytes) and sequence ``seq``."""
        return encode_header(Opcode.CALL_WRAPPER, seq, self.symbols[name], len(args)) + args

    def close(self) -> None:
        os.close(self.to_w)
        self.proc.wait()
        os.close(self.from_r)


def round_robin_raw(exes: dict[str, str], rounds: int, batch: int) -> dict[str, list[float]]:
    """As :func:`round_robin` for the no-op call, with :class:`RawController`."""
    cs = {name: RawController(exe) for name, exe in exes.items()}
    try:
        args = WRITE8.encode_args([])
        seq = dict.fromkeys(exes, 1)
        out: dict[str, list[float]] = {name: [] for name in exes}

        def run(name: str, n: int) -> float:
            c = cs[name]
            frames = [c.frame(WRITE8_NAME, args, s) for s in range(seq[name], seq[name] + n)]
            seq[name] += n
            t0 = time.perf_counter()
            for f in frames:
                os.write(c.to_w, f)
                c.next_message()
            return (time.perf_counter() - t0) / n

        for name in exes:
            run(name, 100)
        for _ in range(rounds):
            for name in random.sample(list(exes), len(exes)):
                out[name].append(run(name, batch))
        return out
    finally:
        for c in cs.values():
            c.close()


def time_pipelined_raw(exe: str, calls: int, inflight: int = 64) -> float:
    """No-op calls per second with ``inflight`` calls outstanding, with
    :class:`RawController`: a window of frames is written, and each result read lets the
    next frame go."""
    c = RawController(exe)
    try:
        args = WRITE8.encode_args([])
        frames = [c.frame(WRITE8_NAME, args, seq) for seq in range(1, calls + 1)]
        t0 = time.perf_counter()
        os.write(c.to_w, b"".join(frames[:inflight]))
        sent, done = inflight, 0
        while done < calls:
            c.next_message()
            done += 1
            if sent < calls:
                os.write(c.to_w, frames[sent])
                sent += 1
        return calls / (time.perf_counter() - t0)
    finally:
        c.close()


async def time_small_initialize(exe: str, calls: int) -> float:
    """Seconds per initialize + deinitialize of one page of content with no alloc actions
    (the memory-manager calls of a small link graph), each pair on a fresh reservation."""
    async with await Controller.launch([exe]) as c:
        inst = c.symbol(mm.instance)
        total = 0.0
        for _ in range(calls):
            base = await c.call(mm.reserve, names.RESERVE, inst, 1 << 16)
            req = FinalizeRequest([SegFinalizeRequest(3, base, 4096, b"x" * 4096)], [])
            t0 = time.perf_counter()
            key = await c.call(mm.initialize, names.INITIALIZE, inst, req)
            await c.call(mm.deinitialize, names.RELEASE, inst, [key])
            total += time.perf_counter() - t0
            await c.call(mm.release, names.RELEASE, inst, [base])
    return total / calls


async def time_initialize(exe: str, mib: int) -> float:
    """MB/s of one initialize carrying ``mib`` MiB of content."""
    size = mib << 20
    content = os.urandom(1 << 20) * mib
    async with await Controller.launch([exe]) as c:
        inst = c.symbol(mm.instance)
        base = await c.call(mm.reserve, names.RESERVE, inst, size)
        req = FinalizeRequest([SegFinalizeRequest(3, base, size, content)], [])
        payload = names.INITIALIZE.encode_args(inst, req)
        await trio.sleep(SETTLE)
        t0 = time.perf_counter()
        await c.call_raw(c.symbol(mm.initialize), payload)
        t = time.perf_counter() - t0
        await c.call(mm.release, names.RELEASE, inst, [base])
    return size / t / 1e6


def time_initialize_raw(exe: str, mib: int) -> float:
    """MB/s of one initialize carrying ``mib`` MiB of content, with :class:`RawController`:
    the whole frame goes in one blocking ``write`` (as the plain pipe copies below), so the
    figure is bound by the executor's reading of the content into the slab."""
    size = mib << 20
    content = os.urandom(1 << 20) * mib
    c = RawController(exe)
    try:
        inst = c.symbols[mm.instance]
        name = mm.reserve
        os.write(c.to_w, c.frame(name, names.RESERVE.encode_args(inst, size), 1))
        base = names.RESERVE.decode_result(c.next_message().payload)
        if isinstance(base, ErrorValue):
            raise RuntimeError(f"reserve failed: {base}")
        req = FinalizeRequest([SegFinalizeRequest(3, base, size, content)], [])
        call = c.frame(mm.initialize, names.INITIALIZE.encode_args(inst, req), 2)
        time.sleep(SETTLE)
        t0 = time.perf_counter()
        os.write(c.to_w, call)
        result = names.INITIALIZE.decode_result(c.next_message().payload)
        t = time.perf_counter() - t0
        if isinstance(result, ErrorValue):
            raise RuntimeError(f"initialize failed: {result}")
        return size / t / 1e6
    finally:
        c.close()


async def time_initialize_shm(exe: str, mib: int) -> float:
    """MB/s of one bulk initialize through the shared-memory mapper service
    (``ExecutorSharedMemoryMapperService``, what ``llvm-jitlink -use-memmgr=shared`` uses):
    reserve a named POSIX shared-memory region, map it here, write the content into it, then
    an initialize that carries no content. Timed from the first content byte to the result."""
    import mmap

    size = mib << 20
    content = os.urandom(1 << 20) * mib
    async with await Controller.launch([exe]) as c:
        inst = c.symbol(shm.instance)
        res = await c.call(shm.reserve, names.SHM_RESERVE, inst, size)
        base, name = res
        fd = os.open(f"/dev/shm{name}", os.O_RDWR)
        try:
            region = mmap.mmap(fd, size)
        finally:
            os.close(fd)
            os.unlink(f"/dev/shm{name}")  # as llvm-jitlink's SharedMemoryMapper does
        req = SharedMemoryFinalizeRequest([SharedMemorySegFinalizeRequest(3, base, size)], [])
        payload = names.SHM_INITIALIZE.encode_args(inst, base, req)
        await trio.sleep(SETTLE)
        t0 = time.perf_counter()
        region[:] = content
        await c.call_raw(c.symbol(shm.initialize), payload)
        t = time.perf_counter() - t0
        region.close()
        await c.call(shm.release, names.RELEASE, inst, [base])
    return size / t / 1e6


async def idle_rss(exe: str) -> float:
    """MiB resident in the executor process of a session that has sent Setup and is idle
    (``VmRSS``; with a warm server the launched process is only the launcher)."""
    async with await Controller.launch([exe]) as c:
        await c.call_raw(c.symbol(WRITE8_NAME), WRITE8.encode_args([]))
        pid = c.process.pid if c.process is not None else None
        assert pid is not None
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _wait_blocked(proc: subprocess.Popen[bytes], comm: str) -> None:
    """Wait until ``proc`` runs ``comm`` (it has exec'd) and sleeps (blocked reading its pipe),
    so that a timing starts with the reader ready, as a session's initialize does."""
    stat = Path(f"/proc/{proc.pid}/stat")
    while True:
        text = stat.read_text()
        name, state = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2]
        if name == comm and state == "S":
            return
        time.sleep(0.001)


def time_pipe_copy(mib: int, argv: list[str]) -> float:
    """MB/s of a plain pipe copy of ``mib`` MiB into another process that runs ``argv``
    (``cat`` into /dev/null, or ``dd bs=…`` reading it into one buffer of that size): the
    reader is started and blocked in ``read`` first, then the bytes are written with one
    blocking ``write`` and the timing ends when the reader exits. Its start-up is not timed
    (starting it from this process, which holds the content, costs several ms)."""
    data = os.urandom(1 << 20) * mib
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    assert p.stdin is not None
    _wait_blocked(p, Path(argv[0]).name)
    time.sleep(SETTLE)
    t0 = time.perf_counter()
    os.write(p.stdin.fileno(), data)
    p.stdin.close()
    if p.wait() != 0:
        raise RuntimeError(f"{argv} failed")
    return len(data) / (time.perf_counter() - t0) / 1e6


def time_jitlink(exe: str | None, obj: Path, *options: str, read_output: bool = False
                 ) -> float:
    """Seconds until llvm-jitlink exits (output to /dev/null) or, with ``read_output``, until
    its stdout and stderr pipes reach EOF (every process holding them, the executor's
    included, has exited: what a shell pipeline or a test harness waits for). ``exe=None``
    runs the program in llvm-jitlink's own process (no executor: the floor)."""
    t0 = time.perf_counter()
    out = subprocess.PIPE if read_output else subprocess.DEVNULL
    executor = [f"-oop-executor={exe}"] if exe is not None else []
    subprocess.run(
        [str(LLVM / "llvm-jitlink"), *executor, *options, str(obj)],
        stdout=out,
        stderr=out if read_output else None,
        check=False,
    )
    return time.perf_counter() - t0


def _servers_under(root: Path) -> list[int]:
    """Pids of the ``orc-executor serve`` processes whose command line names ``root``."""
    out = []
    for entry in os.listdir("/proc"):
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if entry.isdigit() and b"serve" in cmd and str(root).encode() in cmd:
            out.append(int(entry))
    return out


def _stop_servers(root: Path) -> None:
    for pid in _servers_under(root):
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 30
    while _servers_under(root) and time.monotonic() < deadline:
        time.sleep(0.02)


def bench_auto_serve(ours: str, reps: int) -> None:
    """The server on demand, with llvm-jitlink hello.o (output read to EOF through pipes):

    * second and later launches: the first launch in a fresh runtime directory starts the
      server; the next ones (no manual step) against llvm-jitlink-executor, interleaved;
    * the launch that starts a server (a fresh runtime directory each time; the server is
      stopped before the next sample) against a cold launch with auto-serve off (today's
      cold path), interleaved.

    Prints median (min–max) of ``reps`` samples each, in ms, and the ratios."""
    tmp = Path(tempfile.mkdtemp(prefix="orc-bench-auto-"))
    base = {k: v for k, v in os.environ.items()
            if k not in ("ORC_EXECUTOR_WARM_SOCKET", "ORC_EXECUTOR_AUTO_SERVE",
                         "ORC_EXECUTOR_COLD")}
    c = tmp / "hello.c"
    c.write_text(PROGRAMS["hello"])
    hello = tmp / "hello.o"
    subprocess.run(["gcc", "-c", "-fPIC", "-O1", str(c), "-o", str(hello)], check=True)

    def run(exe: str, env: dict[str, str]) -> float:
        t0 = time.perf_counter()
        subprocess.run([str(LLVM / "llvm-jitlink"), f"-oop-executor={exe}", str(hello)],
                       capture_output=True, env=env, check=False)
        return (time.perf_counter() - t0) * 1e3

    rows: dict[str, list[float]] = {k: [] for k in ("warm", "ref", "starting", "cold")}
    try:
        xdg = tmp / "xdg"
        xdg.mkdir(mode=0o700)
        auto = dict(base, XDG_RUNTIME_DIR=str(xdg))
        run(ours, auto)  # starts the server
        while not list((xdg / "orc-executor").glob("*.sock")):
            time.sleep(0.02)
        time.sleep(2)  # its pool gets ready
        for _ in range(3):
            run(ours, auto)
        for _ in range(reps):
            rows["warm"].append(run(ours, auto))
            rows["ref"].append(run(REFERENCE, base))
        _stop_servers(xdg)
        cold = dict(base, XDG_RUNTIME_DIR=str(xdg), ORC_EXECUTOR_AUTO_SERVE="0")
        for i in range(reps):
            fresh = tmp / f"xdg-{i}"
            fresh.mkdir(mode=0o700)
            rows["starting"].append(run(ours, dict(base, XDG_RUNTIME_DIR=str(fresh))))
            _stop_servers(fresh)
            time.sleep(0.5)
            rows["cold"].append(run(ours, cold))
            time.sleep(0.5)
    finally:
        _stop_servers(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
    st = {k: stats(v) for k, v in rows.items()}

    def cell(k: str) -> str:
        lo, med, hi = st[k]
        return f"{med:.3g} ({lo:.3g}–{hi:.3g})"

    print(f"\nmachine: {os.cpu_count()} cores; {reps} repetitions; median (min–max); "
          "llvm-jitlink hello.o, output read to EOF\n")
    print("| figure | unit | orc-executor | compared with | ratio |")
    print("|---|---|---|---|---|")
    print(f"| second and later launches, server started on demand | ms | {cell('warm')} | "
          f"llvm-jitlink-executor 22: {cell('ref')} | {st['warm'][1] / st['ref'][1]:.2f}× |")
    print(f"| the launch that starts the server | ms | {cell('starting')} | cold launch, "
          f"ORC_EXECUTOR_AUTO_SERVE=0: {cell('cold')} | "
          f"{st['starting'][1] / st['cold'][1]:.2f}× |")


def geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def bootstrap_geomean(pairs: list[list[tuple[float, float]]], rounds: int = 2000,
                      seed: int = 1) -> tuple[float, float]:
    """95 % interval (2.5th and 97.5th percentiles) of the geomean over cases of the ratio
    of medians ``median(b) / median(a)``, by resampling each case's repetitions (its
    interleaved ``(a, b)`` pairs, with replacement) ``rounds`` times."""
    rng = random.Random(seed)
    values = []
    for _ in range(rounds):
        ratios = []
        for case in pairs:
            sample = [case[rng.randrange(len(case))] for _ in case]
            ratios.append(statistics.median(b for _a, b in sample)
                          / statistics.median(a for a, _b in sample))
        values.append(geomean(ratios))
    values.sort()
    return values[int(0.025 * rounds)], values[int(0.975 * rounds) - 1]


def bench_corpus(ours: str, corpus_dir: Path, reps: int, only: str = "",
                 cold: bool = True) -> None:
    """Real programs end to end, for issue 21's warm figure: llvm-jitlink wall time (its
    stdout and stderr read to EOF through pipes) of the e2e programs (:data:`PROGRAMS`) and
    of every case of the corpus (``tests/support/corpus.py``, the objects built by
    ``scripts/corpus.sh`` into ``corpus_dir``), with llvm-jitlink-executor 22, ours cold (no
    server, none started) and ours warm (an ``orc-executor serve`` started here). Each case's
    runs of the three interleaved in a fresh random order every repetition, each in a fresh
    working directory prepared beforehand (not timed). Prints per case median (min–max) in ms
    and the ratios of the medians to the reference, then geomeans of those ratios over the
    e2e programs, over the corpus, and over both, with a 95 % bootstrap interval of the warm
    geomean (repetitions resampled: how far this machine's noise moves it). ``only``: just
    the cases whose name contains it; ``cold=False``: the reference and warm only."""
    from tests.support import corpus

    absent = corpus.missing(corpus_dir)
    if absent:
        sys.exit(f"bench: corpus not built in {corpus_dir} (missing {', '.join(absent)}): "
                 "run scripts/corpus.sh")
    tmp = Path(tempfile.mkdtemp(prefix="orc-bench-corpus-"))
    base = {k: v for k, v in os.environ.items() if k != "ORC_EXECUTOR_COLD"}
    envs = {
        "ref": dict(base),
        "cold": dict(base, ORC_EXECUTOR_AUTO_SERVE="0",
                     ORC_EXECUTOR_WARM_SOCKET=str(tmp / "nobody.sock")),
        "warm": dict(base, ORC_EXECUTOR_AUTO_SERVE="0",
                     ORC_EXECUTOR_WARM_SOCKET=str(tmp / "warm.sock")),
    }
    exes = {"ref": REFERENCE, "cold": ours, "warm": ours}
    if not cold:
        del exes["cold"]
    server = subprocess.Popen([ours, "serve", "--warm", "4", "--log-level", "warning"],
                              env=envs["warm"])
    rows: list[tuple[str, bool, dict[str, tuple[float, float, float]]]] = []
    pairs: dict[str, list[tuple[float, float]]] = {}  # per case: (ref, warm) per repetition
    try:
        while not (tmp / "warm.sock").exists():
            if server.poll() is not None:
                sys.exit("bench: orc-executor serve exited")
            time.sleep(0.02)
        time.sleep(1.0)
        # The warm environment is served warm: a program's parent is the server's zygote.
        probe = tmp / "ppid.c"
        probe.write_text('#include <stdio.h>\n#include <unistd.h>\n'
                         'int main(void) { printf("%d\\n", (int)getppid()); return 0; }\n')
        subprocess.run(["gcc", "-c", "-fPIC", str(probe), "-o", str(tmp / "ppid.o")], check=True)
        out = subprocess.run([str(LLVM / "llvm-jitlink"), f"-oop-executor={ours}",
                              str(tmp / "ppid.o")], capture_output=True, env=envs["warm"],
                             check=True, text=True).stdout
        try:
            parent = Path(f"/proc/{out.strip()}/cmdline").read_bytes()
        except OSError:  # a cold session's parent, llvm-jitlink, has exited
            parent = b""
        if b"--zygote" not in parent:
            sys.exit("bench: the warm environment was not served by the server")
        cases: list[tuple[corpus.Case, Path, bool]] = []
        for name, src in PROGRAMS.items():
            c = tmp / f"{name}.c"
            c.write_text(src)
            subprocess.run(["gcc", "-c", "-fPIC", "-O1", str(c), "-o", str(tmp / f"{name}.o")],
                           check=True)
            cases.append((corpus.Case(name, name, (name,)), tmp, False))
        cases += [(case, corpus_dir, True) for case in corpus.CASES]
        cases = [c for c in cases if only in c[0].name]
        n = 0
        for case, objdir, real in cases:
            xs: dict[str, list[float]] = {mode: [] for mode in exes}
            for _ in range(reps + 1):  # the first repetition warms caches, not counted
                for mode in random.sample(list(exes), len(exes)):
                    n += 1
                    cwd = tmp / f"run-{n}"
                    cwd.mkdir()
                    corpus.prepare(case, cwd, objdir)
                    cmd = corpus.command(case, exes[mode], objdir)
                    t0 = time.perf_counter()
                    subprocess.run(cmd, input=case.stdin, capture_output=True, cwd=cwd,
                                   env=envs[mode], check=False)
                    xs[mode].append((time.perf_counter() - t0) * 1e3)
                    shutil.rmtree(cwd, ignore_errors=True)
            rows.append((case.name, real, {m: stats(v[1:]) for m, v in xs.items()}))
            pairs[case.name] = list(zip(xs["ref"][1:], xs["warm"][1:], strict=True))
            print(f"  measured {case.name}", file=sys.stderr)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    def cell(st: tuple[float, float, float]) -> str:
        return f"{st[1]:.3g} ({st[0]:.3g}–{st[2]:.3g})"

    print(f"\nmachine: {os.cpu_count()} cores; {reps} repetitions; median (min–max) in ms; "
          "llvm-jitlink wall time, output read to EOF\n")
    def cold_cell(st: dict[str, tuple[float, float, float]], ratio: bool = False) -> str:
        if "cold" not in st:
            return "–"
        return f"{st['cold'][1] / st['ref'][1]:.2f}×" if ratio else cell(st["cold"])

    print("| case | llvm-jitlink-executor 22 | ours cold | ours warm | cold/ref | warm/ref |")
    print("|---|---|---|---|---|---|")
    for name, _real, st in rows:
        print(f"| {name} | {cell(st['ref'])} | {cold_cell(st)} | {cell(st['warm'])} | "
              f"{cold_cell(st, True)} | {st['warm'][1] / st['ref'][1]:.2f}× |")
    intervals = []
    for label, which in (("e2e programs", [False]), ("corpus", [True]),
                         ("e2e programs + corpus", [False, True])):
        sel = [st for _name, real, st in rows if real in which]
        if sel:
            cold_gm = (f"{geomean([st['cold'][1] / st['ref'][1] for st in sel]):.2f}×"
                       if cold else "–")
            warm = geomean([st["warm"][1] / st["ref"][1] for st in sel])
            print(f"| geomean, {label} ({len(sel)}) | | | | {cold_gm} | {warm:.2f}× |")
            lo, hi = bootstrap_geomean([pairs[name] for name, real, _st in rows
                                        if real in which])
            intervals.append(f"{label}: {lo:.2f}–{hi:.2f}×")
    print("\nwarm/ref geomean, 95 % bootstrap interval (repetitions resampled): "
          + "; ".join(intervals))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--calls", type=int, default=10000)
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--ours", default=OURS, help="executor to compare (default: the venv's)")
    ap.add_argument("--quick", action="store_true", help="fewer calls/bytes, for a smoke run")
    ap.add_argument("--only", default="", metavar="TEXT",
                    help="measure only the figures whose label contains TEXT")
    ap.add_argument("--warm", action="store_true",
                    help="run an `orc-executor serve` and measure the warm start")
    ap.add_argument("--auto-serve", action="store_true",
                    help="measure only the server on demand (see bench_auto_serve)")
    ap.add_argument("--corpus", nargs="?", const=str(ROOT / ".corpus"), default=None,
                    metavar="DIR",
                    help="measure only real programs end to end, reference / cold / warm "
                         "(see bench_corpus; DIR: scripts/corpus.sh's, default .corpus)")
    ap.add_argument("--no-cold", action="store_true",
                    help="with --corpus: the reference and warm only (more repetitions in "
                         "the same time)")
    args = ap.parse_args()
    if args.auto_serve:
        bench_auto_serve(args.ours, args.reps)
        return
    if args.corpus is not None:
        if args.quick:
            args.reps = 1
        bench_corpus(args.ours, Path(args.corpus).resolve(), args.reps, args.only,
                     cold=not args.no_cold)
        return
    # Every other figure: cold means cold (no server started on demand), warm means the
    # `orc-executor serve` started here.
    os.environ["ORC_EXECUTOR_AUTO_SERVE"] = "0"
    # Under PYTHONDONTWRITEBYTECODE, a package edited since scripts/bootstrap.sh compiled it
    # would be compiled again at every cold start (~20 ms): measure what an install runs.
    import compileall

    import orc_executor
    compileall.compile_dir(str(Path(orc_executor.__file__).parent), quiet=1)
    if args.quick:
        args.reps, args.calls, args.mib = 3, 1000, 8
    exes = {"orc-executor": args.ours, "llvm-jitlink-executor": REFERENCE}
    sockdir = Path(tempfile.mkdtemp(prefix="orc-bench-warm-"))
    os.environ["ORC_EXECUTOR_WARM_SOCKET"] = str(sockdir / "warm.sock")
    server: subprocess.Popen[bytes] | None = None
    if args.warm:
        server = subprocess.Popen([args.ours, "serve", "--warm", "4", "--log-level", "warning"])
        while not (sockdir / "warm.sock").exists():
            time.sleep(0.02)
        time.sleep(1.0)
    rows: list[tuple[str, str, dict[str, tuple[float, float, float]], bool]] = []

    def bench_samples(label: str, unit: str, higher_better: bool,
                      fn: Callable[[], dict[str, list[float]]], scale: float = 1.0
                      ) -> float | None:
        """A figure from the samples ``fn()`` takes for every executor (times ``scale``):
        its row, and the ratio of the medians, ours/reference."""
        if args.only not in label:
            return None
        xs = fn()
        res = {name: stats([x * scale for x in xs[name]]) for name in exes}
        rows.append((label, unit, res, higher_better))
        print(f"  measured {label}", file=sys.stderr)
        return res["orc-executor"][1] / res["llvm-jitlink-executor"][1]

    def bench(label: str, unit: str, higher_better: bool, fn: Callable[[str], float]
              ) -> float | None:
        """``fn(exe)`` once per executor per repetition, the executors interleaved so that
        drift of the machine hits both alike (:func:`bench_samples`)."""

        def interleaved() -> dict[str, list[float]]:
            xs: dict[str, list[float]] = {name: [] for name in exes}
            for _ in range(args.reps):
                for name, exe in exes.items():
                    xs[name].append(fn(exe))
            return xs

        return bench_samples(label, unit, higher_better, interleaved)

    bench("start → Setup", "ms", False, lambda e: trio.run(time_setup, e) * 1e3)
    # Round trips: the two executors' sessions side by side, batches alternating (see
    # round_robin); min/median/max are over the batches.
    rounds = 8 * args.reps
    batch = max(args.calls // rounds, 1)
    rr = f"{rounds} × {batch} calls, round-robin"
    bench_samples(f"no-op round trip ({rr})", "µs", False,
                  lambda: trio.run(round_robin, exes, noop_call, rounds, batch), 1e6)
    bench_samples(f"native call on a worker thread, round trip ({rr})", "µs", False,
                  lambda: trio.run(round_robin, exes, native_call, rounds, batch), 1e6)
    bench("pipelined small calls (64 in flight)", "k calls/s", True,
          lambda e: trio.run(time_pipelined, e, args.calls) / 1e3)
    bench_samples(f"no-op round trip, raw controller ({rr})", "µs", False,
                  lambda: round_robin_raw(exes, rounds, batch), 1e6)
    bench("pipelined small calls, raw controller (64 in flight)", "k calls/s", True,
          lambda e: time_pipelined_raw(e, args.calls) / 1e3)
    small = args.calls // 10
    bench(f"initialize + deinitialize of one page ({small} pairs)", "µs", False,
          lambda e: trio.run(time_small_initialize, e, small) * 1e6)
    pipes_label = f"initialize {args.mib} MiB over pipes"
    raw_label = f"{pipes_label}, raw controller"
    shared_label = f"initialize {args.mib} MiB, shared memory"
    bench(pipes_label, "MB/s", True, lambda e: trio.run(time_initialize, e, args.mib))
    bench(raw_label, "MB/s", True, lambda e: time_initialize_raw(e, args.mib))
    copies: dict[str, tuple[float, float, float]] = {}
    floor: tuple[float, float, float] | None = None
    if args.only in pipes_label:
        for what, argv in (("cat > /dev/null", ["cat"]),
                           (f"dd bs={args.mib}M (into one {args.mib} MiB buffer)",
                            ["dd", f"bs={args.mib}M", "iflag=fullblock", "of=/dev/null"])):
            copies[what] = stats([time_pipe_copy(args.mib, argv) for _ in range(args.reps)])
            print(f"  measured plain pipe copy, {what}", file=sys.stderr)
    bench(shared_label, "MB/s", True, lambda e: trio.run(time_initialize_shm, e, args.mib))
    bench("idle session RSS (VmRSS)", "MiB", False, lambda e: trio.run(idle_rss, e))

    tmp = Path(tempfile.mkdtemp(prefix="orc-bench-"))
    try:
        objs = []
        for name, src in PROGRAMS.items():
            c = tmp / f"{name}.c"
            c.write_text(src)
            o = tmp / f"{name}.o"
            subprocess.run(["gcc", "-c", "-fPIC", "-O1", str(c), "-o", str(o)], check=True)
            objs.append((name, o))
        ratios = []
        for name, obj in objs:

            def end_to_end(exe: str, obj: Path = obj) -> float:
                return time_jitlink(exe, obj) * 1e3

            ratio = bench(f"llvm-jitlink {name}.o end to end", "ms", False, end_to_end)
            if ratio is not None:
                ratios.append(ratio)
        hello = objs[0][1]
        bench("llvm-jitlink hello.o, output read to EOF", "ms", False,
              lambda e: time_jitlink(e, hello, read_output=True) * 1e3)
        bulk_label = f"llvm-jitlink {args.mib} MiB .data object end to end"
        bulk_shared_label = f"{bulk_label}, -use-memmgr=shared"
        if args.only in bulk_label or args.only in bulk_shared_label:
            bulk = build_bulk_program(tmp, args.mib)
            bench(bulk_label, "ms", False, lambda e: time_jitlink(e, bulk) * 1e3)
            bench(bulk_shared_label, "ms", False,
                  lambda e: time_jitlink(e, bulk, "-use-memmgr=shared") * 1e3)
            # The same program in llvm-jitlink's own process: what no executor can go below.
            floor = stats([time_jitlink(None, bulk) * 1e3 for _ in range(args.reps)])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if server is not None:
            server.terminate()
            server.wait()
        shutil.rmtree(sockdir, ignore_errors=True)

    mode = "warm (orc-executor serve running)" if args.warm else "cold"
    print(f"\nmachine: {os.cpu_count()} cores; {args.reps} repetitions; median (min–max); "
          f"orc-executor start: {mode}\n")
    print("| figure | unit | orc-executor | llvm-jitlink-executor 22 | ratio ours/ref |")
    print("|---|---|---|---|---|")
    for label, unit, res, _hb in rows:
        ours, ref = res["orc-executor"], res["llvm-jitlink-executor"]
        print(f"| {label} | {unit} | {ours[1]:.3g} ({ours[0]:.3g}–{ours[2]:.3g}) | "
              f"{ref[1]:.3g} ({ref[0]:.3g}–{ref[2]:.3g}) | {ours[1] / ref[1]:.2f}× |")
    if ratios:
        geo = geomean(ratios)
        print(f"| llvm-jitlink end to end, geomean | | | | {geo:.2f}× |")
    found = {label: res for label, _, res, _ in rows}
    init, raw, shared = (found.get(label) for label in (pipes_label, raw_label, shared_label))
    for what, copy in copies.items():
        vs = f"raw initialize/copy {raw['orc-executor'][1] / copy[1]:.2f}×" if raw else ""
        print(f"| plain pipe copy of {args.mib} MiB, {what} | MB/s | {copy[1]:.3g} "
              f"({copy[0]:.3g}–{copy[2]:.3g}) | | {vs} |")
    if init is not None and shared is not None:
        print(f"| shared memory / pipes, ours | | | | "
              f"{shared['orc-executor'][1] / init['orc-executor'][1]:.2f}× |")
    bulk_pipes, bulk_shared = found.get(bulk_label), found.get(bulk_shared_label)
    if floor is not None and bulk_pipes is not None and bulk_shared is not None:
        print(f"| {bulk_label}, in llvm-jitlink's own process (no executor) | ms | "
              f"{floor[1]:.3g} ({floor[0]:.3g}–{floor[2]:.3g}) | | |")
        # Each executor's cost above that floor, pipes over shared memory: how much faster
        # the shared-memory mapper moves the content end to end.
        over = {name: (bulk_pipes[name][1] - floor[1]) / (bulk_shared[name][1] - floor[1])
                for name in exes}
        print(f"| shared memory / pipes end to end, time above the floor | | "
              f"{over['orc-executor']:.2f}× | {over['llvm-jitlink-executor']:.2f}× | |")


if __name__ == "__main__":
    main()
