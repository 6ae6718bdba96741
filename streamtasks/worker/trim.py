"""Ack-aware trimming: delete only what every consumer group has delivered and acked.

A group has delivered everything up to its ``last-delivered-id`` and acked all of it except
its pending entries, so every entry below ``min(oldest pending id, just past last-delivered
id)`` is done for that group. The stream is trimmed (``XTRIM MINID``) below the lowest such
bound over *all* its groups (:func:`~streamtasks.streams.trim_point`), and no nearer to now than the retention
(``keep_seconds`` after the XADD). A group that has not read yet holds everything from its
position on; a stream without a group is never trimmed. The rule runs as one Lua script
(:data:`streamtasks.lua.TRIM_ACKED`), so a group created or moved back meanwhile is never
overtaken. Dead-letter streams have no groups: they keep ``dead_letter_retention`` seconds.

:func:`trim_once` serves ``streamtasks trim``; :class:`Trimmer` is the worker's periodic loop
for handlers declared with ``trim_acked_after=S`` (supervised like every loop).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from attrs import frozen
from redis import exceptions as rx
from redis.asyncio import Redis

from .. import lua
from ..aio import wait_set
from ..redisutil import REDIS_DOWN, text
from ..streams import NO_GROUP, RETENTION, cap_id
from .events import Event, Trimmed
from .health import RedisHealth
from .lanes import Lane

log = logging.getLogger("streamtasks.worker")

#: Seconds between two trimming passes of a worker.
TRIM_INTERVAL_S = 1.0


@frozen
class TrimResult:
    stream: str
    removed: int
    minid: str | None
    held_by: str


async def trim_once(
    redis: Redis, stream: str, keep_seconds: float | None, now: float | None = None
) -> TrimResult:
    """Trim ``stream`` once: entries every group acked and older than ``keep_seconds``."""
    now_ms = int((time.time() if now is None else now) * 1000)
    cap = cap_id(now_ms, None if keep_seconds is None else int(keep_seconds * 1000))
    script = redis.register_script(lua.TRIM_ACKED)
    try:
        removed, minid, holder = await script(keys=[stream], args=[cap or ""])
    except rx.ResponseError as exc:
        if "no such key" in str(exc).lower():
            return TrimResult(stream, 0, None, NO_GROUP)
        raise
    held = {"": RETENTION, "*": NO_GROUP}.get(text(holder), text(holder))
    return TrimResult(stream, int(removed), text(minid) or None, held)


async def trim_dead(redis: Redis, stream: str, retention: float, now: float | None = None) -> int:
    """Delete dead letters older than ``retention`` seconds; returns how many."""
    now_ms = int((time.time() if now is None else now) * 1000)
    return int(await redis.xtrim(stream, minid=cap_id(now_ms, int(retention * 1000)), approximate=False))


class Trimmer:
    """The worker's trimming loop over the lanes whose handler asks for it."""

    def __init__(self, redis: Redis, health: RedisHealth, emit: Callable[[Event], None]) -> None:
        self.redis = redis
        self.health = health
        self.emit = emit
        self.held_by: dict[str, str] = {}  # stream -> what held its last trim back

    @staticmethod
    def wanted(lanes: Mapping[str, Lane]) -> bool:
        specs = [lane.spec for lane in lanes.values()]
        return any(s.trim_acked_after is not None or s.dead_letter_retention is not None for s in specs)

    async def run(
        self, lanes: Mapping[str, Lane], stopping: asyncio.Event, healthy: Callable[[], None]
    ) -> None:
        """Trim every :data:`TRIM_INTERVAL_S` until ``stopping`` is set."""
        while not stopping.is_set():
            try:
                await self.trim(lanes)
                self.health.ok()
            except REDIS_DOWN as exc:
                await self.health.failed(exc, "trimming")
            healthy()
            await wait_set(stopping, TRIM_INTERVAL_S)

    async def trim(self, lanes: Mapping[str, Lane]) -> None:
        for lane in lanes.values():
            spec = lane.spec
            if spec.trim_acked_after is not None:
                result = await trim_once(self.redis, spec.stream, spec.trim_acked_after)
                self.held_by[spec.stream] = result.held_by
                if result.removed:
                    self.emit(Trimmed(spec.stream, result.removed, result.held_by))
            if spec.dead_letter_retention is not None:
                removed = await trim_dead(self.redis, spec.dead_letter_stream, spec.dead_letter_retention)
                if removed:
                    self.emit(Trimmed(spec.dead_letter_stream, removed, RETENTION))
