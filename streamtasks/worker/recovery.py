"""Recovery: reclaim what dead consumers left pending, and renew the leases of what we hold.

* Reclaim: ``XAUTOCLAIM`` entries idle past the visibility timeout (their consumer died, or a
  retry's delay is over) and run them again; an entry delivered past its policy's limit is
  dead-lettered without running; ids Redis no longer has are reported as lost.
* Lease: every held entry's idle time is reset well before the visibility timeout, so a slow
  batch is never reclaimed (and run twice) while it still runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping

from redis import exceptions as rx
from redis.asyncio import Redis

from .. import lua
from ..aio import wait_set
from ..logs import LOGGED_IDS
from ..redisutil import REDIS_DOWN, text
from ..retry import Dead
from .dispatch import Dispatcher
from .events import Event, Lost, Reclaimed
from .flow import Flows
from .health import RedisHealth
from .lanes import Lane
from .pending import PendingEntries
from .run import BatchResult, RawEntry

log = logging.getLogger("streamtasks.worker")


def split_exhausted(lane: Lane, entries: list[RawEntry]) -> tuple[list[RawEntry], list[RawEntry]]:
    """(to run again, over the delivery limit) by the lane's retry policy."""
    fresh: list[RawEntry] = []
    exhausted: list[RawEntry] = []
    for entry in entries:
        (exhausted if lane.spec.retry.over_delivery_limit(entry[2]) else fresh).append(entry)
    return fresh, exhausted


class Reclaimer:
    """Claims entries idle past the visibility timeout, for one consumer."""

    def __init__(
        self,
        redis: Redis,
        group: str,
        consumer: str,
        visibility_ms: int,
        dispatcher: Dispatcher,
        emit: Callable[[Event], None],
        start: Callable[[], None],
    ) -> None:
        self.group = group
        self.consumer = consumer
        self.visibility_ms = visibility_ms
        self.dispatcher = dispatcher
        self.emit = emit
        self.start = start  # dispatch now: the read loop may be blocked on XREADGROUP a while
        self._script = redis.register_script(lua.RECLAIM)
        #: Set to reclaim now instead of after the pause (entries were just handed over, or a stop).
        self.due = asyncio.Event()

    async def reclaim_all(self, lanes: Iterable[Lane], health: RedisHealth) -> bool:
        """:meth:`reclaim` every lane, Redis outages waited out; True if one may have more."""
        more = False
        for lane in lanes:
            try:
                more |= await self.reclaim(lane)
                health.ok()
            except REDIS_DOWN as exc:
                await health.failed(exc, "reclaiming")
            except rx.ResponseError as exc:
                if "NOGROUP" not in str(exc):  # NOGROUP: the read loop recreates the group
                    raise
        return more

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less if :attr:`due` is set."""
        await wait_set(self.due, seconds)
        self.due.clear()

    async def reclaim(self, lane: Lane) -> bool:
        """Claim entries of ``lane``; True if a full page came back (more may be waiting)."""
        want = lane.free_batches * lane.batch_size
        if want <= 0:
            return False
        cursor, entries, counts, deleted = await self._script(
            keys=[lane.stream], args=[self.group, self.consumer, self.visibility_ms, lane.cursor, want]
        )
        lane.cursor = text(cursor)
        if deleted:
            log.error(
                "%d pending entries of %s were trimmed or deleted before being handled",
                len(deleted),
                lane.stream,
                extra={
                    "stream": lane.stream,
                    "consumer": self.consumer,
                    "group": self.group,
                    "entry_ids": [text(i) for i in deleted[:LOGGED_IDS]],
                },
            )
            self.emit(Lost(lane.stream, lane.spec.name, len(deleted), "pending entries trimmed or deleted"))
        claimed = [
            (raw_id.decode(), raw or [], int(n)) for (raw_id, raw), n in zip(entries, counts, strict=True)
        ]
        fresh, exhausted = split_exhausted(lane, claimed)
        if exhausted:
            dead = Dead(lane.spec.retry.delivery_limit_error())
            result = BatchResult(len(exhausted), dict.fromkeys(range(len(exhausted)), dead))
            await self.dispatcher.settle(lane, exhausted, result)
        if fresh:
            self.emit(Reclaimed(lane.stream, lane.spec.name, len(fresh)))
            lane.accept(fresh)
            self.start()
        return len(entries) >= want


class Leases:
    """Renews the lease (idle time) of every held entry before the visibility timeout, and the
    concurrency slots running batches hold (:meth:`Flows.renew`), which expire after it too."""

    def __init__(
        self,
        pending: PendingEntries,
        visibility_timeout: float,
        health: RedisHealth,
        flows: Flows | None = None,
    ) -> None:
        self.pending = pending
        self.period = visibility_timeout / 3
        self.health = health
        self.flows = flows

    async def renew(self, lanes: Mapping[str, Lane]) -> None:
        for lane in lanes.values():
            async with lane.lease_lock:  # not between a batch's settlement and its release
                stale = lane.stale(time.monotonic(), self.period)
                if not stale:
                    continue
                try:
                    await self.pending.reset(lane.stream, stale, idle_ms=0)
                except REDIS_DOWN as exc:
                    await self.health.failed(exc, "renewing leases")
                    continue
                except rx.ResponseError as exc:
                    if "NOGROUP" not in str(exc):  # NOGROUP: the read loop recreates the group
                        raise
                    continue
                lane.renewed(stale, time.monotonic())
        if self.flows is not None:
            await self.flows.renew()
