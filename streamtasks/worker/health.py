"""Redis health as every loop of a worker sees it: reconnect backoff, one report per outage.

Every loop and every pooled connection trips over an outage separately; :class:`RedisHealth`
folds them into one incident with one "unavailable" line and one "back" line. A failure just
after a recovery may be a pooled connection that has not yet noticed the server came back: it
is reported once it lasts :data:`CONFIRM_S`, so a real second outage is never swallowed.

A Redis that stops answering without closing anything (a network partition: packets dropped,
no reset) fails no command: they all wait, as the clients have no socket timeout on purpose
(:mod:`streamtasks.connect`). :func:`probe`, a supervised loop of every worker, asks ``PING``
every :data:`PROBE_EVERY_S` and counts no answer within :data:`PROBE_TIMEOUT_S` as a failure,
so such an outage is logged (in actor mode once for the whole worker: :class:`OutageFold`),
shows in ``/readyz`` and ``status``, and its end is logged with its duration.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from redis.asyncio import Redis

from ..aio import wait_set
from ..redisutil import REDIS_DOWN
from .events import Event, RedisDown, RedisUp

log = logging.getLogger("streamtasks.worker")

#: A failure this soon after Redis came back may be a stale pooled connection...
INCIDENT_WINDOW_S = 10.0
#: ... and is reported as a new outage once it lasts this long.
CONFIRM_S = 1.0
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0
#: Seconds between two PINGs of :func:`probe`, and how long one may take before it counts as
#: a failure (more than a busy Redis takes to answer, well under the visibility timeout).
PROBE_EVERY_S = 1.0
PROBE_TIMEOUT_S = 3.0


class RedisHealth:
    """Reconnect backoff shared by every loop of a worker."""

    def __init__(
        self, emit: Callable[[Event], None] | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.emit = emit or _ignore
        self.clock = clock
        #: Log the outage lines at DEBUG only (an actor: its worker process logs them once for
        #: all its actors, :class:`OutageFold`); the events are emitted either way.
        self.quiet = False
        self.down_since: float | None = None
        self.back_at: float | None = None
        self.reported = False  # the current outage was logged
        self.delay = BACKOFF_FIRST_S
        self._last_error = ""

    def failure(self, exc: BaseException, doing: str, since: float | None = None) -> None:
        """Record a failure (pure bookkeeping and logging; no sleep); ``since``: when what
        failed began (a command that got no answer), if before now."""
        now = self.clock()
        self._last_error = f"{type(exc).__name__}: {exc}"
        if self.down_since is None:
            self.down_since = now if since is None else min(now, since)
            self.reported = False
            suspect = self.back_at is not None and now - self.back_at < INCIDENT_WINDOW_S
            if suspect:
                log.debug("Redis failed while %s just after recovering (%s)", doing, self._last_error)
                return
        if not self.reported and (now - self.down_since >= CONFIRM_S or not self._just_back(now)):
            self.reported = True
            self.emit(down := RedisDown(doing, self._last_error))
            if not self.quiet:
                log_down(down)

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
            self.emit(up := RedisUp(down_for))
            if not self.quiet:
                log_up(up)
        self.down_since = None
        self.back_at = self.clock()
        self.delay = BACKOFF_FIRST_S


async def probe(
    redis: Redis, health: RedisHealth, stopping: asyncio.Event, healthy: Callable[[], None]
) -> None:
    """PING Redis every :data:`PROBE_EVERY_S` until ``stopping`` is set: no answer within
    :data:`PROBE_TIMEOUT_S`, or an error, is a failure of ``health``; an answer, its end."""
    while not stopping.is_set():
        sent = health.clock()
        try:
            await asyncio.wait_for(redis.ping(), PROBE_TIMEOUT_S)
        except asyncio.TimeoutError:  # down since the PING went unanswered
            health.failure(TimeoutError(f"no answer within {PROBE_TIMEOUT_S:.0f}s"), "probing", sent)
        except REDIS_DOWN as exc:
            health.failure(exc, "probing")
        else:
            health.ok()
        healthy()
        await wait_set(stopping, PROBE_EVERY_S)


def log_down(event: RedisDown) -> None:
    log.warning("Redis unavailable while %s (%s); retrying with backoff", event.doing, event.error)


def log_up(event: RedisUp) -> None:
    log.warning("Redis is back after %.1fs", event.down_for)


class OutageFold:
    """Actor mode: one "unavailable" line and one "back" line per outage for the whole worker,
    however many of its actors see it (each actor is its own consumer with its own connections,
    and would report each outage itself).

    Fed every actor's :class:`RedisDown` / :class:`RedisUp` with the time it happened, in time
    order (:meth:`see`): an outage starts with the first actor down and ends when the last one
    is back, after the longest time any was down. An actor that notices only after the others
    are back (it was idle) reopens the same outage, as a stale pooled connection does in
    :class:`RedisHealth`: within :data:`INCIDENT_WINDOW_S` of the last "back", it is a new
    outage only once it lasts :data:`CONFIRM_S` (:meth:`tick`). An actor restarted meanwhile is
    :meth:`forget`-ten (no "back" will come from it)."""

    def __init__(self, emit: Callable[[Event], None] | None = None) -> None:
        self.emit = emit or _ignore
        self.down: dict[int, float] = {}  # actor -> when it went down
        self.longest = 0.0
        self.back_at: float | None = None
        self.reported = False  # the current outage has its "unavailable" line
        self._first: RedisDown | None = None  # the current outage's first event

    def see(self, actor: int, at: float, event: Event) -> None:
        if isinstance(event, RedisDown):
            if not self.down:
                self.longest = 0.0
                self.reported = False
                self._first = event
            self.down.setdefault(actor, at)
            if not self.reported and (self.back_at is None or at - self.back_at >= INCIDENT_WINDOW_S):
                self._report()
        elif isinstance(event, RedisUp):
            self._back(actor, at, event.down_for)

    def tick(self, now: float) -> None:
        """Report a reopened outage that has lasted :data:`CONFIRM_S`."""
        if self.down and not self.reported and now - min(self.down.values()) >= CONFIRM_S:
            self._report()

    def forget(self, actor: int, now: float) -> None:
        self._back(actor, now, 0.0)

    def _report(self) -> None:
        assert self._first is not None
        self.reported = True
        log_down(self._first)
        self.emit(self._first)

    def _back(self, actor: int, at: float, down_for: float) -> None:
        if self.down.pop(actor, None) is None:
            return
        self.longest = max(self.longest, down_for)
        if not self.down:
            self.back_at = at
            if not self.reported and self.longest >= CONFIRM_S:  # reopened, began and ended
                self._report()  # between two looks, but long enough to be an outage of its own
            if self.reported:
                up = RedisUp(self.longest)
                log_up(up)
                self.emit(up)


def _ignore(_: Event) -> None:
    return None
