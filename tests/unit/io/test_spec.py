"""Connection-spec parsing (docs/protocol.md §1.2): every accepted form and the errors; the
native launcher's parse (``launch/launcher.c``) agrees with :func:`pipe_fds`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import orc_executor
from orc_executor.io.spec import (
    Connect,
    ConnectionSpec,
    FdPair,
    Listen,
    SocketFd,
    SpecError,
    TcpAddress,
    UnixAddress,
    parse_address,
    parse_fd,
    parse_spec,
    parse_tcp,
    pipe_fds,
)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # lli-child-target: two bare fds (further arguments ignored)
        (["3", "6"], FdPair(3, 6)),
        (["0", "1", "ignored", "x=y"], FdPair(0, 1)),
        # llvm-jitlink 14-22 -oop-executor
        (["filedescs=3,6"], FdPair(3, 6)),
        (["filedescs=7,7"], FdPair(7, 7)),
        (["pipe:adopt=4,5"], FdPair(4, 5)),
        # one socket fd (interim and current upstream)
        (["fd=9"], SocketFd(9)),
        (["socket:adopt=10"], SocketFd(10)),
        # TCP
        (["listen=127.0.0.1:20000"], Listen(TcpAddress("127.0.0.1", 20000))),
        (["listen=localhost:0"], Listen(TcpAddress("localhost", 0))),
        (["listen=:1234"], Listen(TcpAddress("127.0.0.1", 1234))),
        (["tcp:listen=[::1]:0"], Listen(TcpAddress("::1", 0))),
        (["tcp:listen=0.0.0.0:65535"], Listen(TcpAddress("0.0.0.0", 65535))),
        (["tcp:connect=example.org:80"], Connect(TcpAddress("example.org", 80))),
        (["tcp:connect=[fe80::1]:9"], Connect(TcpAddress("fe80::1", 9))),
        # unix sockets: the descriptor may contain ':' and '='
        (["unix:listen=/tmp/a=b.sock"], Listen(UnixAddress("/tmp/a=b.sock"))),
        (["unix:connect=/tmp/x:y"], Connect(UnixAddress("/tmp/x:y"))),
        (["unix:listen="], Listen(UnixAddress(""))),
        # leading flags are skipped; arguments after the spec are ignored
        (["debug", "filedescs=3,4"], FdPair(3, 4)),
        (["test-jitloadergdb", "filedescs=3,4", "extra"], FdPair(3, 4)),
        (["debug", "test-foo", "test-bar", "5", "6"], FdPair(5, 6)),
        (["socket:adopt=3", "debug"], SocketFd(3)),
    ],
)
def test_parse_spec(args: list[str], expected: ConnectionSpec) -> None:
    assert parse_spec(args) == expected


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ([], "no connection spec"),
        (["debug"], "no connection spec"),
        (["test-jitloadergdb"], "no connection spec"),
        (["3"], "unrecognized"),
        (["three", "four"], "not a file descriptor"),
        (["3", "-1"], "negative"),
        (["filedescs=3"], "IN,OUT"),
        (["filedescs=3;4"], "IN,OUT"),
        (["filedescs=a,4"], "not a file descriptor"),
        (["filedescs=3,4,5"], "not a file descriptor"),
        (["pipe:adopt="], "IN,OUT"),
        (["fd="], "not a file descriptor"),
        (["fd=-3"], "negative"),
        (["socket:adopt=x"], "not a file descriptor"),
        (["socket:connect=3"], "unrecognized"),
        (["socket=3"], "unrecognized"),
        (["tcp:bind=1.2.3.4:5"], "unrecognized"),
        (["bogus=1"], "unrecognized"),
        (["listen=127.0.0.1"], "needs a port"),
        (["listen=127.0.0.1:http"], "bad port"),
        (["listen=127.0.0.1:65536"], "out of range"),
        (["listen=127.0.0.1:-1"], "out of range"),
        (["tcp:listen=::1:0"], "brackets"),
        (["tcp:connect=[::1]0"], r"\[IPv6\]:PORT"),
        (["tcp:connect=[::1"], r"\[IPv6\]:PORT"),
    ],
)
def test_parse_spec_errors(args: list[str], match: str) -> None:
    with pytest.raises(SpecError, match=match):
        parse_spec(args)


def test_spec_error_is_value_error() -> None:
    assert issubclass(SpecError, ValueError)


@pytest.mark.parametrize(("text", "fd"), [("0", 0), ("3", 3), ("1023", 1023)])
def test_parse_fd(text: str, fd: int) -> None:
    assert parse_fd(text) == fd


def test_parse_tcp_default_host() -> None:
    assert parse_tcp(":80") == TcpAddress("127.0.0.1", 80)
    assert parse_tcp(":80", default_host="::1") == TcpAddress("::1", 80)
    assert parse_tcp("[]:80", default_host="h") == TcpAddress("h", 80)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5000", TcpAddress("127.0.0.1", 5000)),
        ("[::1]:5000", TcpAddress("::1", 5000)),
        (":5000", TcpAddress("127.0.0.1", 5000)),
        ("host.example:1", TcpAddress("host.example", 1)),
        ("/run/orc.sock", UnixAddress("/run/orc.sock")),
        ("./rel/path.sock", UnixAddress("./rel/path.sock")),
        ("unix:/tmp/x", UnixAddress("/tmp/x")),
        ("unix:relative", UnixAddress("relative")),
        ("orc.sock", UnixAddress("orc.sock")),
    ],
)
def test_parse_address(text: str, expected: object) -> None:
    assert parse_address(text) == expected


def test_parse_address_bare_port_is_error() -> None:
    with pytest.raises(SpecError, match="needs a port"):
        parse_address("5000")


@pytest.mark.parametrize(
    ("addr", "text", "loopback"),
    [
        (TcpAddress("127.0.0.1", 1), "127.0.0.1:1", True),
        (TcpAddress("127.5.5.5", 1), "127.5.5.5:1", True),
        (TcpAddress("localhost", 2), "localhost:2", True),
        (TcpAddress("::1", 3), "[::1]:3", True),
        (TcpAddress("0.0.0.0", 4), "0.0.0.0:4", False),
        (TcpAddress("10.1.2.3", 5), "10.1.2.3:5", False),
        (TcpAddress("example.org", 6), "example.org:6", False),
        (TcpAddress("::", 7), "[::]:7", False),
    ],
)
def test_tcp_address_str_and_loopback(addr: TcpAddress, text: str, loopback: bool) -> None:
    assert str(addr) == text
    assert addr.is_loopback is loopback
    # str() of an address parses back to the same address
    assert parse_tcp(text) == addr


def test_unix_address_str() -> None:
    assert str(UnixAddress("/tmp/s")) == "/tmp/s"


@pytest.mark.parametrize("text", ["+3", " 3", "3 ", "3_0", "\u0663", "", "-0", "0x3",
                                  "2147483648", "99999999999999999999"])
def test_parse_fd_takes_ascii_digits_only(text: str) -> None:
    with pytest.raises(SpecError):
        parse_fd(text)


#: Command lines (after the program name) and the fds a pipe-style launch names in them.
PIPE_LAUNCHES: list[tuple[list[str], tuple[int, int] | None]] = [
    (["filedescs=3,4"], (3, 4)),
    (["pipe:adopt=5,6"], (5, 6)),
    (["fd=7"], (7, 7)),
    (["socket:adopt=8"], (8, 8)),
    (["3", "4"], (3, 4)),
    (["0", "1"], (0, 1)),
    (["debug", "filedescs=3,4"], (3, 4)),
    (["test-jitloadergdb", "3", "4", "debug"], (3, 4)),
    (["filedescs=2147483647,0"], (2147483647, 0)),
    (["filedescs=003,04"], (3, 4)),
    # not a pipe-style launch (or not one a launcher hands over): None
    ([], None),
    (["debug"], None),
    (["3"], None),
    (["3", "4", "5"], None),
    (["filedescs=3,4", "extra"], None),
    (["filedescs=3,4", "--llvm-version", "14"], None),
    (["--fd", "3", "4"], None),
    (["-v", "filedescs=3,4"], None),
    (["filedescs=3"], None),
    (["filedescs=3,"], None),
    (["filedescs=,4"], None),
    (["filedescs=3,4,5"], None),
    (["filedescs=3;4"], None),
    (["filedescs=+3,4"], None),
    (["filedescs= 3,4"], None),
    (["filedescs=3,4 "], None),
    (["filedescs=-0,4"], None),
    (["filedescs=3_0,4"], None),
    (["filedescs=\u0663,4"], None),
    (["filedescs=2147483648,4"], None),
    (["pipe:adopt="], None),
    (["fd="], None),
    (["fd=-3"], None),
    (["fd=3,4"], None),
    (["socket:adopt=x"], None),
    (["3", "-1"], None),
    (["+3", "4"], None),
    (["3", "x=y"], None),
    (["listen=:9000"], None),
    (["tcp:connect=127.0.0.1:9000"], None),
    (["unix:listen=/tmp/x"], None),
    (["serve"], None),
    (["filedescs"], None),
    (["Filedescs=3,4"], None),
]


@pytest.mark.parametrize(("args", "expected"), PIPE_LAUNCHES)
def test_pipe_fds(args: list[str], expected: tuple[int, int] | None) -> None:
    assert pipe_fds(args) == (FdPair(*expected) if expected else None)


@pytest.fixture(scope="module")
def native_pipe_fds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``launcher.c``'s own ``pipe_fds``, compiled into a program that prints what it finds
    in its arguments (``IN OUT``, or ``none``)."""
    launch_dir = Path(orc_executor.__file__).parent / "launch"
    tmp = tmp_path_factory.mktemp("launcher-spec")
    src = tmp / "pipe_fds.c"
    src.write_text(
        "#define main launcher_main\n"
        f'#include "{launch_dir / "launcher.c"}"\n'
        "#undef main\n"
        "int main(int argc, char **argv) {\n"
        "    int fds[2];\n"
        "    if (pipe_fds(argc, argv, fds)) printf(\"%d %d\\n\", fds[0], fds[1]);\n"
        "    else printf(\"none\\n\");\n"
        "    return 0;\n"
        "}\n")
    exe = tmp / "pipe_fds"
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler (scripts/bootstrap.sh installs gcc)"
    subprocess.run([cc, "-O2", "-Wall", "-Wno-unused-function", f"-I{launch_dir}", "-o",
                    str(exe), str(src)], check=True)
    return exe


@pytest.mark.parametrize(("args", "expected"), PIPE_LAUNCHES)
def test_the_native_launcher_parses_like_pipe_fds(
        native_pipe_fds: Path, args: list[str], expected: tuple[int, int] | None) -> None:
    out = subprocess.run([str(native_pipe_fds), *args], capture_output=True, text=True,
                         check=True).stdout
    assert out == (f"{expected[0]} {expected[1]}\n" if expected else "none\n")
