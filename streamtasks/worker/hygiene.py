"""Consumer hygiene: consumers of workers and actors that are gone, with nothing pending, are
removed from the group after a grace period, so ``XINFO CONSUMERS`` (and ``status``) do not
grow with every restart.

A consumer is gone when **both** hold: no live heartbeat key (``keys.heartbeat_key``: every
worker and every actor keeps its own fresh, and it expires ~10 s after its process died) and
it has not tried to read for ``consumer_grace`` seconds (``XINFO CONSUMERS`` ``idle``). Idle
time alone never decides: a live consumer of a quiet stream is idle too, but beats. A consumer
with pending entries is never removed (``XGROUP DELCONSUMER`` would drop them): the
visibility timeout's reclaim takes its entries first, and it is removed on a later round.

**Who does it: every worker** (each actor in actor mode), every :data:`HYGIENE_EVERY_S` with
jitter, racing safely. The removal is one Lua script (:data:`streamtasks.lua.FORGET_CONSUMER`)
that looks at the consumer's pending count and idle time and deletes it in the same atomic
step; a second worker racing for the same consumer finds it gone and does nothing. A leader
would need an election and a lock with an expiry (the kind a peer got wrong: taskiq-redis
#131, one kill -9 stopped all reclaiming); the check costs one ``XINFO CONSUMERS`` per stream
per round, and the work needs no coordination. The heartbeat is asked just before the script
(another key: on Redis Cluster in another slot); a worker that started under that name in
between is harmless to delete, since its consumer holds nothing and its next read recreates it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable
from typing import Any

from redis import exceptions as rx
from redis.asyncio import Redis

from .. import keys, lua
from ..aio import wait_set
from ..redisutil import REDIS_DOWN, text
from .health import RedisHealth

log = logging.getLogger("streamtasks.worker")

#: Seconds between two rounds of a worker (each round waits up to half as long again, at random,
#: so the workers of a group do not all look at once), or half the grace period if shorter.
HYGIENE_EVERY_S = 30.0
MIN_EVERY_S = 0.5


def candidates(rows: Iterable[Any], grace_ms: int, me: str) -> list[str]:
    """Consumers (of ``XINFO CONSUMERS`` rows) holding nothing, idle past the grace period;
    never ``me``. A row that does not read as a consumer is skipped."""
    out = []
    for raw in rows:
        try:
            row = {text(k): v for k, v in dict(raw).items()}
            name = text(row["name"])
            idle, pending = int(row["idle"]), int(row["pending"])
        except (KeyError, TypeError, ValueError):
            continue
        if name and name != me and pending == 0 and idle >= grace_ms:
            out.append(name)
    return out


class Hygiene:
    """Removes the group's gone consumers on ``streams``, for the worker ``me``."""

    def __init__(
        self, redis: Redis, group: str, me: str, streams: Iterable[str], grace: float, health: RedisHealth
    ) -> None:
        self.redis, self.group, self.me = redis, group, me
        self.streams = list(streams)
        self.grace_ms = int(grace * 1000)
        self.every = min(HYGIENE_EVERY_S, max(grace / 2, MIN_EVERY_S))
        self.health = health
        self._script = redis.register_script(lua.FORGET_CONSUMER)

    async def run(self, stopping: asyncio.Event, healthy: Callable[[], None]) -> None:
        """A round every :attr:`every` seconds (with jitter) until ``stopping`` is set."""
        while not stopping.is_set():
            try:
                await self.sweep()
                self.health.ok()
            except REDIS_DOWN as exc:
                await self.health.failed(exc, "removing gone consumers")
            healthy()
            await wait_set(stopping, self.every * (1 + random.random() / 2))

    async def sweep(self) -> dict[str, list[str]]:
        """One round; the consumers removed, by stream."""
        removed: dict[str, list[str]] = {}
        for stream in self.streams:
            try:
                rows: Any = await self.redis.xinfo_consumers(stream, self.group)
            except rx.ResponseError:  # NOGROUP / no such key: nothing to look at
                continue
            gone = [c for c in candidates(rows, self.grace_ms, self.me) if not await self._beats(c)]
            done = [c for c in gone if await self._script(keys=[stream], args=[self.group, c, self.grace_ms])]
            if done:
                removed[stream] = done
                log.info(
                    "removed %d consumers of %s with no live worker and nothing pending for over %.0fs: %s",
                    len(done),
                    stream,
                    self.grace_ms / 1000,
                    ", ".join(done),
                    extra={"stream": stream, "group": self.group, "consumers": done},
                )
        return removed

    async def _beats(self, consumer: str) -> bool:
        return bool(await self.redis.exists(keys.heartbeat_key(self.group, consumer)))
