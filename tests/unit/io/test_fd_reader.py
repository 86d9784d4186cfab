"""``transport.streams.FdReader``, the read loop shared by the session and the package
controller, on real pipes: reads before any wait (unless told to wait first), poll(2) only
while ``quiet()``, trio's wait otherwise, a wake-up fd ending the poll (``on_wake`` on the
reading thread), a forced checkpoint every N reads without a trio wait, bulk reads straight
into a buffer, EOF, a close while waiting, and ``forget``."""

from __future__ import annotations

import gc
import os
import select
import threading
import time
from collections.abc import Iterator
from typing import ClassVar

import pytest
import trio

from orc_executor.io import streams
from orc_executor.io.streams import FdReader


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


class Counts:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.checkpoints = 0
        self.trio_waits = 0
        checkpoint, wait_readable = trio.lowlevel.checkpoint, trio.lowlevel.wait_readable

        async def counting_checkpoint() -> None:
            self.checkpoints += 1
            await checkpoint()

        async def counting_wait(fd: int) -> None:
            self.trio_waits += 1
            await wait_readable(fd)

        monkeypatch.setattr(streams.trio.lowlevel, "checkpoint", counting_checkpoint)
        monkeypatch.setattr(streams.trio.lowlevel, "wait_readable", counting_wait)


class Quiet:
    """A ``quiet`` predicate that always says quiet and counts how often it was asked."""

    def __init__(self) -> None:
        self.asked = 0

    def __call__(self) -> bool:
        self.asked += 1
        return True


def write_later(fd: int, data: bytes, delay: float) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        os.write(fd, data)

    t = threading.Thread(target=run)
    t.start()
    return t


async def read_written_later(
    reader: FdReader, w: int, data: bytes, delay: float, *, wait_first: bool = False
) -> None:
    """``data`` written to ``w`` after ``delay`` seconds is what ``reader.read`` returns."""
    t = write_later(w, data, delay)
    with trio.fail_after(5):
        assert await reader.read(100, wait_first=wait_first) == data
    t.join()


async def test_waiting_bytes_are_read_without_a_wait(
    pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    r, w = pipe
    counts = Counts(monkeypatch)
    reader = FdReader(r, quiet=lambda: True, checkpoint_every=4)
    for i in range(10):
        os.write(w, bytes([i]) * 3)
        assert await reader.read(100) == bytes([i]) * 3
    assert counts.trio_waits == 0
    assert counts.checkpoints == 10 // 4  # a forced checkpoint every 4 reads that did not wait


async def test_checkpoint_every_one_checkpoints_before_every_read(
    pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    r, w = pipe
    counts = Counts(monkeypatch)
    reader = FdReader(r, checkpoint_every=1)
    for _ in range(5):
        os.write(w, b"x")
        assert await reader.read(1) == b"x"
    assert counts.checkpoints == 5


@pytest.mark.parametrize("wait_first", [False, True])
@pytest.mark.parametrize(
    ("poll_ms", "delay", "in_trio"),
    [(50, 0.005, False),  # arrives well within one poll: no trip through trio
     (1, 0.2, True)],  # the poll times out first: the wait goes to trio
)
async def test_quiet_waits_in_poll_then_in_trio(
    pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch, poll_ms: int, delay: float,
    in_trio: bool, wait_first: bool,
) -> None:
    """However the read starts, one poll: what arrives within it is read, else trio waits."""
    r, w = pipe
    counts = Counts(monkeypatch)
    quiet = Quiet()
    reader = FdReader(r, quiet=quiet, poll_ms=poll_ms)
    await read_written_later(reader, w, b"late", delay, wait_first=wait_first)
    assert quiet.asked == 1
    assert counts.trio_waits == (1 if in_trio else 0)


async def test_not_quiet_waits_in_trio_and_other_tasks_run(
    pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    r, w = pipe
    counts = Counts(monkeypatch)
    reader = FdReader(r, quiet=lambda: False, poll_ms=1000)
    ran = trio.Event()

    async def other() -> None:
        ran.set()
        os.write(w, b"from another task")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        with trio.fail_after(5):
            assert await reader.read(100) == b"from another task"
    assert ran.is_set()
    assert counts.trio_waits == 1


async def test_readinto_fills_the_buffer_and_eof_reads_empty(pipe: tuple[int, int]) -> None:
    r, w = pipe
    reader = FdReader(r)
    payload = os.urandom(200_000)  # more than a pipe buffer: several reads and waits
    buf = bytearray(len(payload))
    view = memoryview(buf)

    async def produce() -> None:
        await trio.to_thread.run_sync(os.write, w, payload)
        os.close(w)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        filled = 0
        while filled < len(buf):
            n = await reader.readinto(view[filled:])
            assert n > 0
            filled += n
    assert buf == payload
    assert await reader.read(10) == b""
    assert await reader.readinto(view) == 0


async def test_closing_the_fd_ends_a_wait(pipe: tuple[int, int]) -> None:
    r, _w = pipe
    reader = FdReader(r, quiet=lambda: False)

    async def close_soon() -> None:
        await trio.sleep(0.01)
        trio.lowlevel.notify_closing(r)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(close_soon)
        with pytest.raises(trio.ClosedResourceError), trio.fail_after(5):
            await reader.read(10)


async def test_forget_stops_the_poll(pipe: tuple[int, int]) -> None:
    r, w = pipe
    quiet = Quiet()
    reader = FdReader(r, quiet=quiet)
    reader.forget()
    await read_written_later(reader, w, b"x", 0.01)
    assert quiet.asked == 0


def test_read_polled_waits_in_poll_for_at_most_poll_ms(pipe: tuple[int, int]) -> None:
    r, w = pipe
    reader = FdReader(r, quiet=lambda: True, poll_ms=20)
    t0 = time.perf_counter()
    assert reader.read_polled(10) is None  # nothing arrived
    assert 0.015 < time.perf_counter() - t0 < 1
    t = write_later(w, b"soon", 0.002)
    assert reader.read_polled(10) == b"soon"
    t.join()
    os.close(w)
    assert reader.read_polled(10) == b""  # EOF


def test_read_polled_without_a_poller_does_not_wait(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.write(w, b"x")
    assert FdReader(r).read_polled(10) is None  # made with quiet=None
    reader = FdReader(r, quiet=lambda: True)
    reader.forget()
    assert reader.read_polled(10) is None
    assert FdReader(r, quiet=lambda: True).read_polled(10) == b"x"


class Reads:
    """Counts ``read(2)`` calls on one fd (``os.read`` as the reader module sees it)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fd: int) -> None:
        self.count = 0
        real = os.read

        def counting(f: int, n: int) -> bytes:
            if f == fd:
                self.count += 1
            return real(f, n)

        monkeypatch.setattr(streams.os, "read", counting)


@pytest.mark.parametrize(
    ("wait_first", "quiet", "reads", "in_trio"),
    [(True, True, 1, False),  # poll(2), then one read(2)
     (False, True, 2, False),  # read(2) (EAGAIN), poll(2), read(2)
     (True, False, 2, True)],  # not quiet: read(2) (EAGAIN), trio's wait, read(2)
)
async def test_wait_first_polls_before_reading_while_quiet(
    pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch, wait_first: bool, quiet: bool,
    reads: int, in_trio: bool,
) -> None:
    r, w = pipe
    counts = Counts(monkeypatch)
    counted = Reads(monkeypatch, r)
    reader = FdReader(r, quiet=lambda: quiet, poll_ms=2000)
    await read_written_later(reader, w, b"late", 0.01, wait_first=wait_first)
    assert counted.count == reads
    assert (counts.trio_waits > 0) == in_trio


@pytest.fixture
def wake() -> Iterator[int]:
    fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    yield fd
    os.close(fd)


def wake_later(fd: int, delay: float) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        os.eventfd_write(fd, 1)

    t = threading.Thread(target=run)
    t.start()
    return t


async def test_a_wake_up_ends_the_poll_runs_on_wake_and_polls_again(
    pipe: tuple[int, int], wake: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    r, w = pipe
    counts = Counts(monkeypatch)
    woken: list[bool] = []

    def on_wake() -> None:
        woken.append(threading.current_thread() is threading.main_thread())
        write_later(w, b"after the wake-up", 0.01)  # still quiet: the reader polls again

    reader = FdReader(r, quiet=lambda: True, poll_ms=30_000, wake_fd=wake, on_wake=on_wake)
    t = wake_later(wake, 0.01)
    with trio.fail_after(5):
        assert await reader.read(100) == b"after the wake-up"
    t.join()
    assert woken == [True]  # once, on the reading (trio) thread
    assert counts.trio_waits == 0
    with pytest.raises(BlockingIOError):
        os.eventfd_read(wake)  # drained


async def test_a_wake_up_that_ends_the_quiet_hands_the_wait_to_trio(
    pipe: tuple[int, int], wake: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    r, w = pipe
    counts = Counts(monkeypatch)
    quiet = [True]

    def on_wake() -> None:
        quiet[0] = False  # e.g. the trio thread queued a frame for the writer task

    reader = FdReader(r, quiet=lambda: quiet[0], poll_ms=30_000, wake_fd=wake, on_wake=on_wake)

    async def writer_task() -> None:
        while quiet[0]:
            await trio.sleep(0.005)
        os.write(w, b"from the writer")

    t = wake_later(wake, 0.01)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer_task)
        with trio.fail_after(5):
            assert await reader.read(100) == b"from the writer"
    t.join()
    assert counts.trio_waits == 1


def test_read_polled_returns_nothing_on_a_wake_up(pipe: tuple[int, int], wake: int) -> None:
    r, w = pipe
    woken: list[int] = []
    reader = FdReader(r, quiet=lambda: True, poll_ms=30_000, wake_fd=wake,
                      on_wake=lambda: woken.append(1))
    t = wake_later(wake, 0.01)
    t0 = time.perf_counter()
    assert reader.read_polled(10) is None
    assert time.perf_counter() - t0 < 5
    t.join()
    assert woken == [1]
    os.write(w, b"x")
    os.eventfd_write(wake, 1)  # both ready: the wake-up is handled and the bytes are read
    assert reader.read_polled(10) == b"x"
    assert woken == [1, 1]


_real_poll = select.poll


class RecordingPoll:
    """Stands in for ``select.poll()`` in the reader module: records every ``poll`` call's
    timeout (ms), when it was called and when it returned (``perf_counter`` seconds), and
    whether anything was ready."""

    #: Every one made since the fixture installed the class.
    made: ClassVar[list[RecordingPoll]] = []

    def __init__(self) -> None:
        self._poll = _real_poll()
        self.calls: list[tuple[int, float, float, bool]] = []
        RecordingPoll.made.append(self)

    def register(self, fd: int, events: int) -> None:
        self._poll.register(fd, events)

    def poll(self, timeout: int) -> list[tuple[int, int]]:
        called = time.perf_counter()
        events = self._poll.poll(timeout)
        self.calls.append((timeout, called, time.perf_counter(), bool(events)))
        return events

    def sleeping(self) -> list[tuple[int, float, float, bool]]:
        return [c for c in self.calls if c[0] != 0]

    def spinning(self) -> list[tuple[int, float, float, bool]]:
        return [c for c in self.calls if c[0] == 0]


@pytest.fixture
def recording_poll(monkeypatch: pytest.MonkeyPatch) -> type[RecordingPoll]:
    RecordingPoll.made = []
    monkeypatch.setattr(streams.select, "poll", RecordingPoll)
    return RecordingPoll


async def test_busy_poll_reads_what_arrives_within_the_window_without_sleeping(
    pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch,
    recording_poll: type[RecordingPoll],
) -> None:
    r, w = pipe
    counts = Counts(monkeypatch)
    reader = FdReader(r, quiet=lambda: True, poll_ms=2000, busy_poll=2.0)
    t0 = time.perf_counter()
    await read_written_later(reader, w, b"soon", 0.02)
    (poller,) = recording_poll.made
    spins = poller.spinning()
    assert len(spins) > 10 and spins[-1][3]  # polled without sleeping until the bytes came
    assert spins[-1][2] - t0 >= 0.02
    # What the spin found ready is taken by one poll that does not sleep either.
    (sleep,) = poller.sleeping()
    assert sleep[3] and sleep[2] - sleep[1] < 0.01
    assert counts.trio_waits == 0


async def test_busy_poll_sleeps_in_poll_after_the_window(
    pipe: tuple[int, int], recording_poll: type[RecordingPoll],
) -> None:
    r, w = pipe
    gc.collect()  # no collection of earlier tests' garbage inside the timed window
    reader = FdReader(r, quiet=lambda: True, poll_ms=2000, busy_poll=0.01)
    t0 = time.perf_counter()
    await read_written_later(reader, w, b"late", 0.2)
    (poller,) = recording_poll.made
    spins = poller.spinning()
    assert spins and not any(c[3] for c in spins)
    assert 0.009 <= spins[-1][2] - spins[0][1] < 0.15  # the window, then no more spinning
    (sleep,) = poller.sleeping()  # one poll that slept until the bytes came
    assert sleep[3] and sleep[2] - t0 >= 0.2


@pytest.mark.parametrize("wait_first", [False, True])
@pytest.mark.parametrize(("busy_poll", "may_spin", "quiet"),
                         [(0.0, True, True),  # off
                          (2.0, False, True),  # another thread needs the GIL
                          (2.0, True, False)])  # trio must wait: other tasks have work
async def test_no_busy_poll_when_off_not_allowed_or_not_quiet(
    pipe: tuple[int, int], recording_poll: type[RecordingPoll], busy_poll: float,
    may_spin: bool, quiet: bool, wait_first: bool,
) -> None:
    r, w = pipe
    reader = FdReader(r, quiet=lambda: quiet, poll_ms=2000, busy_poll=busy_poll,
                      may_spin=lambda: may_spin)
    await read_written_later(reader, w, b"late", 0.02, wait_first=wait_first)
    (poller,) = recording_poll.made
    assert poller.spinning() == []
    assert len(poller.sleeping()) == (1 if quiet else 0)


async def test_busy_poll_starts_once_a_wake_up_allows_it(
    pipe: tuple[int, int], wake: int, recording_poll: type[RecordingPoll],
) -> None:
    """The session's case: the reader sleeps in poll while a worker thread runs a call; the
    thread's wake-up hands the call back (no thread needs the GIL any more), and the wait
    for the controller's next call spins first."""
    r, w = pipe
    allowed = [False]
    woken_at: list[float] = []

    def on_wake() -> None:
        allowed[0] = True
        woken_at.append(time.perf_counter())
        write_later(w, b"next call", 0.02)

    reader = FdReader(r, quiet=lambda: True, poll_ms=2000, busy_poll=2.0, wake_fd=wake,
                      on_wake=on_wake, may_spin=lambda: allowed[0])
    t = wake_later(wake, 0.02)
    with trio.fail_after(5):
        assert await reader.read(100, wait_first=True) == b"next call"
    t.join()
    (poller,) = recording_poll.made
    spins = poller.spinning()
    assert len(spins) > 10 and spins[-1][3]  # the next call came while spinning
    assert spins[0][1] >= woken_at[0]  # none before the wake-up
    first, *_ = poller.sleeping()
    assert first[3] and first[2] <= woken_at[0]  # the poll that the wake-up ended


async def test_a_wake_up_ends_the_busy_poll(
    pipe: tuple[int, int], wake: int, recording_poll: type[RecordingPoll],
) -> None:
    r, w = pipe
    woken: list[int] = []

    def on_wake() -> None:
        woken.append(1)
        os.write(w, b"after the wake-up")

    reader = FdReader(r, quiet=lambda: True, poll_ms=2000, busy_poll=2.0, wake_fd=wake,
                      on_wake=on_wake)
    t0 = time.perf_counter()
    t = wake_later(wake, 0.02)
    with trio.fail_after(5):
        assert await reader.read(100) == b"after the wake-up"
    t.join()
    assert woken == [1]
    (poller,) = recording_poll.made
    assert time.perf_counter() - t0 < 1.0  # not the whole 2 s window
    assert poller.spinning()[-1][3]
