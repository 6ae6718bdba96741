"""Who is there: live workers (their heartbeats), consumer groups and streams, and the shards
of a sharded stream, read straight from Redis."""

from __future__ import annotations

import json
import time
from typing import Any

from redis import exceptions as rx
from redis.asyncio import Redis

from .. import keys
from ..connect import is_cluster
from ..redisutil import text

#: The group of a named stream that has no consumer group at all (``group=None``).
NO_GROUP = ""


async def live_workers(redis: Redis, group: str, *, now: float | None = None) -> list[dict[str, Any]]:
    """The heartbeats of ``group``'s workers (each key expires ~10 s after its worker died).

    ``state`` is what the worker announced: ``starting`` (creating its groups, starting Ray),
    ``reading``, ``draining`` or ``stopped``; a starting worker is alive and will read.
    """
    now = time.time() if now is None else now
    found = [k async for k in redis.scan_iter(match=keys.heartbeat_pattern(group), count=500)]
    values = await _mget(redis, found) if found else []
    workers = []
    for key, value in zip(found, values, strict=True):
        if value is None:  # expired between SCAN and MGET
            continue
        try:
            beat = json.loads(value)
        except ValueError:
            beat = {}
        consumer = beat.get("consumer") or text(key).rsplit(":", 1)[-1]
        ts = beat.get("ts")
        workers.append(
            {
                "consumer": consumer,
                "group": group,
                "state": beat.get("state"),
                "host": beat.get("host"),
                "pid": beat.get("pid"),
                "streams": beat.get("streams", []),
                "in_flight": beat.get("in_flight"),
                "failing_loops": beat.get("failing_loops") or [],
                "ray": beat.get("ray"),
                "heartbeat_age": max(0.0, now - float(ts)) if ts is not None else None,
            }
        )
    return sorted(workers, key=lambda w: str(w["consumer"]))


async def _mget(redis: Redis, found: list[Any]) -> list[Any]:
    if is_cluster(redis):  # heartbeat keys live in many slots
        return list(await redis.mget_nonatomic(found))  # type: ignore[attr-defined]
    return list(await redis.mget(found))


#: ``shards_of`` looks at most this many shards.
MAX_SHARDS = 4096


async def shards_of(redis: Redis, stream: str) -> list[str]:
    """``[stream]`` if that key exists or it has no shards, else its shards
    ``stream:{0}`` ... that exist (a sharded stream's name stands for all of them)."""
    if await redis.exists(stream):
        return [stream]
    found = []
    for i in range(MAX_SHARDS):
        name = keys.shard_stream(stream, i)
        if not await redis.exists(name):
            break
        found.append(name)
    return found or [stream]


async def discover_streams(redis: Redis, group: str) -> list[str]:
    """Streams that have consumer group ``group`` (dead-letter streams excluded)."""
    return [stream for stream, g in await discover_groups(redis) if g == group]


async def discover_groups(redis: Redis) -> list[tuple[str, str]]:
    """Every ``(stream, group)`` pair in this Redis (dead-letter streams excluded), sorted."""
    found: list[tuple[str, str]] = []
    async for raw in redis.scan_iter(count=1000, _type="stream"):
        name = text(raw)
        if name.endswith(":dead"):
            continue
        try:
            groups: Any = await redis.xinfo_groups(name)
        except rx.ResponseError:  # deleted since the scan
            continue
        found.extend((name, text(g.get("name") or g.get(b"name") or "")) for g in groups)
    return sorted(found)


async def actor_pools(
    redis: Redis, group: str, *, now: float | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Actor-mode workers' actors (``keys.actors_key``: written by each pool every few seconds)
    of ``group``, per group of handlers, and one problem line per key that does not read as
    one (written by another program or version: it is left out, never trusted)."""
    now = time.time() if now is None else now
    found = [k async for k in redis.scan_iter(match=keys.actors_pattern(group), count=500)]
    values = await _mget(redis, found) if found else []
    pools: list[dict[str, Any]] = []
    problems: list[str] = []
    for key, value in zip(found, values, strict=True):
        if value is None:  # expired between SCAN and MGET
            continue
        try:
            pools.append(_actor_pool(value, now))
        except (ValueError, TypeError, KeyError) as exc:
            problems.append(f"malformed actors key {text(key)!r} ignored: {exc}")
    return sorted(pools, key=lambda p: p["consumer"]), problems


def _actor_pool(raw: Any, now: float) -> dict[str, Any]:
    body = json.loads(raw)
    if not isinstance(body, dict) or not isinstance(body.get("groups"), list):
        raise ValueError("not an object with a list of groups")
    ts = body.get("ts")
    return {
        "consumer": _str(body.get("consumer"), "consumer"),
        "host": str(body.get("host") or ""),
        "pid": body.get("pid") if isinstance(body.get("pid"), int) else None,
        "auto": body.get("auto") is True,
        "age": max(0.0, now - float(ts)) if isinstance(ts, (int, float)) else None,
        "groups": [_actor_group(g) for g in body["groups"]],
    }


def _actor_group(g: Any) -> dict[str, Any]:
    if not isinstance(g, dict):
        raise ValueError("a group is not an object")
    handlers = g.get("handlers")
    if not isinstance(handlers, list) or not all(isinstance(h, str) for h in handlers):
        raise ValueError("handlers is not a list of stream names")
    out: dict[str, Any] = {"handlers": handlers, "reason": str(g.get("reason") or "")}
    for name in ("desired", "running", "starting"):
        out[name] = _count(g.get(name), name)
    for name in ("min", "max"):
        out[name] = None if g.get(name) is None else _count(g.get(name), name)
    return out


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} is not a count: {value!r}")
    return value


def _str(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} is not a name: {value!r}")
    return value
