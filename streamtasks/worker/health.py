"""Redis health as every loop of a worker sees it: reconnect backoff, one report per outage.

Every loop and every pooled connection trips over an outage separately; :class:`RedisHealth`
folds them into one incident with one "unavailable" line and one "back" line. A failure just
after a recovery may be a pooled connection that has not yet noticed the server came back: it
is reported once it lasts :data:`CONFIRM_S`, so a real second outage is never swallowed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from .events import Event, RedisDown, RedisUp

log = logging.getLogger("streamtasks.worker")

#: A failure this soon after Redis came back may be a stale pooled connection...
INCIDENT_WINDOW_S = 10.0
#: ... and is reported as a new outage once it lasts this long.
CONFIRM_S = 1.0
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0


class RedisHealth:
    """Reconnect backoff shared by every loop of a worker."""

    def __init__(
        self, emit: Callable[[Event], None] | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.emit = emit or _ignore
        self.clock = clock
        self.down_since: float | None = None
        self.back_at: float | None = None
        self.reported = False  # the current outage was logged
        self.delay = BACKOFF_FIRST_S
        self._last_error = ""

    def failure(self, exc: BaseException, doing: str) -> None:
        """Record a failure (pure bookkeeping and logging; no sleep)."""
        now = self.clock()
        self._last_error = f"{type(exc).__name__}: {exc}"
        if self.down_since is None:
            self.down_since = now
            self.reported = False
            suspect = self.back_at is not None and now - self.back_at < INCIDENT_WINDOW_S
            if suspect:
                log.debug("Redis failed while %s just after recovering (%s)", doing, self._last_error)
                return
        if not self.reported and (now - self.down_since >= CONFIRM_S or not self._just_back(now)):
            self.reported = True
            log.warning("Redis unavailable while %s (%s); retrying with backoff", doing, self._last_error)
            self.emit(RedisDown(doing, self._last_error))

    def _just_back(self, now: float) -> bool:
        return self.back_at is not None and (self.down_since or now) - self.back_at < INCIDENT_WINDOW_S

    async def failed(self, exc: BaseException, doing: str) -> None:
        """Record a failure and wait the current backoff."""
        self.failure(exc, doing)
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, BACKOFF_MAX_S)

    def ok(self) -> None:
        if self.down_since is None:
            return
        down_for = self.clock() - self.down_since
        if self.reported:
            log.warning("Redis is back after %.1fs", down_for)
            self.emit(RedisUp(down_for))
        self.down_since = None
        self.back_at = self.clock()
        self.delay = BACKOFF_FIRST_S


def _ignore(_: Event) -> None:
    return None
