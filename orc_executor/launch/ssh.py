"""``orc-executor-ssh``: reach an executor on another machine over ssh, for controllers that
launch their executor with pipes (``llvm-jitlink -oop-executor=WRAPPER`` runs
``WRAPPER filedescs=IN,OUT``; ``lli`` runs ``WRAPPER IN OUT``).

ssh gives a remote command one stdin, stdout and stderr, and those belong to the JIT'd program
(stdout must stay the program's own, byte for byte). The protocol therefore travels on a second
channel of the same ssh connection: a unix socket forwarded from the remote machine back to
this one (``ssh -R REMOTE_SOCKET:LOCAL_SOCKET``), to which the remote
``orc-executor --connect unix:REMOTE_SOCKET`` connects; this process relays between the
controller's fds and that socket::

    controller ==IN/OUT==> orc-executor-ssh <=local socket== ssh -R ... ==> remote socket
                                                                           <== orc-executor
    controller's stdin/stdout/stderr <==== ssh's session channel ====> JIT'd program's stdio

Both sockets are private: the local one lives in a fresh ``0700`` directory, and sshd creates
the remote one ``0600`` (``StreamLocalBindMask``) under an unguessable name, removed after the
session. Authentication and encryption are ssh's (keys, ``~/.ssh/config``, known hosts).
The exit status is ssh's (the remote command's).

Usage, from a two-line wrapper script given to the controller::

    #!/bin/sh
    exec orc-executor-ssh --ssh 'ssh -p 2222' user@board "$@"
"""

from __future__ import annotations

import argparse
import os
import secrets
import selectors
import shlex
import socket
import subprocess
import sys
import tempfile

#: Seconds to wait for the remote executor to connect back before giving up.
CONNECT_TIMEOUT = 60.0


def _protocol_fds(spec: list[str]) -> tuple[int, int]:
    if len(spec) == 1 and spec[0].startswith("filedescs="):
        a, _, b = spec[0].removeprefix("filedescs=").partition(",")
        return int(a), int(b)
    if len(spec) == 2:
        return int(spec[0]), int(spec[1])
    raise ValueError(f"expected filedescs=IN,OUT or IN OUT, got {shlex.join(spec)!r}")


def remote_command(executor: str, remote_socket: str) -> str:
    """The shell command run on the remote machine: wait (briefly) for sshd's forwarded
    socket, run the executor connected to it, remove the socket, exit with its status. The
    shell's own stderr is silenced (a crashed program must not gain the shell's
    "Segmentation fault" line); the executor gets the real one."""
    sock = shlex.quote(remote_socket)
    return (
        f"exec 3>&2 2>/dev/null; "
        f"i=0; while [ ! -S {sock} ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; "
        f"{executor} --connect unix:{sock} 2>&3 3>&-; s=$?; rm -f {sock}; exit $s"
    )


def _relay(fd_in: int, fd_out: int, conn: socket.socket) -> None:
    """Copy ``fd_in`` → ``conn`` and ``conn`` → ``fd_out`` until both directions end."""
    sel = selectors.DefaultSelector()
    sel.register(fd_in, selectors.EVENT_READ, "in")
    sel.register(conn, selectors.EVENT_READ, "sock")
    open_dirs = 2
    while open_dirs:
        for key, _ in sel.select():
            if key.data == "in":
                try:
                    data = os.read(fd_in, 1 << 16)
                except OSError:
                    data = b""
                if data:
                    try:
                        conn.sendall(data)
                        continue
                    except OSError:
                        pass
                sel.unregister(fd_in)
                open_dirs -= 1
                try:
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            else:
                try:
                    data = conn.recv(1 << 16)
                except OSError:
                    data = b""
                if data:
                    try:
                        view = memoryview(data)
                        while view:
                            view = view[os.write(fd_out, view):]
                        continue
                    except OSError:
                        pass
                sel.unregister(conn)
                open_dirs -= 1
                os.close(fd_out)
    sel.close()


def run(host: str, spec: list[str], *, ssh: str = "ssh", executor: str = "orc-executor") -> int:
    """Run one session of ``executor`` on ``host`` for the controller's fds in ``spec``; the
    exit status of ssh (``255``: ssh itself failed)."""
    fd_in, fd_out = _protocol_fds(spec)
    with tempfile.TemporaryDirectory(prefix="orc-executor-ssh-") as tmp:
        local = os.path.join(tmp, "executor.sock")
        remote = f"/tmp/orc-executor-ssh-{secrets.token_hex(16)}.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(local)
        listener.listen(1)
        cmd = [*shlex.split(ssh), "-o", "ExitOnForwardFailure=yes",
               "-o", "StreamLocalBindUnlink=yes", "-R", f"{remote}:{local}", host,
               remote_command(executor, remote)]
        # stdin/stdout/stderr: the JIT'd program's; the controller's fds stay here.
        proc = subprocess.Popen(cmd, close_fds=True)
        listener.settimeout(0.1)
        conn: socket.socket | None = None
        waited = 0.0
        while conn is None and proc.poll() is None and waited < CONNECT_TIMEOUT:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                waited += 0.1
        listener.close()
        if conn is None:
            print(f"orc-executor-ssh: the executor on {host} did not connect", file=sys.stderr)
            os.close(fd_out)
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            return proc.returncode if proc.returncode > 0 else 255
        conn.settimeout(None)
        with conn:
            _relay(fd_in, fd_out, conn)
        status = proc.wait()
    return status if status >= 0 else 128 - status


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``orc-executor-ssh [--ssh CMD] [--executor CMD] HOST SPEC...``."""
    parser = argparse.ArgumentParser(
        prog="orc-executor-ssh",
        description="Run orc-executor on HOST over ssh for a controller that launches its "
                    "executor with pipes (SPEC: filedescs=IN,OUT or IN OUT).")
    parser.add_argument("--ssh", default="ssh",
                        help="the ssh command line, e.g. 'ssh -p 2222 -i KEY' (default: ssh)")
    parser.add_argument("--executor", default="orc-executor",
                        help="the executor command on HOST (default: orc-executor)")
    parser.add_argument("host", help="[user@]host, as ssh takes it")
    parser.add_argument("spec", nargs="+", help="what the controller passes")
    args = parser.parse_args(argv)
    try:
        sys.exit(run(args.host, args.spec, ssh=args.ssh, executor=args.executor))
    except (ValueError, OSError) as e:
        parser.exit(2, f"orc-executor-ssh: {e}\n")


if __name__ == "__main__":
    main()
