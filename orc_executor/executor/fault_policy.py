"""What a fault in JIT'd code does to the session: ``recover`` or ``crash``.

* ``crash``: no signal handlers; a fault ends the process as it ends the stock executor's
  (llvm-jitlink and lli see the same status and output).
* ``recover``: calls from the controller that run JIT'd code (``run_as_*``, JIT'd wrapper
  functions such as the ORC runtime's, alloc actions) are guarded; SIGSEGV, SIGBUS, SIGFPE,
  SIGILL or SIGABRT on the thread running such a call fail that call with an error naming
  the signal and address, and the session goes on. Faults on other threads (those the
  program started), in the executor's own code, or signals sent by other processes still
  end the process.

Chosen by ``--on-fault`` / ``ORC_EXECUTOR_ON_FAULT``; by default ``recover`` when the
launching controller is clang-repl (an interactive session worth keeping) and ``crash``
otherwise.
"""

from __future__ import annotations

import logging

from ..native.api import install_fault_handlers
from .bootstrap import ProcReader, find_controller
from .context import ExecutorContext

log = logging.getLogger(__name__)

POLICIES = ("recover", "crash")


def check_policy(requested: str) -> str:
    """The policy named by ``requested`` (case-insensitive); ``ValueError`` otherwise."""
    policy = requested.strip().lower()
    if policy not in POLICIES:
        raise ValueError(f"unknown fault policy {requested!r} (choose from recover, crash)")
    return policy


def select_fault_policy(
    requested: str | None,
    *,
    is_socket: bool = False,
    proc: ProcReader | None = None,
    start_pid: int | None = None,
) -> str:
    """The policy for this session: ``requested`` if given (``ValueError`` if unknown),
    else ``recover`` when the launching controller is clang-repl, else ``crash`` (socket
    sessions have no launching process to inspect: ``crash``)."""
    if requested is not None:
        return check_policy(requested)
    if is_socket:
        return "crash"
    controller, why = find_controller(proc, start_pid=start_pid)
    policy = "recover" if controller is not None and controller.is_clang_repl else "crash"
    log.debug("on fault: %s (%s)", policy, why)
    return policy


def apply_fault_policy(ctx: ExecutorContext, policy: str) -> None:
    """Make ``ctx``'s calls into JIT'd code follow ``policy`` (installing the process's
    fault handlers for ``recover``; if that fails, the session runs with ``crash``)."""
    if policy != "recover":
        ctx.recover_faults = False
        return
    try:
        install_fault_handlers()
    except OSError as e:
        log.warning("%s: faults in JIT'd code will end the process", e)
        ctx.recover_faults = False
        return
    ctx.recover_faults = True
