"""Calls on worker threads, in process: a Session over real pipes (or a socketpair) driven by
the package's Controller. Results of blocking calls are written by the worker thread itself
when the pipe takes them whole; ``max_concurrent_calls`` queues the rest in arrival order;
frames from the trio thread and from worker threads never interleave."""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from orc_executor.controller import Controller, ControllerError
from orc_executor.executor import session as session_module
from orc_executor.executor.bootstrap import build_context
from orc_executor.executor.registry import WrapperSpec
from orc_executor.executor.session import Session, SessionEnd
from orc_executor.executor.writer import Output
from orc_executor.io.streams import socket_stream
from orc_executor.protocol.sps import Bytes, UInt32, UInt64, signature

ECHO = signature(Bytes, UInt64, UInt32)  # (tag, size) -> size bytes derived from tag


def pattern(tag: int, size: int) -> bytes:
    return bytes((tag + i) & 0xFF for i in range(size))


def fd_stream(read_fd: int, write_fd: int) -> trio.StapledStream[Any, Any]:
    return trio.StapledStream(trio.lowlevel.FdStream(write_fd), trio.lowlevel.FdStream(read_fd))


def session_and_peer(
    specs: list[WrapperSpec], transport: str, pipe_size: int | None = None,
    **session_args: Any,
) -> tuple[Session, trio.abc.Stream]:
    """A Session with ``specs`` added to its registry, over two pipes (the executor's output
    pipe of ``pipe_size`` bytes, if given) or a socketpair; and the controller's stream."""
    ctx = build_context("modern")
    for spec in specs:
        ctx.registry.add(spec)
    ours: trio.abc.Stream
    theirs: trio.abc.Stream
    if transport == "pipes":
        c2e_r, c2e_w = os.pipe()
        e2c_r, e2c_w = os.pipe()
        if pipe_size is not None:
            fcntl.fcntl(e2c_w, fcntl.F_SETPIPE_SZ, pipe_size)
        ours, theirs = fd_stream(c2e_r, e2c_w), fd_stream(e2c_r, c2e_w)
    else:
        a, b = trio.socket.socketpair()
        ours, theirs = socket_stream(a), socket_stream(b)
    return Session(ours, ctx, **session_args), theirs


@asynccontextmanager
async def in_process_session(
    specs: list[WrapperSpec], *, transport: str = "pipes", pipe_size: int | None = None,
    **session_args: Any,
) -> AsyncIterator[tuple[Session, Controller]]:
    """A Session with ``specs`` added to its registry, and a Controller connected to it, in
    the test's trio run."""
    session, theirs = session_and_peer(specs, transport, pipe_size, **session_args)
    ends: list[SessionEnd] = []

    async def serve() -> None:
        ends.append(await session.run())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        async with Controller.over(theirs) as ctl:
            yield session, ctl
    assert ends and ends[0].clean, ends
    session.finish(ends[0])


def echo_spec(name: str, *, blocking: bool, before: Callable[[int], None] | None = None
              ) -> WrapperSpec:
    def handler(tag: int, size: int) -> bytes:
        if before is not None:
            before(tag)
        return pattern(tag, size)

    return WrapperSpec(name, ECHO, handler, blocking)


@pytest.mark.parametrize(("transport", "by_worker"), [("pipes", True), ("socketpair", False)])
async def test_worker_thread_writes_its_result_on_a_pipe(transport: str, by_worker: bool) -> None:
    async with in_process_session(
        [echo_spec("test_blocking_echo", blocking=True)], transport=transport
    ) as (session, ctl):
        writes: list[tuple[bool, bool]] = []
        real = session.writer.write_from_thread

        def spy(frame: bytes) -> bool:
            done = real(frame)
            writes.append((threading.current_thread() is not threading.main_thread(), done))
            return done

        session.writer.write_from_thread = spy  # type: ignore[method-assign]
        for size in (0, 100, 4000):
            assert await ctl.call("test_blocking_echo", ECHO, 7, size) == pattern(7, size)
        # Larger than PIPE_BUF: never written by the worker thread (it could be cut short).
        assert await ctl.call("test_blocking_echo", ECHO, 9, 70000) == pattern(9, 70000)
    assert writes == [(True, by_worker)] * 3 + [(True, False)]
    assert session.calls_served == 4


async def test_max_concurrent_calls_queue_in_arrival_order() -> None:
    started: list[int] = []
    running = [0]
    peak = [0]
    lock = threading.Lock()
    release = {tag: threading.Event() for tag in range(6)}

    def before(tag: int) -> None:
        with lock:
            started.append(tag)
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        release[tag].wait(5)
        with lock:
            running[0] -= 1

    async def started_become(want: list[int]) -> None:
        with trio.fail_after(5):
            while len(started) < len(want):
                await trio.sleep(0.002)
        await trio.sleep(0.02)  # nothing else starts
        assert started == want

    async with in_process_session(
        [echo_spec("test_gate", blocking=True, before=before)], max_concurrent_calls=2
    ) as (session, ctl):
        results: dict[int, bytes] = {}

        async def one(tag: int) -> None:
            results[tag] = await ctl.call("test_gate", ECHO, tag, 16)

        async with trio.open_nursery() as nursery:
            for tag in range(6):
                nursery.start_soon(one, tag)
                await trio.sleep(0.01)  # arrival order = tag order
            await started_become([0, 1])  # two threads; four calls wait
            assert len(session.dispatcher.backlog) == 4
            release[1].set()  # a finished call starts the oldest waiting one
            await started_become([0, 1, 2])
            release[0].set()
            await started_become([0, 1, 2, 3])
            release[3].set()
            await started_become([0, 1, 2, 3, 4])
            release[2].set()
            await started_become([0, 1, 2, 3, 4, 5])
            release[4].set()
            release[5].set()
    assert peak[0] == 2
    assert results == {tag: pattern(tag, 16) for tag in range(6)}
    assert session.dispatcher.threads_running == 0 and not session.dispatcher.backlog


async def test_frames_never_interleave_with_a_full_pipe() -> None:
    """Worker threads' Results (some small enough to write themselves) and the trio thread's
    inline Results (up to 64 KiB: partial writes into a one-page pipe) race for the same pipe;
    every frame must arrive whole."""
    rng = random.Random(1234)

    def jitter(_tag: int) -> None:
        time.sleep(rng.random() * 0.002)

    specs = [
        echo_spec("test_thread_echo", blocking=True, before=jitter),
        echo_spec("test_inline_echo", blocking=False),
    ]
    async with in_process_session(specs, pipe_size=4096) as (session, ctl):
        results: dict[int, bytes] = {}
        wanted: dict[int, bytes] = {}

        async def one(tag: int, name: str, size: int) -> None:
            results[tag] = await ctl.call(name, ECHO, tag, size)

        async with trio.open_nursery() as nursery:
            for tag in range(400):
                name = "test_thread_echo" if tag % 3 == 0 else "test_inline_echo"
                size = rng.choice([0, 1, 200, 3000, 4060, 5000, 65536])
                wanted[tag] = pattern(tag, size)
                nursery.start_soon(one, tag, name, size)
                if tag % 50 == 0:
                    await trio.sleep(0)
    assert results == wanted
    assert session.calls_served == 400


async def test_nothing_is_written_after_the_output_closed() -> None:
    """A worker thread finishing after the session closed its output writes nothing, not even
    to a new pipe that got the old fd number."""
    async with in_process_session([echo_spec("test_echo", blocking=True)]) as (session, ctl):
        old_fd = session.writer.fd
        assert await ctl.call("test_echo", ECHO, 1, 8) == pattern(1, 8)
    assert session.writer.state is Output.CLOSED and session.writer.fd is None
    fds = [os.pipe() for _ in range(4)]
    try:
        reused = [(r, w) for r, w in fds if w == old_fd]
        assert reused, "the old fd number was not reused"
        r, _w = reused[0]
        assert not session.writer.write_from_thread(b"x" * 40)
        session.writer.send_frame(b"y" * 40)  # the trio-thread path drops it too
        os.set_blocking(r, False)
        with pytest.raises(BlockingIOError):
            os.read(r, 100)
    finally:
        for r, w in fds:
            os.close(r)
            os.close(w)


async def test_no_thread_to_be_had_fails_the_call_and_the_session_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with in_process_session([echo_spec("test_echo", blocking=True)]) as (session, ctl):
        real = trio.lowlevel.start_thread_soon

        def refuse(*_args: Any, **_kw: Any) -> None:
            raise RuntimeError("can't start new thread")

        monkeypatch.setattr(trio.lowlevel, "start_thread_soon", refuse)
        # An empty Result (out of band): the controller cannot decode it.
        with pytest.raises(ControllerError, match="deserializing"):
            await ctl.call("test_echo", ECHO, 3, 8)
        monkeypatch.setattr(trio.lowlevel, "start_thread_soon", real)
        assert await ctl.call("test_echo", ECHO, 4, 8) == pattern(4, 8)
    assert session.dispatcher.threads_running == 0 and session.dispatcher.inflight == 0


async def test_calls_still_waiting_for_a_thread_never_run_after_the_session_ends() -> None:
    started: list[int] = []
    gate = threading.Event()

    def before(tag: int) -> None:
        started.append(tag)
        gate.wait(5)

    async def one(ctl: Controller, tag: int) -> None:
        with contextlib.suppress(ControllerError):
            await ctl.call("test_gate", ECHO, tag, 8)

    async with trio.open_nursery() as nursery:
        async with in_process_session(
            [echo_spec("test_gate", blocking=True, before=before)],
            max_concurrent_calls=1, drain_timeout=0.05,
        ) as (session, ctl):
            for tag in range(4):
                nursery.start_soon(one, ctl, tag)
                await trio.sleep(0.01)
            with trio.fail_after(5):
                while len(session.dispatcher.backlog) < 3:
                    await trio.sleep(0.002)
            assert started == [0]
        # The controller hung up: the session ended with one call running, three queued.
        assert not session.dispatcher.backlog and session.dispatcher.inflight == 1
        gate.set()
        with trio.fail_after(5):
            # The running call returned; no trio thread reaps it.
            while not session.dispatcher.finished:
                await trio.sleep(0.002)
        await trio.sleep(0.05)
    assert started == [0]  # the queued calls were dropped, not started late


# ---- worker threads wake the reader's poll(2) ---------------------------------------------------
# The reader of a quiet session waits in poll(2) on the trio thread, also while calls run on
# worker threads; a worker thread that leaves work for the trio thread (a Result or a call
# into the controller it could not write, the bookkeeping of a finished call) wakes that poll
# through the session's eventfd. The session runs in a thread of its own here (its own trio
# run: a poll parks the whole run), with the poll's timeout raised to 30 s: anything left
# waiting for the timeout fails these tests' 5 s limits.

LONG_POLL_MS = 30_000


@asynccontextmanager
async def session_in_own_thread(
    specs: list[WrapperSpec], *, transport: str
) -> AsyncIterator[tuple[Session, Controller]]:
    """A Session with ``specs`` added to its registry, running in a thread of its own (its own
    trio run), and a Controller connected to it."""
    session, theirs = session_and_peer(specs, transport)
    ends: list[SessionEnd] = []
    thread = threading.Thread(target=lambda: ends.append(trio.run(session.run)))
    thread.start()
    try:
        async with Controller.over(theirs) as ctl:
            yield session, ctl
    finally:
        await trio.to_thread.run_sync(thread.join, 10)
    assert ends and ends[0].clean, ends
    session.finish(ends[0])


@pytest.mark.parametrize("transport", ["pipes", "socketpair"])
async def test_a_result_the_worker_thread_cannot_write_is_sent_at_once(
    transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_module, "IDLE_POLL_MS", LONG_POLL_MS)
    async with session_in_own_thread(
        [echo_spec("test_blocking_echo", blocking=True)], transport=transport
    ) as (session, ctl):
        for size in (70000, 8, 70000):  # over PIPE_BUF (the trio thread writes it), small
            with trio.fail_after(5):
                assert await ctl.call("test_blocking_echo", ECHO, 5, size) == pattern(5, size)
        # The bookkeeping of each call is done while the reader polls: nothing is in flight.
        with trio.fail_after(5):
            while session.dispatcher.inflight or session.dispatcher.threads_running:
                await trio.sleep(0.002)
    assert session.calls_served == 3


@pytest.mark.parametrize("transport", ["pipes", "socketpair"])
async def test_a_worker_threads_call_into_the_controller_wakes_the_poll(
    transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JIT'd code's calls into the controller (the dispatch function): on a socketpair the
    worker thread never writes them itself; 300 KiB never fits a pipe write either."""
    monkeypatch.setattr(session_module, "IDLE_POLL_MS", LONG_POLL_MS)
    dispatch_tag = 0x5EED
    box: list[Session] = []

    def ask_controller(tag: int) -> None:
        size = 300_000 if tag else 16
        assert box[0].call_controller(dispatch_tag, pattern(tag, size)) == pattern(tag + 1, size)

    async with session_in_own_thread(
        [echo_spec("test_asks", blocking=True, before=ask_controller)], transport=transport
    ) as (session, ctl):
        box.append(session)

        async def answer(_tag: int, data: bytes) -> bytes:
            return bytes((b + 1) & 0xFF for b in data)

        ctl.handlers[dispatch_tag] = answer
        for tag in (0, 1, 2):
            with trio.fail_after(5):
                assert await ctl.call("test_asks", ECHO, tag, 8) == pattern(tag, 8)
    assert session.calls_served == 3
