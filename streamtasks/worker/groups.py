"""A worker's consumer groups: created where missing at start (their first read sized from the
newest entry, sharded streams' counts recorded), and recreated after ``NOGROUP`` from the
:func:`~streamtasks.streams.restart_point`, so nothing added since is skipped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from redis import exceptions as rx
from redis.asyncio import Redis

from .. import keys
from ..errors import ConfigError
from ..redisutil import flat_fields, text
from ..streams import restart_point
from .gaps import read_counter_at_start
from .lanes import Lane

log = logging.getLogger("streamtasks.worker")

#: Pause after recreating groups, so a read loop that keeps hitting NOGROUP cannot spin.
RECREATE_PAUSE_S = 0.05


class Groups:
    """The groups of one consumer's lanes."""

    def __init__(
        self, redis: Redis, group: str, consumer: str, lanes: Mapping[str, Lane], cluster: bool
    ) -> None:
        self.redis = redis
        self.group = group
        self.consumer = consumer
        self.lanes = lanes
        self.cluster = cluster

    def check_slots(self) -> None:
        """On Redis Cluster: every lane's scripts name keys of one slot, else ConfigError."""
        if not self.cluster:
            return
        for lane in self.lanes.values():
            others = [lane.spec.dead_letter_stream, keys.failures_key(lane.stream, self.group)]
            others += keys.schedule_keys(lane.stream)
            problem = keys.same_slot_problem(lane.stream, others)
            if problem:
                raise ConfigError(problem)

    async def ensure(self) -> None:
        """Create each lane's group where missing (its read counter kept, so trims stay visible)."""
        self.check_slots()
        await record_shards(self.redis, self.lanes.values())
        for lane in self.lanes.values():
            with contextlib.suppress(rx.ResponseError):  # BUSYGROUP: it exists
                read = await read_counter_at_start(self.redis, lane.stream)  # trims stay visible
                await self.redis.xgroup_create(lane.stream, self.group, "0", True, entries_read=read)
            # Size the first read from the newest entry, so a backlog of big entries is not
            # read a full count at a time before the lane has measured them.
            newest: Any = await self.redis.xrevrange(lane.stream, count=1)
            if newest:
                lane.sample_size([(text(newest[0][0]), flat_fields(newest[0][1]), 1)])

    async def recreate(self) -> None:
        """After NOGROUP: recreate every missing group from its :func:`restart_point`."""
        for lane in self.lanes.values():
            newest = await self._last_generated(lane.stream)
            start, stream_lost = restart_point(newest, lane.last_id)
            try:
                read = await read_counter_at_start(self.redis, lane.stream) if start == "0" else None
                await self.redis.xgroup_create(lane.stream, self.group, start, True, entries_read=read)
            except rx.ResponseError:
                continue  # BUSYGROUP: this one still exists (or another worker beat us)
            read_before, lane.last_id = lane.last_id, None if start == "0" else start
            if stream_lost and newest not in (None, "0-0"):
                cause = (
                    f"Redis came back older: the stream's newest entry is {newest}, below {read_before} "
                    "this worker had read (restarted from an AOF/RDB that lacked acknowledged writes?); "
                    f"entries added after {newest} up to then are gone"
                )
            elif stream_lost:
                cause = "the stream is new: Redis lost it (restart without persistence?)"
            else:
                cause = "the group was deleted (or Redis restarted and the stream was written again since)"
            log.warning(
                "consumer group %s on %s was missing; %s; recreated from %s; %d entries this "
                "worker held are no longer tracked (their acks are no-ops), and entries pending "
                "on other consumers of the old group cannot be recovered",
                self.group,
                lane.stream,
                cause,
                start,
                len(lane.held),
                extra={"stream": lane.stream, "consumer": self.consumer, "group": self.group},
            )
        await asyncio.sleep(RECREATE_PAUSE_S)

    async def _last_generated(self, stream: str) -> str | None:
        try:
            info: dict[Any, Any] = await self.redis.xinfo_stream(stream)
        except rx.ResponseError:
            return None  # no such stream
        return text(info.get("last-generated-id") or info.get(b"last-generated-id") or b"0-0")


async def record_shards(redis: Redis, lanes: Iterable[Lane]) -> None:
    """Record each sharded stream's shard count (``keys.shard_count_key``), so a producer
    not told it still sends a keyed entry to the right shard, never to a stream no worker
    reads. Another count recorded before (a deployment changing it) is logged."""
    counts = {spec.shard_of: spec.shards for spec in (lane.spec for lane in lanes)}
    for stream, count in counts.items():
        if not stream:
            continue
        before = await redis.set(keys.shard_count_key(stream), str(count), get=True)
        if before is not None and text(before) != str(count):
            recorded = text(before)
            log.warning(
                "stream %s was recorded with %s shards; this worker serves %d, and producers "
                "that look the count up now send to %d",
                stream,
                recorded,
                count,
                count,
            )
