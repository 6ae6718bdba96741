"""The facade's read side: system status and model statistics (plain data, no formatting).

:func:`system_status` joins the Redis picture (:func:`streamtasks.observe.inspect.gather_status`)
with PostgreSQL's and Ray's health; :func:`model_stats` adds a model's dead letters to the
database's numbers (:func:`.modelstats.model_performance_stats`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from redis.asyncio import Redis

from .. import keys
from ..deadletter import PACKED_FIELDS, DeadLetter
from ..logs import redact
from ..observe.inspect import gather_status
from ..registry import Registry
from ..worker.executors import Cluster
from . import db, modelstats

#: Dead letters scanned (newest first) to count a model's dead letters in the stats.
DEAD_LETTER_SCAN_LIMIT = 100_000


async def system_status(
    redis: Redis,
    registry: Registry,
    streams: Sequence[str],
    database: Any,
    *,
    producer: Mapping[str, Any],
    local_workers: int,
    cluster: Cluster | None = None,
) -> dict[str, Any]:
    """Health of Redis, PostgreSQL (``database``: a pool or a DSN) and Ray, per stream
    numbers and the live workers. Never raises for a service being down."""
    status: dict[str, Any] = {"checked_at": time.time()}
    redis_status = await gather_status(
        redis,
        list(streams),
        registry.group,
        dead_letter_streams={s: spec.dead_letter_stream for s, spec in registry.handlers.items()},
    )
    status["producer"] = {
        "health": "healthy" if redis_status["redis"]["ok"] else "unhealthy",
        **producer,
        "error": redis_status["redis"].get("error"),
    }
    status["database"] = await db.database_health(database)
    status["ray"] = await asyncio.to_thread(ray_status, cluster)
    status["streams"] = {s["stream"]: s for s in redis_status["streams"]}
    status["workers"] = {
        "local": local_workers,
        "alive": redis_status["workers"],
        "dead_consumers": redis_status["dead_consumers"],
    }
    status["problems"] = redis_status["problems"]
    status["ok"] = bool(redis_status["ok"]) and status["database"].get("health") == "healthy"
    return status


async def model_stats(
    pool: Any, redis: Redis, registry: Registry, model_name: str, hours: float
) -> dict[str, Any]:
    """The database's numbers for ``model_name`` over ``hours``, plus its dead letters."""
    stats = await modelstats.model_performance_stats(pool, model_name, hours)
    stats["dead_letters"] = await dead_letters_of(redis, registry, model_name, stats["since"])
    return stats


async def dead_letters_of(redis: Redis, registry: Registry, model_name: str, since: datetime) -> int:
    """Dead letters of ``model_name`` dead-lettered since ``since`` (newest first, at most
    :data:`DEAD_LETTER_SCAN_LIMIT` per stream)."""
    since_ms = max(0, int(since.timestamp() * 1000))  # the window never starts before 1970
    wanted = model_name.encode()
    count = 0
    for spec in registry.handlers.values():
        entries: Any = await redis.xrevrange(
            spec.dead_letter_stream, max="+", min=str(since_ms), count=DEAD_LETTER_SCAN_LIMIT
        )
        count += sum(1 for dead_id, fields in entries if _dead_model(dead_id, fields) == wanted)
    return count


def _dead_model(dead_id: bytes, fields: dict[bytes, bytes]) -> bytes | None:
    """The ``model_name`` of a dead letter's entry (parsing only a letter with packed fields)."""
    name = keys.DEAD_FIELD_PREFIX.encode() + b"model_name"
    if name in fields:
        return fields[name]
    if PACKED_FIELDS.encode() in fields:
        return DeadLetter.from_entry(dead_id, fields).fields.get("model_name")
    return None


def ray_status(cluster: Cluster | None) -> dict[str, Any]:
    """Ray's health as the workers started here see it: ``not_started`` before
    ``start_workers``, else ``healthy`` with its resources (blocking: call it in a thread)."""
    try:
        if cluster is None or not cluster.connected():
            return {"health": "not_started"}
        found = cluster.resources()
    except Exception as exc:
        return {"health": "unhealthy", "error": redact(str(exc))}
    if found is None:
        return {"health": "unhealthy", "error": "Ray did not answer"}
    return {
        "health": "healthy",
        "cluster_resources": dict(found["total"]),
        "available_resources": dict(found["available"]),
    }
