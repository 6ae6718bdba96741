"""The loops beside a worker's read loop, each run by its supervisor (logged, visible in
``/readyz`` and ``status``, restarted with backoff when it fails): the heartbeat, the blocking
read's unblock on stop, reclaim, lease renewal, the gap watch, the Redis probe, consumer
hygiene, trimming, and
the delayed-entry mover and periodic ticker (:mod:`.timers`)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import TYPE_CHECKING

from redis import exceptions as rx

from ..redisutil import REDIS_DOWN
from .health import probe

if TYPE_CHECKING:
    from .worker import Worker


class Loops:
    """Starts and runs the background loops of ``worker``; ``stopping`` is its stop event."""

    def __init__(self, worker: Worker, stopping: asyncio.Event) -> None:
        self.w = worker
        self.stopping = stopping

    def start_heartbeat(self) -> None:
        """At once (status sees a starting worker); it beats through the drain."""
        w = self.w
        beat = functools.partial(w.heartbeat.beat, lambda: w.supervisor.closing, self._healthy("heartbeat"))
        w.supervisor.spawn("heartbeat", beat)

    def start(self) -> None:
        """Once the worker reads: every loop but the heartbeat."""
        w = self.w
        spawn = w.supervisor.spawn
        spawn("unblock", functools.partial(w.reader.unblock_when, self.stopping))
        spawn("reclaim", self._reclaim)
        spawn("lease", self._lease)
        spawn("gaps", functools.partial(w.gaps.run, self.stopping.is_set, self._healthy("gaps")))
        spawn("probe", functools.partial(probe, w.redis, w.health, self.stopping, self._healthy("probe")))
        spawn("hygiene", functools.partial(w.hygiene.run, self.stopping, self._healthy("hygiene")))
        if w.trimmer.wanted(w.lanes):
            spawn("trim", functools.partial(w.trimmer.run, w.lanes, self.stopping, self._healthy("trim")))
        w.timers.spawn(w.supervisor, self.stopping)

    def _healthy(self, loop: str) -> functools.partial[None]:
        return functools.partial(self.w.supervisor.healthy, loop)

    async def _reclaim(self) -> None:
        w = self.w
        while not self.stopping.is_set():
            more = await w.reclaimer.reclaim_all(w.lanes.values(), w.health)
            w.supervisor.healthy("reclaim")
            if w.dispatcher.unsettled:
                with contextlib.suppress(*REDIS_DOWN, rx.ResponseError):  # asked again next round
                    await w.dispatcher.settled_elsewhere(w.pending)
            if not more:  # a full page may mean more are waiting: go again at once
                await w.reclaimer.pause(w.settings.reclaim_interval)

    async def _lease(self) -> None:
        # Until the drain is over (the supervisor cancels it): in-flight batches keep their
        # leases through the grace period, so no other worker reclaims and runs them twice.
        w = self.w
        while not w.supervisor.closing:
            await asyncio.sleep(w.leases.period)
            await w.leases.renew(w.lanes)
            w.supervisor.healthy("lease")
