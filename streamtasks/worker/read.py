"""Reading: consumer groups and ``XREADGROUP``.

One ``XREADGROUP`` serves every lane with room for another batch. Entries stay the flat
``[name, value, ...]`` lists hiredis returns (a client without redis-py's reply parser), with
no per-entry dict on the hot path. A missing group (Redis restarted without persistence, or
the group was deleted) is recreated just after the last entry this worker read
(:func:`restart_point`), so nothing added since is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from redis import exceptions as rx
from redis.asyncio import Redis

from ..redisutil import id_key, text
from .gaps import read_counter_at_start
from .lanes import Lane
from .run import RawEntry

log = logging.getLogger("streamtasks.worker")

#: XREADGROUP block (seconds) while some stream is left out of the read because its lane is
#: full: the read returns soon enough to pick that stream up again when a batch finishes.
BUSY_BLOCK = 0.005
#: Pause after recreating groups, so a read loop that keeps hitting NOGROUP cannot spin.
RECREATE_PAUSE_S = 0.05


def restart_point(last_generated: str | None, last_read: str | None) -> tuple[str, bool]:
    """Where to recreate a lost group, and whether the stream itself was lost.

    ``last_generated`` is the stream's ``last-generated-id`` (None: no such stream);
    ``last_read`` the newest id this worker read (None: it read nothing)."""
    if last_generated is None:
        return "0", True
    if last_read is None:
        return "0", False
    if id_key(last_generated) >= id_key(last_read):
        return last_read, False
    return "0", True  # ids went backwards: a new stream under the old name


def read_plan(lanes: Sequence[Lane], all_lanes: int, block: float) -> tuple[int, float]:
    """COUNT and BLOCK (seconds) of one XREADGROUP over ``lanes``.

    While a busy stream is left out (its lane is full), block only briefly: its capacity may
    free up any moment, and a long block on the idle streams would starve it."""
    count = max(lane.batch_size for lane in lanes)
    return count, block if len(lanes) == all_lanes else min(block, BUSY_BLOCK)


class Reader:
    """Groups and reads for one consumer of one group."""

    def __init__(self, redis: Redis, group: str, consumer: str, lanes: Mapping[str, Lane]) -> None:
        self.redis = redis
        self.group = group
        self.consumer = consumer
        self.lanes = lanes
        self._client = Redis(connection_pool=redis.connection_pool)
        self._client.response_callbacks.pop("XREADGROUP", None)

    async def ensure_groups(self) -> None:
        for lane in self.lanes.values():
            with contextlib.suppress(rx.ResponseError):  # BUSYGROUP: it exists
                read = await read_counter_at_start(self.redis, lane.stream)  # trims stay visible
                await self.redis.xgroup_create(lane.stream, self.group, "0", True, entries_read=read)
            # Size the first read from the newest entry, so a backlog of big entries is not
            # read a full count at a time before the lane has measured them.
            newest: Any = await self.redis.xrevrange(lane.stream, count=1)
            if newest:
                lane.sample_size([(text(newest[0][0]), _flat(newest[0][1]), 1)])

    async def read(self, lanes: Sequence[Lane], block: float) -> dict[Lane, list[RawEntry]]:
        """One XREADGROUP over ``lanes``; entries by lane. Raises Redis' errors, except that a
        missing group is recreated (and nothing is returned this time)."""
        count, block = read_plan(lanes, len(self.lanes), block)
        try:
            response = await self._client.xreadgroup(
                self.group,
                self.consumer,
                {lane.stream: ">" for lane in lanes},
                count=count,
                block=max(1, int(block * 1000)),
            )
        except rx.ResponseError as exc:
            # NOGROUP: the group is gone; UNBLOCKED: the stream was deleted while we waited.
            if not str(exc).startswith(("NOGROUP", "UNBLOCKED")):
                raise
            await self.recreate_groups()
            return {}
        reply: Any = response
        streams = reply.items() if isinstance(reply, dict) else reply or ()  # RESP3 / RESP2
        out: dict[Lane, list[RawEntry]] = {}
        for raw_stream, entries in streams:
            if entries:
                out[self.lanes[text(raw_stream)]] = [(i.decode(), f, 1) for i, f in entries]
        return out

    async def recreate_groups(self) -> None:
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
                self.group, lane.stream, cause, start, len(lane.held),
                extra={"stream": lane.stream, "consumer": self.consumer, "group": self.group},
            )  # fmt: skip
        await asyncio.sleep(RECREATE_PAUSE_S)

    async def _last_generated(self, stream: str) -> str | None:
        try:
            info: dict[Any, Any] = await self.redis.xinfo_stream(stream)
        except rx.ResponseError:
            return None  # no such stream
        return text(info.get("last-generated-id") or info.get(b"last-generated-id") or b"0-0")


def _flat(fields: Any) -> list[bytes]:
    if not fields:
        return []
    return [b for kv in fields.items() for b in kv] if isinstance(fields, dict) else list(fields)
