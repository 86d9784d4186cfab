"""perf support: ``llvm_orc_registerJITLoaderPerfStart`` / ``…Impl`` / ``…End`` (LLVM's
``JITLoaderPerf.cpp``), which ``llvm-jitlink -perf-support`` looks up by name.

* ``Start``: ``Error()`` — create ``$JITDUMPDIR/.debug/jit/llvm-IR-jit-YYYYMMDD-XXXXXXXX/
  jit-PID.dump`` (``$JITDUMPDIR`` defaults to ``$HOME``), write its header and map it
  ``PROT_READ|PROT_EXEC``: that mapping is the marker ``perf inject --jit`` finds in the
  ``perf.data`` file.
* ``Impl`` (an alloc action of every linked graph): ``Error(PerfJITRecordBatch)`` with
  ``SPSPerfJITRecordBatch = Tuple<Sequence<CodeLoad>, Sequence<DebugInfo>, Unwinding>``;
  appends the records to the jitdump file (code bytes, and the eh-frame for an unwinding
  record, read from JIT'd memory), timestamped with ``CLOCK_MONOTONIC`` (record with
  ``perf record -k 1``), with this process's pid and the calling thread's tid, and one
  ``START SIZE name`` line per code load to ``/tmp/perf-PID.map`` (what ``perf report``
  uses for anonymous executable memory without ``perf inject``).
* ``End``: ``Error()`` — append the ``JIT_CODE_CLOSE`` record, unmap the marker, close.

Records are checked before anything is written: record ids, ``TotalSize`` against the
record's contents, and code / eh-frame ranges inside JIT'd memory; a malformed batch gets an
error result and leaves the file as it was. Not supported: ``JITDUMP_USE_ARCH_TIMESTAMP``
(TSC timestamps).
"""

from __future__ import annotations

import mmap
import os
import struct
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from ...errors import MemoryAccessError
from ...native.api import mem_read
from ...protocol.names import PERF_IMPL, PERF_START_END, JITLoaderPerf
from ...protocol.orc_types import CodeLoadRecord, DebugInfoRecord, UnwindingRecord
from ...protocol.sps import ErrorValue
from ..context import ExecutorContext
from ..registry import Service, WrapperSpec

JIT_CODE_LOAD = 0
JIT_CODE_DEBUG_INFO = 2
JIT_CODE_CLOSE = 3
JIT_CODE_UNWINDING_INFO = 4

MAGIC = 0x4A695444  # "JiTD"
VERSION = 1
HEADER = struct.Struct("<IIIIIIQQ")  # magic, version, size, e_machine, pad, pid, time, flags
REC_HEADER = struct.Struct("<IIQ")  # id, total size, timestamp
CODE_LOAD = struct.Struct("<IIQIIQQQQ")  # + pid, tid, vma, code addr, code size, index
DEBUG_INFO = struct.Struct("<IIQQQ")  # + code addr, number of entries
DEBUG_ENTRY = struct.Struct("<QII")  # addr, line, discriminator (then the name, NUL)
UNWINDING = struct.Struct("<IIQQQQ")  # + unwind data size, eh-frame-hdr size, mapped size


class PerfRecordError(Exception):
    """A record of the batch is malformed (the message says which and how)."""


def _now() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def _elf_machine() -> int:
    """``e_machine`` of this process's executable (as LLVM reads ``/proc/self/exe``)."""
    with open("/proc/self/exe", "rb") as f:
        ident = f.read(20)
    if len(ident) < 20 or ident[:4] != b"\x7fELF":
        raise OSError("invalid ELF signature in /proc/self/exe")
    return int(struct.unpack_from("<H", ident, 18)[0])


def jitdump_parent(env: dict[str, str] | None = None) -> str:
    """``$JITDUMPDIR/.debug/jit`` (``$JITDUMPDIR`` defaults to ``$HOME``, else ``.``)."""
    e = os.environ if env is None else env
    base = e.get("JITDUMPDIR") or e.get("HOME") or os.path.expanduser("~") or "."
    return os.path.join(base, ".debug", "jit")


@dataclass
class _Dump:
    path: str
    fd: int
    marker: mmap.mmap


class PerfService(Service):
    """Writes the jitdump file and ``/tmp/perf-PID.map`` for ``llvm-jitlink -perf-support``."""

    service_name = "perf"

    def __init__(self, ctx: ExecutorContext, *, map_dir: str = "/tmp") -> None:
        self.ctx = ctx
        self.map_dir = map_dir
        self._lock = threading.Lock()
        self._dump: _Dump | None = None

    def wrappers(self) -> Iterable[WrapperSpec]:
        yield WrapperSpec(JITLoaderPerf.start, PERF_START_END, self.start, True)
        yield WrapperSpec(JITLoaderPerf.end, PERF_START_END, self.end, True)
        yield WrapperSpec(JITLoaderPerf.impl, PERF_IMPL, self.impl, True)

    @property
    def dump_path(self) -> str | None:
        """The jitdump file being written (``None`` before Start and after End)."""
        dump = self._dump
        return dump.path if dump is not None else None

    @property
    def map_path(self) -> str:
        return os.path.join(self.map_dir, f"perf-{os.getpid()}.map")

    # ---- Start / End ---------------------------------------------------------------------

    def start(self) -> ErrorValue | None:
        with self._lock:
            if self._dump is not None:
                self._close(self._dump)  # as LLVM: a second Start starts a new file
                self._dump = None
            try:
                self._dump = self._open()
            except OSError as e:
                return ErrorValue(f"perf support: {e}")
        return None

    def _open(self) -> _Dump:
        pid = os.getpid()
        parent = jitdump_parent()
        os.makedirs(parent, exist_ok=True)
        day = time.strftime("%Y%m%d", time.localtime())
        directory = tempfile.mkdtemp(prefix=f"llvm-IR-jit-{day}-", dir=parent)
        path = os.path.join(directory, f"jit-{pid}.dump")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            header = HEADER.pack(MAGIC, VERSION, HEADER.size, _elf_machine(), 0, pid, _now(), 0)
            os.write(fd, header)
            # The marker: an executable mapping of the file, recorded by perf as an MMAP
            # event (live, or from /proc/PID/maps).
            marker = mmap.mmap(fd, HEADER.size, mmap.MAP_PRIVATE,
                               mmap.PROT_READ | mmap.PROT_EXEC)
        except BaseException:
            os.close(fd)
            raise
        return _Dump(path, fd, marker)

    def end(self) -> ErrorValue | None:
        with self._lock:
            dump, self._dump = self._dump, None
            if dump is None:
                return ErrorValue("PerfState not initialized")
            try:
                os.write(dump.fd, REC_HEADER.pack(JIT_CODE_CLOSE, REC_HEADER.size, _now()))
            except OSError as e:
                return ErrorValue(f"perf support: writing {dump.path}: {e}")
            finally:
                self._close(dump)
        return None

    @staticmethod
    def _close(dump: _Dump) -> None:
        dump.marker.close()
        os.close(dump.fd)

    def shutdown(self) -> None:
        with self._lock:
            if self._dump is not None:
                self._close(self._dump)
                self._dump = None

    # ---- Impl --------------------------------------------------------------------------------

    def impl(
        self, batch: tuple[list[CodeLoadRecord], list[DebugInfoRecord], UnwindingRecord]
    ) -> ErrorValue | None:
        code_loads, debug_infos, unwinding = batch
        try:
            with self._lock:
                if self._dump is None:
                    return ErrorValue("PerfState not initialized")
                data = self._encode(code_loads, debug_infos, unwinding)
                os.write(self._dump.fd, data)  # regular file: written whole
            self._write_map(code_loads)
        except PerfRecordError as e:
            return ErrorValue(f"perf support: malformed record: {e}")
        except OSError as e:
            return ErrorValue(f"perf support: {e}")
        return None

    def _encode(self, code_loads: list[CodeLoadRecord], debug_infos: list[DebugInfoRecord],
                unwinding: UnwindingRecord) -> bytes:
        """The batch's records in jitdump form, in LLVM's order (unwinding, debug info, code
        loads); :class:`PerfRecordError` if one is malformed."""
        out = bytearray()
        ts = _now()
        if unwinding.prefix[1] > 0:
            out += self._unwinding(unwinding, ts)
        for i, d in enumerate(debug_infos):
            out += self._debug_info(i, d, ts)
        pid, tid = os.getpid(), threading.get_native_id()
        for i, c in enumerate(code_loads):
            out += self._code_load(i, c, ts, pid, tid)
        return bytes(out)

    def _read(self, what: str, addr: int, size: int) -> bytes:
        if size == 0:
            return b""
        if self.ctx.memmap.slab_containing(addr, size) is None:
            raise PerfRecordError(f"{what} [{addr:#x}, +{size:#x}) is not in JIT'd memory")
        try:
            return mem_read(addr, size)
        except MemoryAccessError as e:
            raise PerfRecordError(f"{what}: {e}") from None

    @staticmethod
    def _check(what: str, rec_id: int, want_id: int, total: int, want_total: int) -> None:
        if rec_id != want_id:
            raise PerfRecordError(f"{what} has record id {rec_id}, not {want_id}")
        if total != want_total:
            raise PerfRecordError(f"{what} has total size {total}, its contents take "
                                  f"{want_total}")

    @staticmethod
    def _name(what: str, name: bytes) -> bytes:
        if b"\0" in name:
            raise PerfRecordError(f"{what}: a name with a NUL byte")
        return name + b"\0"

    def _code_load(self, i: int, c: CodeLoadRecord, ts: int, pid: int, tid: int) -> bytes:
        what = f"code load record {i}"
        name = self._name(what, c.name)
        self._check(what, c.prefix[0], JIT_CODE_LOAD, c.prefix[1],
                    CODE_LOAD.size + len(name) + c.code_size)
        code = self._read(f"{what}: code", c.code_addr, c.code_size)
        return CODE_LOAD.pack(JIT_CODE_LOAD, c.prefix[1], ts, pid, tid, c.vma, c.code_addr,
                              c.code_size, c.code_index) + name + code

    def _debug_info(self, i: int, d: DebugInfoRecord, ts: int) -> bytes:
        what = f"debug info record {i}"
        body = bytearray()
        for e in d.entries:
            body += DEBUG_ENTRY.pack(e.addr, e.line, e.discrim) + self._name(what, e.name)
        self._check(what, d.prefix[0], JIT_CODE_DEBUG_INFO, d.prefix[1],
                    DEBUG_INFO.size + len(body))
        return DEBUG_INFO.pack(JIT_CODE_DEBUG_INFO, d.prefix[1], ts, d.code_addr,
                               len(d.entries)) + body

    def _unwinding(self, u: UnwindingRecord, ts: int) -> bytes:
        what = "unwinding record"
        if u.eh_frame_hdr_size > u.unwind_data_size:
            raise PerfRecordError(f"{what}: eh-frame header ({u.eh_frame_hdr_size} bytes) "
                                  f"larger than the unwind data ({u.unwind_data_size})")
        self._check(what, u.prefix[0], JIT_CODE_UNWINDING_INFO, u.prefix[1],
                    UNWINDING.size + u.unwind_data_size)
        if u.eh_frame_hdr_addr:
            hdr = self._read(f"{what}: eh-frame header", u.eh_frame_hdr_addr,
                             u.eh_frame_hdr_size)
        elif len(u.eh_frame_hdr) != u.eh_frame_hdr_size:
            raise PerfRecordError(f"{what}: eh-frame header of {len(u.eh_frame_hdr)} bytes, "
                                  f"announced {u.eh_frame_hdr_size}")
        else:
            hdr = u.eh_frame_hdr
        frame = self._read(f"{what}: eh-frame", u.eh_frame_addr,
                           u.unwind_data_size - u.eh_frame_hdr_size)
        return UNWINDING.pack(JIT_CODE_UNWINDING_INFO, u.prefix[1], ts, u.unwind_data_size,
                              u.eh_frame_hdr_size, u.mapped_size) + hdr + frame

    def _write_map(self, code_loads: list[CodeLoadRecord]) -> None:
        if not code_loads:
            return
        lines = "".join(
            f"{c.code_addr:x} {c.code_size:x} "
            f"{c.name.decode('utf-8', 'replace').replace(chr(10), ' ')}\n"
            for c in code_loads
        )
        with open(self.map_path, "a", encoding="utf-8") as f:
            f.write(lines)

