"""Settings for the whole test suite.

Launches of ``orc-executor`` start a warm server on demand (issue 21) when none answers; the
tests that do not test that must not leave servers behind (CI runs on a fresh machine, and a
server started from a test's temporary socket path would outlive the run), so it is off here.
``tests/e2e/test_autoserve.py`` turns it on for its own runs and ends the servers they start.
"""

from __future__ import annotations

import os

os.environ["ORC_EXECUTOR_AUTO_SERVE"] = "0"
