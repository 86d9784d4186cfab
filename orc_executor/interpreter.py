"""How orc-executor starts its own child interpreters (session processes, the fork server).

A child runs ``python -P -m MODULE``: ``-P`` keeps the working directory (and the directory of
a script) off ``sys.path``, so a directory named ``orc_executor/`` where the daemon, ``serve``
or a controller happens to run is never imported (CWE-427). The interpreter is this one, by
absolute path. The native launcher's cold path (``launcher.c``) starts Python the same way.
"""

from __future__ import annotations

import sys

#: Interpreter flags every child interpreter gets: no unsafe ``sys.path[0]``.
ISOLATION_FLAGS = ("-P",)


def python_module_command(module: str, *args: str) -> list[str]:
    """The argv that runs ``module`` (dotted name) with ``args`` in a fresh interpreter of
    the running one (``sys.executable``), isolated from the working directory."""
    return [sys.executable, *ISOLATION_FLAGS, "-m", module, *args]
