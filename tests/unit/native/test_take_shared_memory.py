"""``orc_take_shared_memory``: a forked worker copies, ahead of its session, every page it
still shares copy-on-write with the process it was forked from (so the session takes no
copy-on-write fault), leaves the content as it was, and copies nothing in a process that
shares nothing."""

from __future__ import annotations

import hashlib
import json
import os
import struct

from orc_executor.native.api import ffi, lib

PAGE = os.sysconf("SC_PAGE_SIZE")
EXCLUSIVE = 1 << 56  # /proc/PID/pagemap: the page is mapped by this process alone
PRESENT = 1 << 63


def exclusive_pages(buf: bytearray) -> tuple[int, int]:
    """(pages mapped by this process alone, present pages) of ``buf``'s whole pages."""
    addr = int(ffi.cast("uintptr_t", ffi.from_buffer(buf)))
    first = (addr + PAGE - 1) // PAGE
    last = (addr + len(buf)) // PAGE
    with open("/proc/self/pagemap", "rb") as f:
        f.seek(first * 8)
        entries = struct.unpack(f"<{last - first}Q", f.read((last - first) * 8))
    present = [e for e in entries if e & PRESENT]
    return sum(1 for e in present if e & EXCLUSIVE), len(present)


def test_a_forked_child_copies_what_it_shares_and_keeps_its_content() -> None:
    buf = bytearray(os.urandom(64 * PAGE))  # written by this process: shared once forked
    digest = hashlib.sha256(buf).hexdigest()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running any cleanup of the parent's
        try:
            before = exclusive_pages(buf)
            taken = lib.orc_take_shared_memory()
            after = exclusive_pages(buf)
            same = hashlib.sha256(buf).hexdigest() == digest
            os.write(w, json.dumps([before, taken, after, same]).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        before, taken, after, same = json.loads(f.read())
    os.waitpid(pid, 0)
    assert before[0] == 0 and before[1] >= 63  # shared with this process: none exclusive
    assert taken >= 63 * PAGE
    assert after[0] == after[1] >= 63  # every present page now the child's own
    assert same


def test_a_process_that_shares_nothing_more_copies_little() -> None:
    lib.orc_take_shared_memory()  # whatever this test process still shares with its parent
    assert 0 <= lib.orc_take_shared_memory() < 64 * PAGE
