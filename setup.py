"""Build hooks.

* The cffi API-mode extension ``orc_executor.native._native`` is compiled on install.
* The native launcher ``orc_executor/launch/launcher.c`` is compiled next to it, as
  ``orc_executor/launch/orc-executor-launcher``, and installed as ``bin/orc-executor`` (a data
  file of the ``bin`` directory under the installation's prefix, which is where its scripts
  go: a venv's ``bin/``); the Python entry point is the console script ``orc-executor-py``.
  Controllers start their executor once per session: the launcher hands the session to a warm
  ``orc-executor serve`` in well under a millisecond, or execs the Python entry point.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sysconfig

from setuptools import setup
from setuptools.command.build_ext import build_ext

LAUNCHER_SRC = os.path.join("orc_executor", "launch", "launcher.c")
LAUNCHER_NAME = "orc-executor-launcher"
#: Where the build leaves the launcher for the install step (``data_files``), in every mode
#: (a wheel, ``pip install .``, an editable install).
LAUNCHER_BUILT = os.path.join("build", "launcher", "orc-executor")


class BuildExtWithLauncher(build_ext):
    def run(self) -> None:
        super().run()
        ext_dir = os.path.dirname(self.get_ext_fullpath("orc_executor.native._native"))
        out_dir = os.path.join(os.path.dirname(ext_dir), "launch")
        os.makedirs(out_dir, exist_ok=True)
        cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
        # The version names the warm socket (one server per version and installation).
        version = f'-DORC_EXECUTOR_VERSION="{self.distribution.get_version()}"'
        cmd = [*cc, "-O2", "-Wall", "-Wextra", version, "-o",
               os.path.join(out_dir, LAUNCHER_NAME), LAUNCHER_SRC]
        # Static when the C library allows it: no dynamic loader on every controller launch
        # (~0.1 ms); otherwise the ordinary dynamic build.
        if subprocess.run([*cmd, "-static"], check=False).returncode != 0:
            subprocess.run(cmd, check=True)
        os.makedirs(os.path.dirname(LAUNCHER_BUILT), exist_ok=True)
        shutil.copy2(os.path.join(out_dir, LAUNCHER_NAME), LAUNCHER_BUILT)
        if getattr(self, "editable_mode", False):
            # An editable wheel (setuptools' editable_wheel) does not copy data_files: put
            # the launcher in the wheel's data directory, where the install step would.
            data = self.distribution.get_command_obj("install").install_data
            if data:
                os.makedirs(os.path.join(data, "bin"), exist_ok=True)
                shutil.copy2(LAUNCHER_BUILT, os.path.join(data, "bin", "orc-executor"))


setup(
    cffi_modules=["orc_executor/native/_build.py:ffibuilder"],
    cmdclass={"build_ext": BuildExtWithLauncher},
    data_files=[("bin", [LAUNCHER_BUILT])],
)
