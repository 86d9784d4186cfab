"""Issue 24: an executor on another machine over ssh (``orc-executor-ssh``), against a local
sshd on 127.0.0.1 (its own config, host key and a throwaway client key in a temp directory, a
random port). ``llvm-jitlink -oop-executor=WRAPPER`` where WRAPPER runs
``orc-executor-ssh --ssh 'ssh -p PORT ...' 127.0.0.1 "$@"``: the program's stdout, stderr, exit
code and stdin are those of a local run with the reference executor.
"""

from __future__ import annotations

import getpass
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.programs.cases import CASES_BY_NAME
from tests.support.jitrun import reference_executor, run_case

SSHD = Path("/usr/sbin/sshd")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ssh_wrapper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A running sshd for this user and the ``-oop-executor`` wrapper script that uses it."""
    for tool in (SSHD, Path(shutil.which("ssh") or "/nonexistent"),
                 Path(shutil.which("ssh-keygen") or "/nonexistent")):
        if not tool.is_file():
            pytest.fail(f"{tool} not installed (scripts/bootstrap.sh installs openssh)")
    d = tmp_path_factory.mktemp("sshd")
    d.chmod(0o700)
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)],
                       check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    (d / "authorized_keys").chmod(0o600)
    port = _free_port()
    config = d / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\n"
        f"PidFile {d / 'sshd.pid'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nPermitRootLogin prohibit-password\nAllowStreamLocalForwarding yes\n"
        "X11Forwarding no\nPrintMotd no\nLogLevel ERROR\n"
        "StreamLocalBindUnlink yes\n"
    )
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation directory
    sshd = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)],
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        assert sshd.poll() is None, sshd.communicate()[1]
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert time.monotonic() < deadline, "sshd did not start"
        time.sleep(0.05)
    ssh = shlex.join([
        "ssh", "-p", str(port), "-i", str(d / "client_key"), "-o", "BatchMode=yes",
        "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
        "-o", f"UserKnownHostsFile={d / 'known_hosts'}", "-o", "LogLevel=ERROR",
    ])
    # The remote executor: this checkout's (the "remote machine" is this one).
    remote = Path(sys.executable).parent / "orc-executor"
    tool = Path(sys.executable).parent / "orc-executor-ssh"
    wrapper = d / "orc-executor-over-ssh"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"exec {shlex.quote(str(tool))} --ssh {shlex.quote(ssh)} "
        f"--executor {shlex.quote(str(remote))} {getpass.getuser()}@127.0.0.1 \"$@\"\n"
    )
    wrapper.chmod(0o755)
    try:
        yield wrapper
    finally:
        sshd.terminate()
        sshd.wait(timeout=30)


@pytest.mark.parametrize("name", ["args_exit", "stdin_echo", "stdout_bulk", "segfault"])
def test_program_over_ssh_matches_reference(ssh_wrapper: Path, name: str) -> None:
    """Arguments, stdin, ~4.7 MiB of stdout next to the protocol stream, and a crash."""
    case = CASES_BY_NAME[name]
    reference = run_case(case, reference_executor(22))
    ours = run_case(case, ssh_wrapper)
    assert ours.triple == reference.triple, ours.describe()
    if case.expect_returncode is not None:
        assert ours.returncode == case.expect_returncode


def test_no_socket_left_behind(ssh_wrapper: Path) -> None:
    """The remote socket is removed after the session (and was never world-accessible)."""
    before = {p for p in os.listdir("/tmp") if p.startswith("orc-executor-ssh-")}
    result = run_case(CASES_BY_NAME["args_exit"], ssh_wrapper)
    assert result.returncode == 42
    after = {p for p in os.listdir("/tmp") if p.startswith("orc-executor-ssh-")}
    assert after <= before


def test_unreachable_host_is_a_clear_error(tmp_path: Path) -> None:
    tool = Path(sys.executable).parent / "orc-executor-ssh"
    wrapper = tmp_path / "w"
    wrapper.write_text(f"#!/bin/sh\nexec {tool} --ssh 'ssh -p 1 -o BatchMode=yes "
                       f"-o ConnectTimeout=5' 127.0.0.1 \"$@\"\n")
    wrapper.chmod(0o755)
    result = run_case(CASES_BY_NAME["args_exit"], wrapper)
    assert result.returncode == 1
    assert b"Connection refused" in result.stderr
    assert b"Traceback" not in result.stderr
