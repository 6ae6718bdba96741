"""The heartbeat key: one JSON body a consumer keeps fresh in Redis, so ``status``, the
metrics and the dashboard of any process see it alive (``keys.heartbeat_key``).

A :class:`Worker` beats for as long as it runs (through its drain, so it shows draining);
an actor pool beats under its own name only while its actors start (each actor's worker then
beats for itself), and deletes its key once they read or a stop comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from redis.asyncio import Redis

from .. import keys
from ..aio import wait_set
from ..redisutil import REDIS_DOWN
from .events import Snapshot
from .executors import Cluster
from .settings import WorkerSettings

#: Seconds between two questions to the cluster about its resources (shown in the heartbeat).
RESOURCES_EVERY_S = 10.0
#: The cluster resources a heartbeat shows.
SHOWN_RESOURCES = ("CPU", "GPU", "memory")


class ClusterSummary:
    """What the heartbeat shows of the cluster's resources: asked at most every
    :data:`RESOURCES_EVERY_S` once known; None until the cluster answers."""

    def __init__(self, cluster: Cluster | None) -> None:
        self.cluster = cluster
        self._value: dict[str, Any] | None = None
        self._at = -RESOURCES_EVERY_S

    async def __call__(self) -> dict[str, Any] | None:
        if self.cluster is None:
            return None
        now = time.monotonic()
        if self._value is None or now - self._at >= RESOURCES_EVERY_S:
            self._value = summary(await asyncio.to_thread(self.cluster.resources))
            self._at = now
        return self._value


def summary(resources: Mapping[str, Mapping[str, float]] | None) -> dict[str, Any] | None:
    """The :data:`SHOWN_RESOURCES` of a cluster's ``{"total": ..., "available": ...}``."""
    if resources is None:
        return None
    total, free = resources["total"], resources["available"]
    return {
        "total": {k: total[k] for k in SHOWN_RESOURCES if k in total},
        "available": {k: free.get(k, 0.0) for k in SHOWN_RESOURCES if k in total},
    }


class Heartbeat:
    """Writes the heartbeat key of ``settings.consumer`` in ``group`` every
    ``settings.heartbeat_interval`` seconds (at once when ``due`` is set: a new state), with a
    time to live of ``settings.heartbeat_ttl``."""

    def __init__(
        self,
        redis: Redis,
        group: str,
        settings: WorkerSettings,
        snapshot: Callable[[], Snapshot],
        cluster: Cluster | None,
    ) -> None:
        self.redis = redis
        self.key = keys.heartbeat_key(group, settings.consumer)
        self.snapshot = snapshot
        self.cluster = ClusterSummary(cluster)
        self.interval = settings.heartbeat_interval
        self.ttl = max(1, int(settings.heartbeat_ttl))
        self.due = asyncio.Event()
        self.host, self.pid = socket.gethostname(), os.getpid()

    async def beat(self, until: Callable[[], bool], healthy: Callable[[], None]) -> None:
        """Write the key until ``until()`` is true, calling ``healthy()`` after each write
        (Redis down: the writer's outages are reported by whoever reads)."""
        while not until():
            body = self.snapshot().heartbeat(self.host, self.pid, time.time())
            body["ray"] = await self.cluster()
            with contextlib.suppress(*REDIS_DOWN):
                await self.redis.set(self.key, json.dumps(body), ex=self.ttl)
            healthy()
            await wait_set(self.due, self.interval)
            self.due.clear()

    async def delete(self) -> None:
        with contextlib.suppress(*REDIS_DOWN):
            await self.redis.delete(self.key)
