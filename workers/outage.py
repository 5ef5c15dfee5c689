"""Outages said once: when a service stops answering, and when it answers again.

Shared by the broker's two halves (``workers.broker``, ``workers.redis_broker``)
and the scheduler's loop.
"""

from __future__ import annotations

import logging
import threading
import time

#: The broker's outages are logged under the name they always had.
logger = logging.getLogger("workers.broker")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Outage:
    """Says once that a service stopped answering, and once that it answers again.

    A process that keeps running through an outage (a worker, the
    scheduler) would otherwise log every failed attempt: hundreds of lines
    for a restart of Redis.
    """

    def __init__(self, what: str, log: logging.Logger = logger) -> None:
        self.what = what
        self.log = log
        self.since: float | None = None
        self._lock = threading.Lock()

    def failed(self, exc: BaseException) -> None:
        """It did not answer (``exc``): logged at the first failure of an outage only."""
        with self._lock:
            if self.since is not None:
                return
            self.since = time.monotonic()
        self.log.error(
            "%s does not answer: %s; carrying on when it does", self.what, first_line(exc)
        )

    def ok(self) -> None:
        """It answered: logged if it had not been."""
        if self.since is None:
            return
        with self._lock:
            if self.since is None:
                return
            seconds, self.since = time.monotonic() - self.since, None
        self.log.warning("%s answers again, after %.0f s", self.what, seconds)

    @property
    def down(self) -> bool:
        return self.since is not None


#: The broker as this process's workers see it.
BROKER_OUTAGE = Outage("the broker (Redis)")
