"""Issue 20: what any peer may do to the executor and the daemon is bounded (uid checks that
cannot be silently skipped, slots silent peers cannot keep, chaos), end to end with
llvm-jitlink 22 and raw sockets."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from orc_executor.daemon import Daemon, DaemonOptions, ServeOptions
from orc_executor.transport.spec import TcpAddress, UnixAddress
from tests.e2e.test_daemon import EXE


@pytest.mark.parametrize("args", [
    ["--listen", "127.0.0.1:0"],
    ["--listen", ":0"],
    ["--listen", "{tmp}/x.sock", "--once"],
    ["listen=127.0.0.1:0"],
    ["--connect", "127.0.0.1:1"],
])
def test_allow_uid_is_a_usage_error_where_no_uid_is_checked(tmp_path: Path,
                                                            args: list[str]) -> None:
    """``--allow-uid`` with anything but a daemon on a unix socket is refused at once (a TCP
    peer has no uid the kernel vouches for), never silently ignored."""
    argv = [EXE, *(a.format(tmp=tmp_path) for a in args), "--allow-uid", str(os.getuid())]
    r = subprocess.run(argv, capture_output=True, timeout=30)
    assert r.returncode == 2, r.stderr
    assert b"--allow-uid needs a daemon on a unix socket" in r.stderr
    assert r.stdout == b""


def test_daemon_refuses_allow_uid_on_tcp() -> None:
    with pytest.raises(ValueError, match="unix socket"):
        Daemon(TcpAddress("127.0.0.1", 0), ServeOptions(), DaemonOptions(allow_uid=0))
    Daemon(UnixAddress("/nonexistent/x.sock"), ServeOptions(), DaemonOptions(allow_uid=0))
