"""Command line: ``orc-executor [OPTIONS] [SPEC...]``.

Drop-in for ``llvm-jitlink-executor`` (``filedescs=IN,OUT``, ``listen=HOST:PORT``) and
``lli-child-target`` (``IN OUT``), plus upstream's specs and click options.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click

from .errors import SpecError
from .io.spec import (
    Connect,
    ConnectionSpec,
    FdPair,
    Listen,
    SocketFd,
    TcpAddress,
    UnixAddress,
    parse_address,
    parse_spec,
)
from .serve.connection import exit_process as _exit
from .serve.connection import setup_logging as _setup_logging

log = logging.getLogger("orc_executor")


def _choose_spec(
    spec_args: tuple[str, ...],
    fd: tuple[int, int] | None,
    socket_fd: int | None,
    listen: str | None,
    connect: str | None,
) -> ConnectionSpec:
    chosen: list[ConnectionSpec] = []
    if fd is not None:
        chosen.append(FdPair(*fd))
    if socket_fd is not None:
        chosen.append(SocketFd(socket_fd))
    if listen is not None:
        chosen.append(Listen(parse_address(listen)))
    if connect is not None:
        chosen.append(Connect(parse_address(connect)))
    if spec_args:
        chosen.append(parse_spec(list(spec_args)))
    if not chosen:
        raise SpecError("no connection given: use --fd IN OUT, --listen ADDR, --connect ADDR, "
                        "--socket-fd N, or a spec such as filedescs=IN,OUT")
    if len(chosen) > 1:
        raise SpecError("give exactly one connection (option or positional spec)")
    return chosen[0]


@click.command(context_settings={"help_option_names": ["-h", "--help"],
                                 "ignore_unknown_options": True})
@click.version_option(package_name="orc-executor", prog_name="orc-executor")
@click.argument("spec", nargs=-1)
@click.option("--fd", "fd", type=(int, int), default=None, metavar="IN OUT",
              help="Read messages from fd IN and write them to fd OUT (pipes or one socket).")
@click.option("--socket-fd", type=int, default=None, metavar="N",
              help="Adopt connected stream socket N for both directions.")
@click.option("--listen", default=None, metavar="ADDR",
              help="Listen on HOST:PORT, [IPv6]:PORT, :PORT (127.0.0.1) or a unix socket path.")
@click.option("--connect", default=None, metavar="ADDR",
              help="Dial a controller listening on ADDR (connect-back).")
@click.option("--once", is_flag=True,
              help="With --listen: serve one connection in this process, then exit with its "
              "status (llvm-jitlink-executor's behaviour; the default for listen= specs).")
@click.option("--max-sessions", type=int, default=64, show_default=True, metavar="N",
              help="Daemon: sessions running at once; more connections wait.")
@click.option("--warm", type=int, default=2, show_default=True, metavar="N",
              help="Daemon: session processes kept started and ready.")
@click.option("--grace", type=float, default=30.0, show_default=True, metavar="SECONDS",
              help="Daemon: on SIGTERM/SIGINT, how long running sessions may finish.")
@click.option("--allow-uid", type=int, default=None, metavar="UID",
              help="Daemon on a unix socket: only accept peers with this uid (SO_PEERCRED); "
              "a usage error with any other connection (TCP has no peer uid).")
@click.option("--allow-remote", is_flag=True,
              help="Allow listening on a non-loopback address (a controller can run any code).")
@click.option("--socket-mode", default="0600", show_default=True,
              help="Permissions of a listening unix socket (octal).")
@click.option("--max-message-size", type=int, default=1 << 30, show_default=True,
              metavar="BYTES", help="Largest accepted message (bytes, header included).")
@click.option("--max-concurrent-calls", type=int, default=1024, show_default=True,
              metavar="N", help="Calls running on worker threads at once per session.")
@click.option("--idle-close", type=float, default=0.2, show_default=True, metavar="SECONDS",
              help="Socket sessions: close after the controller released all memory and "
              "stayed silent this long (LLVM 14-22 never close TCP sessions themselves); "
              "0 disables.")
@click.option("--handshake-timeout", type=click.FloatRange(min=0), default=10.0,
              show_default=True, metavar="SECONDS",
              help="Socket sessions: close when the controller sends no message this long "
              "after Setup; 0 disables.")
@click.option("--idle-timeout", type=click.FloatRange(min=0), default=3600.0,
              show_default=True, metavar="SECONDS",
              help="Socket sessions: close when the controller sends nothing (or takes no "
              "Result) this long while no call runs; 0 disables.")
@click.option("--keepalive-idle", type=click.IntRange(min=0), default=60, show_default=True,
              metavar="SECONDS",
              help="TCP sessions: first keepalive probe after this many seconds without "
              "traffic; with the two options below, a controller that vanished without closing "
              "(half-open) ends its session within IDLE + INTERVAL * COUNT seconds, also while "
              "a call runs or a Result waits unacknowledged (TCP_USER_TIMEOUT); 0 disables.")
@click.option("--keepalive-interval", type=click.IntRange(min=1), default=10,
              show_default=True, metavar="SECONDS", help="TCP sessions: seconds between "
              "keepalive probes.")
@click.option("--keepalive-count", type=click.IntRange(min=1), default=6, show_default=True,
              metavar="N", help="TCP sessions: unanswered keepalive probes that end the session.")
@click.option("--busy-poll", "busy_poll_us", type=click.FloatRange(min=0, max=1e6),
              default=None,  # max: session.MAX_BUSY_POLL (1 s)
              metavar="USEC", envvar="ORC_EXECUTOR_BUSY_POLL",
              help="Microseconds to wait for the controller's next call without sleeping "
              "before sleeping in poll(2) (default 20 with two or more CPUs, else 0; 0 "
              "disables; pipe sessions, and socket sessions with --idle-close 0). Env "
              "ORC_EXECUTOR_BUSY_POLL.")
@click.option("--llvm-version", "llvm_version", default=None, metavar="N",
              envvar="ORC_EXECUTOR_LLVM_VERSION",
              help="Speak to an LLVM N controller (14, 19, 22, modern); default: detected from "
              "the launching process, else modern. Env ORC_EXECUTOR_LLVM_VERSION.")
@click.option("--on-fault", "on_fault", default=None, envvar="ORC_EXECUTOR_ON_FAULT",
              type=click.Choice(["recover", "crash"], case_sensitive=False),
              help="A fault (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT) in JIT'd code run by a "
              "call from the controller: fail that call and go on (recover), or end the "
              "process like the stock executor (crash). Default: recover when launched by "
              "clang-repl, else crash. Env ORC_EXECUTOR_ON_FAULT.")
@click.option("--log-level", default=None,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              help="Log level on stderr (default warning; env ORC_EXECUTOR_LOG).")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(
    spec: tuple[str, ...],
    fd: tuple[int, int] | None,
    socket_fd: int | None,
    listen: str | None,
    connect: str | None,
    once: bool,
    max_sessions: int,
    warm: int,
    grace: float,
    allow_uid: int | None,
    allow_remote: bool,
    socket_mode: str,
    max_message_size: int,
    max_concurrent_calls: int,
    idle_close: float,
    handshake_timeout: float,
    idle_timeout: float,
    keepalive_idle: int,
    keepalive_interval: int,
    keepalive_count: int,
    busy_poll_us: float | None,
    llvm_version: str | None,
    on_fault: str | None,
    log_level: str | None,
    verbose: int,
) -> None:
    """Run JIT'd code for an LLVM ORC controller (llvm-jitlink, lli --remote-mcjit).

    SPEC is what LLVM's tools pass: filedescs=IN,OUT | IN OUT | listen=HOST:PORT |
    fd=N | socket:adopt=N | tcp:listen=HOST:PORT | tcp:connect=HOST:PORT |
    unix:listen=PATH | unix:connect=PATH | pipe:adopt=IN,OUT.
    """
    try:
        conn = _choose_spec(spec, fd, socket_fd, listen, connect)
        mode = int(socket_mode, 8)
        if llvm_version is not None:
            from .protocol.names import profile_for_version

            profile_for_version(llvm_version)
    except (SpecError, ValueError) as e:
        raise click.UsageError(str(e)) from None
    if allow_uid is not None and not (
        isinstance(conn, Listen) and isinstance(conn.address, UnixAddress)
        and listen is not None and not once
    ):
        # Never silently ignored: TCP peers have no uid the kernel could vouch for.
        raise click.UsageError(
            "--allow-uid needs a daemon on a unix socket (--listen PATH): a TCP peer's uid "
            "cannot be checked"
        )
    # `--listen` is a daemon unless --once; the positional listen= forms keep the stock
    # executor's one-connection behaviour.
    daemon = isinstance(conn, Listen) and listen is not None and not once
    default_level = "info" if daemon else "warning"
    level = log_level or os.environ.get("ORC_EXECUTOR_LOG") or (
        "debug" if verbose >= 2 else "info" if verbose == 1 else default_level
    )
    _setup_logging(level)
    if (isinstance(conn, Listen) and isinstance(conn.address, TcpAddress)
            and not conn.address.is_loopback):
        if not allow_remote:
            raise click.UsageError(
                f"refusing to listen on non-loopback address {conn.address}: a controller "
                "can run any code in this process; pass --allow-remote to do it anyway"
            )
        log.warning("listening on non-loopback address %s: any peer that connects can "
                    "run arbitrary code as this user", conn.address)

    from .serve.connection import run_connection
    from .serve.options import ServeOptions

    opts = ServeOptions(
        max_message_size=max_message_size,
        max_concurrent_calls=max_concurrent_calls,
        idle_close=idle_close or None,
        socket_mode=mode,
        llvm_version=llvm_version,
        busy_poll=None if busy_poll_us is None else busy_poll_us * 1e-6,
        handshake_timeout=handshake_timeout or None,
        idle_timeout=idle_timeout or None,
        keepalive_idle=keepalive_idle,
        keepalive_interval=keepalive_interval,
        keepalive_count=keepalive_count,
        on_fault=on_fault.lower() if on_fault else None,
    )
    if daemon:
        from .serve.daemon import run_daemon
        from .serve.options import DaemonOptions

        assert isinstance(conn, Listen)
        dopts = DaemonOptions(max_sessions=max(1, max_sessions), warm=max(0, warm),
                              grace=grace, allow_uid=allow_uid)
        _exit(run_daemon(conn.address, opts, dopts))
    from .launch.state import cold_start

    cold_start()  # one session in this process: the program's signal state and locale
    status = run_connection(conn, opts)
    _exit(status)


#: Default of ``$ORC_EXECUTOR_SERVE_IDLE``: seconds a server started on demand waits for a
#: launch before it exits.
DEFAULT_SERVE_IDLE = 600.0


def _auto_idle() -> float:
    value = os.environ.get("ORC_EXECUTOR_SERVE_IDLE")
    if not value:
        return DEFAULT_SERVE_IDLE
    try:
        seconds = float(value)
    except ValueError:
        log.warning("ORC_EXECUTOR_SERVE_IDLE=%r is not a number of seconds: using %g",
                    value, DEFAULT_SERVE_IDLE)
        return DEFAULT_SERVE_IDLE
    return max(seconds, 0.0)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--warm", type=int, default=2, show_default=True, metavar="N",
              help="Session processes kept started and ready.")
@click.option("--socket", "socket_path", default=None, metavar="PATH",
              help="Where to listen (default: $ORC_EXECUTOR_WARM_SOCKET, else "
              "warm-VERSION-HASH.sock in $XDG_RUNTIME_DIR/orc-executor/, else in "
              "/tmp/orc-executor-UID/; HASH names this installation).")
@click.option("--idle-exit", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Exit after this many seconds without a launch (default: never; for a "
              "server started on demand $ORC_EXECUTOR_SERVE_IDLE, else 600).")
@click.option("--auto", is_flag=True, hidden=True,
              help="Started on demand by the launcher (stderr is its log file).")
@click.option("--lock-fd", type=int, default=None, hidden=True,
              help="The server lock, already taken by the launcher that started this server.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))
def serve_command(warm: int, socket_path: str | None, idle_exit: float | None, auto: bool,
                  lock_fd: int | None, log_level: str) -> None:
    """Keep warm session processes for launched executors (``orc-executor serve``).

    While it runs, ``llvm-jitlink -oop-executor=orc-executor`` starts warm: the
    launched orc-executor hands its pipes and stdio to a ready process and exits with that
    session's status. Without a server, orc-executor starts cold and starts one in the
    background (unless ORC_EXECUTOR_AUTO_SERVE=0). One server runs per socket: a second one
    exits with an error. The socket's directory must be this user's, mode 0700.
    """
    from .launch.warmdir import warm_socket_path
    from .serve.options import ServeOptions
    from .serve.warm import run_warm_server

    _setup_logging(log_level)
    if auto:  # the log is a file: say when
        for handler in log.handlers:
            handler.setFormatter(logging.Formatter(
                "%(asctime)s orc-executor[%(process)d]: %(levelname)s: %(message)s"))
        if idle_exit is None:
            idle_exit = _auto_idle()
    _exit(run_warm_server(socket_path or warm_socket_path(), ServeOptions(), max(1, warm),
                          idle_exit=idle_exit or None, lock_fd=lock_fd))


def serve(args: list[str]) -> None:
    """Entry for ``orc-executor serve ARGS``."""
    serve_command.main(args=args, prog_name="orc-executor serve")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--bin-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to install it (default: this interpreter's scripts directory, e.g. "
              "the venv's bin/).")
def install_launcher_command(bin_dir: Path | None) -> None:
    """Install the native launcher as BIN_DIR/orc-executor (``orc-executor install-launcher``).

    Controllers start ``orc-executor`` once per session; the native launcher hands the session
    to a running ``orc-executor serve`` without starting Python, and otherwise execs the
    Python entry point (the same behaviour as the Python script it replaces).
    """
    from .launch.install import install_launcher

    try:
        path = install_launcher(bin_dir)
    except OSError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"installed {path}", err=True)


def install_launcher(args: list[str]) -> None:
    """Entry for ``orc-executor install-launcher ARGS``."""
    install_launcher_command.main(args=args, prog_name="orc-executor install-launcher")
