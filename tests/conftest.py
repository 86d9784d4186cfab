"""Settings for the whole test suite.

Launches of ``orc-executor`` start a warm server on demand (issue 21) when none answers; the
tests that do not test that must not leave servers behind (CI runs on a fresh machine, and a
server started from a test's temporary socket path would outlive the run), so it is off here.
``tests/e2e/test_autoserve.py`` turns it on for its own runs and ends the servers they start.

Nor may a test's launch find a server it did not start: one the user (or the README's
``scripts/demo.sh``) left running for this installation would take every launch warm (a
``perf record`` of llvm-jitlink then never sees the session process). The run gets a
runtime directory of its own (``$XDG_RUNTIME_DIR``, mode 0700), where the launchers look.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ["ORC_EXECUTOR_AUTO_SERVE"] = "0"
_RUNTIME_DIR = tempfile.mkdtemp(prefix="orc-test-runtime-")
os.environ["XDG_RUNTIME_DIR"] = _RUNTIME_DIR
atexit.register(shutil.rmtree, _RUNTIME_DIR, ignore_errors=True)
