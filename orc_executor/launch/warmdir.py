"""Where the warm server (``orc-executor serve``) listens, and the checks before that place is
used: its name (one server per user and per installation), its directory (owned by this
user, mode 0700, not a symbolic link), and the lock that keeps one server there.

The native launcher (``orc_executor/launch/launcher.c``) computes the same name and makes the
same checks in C. Stdlib only, and only modules the interpreter has loaded at start-up, so the
Python launcher's start-up path stays light.
"""

from __future__ import annotations

import os
import stat

from .. import __version__

WARM_SOCKET_ENV = "ORC_EXECUTOR_WARM_SOCKET"


def install_hash(bin_dir: str | None = None) -> int:
    """The installation's id: FNV-1a (64 bits) of the real path of the directory holding
    ``bin/orc-executor`` (default: this interpreter's scripts directory, a venv's ``bin/``),
    as the native launcher hashes its own directory."""
    if bin_dir is None:
        import sysconfig

        bin_dir = sysconfig.get_path("scripts")
    h = 0xCBF29CE484222325
    for byte in os.fsencode(os.path.realpath(bin_dir)):
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def warm_socket_name() -> str:
    """``warm-VERSION-HASH.sock``: a server started by another version or another
    installation never takes this installation's launches."""
    return f"warm-{__version__}-{install_hash():016x}.sock"


def warm_socket_path() -> str:
    """``$ORC_EXECUTOR_WARM_SOCKET``, else :func:`warm_socket_name` in
    ``$XDG_RUNTIME_DIR/orc-executor/``, else in ``/tmp/orc-executor-<uid>/``."""
    path = os.environ.get(WARM_SOCKET_ENV)
    if path:
        return path
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = os.path.join(runtime, "orc-executor") if runtime else f"/tmp/orc-executor-{os.getuid()}"
    return os.path.join(base, warm_socket_name())


def sibling(path: str, ext: str) -> str:
    """``path`` with its ``.sock`` suffix replaced by ``ext`` (or ``ext`` appended): the
    server's lock (``.lock``) and, for a server started on demand, its log (``.log``)."""
    base = path[:-5] if path.endswith(".sock") and len(os.path.basename(path)) > 5 else path
    return base + ext


def open_directory(path: str) -> int | None:
    """The directory of the socket ``path``, opened (``O_PATH``, close-on-exec) without
    following a symbolic link and checked on the opened directory (``fstat``): a directory,
    owned by this user, no access for group or others; a file at ``path`` must be a socket of
    this user. ``None`` if it does not exist; raises :class:`PermissionError` with the reason
    if it must not be used. Reach the socket through the fd (:func:`via_fd`), so that a
    directory swapped after the check is never used."""
    directory = os.path.dirname(path) or "."
    try:
        fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno in (20, 40):  # ENOTDIR, ELOOP
            raise PermissionError(f"{directory} is a symbolic link or not a directory") from None
        raise PermissionError(f"{directory}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid():
            raise PermissionError(f"{directory} is owned by uid {st.st_uid}, not by this user "
                                  f"(uid {os.getuid()})")
        if st.st_mode & 0o077:
            raise PermissionError(f"{directory} has mode {stat.S_IMODE(st.st_mode):04o} "
                                  "(must be 0700)")
        try:
            sock = os.stat(os.path.basename(path), dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return fd
        if not stat.S_ISSOCK(sock.st_mode) or sock.st_uid != os.getuid():
            raise PermissionError(f"{path} is not a socket of this user")
    except BaseException:
        os.close(fd)
        raise
    return fd


def via_fd(fd: int, path: str) -> str:
    """The socket ``path`` reached through its directory's fd (``/proc/self/fd/FD/NAME``)."""
    return f"/proc/self/fd/{fd}/{os.path.basename(path)}"


def directory_problem(path: str) -> str | None:
    """Why the directory of the socket ``path`` must not be used (:func:`open_directory`);
    ``None`` when it is safe or does not exist."""
    try:
        fd = open_directory(path)
    except PermissionError as e:
        return str(e)
    if fd is not None:
        os.close(fd)
    return None


def prepare_directory(path: str) -> None:
    """Create the socket's directory (mode 0700) if it does not exist, and verify it
    (:func:`directory_problem`). Raises :class:`PermissionError` with the reason if it is not
    safe to use."""
    directory = os.path.dirname(path) or "."
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    problem = directory_problem(path)
    if problem is not None:
        raise PermissionError(f"refusing the warm socket directory: {problem}")


def take_lock(lock_path: str, lock_fd: int | None = None) -> int:
    """The server lock (an exclusive ``flock`` on ``lock_path``, the socket's :func:`sibling`
    ``.lock``, which holds the server's pid), held until the process exits: ``lock_fd`` if
    given (the launcher took it), else taken here. Raises :class:`BlockingIOError` naming the
    holder's pid when another server holds it."""
    import fcntl

    if lock_fd is None:
        lock_fd = os.open(lock_path,
                          os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(lock_fd, 32).decode(errors="replace").strip()
            os.close(lock_fd)
            raise BlockingIOError(f"pid {holder or '?'} holds {lock_path}") from None
        os.ftruncate(lock_fd, 0)
        os.write(lock_fd, f"{os.getpid()}\n".encode())
    os.set_inheritable(lock_fd, False)
    return lock_fd
