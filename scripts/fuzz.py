#!/usr/bin/env python3
"""Fuzz orc-executor sessions at scale (atheris drives the choices; a benchmark-style script).

Each input is one SimpleRemoteEPC message sent to a live session, chosen and shaped from
atheris' bytes (:class:`atheris.FuzzedDataProvider`):

* **typed** (35 %): a well-typed call of a bootstrap wrapper function (every wrapper of the LLVM 22
  profile), its arguments drawn from the wrapper's SPS signature (addresses from the Setup's
  bootstrap symbols, the slabs this session reserved, or anywhere);
* **payload** (65 %): such a call whose SPS bytes are then mutated (bytes flipped, u64 fields set to
  boundary values, truncated, extended, spliced);
* **header** (0.3 %): a frame whose header fields are mutated (size below 32 or beyond the maximum,
  unknown opcodes, Setup / Hangup / Result from the controller, stray sequence numbers and
  tags). Frames that leave the stream in sync keep the session; the others end it, and a
  new session starts.

Sessions run ``--per-session`` inputs, then the controller disconnects (the session must
exit 0), cold (``python -m orc_executor socket:adopt=FD``: a fresh process each) or warm (a
``--listen`` daemon hands each connection to a ready process), alternating with ``--mode both``.

Checked for every input and session: a Result for every call that keeps the stream in sync,
within ``--timeout`` seconds (else a **hang**); no session process killed by a signal
(**crash**); no ``Traceback`` in any stderr; nothing on stdout (it belongs to the JIT'd
program); the peak RSS (``VmHWM``) of every session process.

**Left out: what a trusted controller may do.** A controller may run code at any executable
address and write any memory of the process — that is what an executor is for. So no input
makes the executor run native code: a call tag, the function of ``run_as_*`` / orc-rt's
``call_*``, or an alloc action's function (also inside an action that is one of our own
wrappers) that lies in an executable mapping of the session process (``/proc/PID/maps``) or
in a slab (JIT'd memory) is not sent; memory writes (``mem_write_*``) go only to slabs this
session reserved or to unmapped addresses; a dylib ``open`` / ``load`` of a path that exists
or names a library is not sent; reserve sizes stay below 4 MiB, with at most 8 slabs alive;
``mem_read_buffers`` of more than 64 MiB in all is not sent (a read costs what it reads).
Such inputs count as *excluded*. Everything else — any bytes, any header, any wrapper — is
sent.

Usage: ``scripts/fuzz.py [--inputs N] [--mode cold|warm|both] [--per-session K] [--seed S]``.
Prints a summary (``--json`` for one JSON object on stdout); exit status 1 if any crash, hang,
traceback or stdout output was seen, or the peak RSS exceeded ``--max-rss`` MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import atheris

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orc_executor.controller import decode_setup  # noqa: E402
from orc_executor.executor.bootstrap import build_context  # noqa: E402
from orc_executor.protocol.framing import FrameDecoder, Message, Opcode  # noqa: E402
from orc_executor.protocol.names import SimpleExecutorMemoryManager, SimpleRemoteEPC  # noqa: E402
from orc_executor.protocol.orc_types import SPSWrapperFunctionCall, WrapperFunctionCall  # noqa: E402
from orc_executor.protocol.sps import (  # noqa: E402
    Addr,
    Bool,
    Bytes,
    BytesView,
    Empty,
    MapOf,
    OptionalOf,
    SequenceOf,
    SPSType,
    String,
    TupleOf,
    UInt64,
    integer_bounds,
)

DISPATCH_FN = SimpleRemoteEPC.dispatch_fn
MM_INSTANCE = SimpleExecutorMemoryManager.instance
MM_RELEASE = SimpleExecutorMemoryManager.release
HEADER = struct.Struct("<4Q")
MAX_MESSAGE = 1 << 30
MAX_RESERVE = 4 << 20
MAX_SLABS = 8
INTERESTING_U64 = [0, 1, 7, 8, 31, 32, 33, 0x7F, 0x80, 0xFF, 0x1000, 0xFFFF, 1 << 31,
                   (1 << 32) - 1, 1 << 32, 1 << 62, 1 << 63, (1 << 64) - 1, (1 << 64) - 8,
                   MAX_MESSAGE, MAX_MESSAGE + 1]


def runs_native(name: str) -> bool:
    """The wrapper calls the function its first argument points to (``run_as_*``, orc-rt's
    ``call_*``)."""
    return "run_as" in name or "_sps_call_" in name


def loads_library(name: str) -> bool:
    return "Dylib" in name and ("open" in name or "load" in name)


SESSION_STARTED = re.compile(r"session (\d+) started: .* pid (\d+)")
SESSION_ENDED = re.compile(r"session (\d+) ended: (.*) after")


SIGNATURES = build_context("modern").registry.signatures()


@dataclass
class Stats:
    inputs: int = 0
    typed: int = 0
    payload: int = 0
    header: int = 0
    excluded: int = 0
    sessions_cold: int = 0
    sessions_warm: int = 0
    sessions_ended_by_input: int = 0
    crashes: int = 0
    hangs: int = 0
    tracebacks: int = 0
    stdout_bytes: int = 0
    bad_exit: int = 0
    max_rss_mib: float = 0.0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def ok(self, max_rss: float) -> bool:
        return not (self.crashes or self.hangs or self.tracebacks or self.stdout_bytes
                    or self.bad_exit) and self.max_rss_mib <= max_rss


class Hang(Exception):
    pass


class Ended(Exception):
    """The session closed the connection (after an input that may end it)."""


def _maps(pid: int) -> list[tuple[int, int, str]]:
    out: list[tuple[int, int, str]] = []
    try:
        text = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        rng, perms = line.split()[:2]
        lo, hi = (int(x, 16) for x in rng.split("-"))
        out.append((lo, hi, perms))
    return out


def _vm_hwm(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Session:
    """One connected session: a blocking controller on a socket."""

    def __init__(self, sock: socket.socket, pid: int, timeout: float) -> None:
        self.sock = sock
        self.pid = pid
        sock.settimeout(max(timeout, 30))  # a cold start on a busy machine
        self.decoder = FrameDecoder(MAX_MESSAGE)
        self.seq = 0
        self.last_frame = b""
        setup = self.next_message()
        sock.settimeout(timeout)
        if setup.opcode != Opcode.SETUP:
            raise RuntimeError(f"expected Setup, got {setup}")
        self.symbols = decode_setup(setup.payload).symbols
        self.tags = {a for n, a in self.symbols.items() if n != DISPATCH_FN}
        self.names = {a: n for n, a in self.symbols.items()}
        self.symbol_pool = sorted(self.tags)
        self.wrappers = sorted(n for n in SIGNATURES if n in self.symbols and n != DISPATCH_FN)
        self.slabs: list[tuple[int, int]] = []
        maps = _maps(pid)
        self.exec_maps = [(lo, hi) for lo, hi, p in maps if "x" in p]
        self.mapped = [(lo, hi) for lo, hi, _p in maps]

    def next_message(self) -> Message:
        while (msg := self.decoder.next_message()) is None:
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                raise Hang("no answer") from None
            except OSError as e:
                raise Ended(str(e)) from None
            if not data:
                raise Ended("EOF")
            self.decoder.feed(data)
        return msg

    def send(self, frame: bytes) -> None:
        self.last_frame = frame
        try:
            self.sock.sendall(frame)
        except OSError as e:
            raise Ended(str(e)) from None

    def call(self, tag: int, payload: bytes) -> bytes:
        self.seq += 1
        self.send(HEADER.pack(32 + len(payload), Opcode.CALL_WRAPPER, self.seq, tag) + payload)
        return self.result(self.seq)

    def result(self, seq: int) -> bytes:
        msg = self.next_message()
        if msg.opcode != Opcode.RESULT or msg.seq != seq:
            raise RuntimeError(f"expected Result {seq}, got {msg.opcode.name} {msg.seq}")
        return bytes(msg.payload)

    def in_slab(self, addr: int) -> bool:
        return any(lo <= addr < lo + n for lo, n in self.slabs)

    def runs_code(self, addr: int) -> bool:
        """``addr`` would be run as native code (an executable mapping, or JIT'd memory)."""
        return addr not in self.tags and addr != 0 and (
            any(lo <= addr < hi for lo, hi in self.exec_maps) or self.in_slab(addr))

    def writes_unowned(self, addr: int, n: int) -> bool:
        """A write of ``n`` bytes at ``addr`` would reach mapped memory outside our slabs
        (the session's mappings as they are now: thread stacks and buffers come and go)."""
        if n <= 0:
            return False
        end = addr + n
        if any(lo <= addr and end <= lo + size for lo, size in self.slabs):
            return False
        self.mapped = [(lo, hi) for lo, hi, _p in _maps(self.pid)]
        return any(addr < hi and lo < end for lo, hi in self.mapped)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# ---- inputs ----------------------------------------------------------------------------------


def gen(t: SPSType[Any], fdp: atheris.FuzzedDataProvider, s: Session, name: str,
        depth: int = 0) -> Any:
    """A value of SPS type ``t`` drawn from ``fdp``."""
    if t is SPSWrapperFunctionCall:
        return WrapperFunctionCall(gen_addr(fdp, s, code=True),
                                   fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 32)))
    if t is Addr:
        return gen_addr(fdp, s, code=runs_native(name))
    if t is UInt64:
        if "eserve" in name:
            return int(fdp.ConsumeIntInRange(0, MAX_RESERVE))
        return _u64(fdp)
    if t is Bool:
        return fdp.ConsumeBool()
    if t is Empty:
        return None
    if t is Bytes or t is BytesView:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
    if t is String:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 16))
    bounds = integer_bounds(t)
    if bounds is not None:
        lo, hi = bounds
        return int(fdp.ConsumeIntInRange(lo, hi))
    if isinstance(t, SequenceOf):
        return [gen(t.elem, fdp, s, name, depth + 1)
                for _ in range(fdp.ConsumeIntInRange(0, 3 if depth < 2 else 1))]
    if isinstance(t, OptionalOf):
        return gen(t.elem, fdp, s, name, depth + 1) if fdp.ConsumeBool() else None
    if isinstance(t, MapOf):
        key, value = t._seq.elem.elems  # type: ignore[attr-defined]
        return {gen(key, fdp, s, name, depth + 1): gen(value, fdp, s, name, depth + 1)
                for _ in range(fdp.ConsumeIntInRange(0, 2))}
    if isinstance(t, TupleOf):
        values = tuple(gen(e, fdp, s, name, depth + 1) for e in t.elems)
        return t.factory(*values) if t.factory is not None else values
    raise AssertionError(f"no generator for SPS type {t.name}")


def _u64(fdp: atheris.FuzzedDataProvider) -> int:
    k = fdp.ConsumeIntInRange(0, 3)
    if k == 0:
        return int(fdp.PickValueInList(INTERESTING_U64))
    if k == 1:
        return int(fdp.ConsumeIntInRange(0, 4096))
    return int(fdp.ConsumeIntInRange(0, (1 << 64) - 1))


def gen_addr(fdp: atheris.FuzzedDataProvider, s: Session, *, code: bool) -> int:
    k = fdp.ConsumeIntInRange(0, 5)
    if k == 0:
        return 0
    if k == 1 and s.slabs and not code:
        lo, n = s.slabs[fdp.ConsumeIntInRange(0, len(s.slabs) - 1)]
        return int(lo) + int(fdp.ConsumeIntInRange(0, n))
    if k <= 3:
        return int(s.symbol_pool[fdp.ConsumeIntInRange(0, len(s.symbol_pool) - 1)])
    return int(fdp.ConsumeIntInRange(0, (1 << 64) - 1))


def mutate(data: bytes, fdp: atheris.FuzzedDataProvider) -> bytes:
    """1-4 mutations of ``data``: byte flips, u64 boundary values, truncation, extension,
    deletion and insertion."""
    b = bytearray(data)
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        op = fdp.ConsumeIntInRange(0, 5)
        pos = fdp.ConsumeIntInRange(0, max(len(b) - 1, 0))
        if op == 0 and b:
            b[pos] ^= 1 << fdp.ConsumeIntInRange(0, 7)
        elif op == 1 and len(b) >= 8:
            pos = min(pos, len(b) - 8)
            b[pos:pos + 8] = _u64(fdp).to_bytes(8, "little")
        elif op == 2:
            del b[pos:]
        elif op == 3:
            b += fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 64))
        elif op == 4:
            del b[pos:pos + fdp.ConsumeIntInRange(1, 16)]
        else:
            b[pos:pos] = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 16))
    return bytes(b)


def excluded(name: str, payload: bytes, s: Session) -> bool:
    """The call would make the executor run native code or write memory it does not own,
    which a trusted controller may do (see the module doc): not sent."""
    sig = SIGNATURES[name]
    try:
        args = sig.args.decode(payload)
    except ValueError:
        return False  # refused before anything runs
    if runs_native(name):
        return s.runs_code(args[0])
    if "mem_read_buffers" in name:
        # Reading is a controller's right; a read's result costs what it reads, up to the
        # executor's 1 GiB per call. Kept below 64 MiB here, so the RSS bound measures the rest.
        return bool(sum(max(0, r.end - r.start) for r in args[0]) > 64 << 20)
    if "mem_write" in name:
        width = {"uint8s": 1, "uint16s": 2, "uint32s": 4, "uint64s": 8, "pointers": 8}
        for item in args[0]:
            addr, value = item
            n = len(value) if isinstance(value, (bytes, bytearray, memoryview)) else next(
                (w for k, w in width.items() if k in name), 8)
            if s.writes_unowned(addr, n):
                return True
        return False
    if loads_library(name):
        path = args[1]
        return bool(path) and (".so" in path or "lib" in path or os.path.exists(path))
    for c in _calls(args):
        if c.fn in s.tags:
            # One of our wrappers as an alloc action: what it would do with its arguments
            # (run_as_* of native code, a memory write) is checked the same way.
            inner = s.names.get(c.fn)
            if inner is not None and inner in SIGNATURES and excluded(inner, bytes(c.args), s):
                return True
        elif s.runs_code(c.fn):
            return True
    return False


def _calls(value: Any) -> list[WrapperFunctionCall]:
    """Every :class:`WrapperFunctionCall` inside a decoded value (alloc actions)."""
    if isinstance(value, WrapperFunctionCall):
        return [value]
    if isinstance(value, (bytes, bytearray, memoryview, str)):
        return []
    if isinstance(value, (tuple, list)):
        return [c for v in value for c in _calls(v)]
    return []


class Fuzzer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stats = Stats()
        self.session: Session | None = None
        self.left_in_session = 0
        self.cold_turn = args.mode != "warm"
        self.t0 = time.monotonic()
        self.tmp = tempfile.TemporaryDirectory(prefix="orc-fuzz-")
        self.out = open(os.path.join(self.tmp.name, "stdout"), "w+b")  # noqa: SIM115
        self.err = open(os.path.join(self.tmp.name, "stderr"), "w+b")  # noqa: SIM115
        self.proc: subprocess.Popen[bytes] | None = None  # the cold session's process
        self.daemon: subprocess.Popen[bytes] | None = None
        self.daemon_lines: queue.Queue[str] = queue.Queue()
        self.daemon_err: list[str] = []
        self.daemon_path = os.path.join(self.tmp.name, "d.sock")
        self.warm_started = 0
        self.last_report = 0
        self.failures = Path(args.failures) if args.failures else None

    # ---- sessions ---------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORC_EXECUTOR_")}
        env["ORC_EXECUTOR_COLD"] = "1"
        env["PYTHONPATH"] = str(ROOT)
        return env

    def start_daemon(self) -> None:
        """Start the ``--listen`` daemon (again, if an earlier one ended); its log lines
        are collected, and its session numbers count from 1 again."""
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.kill()
            self.daemon.wait()
        self.warm_started = 0
        lines: queue.Queue[str] = queue.Queue()
        self.daemon_lines = lines
        if os.path.exists(self.daemon_path):
            os.unlink(self.daemon_path)
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "orc_executor", "--listen", self.daemon_path,
             "--idle-close", "0", "--max-sessions", "4", "--warm", "2"],
            stdout=self.out, stderr=subprocess.PIPE, env=self.env(), cwd=self.tmp.name,
        )
        assert self.daemon.stderr is not None
        pipe = self.daemon.stderr

        def pump() -> None:
            for raw in pipe:
                line = raw.decode("utf-8", "replace")
                self.daemon_err.append(line)
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        # Its log line says it listens: the socket file alone appears at bind(), before
        # listen(), and a connect in between is refused.
        deadline = time.monotonic() + 60
        while True:
            if time.monotonic() > deadline or self.daemon.poll() is not None:
                raise RuntimeError("the daemon did not start")
            try:
                if "serving sessions on" in lines.get(timeout=0.1):
                    break
            except queue.Empty:
                pass

    def new_session(self) -> Session:
        cold = self.cold_turn
        if self.args.mode == "both":
            self.cold_turn = not self.cold_turn
        self.left_in_session = self.args.per_session
        if cold:
            ours, theirs = socket.socketpair()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "orc_executor", f"socket:adopt={theirs.fileno()}",
                 "--idle-close", "0"],
                pass_fds=(theirs.fileno(),), stdout=self.out, stderr=self.err, env=self.env(),
                cwd=self.tmp.name,
            )
            theirs.close()
            self.stats.sessions_cold += 1
            s = Session(ours, self.proc.pid, self.args.timeout)
        else:
            if self.daemon is None or self.daemon.poll() is not None:
                self.start_daemon()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(self.daemon_path)
            self.warm_started += 1
            pid = self.wait_session_pid(self.warm_started)
            self.stats.sessions_warm += 1
            self.proc = None
            s = Session(sock, pid, self.args.timeout)
        return s

    def wait_session_pid(self, n: int) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                line = self.daemon_lines.get(timeout=1)
            except queue.Empty:
                continue
            m = SESSION_STARTED.search(line)
            if m and int(m.group(1)) == n:
                return int(m.group(2))
        raise RuntimeError(f"the daemon did not start session {n}")

    def end_session(self, *, ended_by_input: bool) -> None:
        s, self.session = self.session, None
        if s is None:
            return
        self.stats.max_rss_mib = max(self.stats.max_rss_mib, _vm_hwm(s.pid) / (1 << 20))
        s.close()
        if self.proc is not None:
            try:
                rc = self.proc.wait(timeout=self.args.timeout + 5)
            except subprocess.TimeoutExpired:
                self.problem(f"cold session pid {s.pid} did not exit after EOF")
                self.stats.hangs += 1
                self.proc.kill()
                rc = self.proc.wait()
            self.check_status(rc, ended_by_input, f"cold pid {s.pid}")
        if ended_by_input:
            self.stats.sessions_ended_by_input += 1

    def check_status(self, rc: int, ended_by_input: bool, what: str) -> None:
        if rc < 0:
            self.stats.crashes += 1
            self.problem(f"{what}: killed by signal {-rc}")
        elif rc != 0 and not ended_by_input:
            self.stats.bad_exit += 1
            self.problem(f"{what}: exit {rc} after a clean disconnect")

    def problem(self, text: str) -> None:
        if len(self.stats.problems) < 50:
            self.stats.problems.append(text)
        print(f"fuzz: {text}", file=sys.stderr, flush=True)

    # ---- one input ---------------------------------------------------------------------------

    def one(self, data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        if self.session is None:
            try:
                self.session = self.new_session()
            except (Hang, Ended, RuntimeError, OSError) as e:
                self.stats.hangs += 1
                self.problem(f"a session did not start: {e!r}")
                if self.proc is not None:
                    self.proc.kill()
                    self.proc.wait()
                return
        s = self.session
        if len(s.slabs) > MAX_SLABS:
            self.release_oldest(s)
        name = s.wrappers[fdp.ConsumeIntInRange(0, len(s.wrappers) - 1)]
        sig = SIGNATURES[name]
        payload = sig.args.encode(gen(sig.args, fdp, s, name))
        # Which kind of input: from a hash of the whole input, so the shares hold whatever
        # byte values the mutator favours (a header mutation usually costs a new session).
        kind = zlib.crc32(data) % 1000
        tag = s.symbols[name]
        self.stats.inputs += 1
        last_input = (name, kind, data)
        try:
            if kind < 350 or "eserve" in name:
                self.stats.typed += 1
                self.typed_call(s, name, tag, payload)
            elif kind < 997:
                self.stats.payload += 1
                payload = mutate(payload, fdp)
                if excluded(name, payload, s):
                    self.stats.excluded += 1
                    return
                s.call(tag, payload)
            else:
                self.stats.header += 1
                self.header_input(s, fdp, tag, payload)
        except Hang:
            self.stats.hangs += 1
            self.problem(f"hang: no answer within {self.args.timeout}s to {last_input[0]}: "
                         f"{s.last_frame[:256].hex()}")
            self.save(last_input)
            if self.proc is not None:
                self.proc.kill()  # its SIGKILL is ours, not a crash
                self.proc.wait()
                self.proc = None
            self.end_session(ended_by_input=True)
            return
        except Ended as e:
            self.problem(f"session ended unexpectedly ({e}) after {last_input[0]}")
            self.save(last_input)
            self.end_session(ended_by_input=True)
            return
        if self.args.watch_rss and self.session is not None:
            hwm = _vm_hwm(s.pid) / (1 << 20)
            if hwm > self.args.watch_rss and not getattr(s, "reported_rss", False):
                s.reported_rss = True  # type: ignore[attr-defined]
                self.problem(f"session pid {s.pid} peaked at {hwm:.0f} MiB after "
                             f"{last_input[0]}: {s.last_frame[:512].hex()}")
        self.left_in_session -= 1
        if self.left_in_session <= 0:
            self.end_session(ended_by_input=False)
        if self.stats.inputs - self.last_report >= self.args.report_every:
            self.last_report = self.stats.inputs
            self.report(final=False)

    def typed_call(self, s: Session, name: str, tag: int, payload: bytes) -> None:
        if excluded(name, payload, s):
            self.stats.excluded += 1
            return
        result = s.call(tag, payload)
        if "eserve" in name and result[:1] == b"\x01" and len(result) >= 9:
            addr = int.from_bytes(result[1:9], "little")
            size = SIGNATURES[name].args.decode(payload)[-1]
            if addr and isinstance(size, int):
                s.slabs.append((addr, size))

    def release_oldest(self, s: Session) -> None:
        addr, _ = s.slabs.pop(0)
        sig = SIGNATURES[MM_RELEASE]
        s.call(s.symbols[MM_RELEASE], sig.args.encode((s.symbols[MM_INSTANCE], [addr])))

    def header_input(self, s: Session, fdp: atheris.FuzzedDataProvider, tag: int,
                     payload: bytes) -> None:
        """A frame with mutated header fields. In sync (a complete CallWrapper): its Result
        is awaited; otherwise the session must end (EOF) without any other answer."""
        size = 32 + len(payload)
        opcode, seq = int(Opcode.CALL_WRAPPER), s.seq + 1
        for _ in range(fdp.ConsumeIntInRange(1, 3)):
            field_ = fdp.ConsumeIntInRange(0, 3)
            if field_ == 0:
                size = fdp.PickValueInList([
                    fdp.ConsumeIntInRange(0, 31), size + fdp.ConsumeIntInRange(1, 4096),
                    MAX_MESSAGE + fdp.ConsumeIntInRange(1, 1 << 20), (1 << 64) - 1, _u64(fdp)])
            elif field_ == 1:
                opcode = fdp.ConsumeIntInRange(0, 7) if fdp.ConsumeBool() else _u64(fdp)
            elif field_ == 2:
                seq = _u64(fdp)
            else:
                tag = gen_addr(fdp, s, code=False)
        if (opcode == Opcode.CALL_WRAPPER and tag not in s.tags and s.runs_code(tag)):
            self.stats.excluded += 1
            return
        size &= (1 << 64) - 1  # as the header will carry it (two mutations may overflow)
        body = payload[: max(0, size - 32)]
        if 32 <= size <= MAX_MESSAGE and size - 32 > len(body):
            pad = size - 32 - len(body)
            if pad > 1 << 16:  # would wait for content we will not send: cut the session
                opcode = 99
            body += bytes(min(pad, 1 << 16))
        in_sync = opcode == Opcode.CALL_WRAPPER and 32 <= size <= MAX_MESSAGE and \
            len(body) == size - 32
        if in_sync:
            name = next((n for n in s.wrappers if s.symbols[n] == tag), None)
            if name is not None and excluded(name, bytes(body), s):
                self.stats.excluded += 1
                return
        s.send(HEADER.pack(size & ((1 << 64) - 1), opcode & ((1 << 64) - 1),
                           seq & ((1 << 64) - 1), tag) + bytes(body))
        if in_sync:
            s.result(seq & ((1 << 64) - 1))
            s.seq = max(s.seq, seq) if seq < (1 << 62) else s.seq
            return
        # Out of sync: the session must end (framing or protocol error), or for a Result
        # the executor did not expect, also end. Drain to EOF.
        try:
            while True:
                s.next_message()
        except Ended:
            pass
        self.end_session(ended_by_input=True)

    def save(self, item: tuple[str, int, bytes]) -> None:
        if self.failures is None:
            return
        self.failures.mkdir(parents=True, exist_ok=True)
        (self.failures / f"input-{self.stats.inputs}.bin").write_bytes(item[2])

    # ---- the end -----------------------------------------------------------------------------

    def finish(self) -> None:
        try:
            self.end_session(ended_by_input=False)
        except Exception as e:
            self.problem(f"ending the last session: {e!r}")
        if self.daemon is not None:
            self.daemon.terminate()
            try:
                self.daemon.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.problem("the daemon did not stop on SIGTERM")
                self.daemon.kill()
            time.sleep(0.2)
            text = "".join(self.daemon_err)
            for m in SESSION_ENDED.finditer(text):
                status = m.group(2)
                if status.startswith("killed"):
                    self.stats.crashes += 1
                    self.problem(f"warm session {m.group(1)}: {status}")
            self.stats.tracebacks += text.count("Traceback")
        self.err.seek(0)
        cold_err = self.err.read().decode("utf-8", "replace")
        self.stats.tracebacks += cold_err.count("Traceback")
        if "Traceback" in cold_err:
            i = cold_err.index("Traceback")
            self.problem("traceback: " + cold_err[i:i + 2000])
        self.out.seek(0)
        self.stats.stdout_bytes = len(self.out.read())
        self.stats.seconds = round(time.monotonic() - self.t0, 1)
        self.stats.max_rss_mib = round(self.stats.max_rss_mib, 1)

    def report(self, *, final: bool) -> None:
        st = self.stats
        elapsed = time.monotonic() - self.t0
        line = (f"fuzz: {st.inputs} inputs ({st.typed} typed, {st.payload} mutated payloads, "
                f"{st.header} mutated headers, {st.excluded} excluded) in {elapsed:.0f}s "
                f"({st.inputs / max(elapsed, 1e-9):.0f}/s); sessions {st.sessions_cold} cold + "
                f"{st.sessions_warm} warm ({st.sessions_ended_by_input} ended by their input); "
                f"crashes {st.crashes}, hangs {st.hangs}, tracebacks {st.tracebacks}, "
                f"stdout bytes {st.stdout_bytes}, bad exits {st.bad_exit}, "
                f"max RSS {st.max_rss_mib:.0f} MiB")
        print(line, file=sys.stderr, flush=True)
        if final and self.args.json:
            print(json.dumps(asdict(st)), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--inputs", type=int, default=100_000, help="inputs to run (%(default)s)")
    p.add_argument("--mode", choices=["cold", "warm", "both"], default="both")
    p.add_argument("--per-session", type=int, default=2000,
                   help="inputs per session before a clean disconnect (%(default)s)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per answer")
    p.add_argument("--max-rss", type=float, default=512.0,
                   help="MiB a session process may peak at (%(default)s)")
    p.add_argument("--max-len", type=int, default=2048, help="atheris input bytes")
    p.add_argument("--watch-rss", type=float, default=0.0,
                   help="log the input after which a session first peaks over this many MiB")
    p.add_argument("--report-every", type=int, default=50_000)
    p.add_argument("--failures", default=None, help="directory for inputs that failed")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    args = p.parse_args()
    fuzzer = Fuzzer(args)
    stop = args.inputs

    def test_one_input(data: bytes) -> None:
        try:
            fuzzer.one(data)
        except BaseException as e:  # the fuzzer's own failure: leave no process behind
            fuzzer.problem(f"fuzzer error: {e!r}")
            if fuzzer.proc is not None and fuzzer.proc.poll() is None:
                fuzzer.proc.kill()
            fuzzer.finish()
            fuzzer.report(final=True)
            os._exit(2)
        if fuzzer.stats.inputs >= stop:
            fuzzer.finish()
            fuzzer.report(final=True)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0 if fuzzer.stats.ok(args.max_rss) else 1)

    # The choices above are coverage-instrumented, so libFuzzer keeps inputs that reach new
    # generator paths; a seeded corpus of full-length random inputs starts it off.
    for fn in (gen, _u64, gen_addr, mutate, excluded, Fuzzer.one, Fuzzer.header_input):
        atheris.instrument_func(fn)
    corpus = os.path.join(fuzzer.tmp.name, "corpus")
    os.mkdir(corpus)
    rng = random.Random(args.seed)
    for i in range(64):
        Path(corpus, f"seed{i}").write_bytes(rng.randbytes(args.max_len))
    atheris.Setup([sys.argv[0], f"-seed={args.seed}", f"-max_len={args.max_len}",
                   "-len_control=0", "-print_final_stats=0", "-close_fd_mask=0",
                   "-print_pcs=0", corpus], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
