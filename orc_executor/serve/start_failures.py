"""What a pool of session processes logs while they fail to start: the reason once, then a
count at growing intervals, never one line per attempt (or per refused connection)."""

from __future__ import annotations

import logging

log = logging.getLogger("orc_executor.serve.daemon")


class StartFailures:
    """A streak of failed starts of session processes, and the connections refused meanwhile.

    :meth:`failed` logs the first failure of a streak (and any failure whose reason differs
    from the last one) at ERROR, with the reason; further failures with the same reason are
    counted and logged as one WARNING line at the 2nd, 4th, 8th, … attempt. :meth:`refused`
    logs the first connection turned away in a streak; the others are counted into those
    lines. :meth:`started` ends the streak (one INFO line if there was one)."""

    def __init__(self) -> None:
        #: Failed attempts in the current streak (0: starting works).
        self.attempts = 0
        self.refused_connections = 0
        self._reason: str | None = None

    @property
    def failing(self) -> bool:
        return self.attempts > 0

    def failed(self, reason: str, next_in: float) -> None:
        """One more attempt failed for ``reason``; the next comes in ``next_in`` seconds."""
        self.attempts += 1
        if reason != self._reason:
            self._reason = reason
            log.error("session processes fail to start: %s (retrying with backoff, next in "
                      "%.1fs; connections are refused until one starts)", reason, next_in)
        elif self.attempts & (self.attempts - 1) == 0:  # 2, 4, 8, ...
            log.warning("session processes still fail to start after %d attempts (%d "
                        "connection(s) refused; next attempt in %.1fs): %s", self.attempts,
                        self.refused_connections, next_in, reason)

    def refused(self, n: int) -> None:
        """Session ``n``'s connection was closed because no session process could start."""
        self.refused_connections += 1
        if self.refused_connections == 1:
            log.warning("session %d refused: session processes fail to start (%s); later "
                        "refusals are counted", n, self._reason or "see above")

    def started(self) -> None:
        """A session process got ready: the streak, if any, is over."""
        if self.attempts:
            log.info("session processes start again after %d failed attempt(s); %d "
                     "connection(s) were refused", self.attempts, self.refused_connections)
        self.attempts = 0
        self.refused_connections = 0
        self._reason = None
