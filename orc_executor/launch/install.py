"""The native launcher (``launcher.c``): where the built program is, and installing it.

``setup.py`` compiles ``launcher.c`` next to the cffi extension as ``orc-executor-launcher``,
and ``pip install`` puts it in place as ``bin/orc-executor`` (``orc-executor install-launcher``
copies it again, e.g. into another ``bin/``). It is what controllers start: it hands a
pipe-style launch to a running ``orc-executor serve`` (the warm start,
without starting Python) and otherwise execs ``python -P -m orc_executor --cold`` with the
interpreter in its own directory, in the same process (and starts a server in the
background for the next launches).
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

LAUNCHER_PATH = Path(__file__).with_name("orc-executor-launcher")


def default_bin_dir() -> Path:
    """The scripts directory of this interpreter's installation (a venv's ``bin/``)."""
    return Path(sysconfig.get_path("scripts"))


def install_launcher(bin_dir: Path | None = None) -> Path:
    """Copy the built launcher to ``bin_dir/orc-executor`` (atomically replacing the Python
    console script of that name) and return that path.

    The launcher execs the Python interpreter found next to it (``python3``/``python``), so
    ``bin_dir`` must hold one (a venv's ``bin/`` does), unless ``$ORC_EXECUTOR_PYTHON`` is
    set when it runs. Raises :class:`FileNotFoundError` when the launcher was not built (the
    package was installed without running ``setup.py``'s ``build_ext``), ``OSError`` when
    ``bin_dir`` is not writable.
    """
    target_dir = bin_dir or default_bin_dir()
    if not LAUNCHER_PATH.exists():
        raise FileNotFoundError(f"{LAUNCHER_PATH} was not built (reinstall the package)")
    if not any((target_dir / p).exists() for p in ("python3", "python")):
        print(f"orc-executor: warning: no python3 in {target_dir}; set ORC_EXECUTOR_PYTHON "
              f"(cold starts exec it; now {sys.executable})", file=sys.stderr)
    target = target_dir / "orc-executor"
    tmp = target_dir / f".orc-executor.{os.getpid()}.tmp"
    shutil.copyfile(LAUNCHER_PATH, tmp)
    os.chmod(tmp, 0o755)
    os.replace(tmp, target)
    return target
