"""The overview, sampled: :func:`~streamtasks.observe.inspect.gather_status` (the numbers of
``streamtasks status --json``) every ``interval`` seconds, plus what one sample cannot say:

* entries/s in and out per stream, from two samples: *in* is the change of
  ``entries_read + lag`` (every entry ever added), *out* the change of
  ``entries_read - pending`` (delivered and settled: acked or dead-lettered);
* a short history of both for the sparklines;
* workers that were seen and whose heartbeat is gone: ``dead`` (a kill -9, a lost host) or
  ``stopped`` (its last heartbeat said it was draining), kept for :data:`FORGET_AFTER_S`;
  a consumer holding pending entries with no heartbeat is ``dead`` too;
* the health of the services that panels report (PostgreSQL from the adserving panel) and
  of Ray when this process is a Ray driver (the worker's ``--dashboard-port``).

Pages get the latest sample (:meth:`Sampler.current`) with its ``age``, marked ``stale`` when
no new one came for :attr:`Sampler.stale_after` seconds (the sampler failing, or a sample
hanging on a Redis that does not answer: each is cut off after :data:`SAMPLE_TIMEOUT_S`), with
the sampler's last ``error``; the event stream (SSE) pushes each new one, and the stale marker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio import Redis

from ...aio import cancel_and_wait
from ...logs import redact
from ...worker.executors import Cluster
from ..inspect import gather_status
from .config import Targets

log = logging.getLogger("streamtasks.dashboard")

#: Samples kept per stream for the sparklines.
HISTORY = 120
#: A worker whose heartbeat vanished stays on the page (dead or stopped) this long.
FORGET_AFTER_S = 600.0
#: A sample that takes longer than this is given up (and the sampler reports the failure).
SAMPLE_TIMEOUT_S = 10.0
#: The latest sample is stale after this many intervals without a new one (at least
#: :data:`STALE_MIN_S` seconds).
STALE_INTERVALS = 3
STALE_MIN_S = 2.0
#: States of a worker whose heartbeat vanished after a clean stop.
STOPPING_STATES = ("draining", "stopped")

HealthProbe = Callable[[], Awaitable[tuple[str, dict[str, Any]]]]


class WorkerBook:
    """Workers seen by heartbeat, and what became of those whose heartbeat is gone."""

    def __init__(self, forget_after: float = FORGET_AFTER_S) -> None:
        self.forget_after = forget_after
        self._seen: dict[str, dict[str, Any]] = {}

    def update(
        self, live: Sequence[dict[str, Any]], dead_consumers: Sequence[dict[str, Any]], now: float
    ) -> list[dict[str, Any]]:
        alive = {w["consumer"] for w in live}
        for w in live:
            beat_at = now - (w.get("heartbeat_age") or 0.0)
            self._seen[w["consumer"]] = {
                **w,
                "state": w.get("state") or "reading",
                "last_seen": now,
                "beat_at": beat_at,
            }
        for name, w in list(self._seen.items()):
            if name in alive:
                continue
            if w["state"] not in ("dead", "stopped"):
                w.update(state="stopped" if w["state"] in STOPPING_STATES else "dead", in_flight=None)
            w["heartbeat_age"] = now - w["beat_at"] if w.get("beat_at") is not None else None
            if now - w["last_seen"] > self.forget_after:
                del self._seen[name]
        for c in dead_consumers:
            if c["consumer"] not in self._seen:
                self._seen[c["consumer"]] = {
                    "consumer": c["consumer"],
                    "host": None,
                    "pid": None,
                    "streams": [c["stream"]],
                    "in_flight": None,
                    "state": "dead",
                    "failing_loops": [],
                    "heartbeat_age": None,
                    "last_seen": now,
                    "beat_at": None,
                }
        return sorted(self._seen.values(), key=lambda w: (w["state"] == "dead", str(w["consumer"])))


class Sampler:
    """Samples the overview every ``interval`` seconds while it runs; see the module docstring."""

    def __init__(
        self,
        redis: Redis,
        targets: Targets,
        *,
        interval: float = 1.0,
        probes: Sequence[HealthProbe] = (),
        history: int = HISTORY,
        cluster: Cluster | None = None,
    ) -> None:
        self.cluster = cluster  # the Ray of the worker this dashboard runs in, if it does
        self.woken = False  # set by wake(): waiters return at once (the server closes)
        self.redis, self.targets, self.interval = redis, targets, interval
        self.probes = list(probes)
        self.workers = WorkerBook()
        self.latest: dict[str, Any] | None = None
        self.version = 0
        #: Seconds without a new sample after which the latest is marked stale.
        self.stale_after = max(STALE_MIN_S, STALE_INTERVALS * interval)
        #: Why the last attempt to sample failed (None once one succeeds again), and since when.
        self.error: str | None = None
        self._stale_since: float | None = None
        self._history: dict[str, deque[tuple[float, float | None, float | None]]] = {}
        self._totals: dict[str, tuple[float, int | None, int | None]] = {}
        self._size = history
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def sample(self) -> dict[str, Any]:
        """Take one sample now (and publish it)."""
        async with self._lock:
            status = await asyncio.wait_for(
                gather_status(
                    self.redis,
                    list(self.targets.streams),
                    self.targets.group,
                    dead_letter_streams=self.targets.dead_letter_streams,
                ),
                SAMPLE_TIMEOUT_S,
            )
            now = status["checked_at"]
            for s in status["streams"]:
                self._rates(s, now)
            status["workers"] = self.workers.update(status["workers"], status["dead_consumers"], now)
            status["services"] = await self._services(status)
            self.latest = status
            self.version += 1
            self.error = None
        async with self._changed:
            self._changed.notify_all()
        return status

    async def view(self) -> dict[str, Any]:
        """:meth:`current`, after taking the first sample if there is none yet."""
        if self.latest is None:
            await self.sample()
        found = self.current()
        assert found is not None
        return found

    def current(self, now: float | None = None) -> dict[str, Any] | None:
        """The latest sample with ``sample``: its ``age`` in seconds, ``stale`` (no new sample
        for :attr:`stale_after` seconds, or the last attempt failed) and the sampler's
        ``error``."""
        if self.latest is None:
            return None
        age = max(0.0, (time.time() if now is None else now) - self.latest["checked_at"])
        stale = age > self.stale_after or self.error is not None
        return {**self.latest, "sample": {"age": age, "stale": stale, "error": self.error}}

    def _rates(self, s: dict[str, Any], now: float) -> None:
        read, lag, pending = s["entries_read"], s["lag"], s["pending"]
        if read is None and s["last_delivered_id"] == "0-0":
            read = 0  # a group that has read nothing yet (Redis says nil)
        added = read + lag if read is not None and lag is not None else None
        done = read - pending if read is not None and pending is not None else None
        before = self._totals.get(s["stream"])
        rate_in = rate_out = None
        if before is not None and now > before[0]:
            span = now - before[0]
            if added is not None and before[1] is not None:
                rate_in = max(0.0, (added - before[1]) / span)
            if done is not None and before[2] is not None:
                rate_out = max(0.0, (done - before[2]) / span)
        self._totals[s["stream"]] = (now, added, done)
        hist = self._history.setdefault(s["stream"], deque(maxlen=self._size))
        hist.append((now, rate_in, rate_out))
        s["rate_in"], s["rate_out"] = rate_in, rate_out
        s["history"] = {"t": [h[0] for h in hist], "in": [h[1] for h in hist], "out": [h[2] for h in hist]}

    async def _services(self, status: dict[str, Any]) -> dict[str, Any]:
        services: dict[str, Any] = {
            "redis": {
                "health": "healthy" if status["redis"]["ok"] else "unhealthy",
                "version": status["redis"]["version"],
                "error": status["redis"]["error"],
            }
        }
        for probe in self.probes:
            try:
                name, health = await probe()
            except Exception as exc:  # a probe reports, it never breaks the overview
                name, health = (
                    getattr(probe, "__name__", "probe"),
                    {"health": "unhealthy", "error": redact(str(exc))},
                )
            services[name] = health
        services["ray"] = await ray_health(status["workers"], self.cluster)
        return services

    async def next_after(self, version: int, timeout: float) -> dict[str, Any] | None:
        """The first sample newer than ``version`` (``None`` after ``timeout`` seconds)."""
        async with self._changed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.version > version or self.woken), timeout
                )
        return self.latest if self.version > version else None

    async def wake(self) -> None:
        """Wake every :meth:`next_after` waiter, now and from now on (the server closes): it
        returns None unless a sample is newer."""
        self.woken = True
        async with self._changed:
            self._changed.notify_all()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="dashboard-sampler")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.sample()
            except Exception as exc:  # gather_status reports Redis outages itself
                self._failed(exc)
            else:
                self._recovered()
            await asyncio.sleep(max(0.05, self.interval - (time.monotonic() - started)))

    def _failed(self, exc: Exception) -> None:
        """Note why sampling failed; logged once (with the traceback) until it succeeds again."""
        timed_out = isinstance(exc, asyncio.TimeoutError)
        error = f"sampling took longer than {SAMPLE_TIMEOUT_S:g}s" if timed_out else None
        first = self.error is None
        self.error = redact(error or f"{type(exc).__name__}: {exc}")
        if first:
            log.error(
                "dashboard sample failed: %s (the pages show the last sample, marked stale)",
                self.error,
                exc_info=exc,
            )
            self._stale_since = time.monotonic()

    def _recovered(self) -> None:
        if self._stale_since is not None:
            log.info("dashboard sampling recovered after %.1fs", time.monotonic() - self._stale_since)
            self._stale_since = None


async def ray_health(
    workers: Sequence[dict[str, Any]] = (), cluster: Cluster | None = None
) -> dict[str, Any]:
    """Ray's resources as the worker this dashboard runs in sees them (``cluster``), else as
    the live workers' heartbeats report them; the dashboard never starts Ray."""
    found = None if cluster is None else await asyncio.to_thread(cluster.resources)
    if found is not None:
        return {
            "health": "healthy",
            "cluster_resources": dict(found["total"]),
            "available_resources": dict(found["available"]),
        }
    seen = [w["ray"] for w in workers if w.get("ray") and w.get("state") not in ("dead", "stopped")]
    if seen:
        return {
            "health": "healthy",
            "note": f"reported by {len(seen)} live worker(s)",
            "cluster_resources": seen[0].get("total"),
            "available_resources": seen[0].get("available"),
        }
    return {
        "health": "unknown",
        "note": "no live worker reports Ray, and this process is not connected to it",
    }
