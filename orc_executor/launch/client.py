"""The Python entry point (``orc-executor-py``, and the cold path of the native ``orc-executor``
launcher, ``orc_executor/launch/launcher.c``), kept tiny for a fast start.

When a controller launches us with pipes (``filedescs=IN,OUT``, ``IN OUT``, ``pipe:adopt=``,
``socket:adopt=``, ``fd=``) and a warm server (``orc-executor serve``) is running for this
user, the pipes and stdin/stdout/stderr are handed to one of its pre-started session
processes in one datagram on a unix socket (``SCM_RIGHTS``; the process receives it itself
and acknowledges the session on the reply socket the datagram carries), with this process's
state (:mod:`orc_executor.launch.state`: the session process takes it on), and
this process only waits for the session's exit status and exits with it. Otherwise (no
server, or any other command line) the full CLI runs in this process (the cold path). Only
stdlib modules that the interpreter has already loaded at start-up are imported before that
decision.
"""

from __future__ import annotations

import os
import sys

from ..io.spec import pipe_fds
from .warmdir import WARM_SOCKET_ENV, warm_socket_path

__all__ = ["WARM_SOCKET_ENV", "main", "try_warm", "warm_socket_path"]


def try_warm(args: list[str]) -> int | None:
    """Hand this launch to a warm session process; its exit status, or ``None`` to go cold."""
    if os.environ.get("ORC_EXECUTOR_COLD"):
        return None
    fds = pipe_fds(args)
    if fds is None:
        return None
    from .warmdir import open_directory, via_fd

    path = warm_socket_path()
    try:
        dir_fd = open_directory(path)
    except PermissionError as e:
        sys.stderr.write(f"orc-executor: warning: not using the warm socket: {e}; "
                         "starting cold\n")
        return None
    if dir_fd is None:
        return None
    target = via_fd(dir_fd, path)
    if not os.path.exists(target):
        os.close(dir_fd)
        return None
    import signal
    import socket

    from ..io.fdpass import fds_ancillary
    from ..serve.handover import EXIT_STATUS_SIZE, decode_exit_status, encode_launch
    from . import state as launch_state

    try:
        header = encode_launch(
            controller_pid=os.getppid(), llvm_version=os.environ.get("ORC_EXECUTOR_LLVM_VERSION"),
            machine=os.uname().machine, state=launch_state.current_state())
        cwd, env = launch_state.state_fds()
    except (OSError, ImportError):  # (the native module not built: no state to send)
        os.close(dir_fd)
        return None
    # One datagram: the reply socket's other end first, then the fds (see the worker).
    sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    # Signals to forward wait until the session process is known.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _forwarded())
    try:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as launch:
                launch.sendmsg([header], fds_ancillary(
                    [theirs.fileno(), fds.in_fd, fds.out_fd, 0, 1, 2, cwd, env]), 0, target)
        finally:
            os.close(dir_fd)  # (not left open for a cold session)
        theirs.close()
        # 'A', the session process's pid and a pidfd of it: a session process took the
        # session. Without it (the reply socket closed: nothing could take it, the server is
        # stopping, the launch was refused) nothing was started, and the cold path runs
        # with our fds intact.
        session = _receive_ack(sock)
    except OSError:
        session = None
    finally:
        os.close(cwd)
        os.close(env)
    if session is None:
        theirs.close()
        sock.close()
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return None
    # The session process owns the pipes now: drop ours so EOF reaches the controller
    # when that process ends.
    for fd in {fds.in_fd, fds.out_fd}:
        os.close(fd)
    _forward_signals(*session)
    signal.pthread_sigmask(signal.SIG_SETMASK, set(mask) - set(_forwarded()))
    data = b""
    try:
        while len(data) < EXIT_STATUS_SIZE:
            chunk = sock.recv(EXIT_STATUS_SIZE - len(data))
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    if len(data) < EXIT_STATUS_SIZE:
        sys.stderr.write("orc-executor: the warm server went away during the session\n")
        return 1
    status = decode_exit_status(data)
    if status < 0:  # mirror a session killed by a signal
        import signal

        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
        return 128 - status
    return status


def _forwarded() -> tuple[int, ...]:
    """Signals forwarded to the session process (as launcher.c)."""
    import signal as s

    return (s.SIGINT, s.SIGTERM, s.SIGHUP, s.SIGQUIT, s.SIGUSR1, s.SIGUSR2, s.SIGWINCH,
            s.SIGCONT, s.SIGTSTP, s.SIGALRM)


def _receive_ack(sock: object) -> tuple[int, int | None] | None:
    """The session process's pid and pidfd from its acknowledgement, or ``None``."""
    import socket

    from ..io.fdpass import ANCILLARY_SPACE, fds_received
    from ..serve.handover import ACK_SIZE, Control, decode_ack

    assert isinstance(sock, socket.socket)
    data = b""
    pidfd: int | None = None
    while len(data) < ACK_SIZE:
        chunk, anc, _flags, _addr = sock.recvmsg(ACK_SIZE - len(data), ANCILLARY_SPACE)
        for fd in fds_received(anc):
            if pidfd is None:
                pidfd = fd
            else:
                os.close(fd)
        if not chunk or not (data + chunk).startswith(Control.ACKNOWLEDGE):
            if pidfd is not None:
                os.close(pidfd)
            return None
        data += chunk
    pid = decode_ack(data)
    assert pid is not None
    return pid, pidfd


def _forward_signals(pid: int, pidfd: int | None) -> None:
    """Deliver the signals this process receives to the session process (see launcher.c)."""
    import signal

    def send(sig: int) -> None:
        try:
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, sig)
            else:
                os.kill(pid, sig)
        except OSError:
            pass

    def on_signal(sig: int, _frame: object) -> None:
        if sig != signal.SIGTSTP:
            send(sig)
            return
        # The session process's group is orphaned: SIGTSTP's default stop is discarded there.
        try:
            with open(f"/proc/{pid}/status") as f:
                status = f.read()
        except OSError:
            status = ""
        bits = {line.split(":")[0]: int(line.split()[1], 16) for line in status.splitlines()
                if line.startswith(("SigIgn:", "SigCgt:"))}
        bit = 1 << (sig - 1)
        if bits.get("SigCgt", 0) & bit:
            send(sig)
        elif not bits.get("SigIgn", 0) & bit:
            send(signal.SIGSTOP)
            os.kill(os.getpid(), signal.SIGSTOP)

    for sig in _forwarded():
        if signal.getsignal(sig) != signal.SIG_IGN:
            signal.signal(sig, on_signal)


def _env_version_valid() -> bool:
    """False if ``ORC_EXECUTOR_LLVM_VERSION`` is set to an unsupported value: the full CLI then
    reports it as a usage error (exit 2) instead of the session failing with a traceback."""
    version = os.environ.get("ORC_EXECUTOR_LLVM_VERSION")
    if not version:
        return True
    from ..protocol.names import profile_for_version

    try:
        profile_for_version(version)
    except ValueError:
        return False
    return True


def main() -> None:
    """Entry point of ``orc-executor-py`` and of the native launcher's cold path
    (``python -m orc_executor --cold ARGS``: the warm handover was already tried)."""
    args = sys.argv[1:]
    cold = args[:1] == ["--cold"]
    ignored: int | None = None
    if cold:
        args = args[1:]
        if args[:1] and args[0].startswith("--ignored="):  # from launcher.c
            try:
                ignored = int(args[0].split("=", 1)[1], 16)
            except ValueError:
                pass
            args = args[1:]
        sys.argv[1:] = args
        if ignored is not None:
            from . import state as launch_state

            launch_state.inherited_ignored = ignored
    if args[:1] == ["serve"]:
        from ..cli import serve

        serve(args[1:])
        return
    if args[:1] == ["install-launcher"]:
        from ..cli import install_launcher

        install_launcher(args[1:])
        return
    status = None if cold else try_warm(args)
    if status is not None:
        os._exit(status)
    fds = pipe_fds(args)
    # (pipe_fds refuses options; ``debug`` and ``test-*`` tokens go to the full CLI)
    if fds is not None and len(args) <= 2 and _env_version_valid():
        # Cold launch by a controller: skip the CLI parser (click) on the start-up path, and
        # let the session's modules (trio, cffi, the services) import without the cyclic
        # garbage collector running over and over; what they
        # allocated is then frozen out of later collections.
        import gc

        gc.disable()
        from ..serve.connection import run_pipe_session
        from .state import cold_start

        cold_start(ignored)

        gc.freeze()
        gc.enable()
        run_pipe_session(fds.in_fd, fds.out_fd)
        return
    from ..cli import main as cli_main

    cli_main(prog_name="orc-executor")


if __name__ == "__main__":
    main()
