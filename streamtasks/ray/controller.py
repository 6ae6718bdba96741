"""How many actors each group of handlers has: decided (``--actors auto``), made so, and told.

Every :attr:`~streamtasks.scaling.Autoscale.every` seconds, per group of handlers (those that
share their Ray options: :mod:`.placement`), the controller

* **looks**: the group's backlog in Redis (:mod:`streamtasks.backlog`: lag, pending, oldest
  pending age, summed over its streams), what its actors settled so far (the pool's tally,
  which their reports feed) and how many of them read;
* **decides** with the pure rule of :mod:`streamtasks.scaling` (one log line when the number
  changes, with its reason);
* **applies** it: a new actor asks Ray for its resources (an autoscaler such as KubeRay adds
  a node when the cluster has none left; an actor Ray cannot place counts as *starting*, not
  running, and is said after :data:`PLACE_WARN_S`); a removed actor is stopped the graceful
  way (:meth:`~streamtasks.ray.slots.Actors.remove`), actors not placed yet first, then the
  newest;
* **tells**: the pool's snapshot (``/metrics``: ``streamtasks_actors{state=...}``) and a key
  of its own in Redis (``keys.actors_key``, refreshed like a heartbeat), which ``status`` and
  the dashboard read.

With a fixed ``--actors N`` it only tells.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence

from attrs import define, field
from redis.asyncio import Redis

from .. import keys
from ..aio import wait_set
from ..backlog import NOTHING, Backlog, backlog
from ..redisutil import REDIS_DOWN
from ..scaling import Autoscale, Observation, Scaler, decide
from ..worker.events import ActorGroupState
from ..worker.settings import WorkerSettings
from ..worker.tally import Tally
from .reports import Reports
from .slots import ActorGroup, Actors, Slot

log = logging.getLogger("streamtasks.worker")

#: Seconds after which an actor Ray has not started is said (once).
PLACE_WARN_S = 30.0


@define
class GroupScale:
    """One group of handlers' actors: the bounds, the rule's memory, the last reason."""

    group: ActorGroup
    low: int
    most: int
    scaler: Scaler | None  # None: a fixed number
    reason: str = ""
    warned: set[int] = field(factory=set)  # actors said not to be placed


class Controller:
    """The actors of every group of handlers of one pool."""

    def __init__(
        self,
        redis: Redis,
        actors: Actors,
        reports: Reports,
        tally: Tally,
        settings: WorkerSettings,
        autoscale: Autoscale | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis, self.actors, self.reports, self.tally = redis, actors, reports, tally
        self.autoscale = autoscale
        self.groups: list[GroupScale] = []
        self.clock = clock
        self.every = autoscale.every if autoscale is not None else settings.heartbeat_interval
        self.ttl = max(1, int(settings.heartbeat_ttl))
        self.group_name = self.consumer = self.key = ""
        self.host, self.pid = socket.gethostname(), os.getpid()

    def start(self, group_name: str, consumer: str, groups: Sequence[tuple[ActorGroup, int]]) -> None:
        """Make each group's first actors (``count``: the fixed number, or the default number
        that bounds ``--actors auto`` when no ``--max-actors`` is given)."""
        self.group_name, self.consumer = group_name, consumer
        self.key = keys.actors_key(group_name, consumer)
        auto, now = self.autoscale, self.clock()
        for group, count in groups:
            if auto is None:
                gs = GroupScale(group, count, count, None, f"fixed at {count}")
            else:
                most = auto.max if auto.max is not None else max(auto.min, count)
                gs = GroupScale(group, auto.min, most, Scaler.start(auto.min, now), f"starting at {auto.min}")
            self.groups.append(gs)
            for _ in range(gs.low):  # the pool says if these are not placed (it is not ready)
                gs.warned.add(self.actors.add(group).index)

    async def run(self, stopping: asyncio.Event, healthy: Callable[[], None]) -> None:
        while not stopping.is_set():
            for gs in self.groups:
                with contextlib.suppress(*REDIS_DOWN):  # an outage: the actors report it
                    await self.tick(gs)
                self._say_unplaced(gs)
            with contextlib.suppress(*REDIS_DOWN):
                await self.publish()
            healthy()
            await wait_set(stopping, self.every)

    async def tick(self, gs: GroupScale) -> None:
        if gs.scaler is None or self.autoscale is None:
            return
        obs = await self.observe(gs)
        decision, gs.scaler = decide(self.autoscale, gs.most, gs.scaler, obs)
        if decision.changed:
            gs.reason = decision.reason
            log.info(
                "actors of %s: %s",
                gs.group.label,
                decision.reason,
                extra={"streams": gs.group.registry.streams, "desired": decision.desired},
            )
            await self.apply(gs, decision.desired)
        else:
            log.debug("actors of %s: %s", gs.group.label, decision.reason)

    async def observe(self, gs: GroupScale) -> Observation:
        registry = gs.group.registry
        total: Backlog = NOTHING
        for stream in registry.streams:
            total = total.plus(await backlog(self.redis, stream, registry.group))
        processed = 0
        for stream, spec in registry.handlers.items():
            lane = self.tally.lane(stream, spec.name)
            processed += lane.handled + lane.dead
        running = sum(1 for s in self._live(gs) if self.reports.reading(s.index))
        return Observation(
            self.clock(), total.undelivered, total.pending, total.oldest_age, processed, running
        )

    async def apply(self, gs: GroupScale, desired: int) -> None:
        live = self._live(gs)
        for _ in range(desired - len(live)):
            self.actors.add(gs.group)
        extra = len(live) - desired
        if extra > 0:  # the ones Ray has not placed first, then the newest
            order = sorted(live, key=lambda s: (self.reports.reading(s.index), -s.index))
            for slot in order[:extra]:
                await self.actors.remove(slot)

    def _live(self, gs: GroupScale) -> list[Slot]:
        return [s for s in self.actors.of(gs.group) if not s.stopping]

    def _say_unplaced(self, gs: GroupScale) -> None:
        now = self.clock()
        late = [
            s.index
            for s in self._live(gs)
            if not self.reports.reading(s.index)
            and now - s.created_at > PLACE_WARN_S
            and s.index not in gs.warned
        ]
        if late:
            gs.warned.update(late)
            log.warning(
                "actors %s of %s not running after %.0fs (can Ray place them? %s); counted as "
                "starting, not running",
                ", ".join(map(str, late)),
                gs.group.label,
                PLACE_WARN_S,
                gs.group.asks,
            )

    def states(self) -> tuple[ActorGroupState, ...]:
        """What each group's actors are now (the pool's snapshot)."""
        out = []
        for gs in self.groups:
            live = self._live(gs)
            running = sum(1 for s in live if self.reports.reading(s.index))
            desired = gs.scaler.desired if gs.scaler is not None else gs.low
            auto = gs.scaler is not None
            out.append(
                ActorGroupState(
                    tuple(gs.group.registry.streams),
                    desired,
                    running,
                    len(live) - running,
                    gs.low if auto else None,
                    gs.most if auto else None,
                    gs.reason,
                )
            )
        return tuple(out)

    async def publish(self) -> None:
        """The actors key: what ``status`` and the dashboard show of this pool's actors."""
        if not self.key:
            return
        body = {
            "consumer": self.consumer,
            "group": self.group_name,
            "host": self.host,
            "pid": self.pid,
            "ts": time.time(),
            "auto": self.autoscale is not None,
            "groups": [state.as_json() for state in self.states()],
        }
        await self.redis.set(self.key, json.dumps(body), ex=self.ttl)

    async def unpublish(self) -> None:
        if self.key:
            with contextlib.suppress(*REDIS_DOWN):
                await self.redis.delete(self.key)
