"""The warm handover's messages (:mod:`orc_executor.serve.handover`), sans I/O: round trips,
malformed input refused with :class:`MalformedMessage`, and the native launcher's constants
(``launcher_state.h``, ``launcher.c``, ``native.c``) equal to the Python ones."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import orc_executor
from orc_executor.launch import state as launch_state
from orc_executor.serve import handover
from orc_executor.serve.handover import Control, MalformedMessage

PACKAGE = Path(orc_executor.__file__).parent
LAUNCHER_STATE_H = PACKAGE / "launch" / "launcher_state.h"
LAUNCHER_C = PACKAGE / "launch" / "launcher.c"
NATIVE_C = PACKAGE / "native" / "native.c"


def _defines(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^#define\s+(\w+)\s+(\S+)", path.read_text(), re.MULTILINE))


def _c_value(text: str) -> int:
    """An integer or character literal of C."""
    m = re.fullmatch(r"'(.)'", text)
    return ord(m.group(1)) if m else int(text, 0)


def test_control_codes_are_single_distinct_bytes() -> None:
    values = [c.value for c in Control]
    assert all(isinstance(v, bytes) and len(v) == 1 for v in values)
    assert len(set(values)) == len(values)
    assert {c.name: c.value for c in Control} == {
        "READY": b"R", "OPTIONS": b"O", "SESSION_TAKEN": b"S", "ACKNOWLEDGE": b"A",
        "FORK": b"F", "FORKED": b"P", "EXITED": b"X", "FIRST_MESSAGE": b"M"}


def test_c_constants_equal_the_python_ones() -> None:
    """The native launcher speaks the launcher's side of the handover in C: its constants
    cannot drift from :mod:`orc_executor.serve.handover`."""
    state = _defines(LAUNCHER_STATE_H)
    assert _c_value(state["ORC_HANDOVER_VERSION"]) == handover.HANDOVER_VERSION
    assert _c_value(state["ORC_HANDOVER_ACKNOWLEDGE"]) == Control.ACKNOWLEDGE[0]
    assert _c_value(state["ORC_HANDOVER_ACK_SIZE"]) == handover.ACK_SIZE
    assert _c_value(state["ORC_HANDOVER_EXIT_STATUS_SIZE"]) == handover.EXIT_STATUS_SIZE
    assert _c_value(state["HEADER_MAX"]) <= handover.MAX_LAUNCH_HEADER
    assert _c_value(_defines(NATIVE_C)["ORC_EXIT_STATUS_SIZE"]) == handover.EXIT_STATUS_SIZE
    # No literal left where a constant belongs.
    c_code = LAUNCHER_STATE_H.read_text() + LAUNCHER_C.read_text()
    assert "\"handover\\\": 1" not in c_code
    assert not re.search(r"!= 'A'|== 'A'", c_code)


def test_the_c_launch_header_names_the_fields_python_decodes() -> None:
    c_code = LAUNCHER_STATE_H.read_text() + LAUNCHER_C.read_text()
    for field in (*handover.LAUNCH_FIELDS, *handover.LaunchState.__slots__):
        key = {"policy": "sched", "priority": "sched"}.get(field, field)
        assert f'\\"{key}\\"' in c_code, field


def _header(**changes: object) -> dict[str, object]:
    base = json.loads('{"kind": "fdpair", "stdio": true, "controller_pid": 42, '
                      '"llvm_version": null, "machine": "x86_64"'
                      + launch_state.state_header() + "}")
    base.update(changes)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()


def test_decode_launch_of_a_launchers_header() -> None:
    launch = handover.decode_launch(json.dumps(_header()).encode(), 7, machine="x86_64")
    assert launch.stdio and launch.controller_pid == 42 and launch.llvm_version is None
    assert launch.state.umask == _header()["umask"]
    launch = handover.decode_launch(
        json.dumps(_header(stdio=False, llvm_version="19", controller_pid=0)).encode(), 4,
        machine="x86_64")
    assert not launch.stdio and launch.llvm_version == "19" and launch.controller_pid is None


@pytest.mark.parametrize(("data", "nfds", "reason"), [
    (b"not json", 7, "no valid header"),
    (b"[1, 2]", 7, "no valid header"),
    (b"\xff\xfe", 7, "no valid header"),
    (json.dumps(_header(handover=_DROP)).encode(), 7, "older launcher"),
    (json.dumps(_header(handover=0)).encode(), 7, "older launcher"),
    (json.dumps(_header(handover=2)).encode(), 7, "older launcher"),
    (json.dumps(_header(kind="socket")).encode(), 7, "bad header"),
    (json.dumps(_header()).encode(), 5, "bad header"),
    (json.dumps(_header()).encode(), 4, "stdio announced without its fds"),
    (json.dumps(_header(machine="aarch64")).encode(), 7, "runs on 'aarch64'"),
    (json.dumps(_header(nice=99)).encode(), 7, "malformed nice"),
    (json.dumps(_header(umask=True)).encode(), 7, "malformed umask"),
    (json.dumps(_header(rlimits=[[1]])).encode(), 7, "malformed resource limits"),
    (json.dumps(_header(sched="x")).encode(), 7, "malformed scheduling"),
    (json.dumps(_header(cpus="0")).encode(), 7, "malformed CPU affinity"),
    (json.dumps(_header(cpus="zz")).encode(), 7, "malformed CPU affinity"),
])
def test_malformed_launches_are_refused(data: bytes, nfds: int, reason: str) -> None:
    with pytest.raises(MalformedMessage, match=re.escape(reason)):
        handover.decode_launch(data, nfds, machine="x86_64")


def test_options_round_trip_and_refusals() -> None:
    msg = handover.encode_options({"max_message_size": 5}, True)
    assert msg.startswith(Control.OPTIONS)
    assert handover.decode_options(msg) == ({"max_message_size": 5}, True)
    for bad in (b"", b"R{}", b"O", b"Onot json", b'O{"options": 3}', b"O[]"):
        with pytest.raises(MalformedMessage):
            handover.decode_options(bad)


def test_zygote_reports() -> None:
    assert handover.decode_zygote_report(handover.encode_forked(123)) == (Control.FORKED, 123, 0)
    assert handover.decode_zygote_report(handover.encode_exited(9, -15)) == (
        Control.EXITED, 9, -15)
    for bad in (b"", b"P", b"P x", b"X 1", b"X 1 y", b"Q 1", b"P 1 2"):
        assert handover.decode_zygote_report(bad) is None


def test_ack_and_exit_status() -> None:
    ack = handover.encode_ack(0x1234567)
    assert len(ack) == handover.ACK_SIZE and ack[:1] == Control.ACKNOWLEDGE
    assert handover.decode_ack(ack) == 0x1234567
    assert handover.decode_ack(b"B" + ack[1:]) is None
    assert handover.decode_ack(ack[:4]) is None
    for status in (0, 1, 255, -9, -15):
        data = handover.encode_exit_status(status)
        assert len(data) == handover.EXIT_STATUS_SIZE
        assert handover.decode_exit_status(data) == status
    assert handover.encode_final_status(257) == b"\x01"


def test_session_header() -> None:
    header: dict[str, object] = {"kind": "socket", "options": {"idle_timeout": 3.0}}
    assert handover.decode_session_header(handover.encode_session_header(header)) == header
    for bad in (b"", b"nope", b"[]", b"\xff"):
        with pytest.raises(MalformedMessage):
            handover.decode_session_header(bad)


def test_encode_launch_round_trips() -> None:
    """The Python launcher's header (:func:`handover.encode_launch`) decodes to what it was
    built from, with every field :data:`handover.LAUNCH_FIELDS` names."""
    state = launch_state.current_state()
    for stdio, version in ((True, None), (False, '19 "quoted" \\ back')):
        data = handover.encode_launch(controller_pid=1234, llvm_version=version,
                                      machine="x86_64", state=state, stdio=stdio)
        assert set(handover.LAUNCH_FIELDS) <= set(json.loads(data))
        launch = handover.decode_launch(data, 7 if stdio else 4, machine="x86_64")
        assert (launch.stdio, launch.controller_pid, launch.llvm_version) == (
            stdio, 1234, version)
        for field in handover.LaunchState.__slots__:
            assert getattr(launch.state, field) == getattr(state, field), field
    assert handover.encode_state(state) == launch_state.state_header()
    with pytest.raises(MalformedMessage, match="runs on 'x86_64'"):
        handover.decode_launch(data, 4, machine="aarch64")


def test_the_native_launchers_header_decodes_like_the_python_one(tmp_path: Path) -> None:
    """The header the C launcher sends to the warm socket (captured on a socket bound there;
    the launch then refused, so the launcher goes cold into ``true``) decodes with
    :func:`handover.decode_launch` to the same launch as the Python launcher's."""
    import os
    import socket
    import subprocess
    import sys

    from orc_executor.io.fdpass import ANCILLARY_SPACE, close_fds, fds_received

    launcher = Path(sys.executable).parent / "orc-executor"
    sock_dir = tmp_path / "warm"
    sock_dir.mkdir(mode=0o700)
    path = sock_dir / "warm.sock"
    r, w = os.pipe()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        env = dict(os.environ, ORC_EXECUTOR_WARM_SOCKET=str(path), ORC_EXECUTOR_AUTO_SERVE="0",
                   ORC_EXECUTOR_PYTHON="/bin/true", ORC_EXECUTOR_LLVM_VERSION="22")
        env.pop("ORC_EXECUTOR_COLD", None)
        proc = subprocess.Popen([str(launcher), f"filedescs={r},{w}"], pass_fds=(r, w), env=env,
                                stdin=subprocess.DEVNULL)
        server.settimeout(30)
        data, ancdata, _, _ = server.recvmsg(handover.MAX_LAUNCH_HEADER, ANCILLARY_SPACE)
        fds = fds_received(ancdata)
        close_fds(fds)  # the reply socket closed without an acknowledgement: cold
        assert proc.wait(30) == 0
    os.close(r)
    os.close(w)
    native = handover.decode_launch(data, len(fds) - 1, machine=os.uname().machine)
    python = handover.decode_launch(
        handover.encode_launch(controller_pid=os.getpid(), llvm_version="22",
                               machine=os.uname().machine, state=launch_state.current_state()),
        len(fds) - 1, machine=os.uname().machine)
    assert set(native.header) == set(python.header)
    assert (native.stdio, native.controller_pid, native.llvm_version) == (
        python.stdio, python.controller_pid, python.llvm_version)
    # (the signal dispositions differ between this interpreter and a fresh child)
    for field in ("umask", "nice", "rlimits", "cpus", "policy", "priority", "ioprio",
                  "personality"):
        assert getattr(native.state, field) == getattr(python.state, field), field
