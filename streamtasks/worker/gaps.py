"""Gaps: entries Redis removed before the group read them, and a Redis that came back older.

* **Trimmed before delivery.** ``MAXLEN``/``XTRIM`` (or ``XDEL``) can remove entries no consumer
  was given yet. Nothing is pending, so reclaim never sees them, and the group's lag stays
  above what is left to read forever (Redis keeps counting them as unread). From ``XINFO
  STREAM`` (``entries-added``, ``length``, the first and last ids) and ``XINFO GROUPS``
  (``last-delivered-id``, ``entries-read``) :func:`lost_before_delivery` computes how many,
  whenever Redis can tell: while the group's position is before the stream's first entry, or
  at its end. :class:`GapWatch` polls it per lane; the worker that corrects the group's read
  counter (``XGROUP SETID … ENTRIESREAD``, only if the group did not move meanwhile) reports
  the loss, once per incident however many workers watch: a ``Lost`` event
  (``streamtasks_entries_lost_total``) and one log line; the lag then drains.
* **Redis came back older** (restarted from an AOF/RDB that lacks writes it had acknowledged):
  the stream's last id is below the newest id this worker read, or the group delivers ids
  it delivered before. Entries added after the snapshot are gone and acks since are undone
  (what was handled since runs again). :func:`rewind` says so from the ids;
  :meth:`GapWatch.saw` checks every read, :meth:`GapWatch.check` the stream between reads (at
  once when Redis comes back). Logged once per incident with the ids and the time span lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from redis import exceptions as rx
from redis.asyncio import Redis

from .. import lua
from ..aio import wait_set
from ..redisutil import REDIS_DOWN, id_key, text
from ..streams import GroupState, StreamState, lost_before_delivery, rewind
from .events import Event, Lost, RedisUp
from .health import RedisHealth
from .lanes import Lane
from .run import RawEntry

log = logging.getLogger("streamtasks.worker")

#: Seconds between two looks at each stream's position (``WorkerSettings.gap_check_interval``).
CHECK_INTERVAL_S = 5.0


async def read_counter_at_start(redis: Redis, stream: str) -> int | None:
    """``ENTRIESREAD`` for a group created at the start of ``stream``: the entries removed
    before it existed (none of them is its loss). Without it Redis leaves the group's counter
    unknown until its first read, and a trim before that read would go unnoticed. None on a
    Redis without the counter (< 7)."""
    try:
        info: Any = await redis.xinfo_stream(stream)
    except rx.ResponseError:
        return 0  # no such stream: MKSTREAM makes a new one
    state = StreamState.of(info)
    return None if state.entries_added is None else state.entries_added - state.length


def _span(older: str, newer: str) -> str:
    seconds = max(0, id_key(newer)[0] - id_key(older)[0]) / 1000
    return f"{seconds:.1f}s of entries"


class GapWatch:
    """Looks for entries trimmed before delivery, and for a Redis that came back older."""

    def __init__(
        self,
        redis: Redis,
        group: str,
        lanes: Mapping[str, Lane],
        health: RedisHealth,
        emit: Callable[[Event], None],
        interval: float = CHECK_INTERVAL_S,
    ) -> None:
        self.redis = redis
        self.group = group
        self.lanes = lanes
        self.health = health
        self.emit = emit
        self.interval = interval
        self.due = asyncio.Event()  # set when Redis comes back: look at once
        self._repair = redis.register_script(lua.REPAIR_READ_COUNTER)

    def on_event(self, event: Event) -> None:
        if isinstance(event, RedisUp):
            self.due.set()

    def saw(self, lane: Lane, entries: list[RawEntry]) -> None:
        """The read loop got ``entries`` for ``lane``: note the newest id, and say so if Redis
        delivered an id at or below one this worker had already read (it came back older)."""
        first, newest = entries[0][0], entries[-1][0]
        if lane.last_id is not None and id_key(first) <= id_key(lane.last_id):
            log.error(
                "Redis came back older: group %s delivered %s/%s again, though this worker had "
                "already read up to %s (restarted from an AOF/RDB that lacked acknowledged writes?); "
                "entries added after the snapshot are gone from Redis, and what was handled since "
                "is delivered again (only idempotent handlers are safe)",
                self.group,
                lane.stream,
                first,
                lane.last_id,
                extra={"stream": lane.stream},
            )
        lane.last_id = newest

    async def run(self, stopping: Callable[[], bool], healthy: Callable[[], None]) -> None:
        """The loop (run under the worker's supervisor, which ends it on drain): every lane
        each interval, and at once when Redis comes back."""
        while not stopping():
            self.due.clear()
            for lane in self.lanes.values():
                try:
                    await self.check(lane)
                except REDIS_DOWN as exc:
                    await self.health.failed(exc, "checking stream positions")
            healthy()
            await wait_set(self.due, self.interval)

    async def check(self, lane: Lane) -> None:
        """One look at ``lane``'s stream and group."""
        # Taken before asking: every id read by then was delivered before Redis answers
        # XINFO, so a newest id below it means Redis lost it (the read loop may read on meanwhile).
        last_read = lane.last_id
        try:
            groups: Any = await self.redis.xinfo_groups(lane.stream)
            info: Any = await self.redis.xinfo_stream(lane.stream)
        except rx.ResponseError:
            return  # no such stream (yet, or any more): the read loop recreates it
        mine = [g for g in groups if text(g.get("name") or g.get(b"name")) == self.group]
        if not mine:
            return  # NOGROUP: the read loop recreates it
        stream, group = StreamState.of(info), GroupState.of(mine[0])
        if last_read is not None and rewind(last_read, stream.last_generated_id):
            self._report_rewind(lane, last_read, stream.last_generated_id)
            return
        gap = lost_before_delivery(stream, group)
        if not gap or not await self._correct(lane.stream, group, gap):
            return
        # No more can be lost than was ever removed from the stream; the rest is a read counter
        # that drifted (a replica promoted in a failover can carry one behind the stream's).
        lost = min(gap, stream.removed or 0)
        if gap > lost:
            log.warning(
                "group %s's read counter on %s was %d behind what was ever removed from the "
                "stream (a replica promoted in a failover can lag on it): corrected; those "
                "entries were not lost",
                self.group,
                lane.stream,
                gap - lost,
                extra={"stream": lane.stream},
            )
        if lost:
            log.error(
                "%d entries of %s were trimmed or deleted before group %s read them: lost "
                "(the group's read counter is corrected, so its lag can drain)",
                lost,
                lane.stream,
                self.group,
                extra={"stream": lane.stream},
            )
            self.emit(Lost(lane.stream, lane.spec.name, lost, "trimmed or deleted before delivery"))

    async def _correct(self, stream: str, group: GroupState, lost: int) -> bool:
        """Count the lost entries as read, unless the group moved since it was sampled (then
        the next look decides again). True when this worker did it (and so reports it)."""
        read = group.entries_read or 0
        args: list[str | int] = [self.group, group.last_delivered_id, read, read + lost]
        return bool(await self._repair(keys=[stream], args=args))

    def _report_rewind(self, lane: Lane, last_read: str, newest: str) -> None:
        log.error(
            "Redis came back older: the newest entry of %s is %s, but this worker had read up to %s "
            "(restarted from an AOF/RDB that lacked acknowledged writes?); entries added after %s "
            "up to then (%s) are gone from Redis, %d of them still held by this worker (their acks "
            "are no-ops), and acks since the snapshot are undone (those entries run again)",
            lane.stream,
            newest,
            last_read,
            newest,
            _span(newest, last_read),
            sum(1 for i in lane.held if id_key(i) > id_key(newest)),
            extra={"stream": lane.stream},
        )
        if lane.last_id == last_read:  # reported: once per incident (unless it read on meanwhile)
            lane.last_id = newest
