"""Run aarch64 programs under the x86_64 ``llvm-jitlink`` 22 with an aarch64 executor under
qemu-user: orc-executor built by ``scripts/cross.sh aarch64 DIR`` (``DIR/bin/orc-executor``)
or the arm64 reference (``DIR/bin/llvm-jitlink-executor``, Debian's llvm-22:arm64).

* :func:`cross_build` runs ``scripts/cross.sh`` once per test session (idempotent; the build is
  cached in ``<repo>/.cross/aarch64``, or ``$ORC_CROSS_DIR``).
* :func:`compile_aarch64` compiles C/C++ with ``aarch64-linux-gnu-gcc``/``g++ -c -fPIC`` into a
  content-addressed cache.
* :func:`jitlink` runs ``llvm-jitlink -oop-executor=EXECUTOR ...`` with stdout and stderr read
  from pipes until EOF (the executor can still be writing after llvm-jitlink has exited).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LLVM_JITLINK = Path("/usr/lib/llvm-22/bin/llvm-jitlink")
CROSS_DIR = Path(os.environ.get("ORC_CROSS_DIR", REPO / ".cross" / "aarch64"))
OBJ_CACHE = REPO / ".cache" / "cross-objects"
GNU = "aarch64-linux-gnu"
#: What ``-preload`` gives llvm-jitlink for C++ programs (qemu's -L maps it into the sysroot).
LIBSTDCXX = f"/usr/lib/{GNU}/libstdc++.so.6"


@dataclass(frozen=True)
class CrossBuild:
    """An aarch64 build made by ``scripts/cross.sh``."""

    dir: Path

    @property
    def ours(self) -> Path:
        return self.dir / "bin" / "orc-executor"

    @property
    def reference(self) -> Path:
        return self.dir / "bin" / "llvm-jitlink-executor"

    @property
    def orc_runtime(self) -> Path:
        return self.dir / "liborc_rt-aarch64.a"


@dataclass(frozen=True)
class Result:
    stdout: bytes
    stderr: bytes
    returncode: int

    @property
    def text(self) -> tuple[str, str, int]:
        return (self.stdout.decode(errors="replace"), self.stderr.decode(errors="replace"),
                self.returncode)


_BUILD: CrossBuild | None = None


def cross_build() -> CrossBuild:
    """``scripts/cross.sh aarch64 CROSS_DIR`` (once per process); raises if it fails."""
    global _BUILD
    if _BUILD is None:
        proc = subprocess.run([str(REPO / "scripts" / "cross.sh"), "aarch64", str(CROSS_DIR)],
                              capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"scripts/cross.sh failed:\n{proc.stderr}")
        _BUILD = CrossBuild(Path(proc.stdout.strip().splitlines()[-1]))
    return _BUILD


def compile_aarch64(source: Path, flags: Sequence[str] = ("-O1",), *, cxx: bool = False) -> Path:
    """``aarch64-linux-gnu-gcc -c -fPIC FLAGS source`` (``g++`` with ``cxx``), cached."""
    cc = f"{GNU}-g++" if cxx else f"{GNU}-gcc"
    argv = [cc, "-c", "-fPIC", *flags, "-I", str(source.parent)]
    key = hashlib.sha256("\0".join(argv).encode() + b"\0" + source.read_bytes())
    obj = OBJ_CACHE / f"{source.stem}-{key.hexdigest()[:20]}.o"
    if obj.is_file():
        return obj
    OBJ_CACHE.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{source.stem}-", suffix=".o", dir=OBJ_CACHE)
    os.close(fd)
    try:
        subprocess.run([*argv, str(source), "-o", tmp], check=True, timeout=300)
        os.replace(tmp, obj)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return obj


def prelink(objs: Sequence[Path], out: Path) -> Path:
    """``ld -r`` several aarch64 objects into one (C++ exceptions across objects)."""
    subprocess.run([f"{GNU}-ld", "-r", *map(str, objs), "-o", str(out)], check=True, timeout=60)
    return out


def jitlink(
    executor: Path | str | None,
    objs: Sequence[Path | str],
    args: Sequence[str] | None = None,
    *,
    flags: Sequence[str] = (),
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 180,
    connect: str | None = None,
) -> Result:
    """``llvm-jitlink -oop-executor=EXECUTOR FLAGS OBJS [-args ARGS]`` (or
    ``-oop-executor-connect=CONNECT``); every path of the cross build in the output becomes
    ``{cross}``, the llvm-jitlink path ``{jitlink}``."""
    cmd = [str(LLVM_JITLINK)]
    cmd.append(f"-oop-executor-connect={connect}" if connect else f"-oop-executor={executor}")
    cmd += [*flags, *map(str, objs)]
    if args is not None:
        cmd += ["-args", *args]
    full_env = dict(os.environ)
    full_env.update(env or {})
    p = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout, env=full_env,
                       stdin=None if stdin is not None else subprocess.DEVNULL)
    return Result(_normalize(p.stdout, executor), _normalize(p.stderr, executor), p.returncode)


def _normalize(data: bytes, executor: Path | str | None) -> bytes:
    if executor:
        data = data.replace(str(executor).encode(), b"{executor}")
    return data.replace(str(LLVM_JITLINK).encode(), b"{jitlink}")


def start_warm_server(executor: Path, sock_dir: Path, *, timeout: float = 240,
                      warm: int = 1) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """``EXECUTOR serve --warm N`` on ``sock_dir/warm.sock`` (``sock_dir`` is created 0700),
    once its session processes are ready: the server (its stderr a pipe, read up to the
    "warm server on" line) and the environment that points launches at it."""
    sock_dir.mkdir(mode=0o700)
    env = dict(os.environ, ORC_EXECUTOR_WARM_SOCKET=str(sock_dir / "warm.sock"))
    server = subprocess.Popen([str(executor), "serve", "--warm", str(warm)], env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    assert server.stderr is not None
    deadline = time.monotonic() + timeout
    line = b""
    while b"warm server on" not in line:  # logged once the session processes are ready
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            raise RuntimeError(f"the warm server did not start: {line!r}")
        line = server.stderr.readline()
    return server, env
