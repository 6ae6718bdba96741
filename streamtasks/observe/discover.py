"""Who is there: live workers (their heartbeats), consumer groups and streams, and the shards
of a sharded stream, read straight from Redis."""

from __future__ import annotations

import json
import time
from typing import Any

import msgspec
from redis import exceptions as rx
from redis.asyncio import Redis

from .. import keys
from ..connect import is_cluster
from ..redisutil import text
from .judge import NO_GROUP as NO_GROUP  # where it was first defined
from .readings import Findings, Unreadable, decode_heartbeat, printable


async def live_workers(
    redis: Redis, group: str, *, now: float | None = None, findings: Findings | None = None
) -> list[dict[str, Any]]:
    """The heartbeats of ``group``'s workers (each key expires ~10 s after its worker died).

    ``state`` is what the worker announced: ``starting`` (creating its groups, starting Ray),
    ``reading``, ``draining`` or ``stopped``; a starting worker is alive and will read. A key
    whose value is not a heartbeat (:func:`~.readings.decode_heartbeat`) is skipped and noted
    in ``findings``; reads the user may not run are noted there too (no workers then).
    """
    now = time.time() if now is None else now
    findings = Findings() if findings is None else findings
    found = await findings.read("SCAN", _scan(redis, keys.heartbeat_pattern(group)), [])
    values = await findings.read("MGET", _mget(redis, found), []) if found else []
    workers = []
    for key, value in zip(found, values, strict=False):
        if value is None:  # expired between SCAN and MGET, or not a string
            await _not_a_string(redis, key, findings)
            continue
        try:
            beat = decode_heartbeat(value)
        except Unreadable as exc:
            findings.skip(key, str(exc))
            continue
        workers.append(
            {
                "consumer": beat.consumer or printable(key).rsplit(":", 1)[-1],
                "group": group,
                "state": beat.state,
                "host": beat.host,
                "pid": beat.pid,
                "streams": beat.streams,
                "in_flight": beat.in_flight,
                "failing_loops": beat.failing_loops,
                "ray": msgspec.to_builtins(beat.ray) if beat.ray is not None else None,
                "heartbeat_age": max(0.0, now - beat.ts),
            }
        )
    return sorted(workers, key=lambda w: str(w["consumer"]))


async def _scan(redis: Redis, pattern: str) -> list[Any]:
    return [k async for k in redis.scan_iter(match=pattern, count=500)]


async def _not_a_string(redis: Redis, key: Any, findings: Findings) -> None:
    kind = text(await findings.read("TYPE", redis.type(key), b"none"))
    if kind not in ("none", "string"):
        findings.skip(key, f"a {kind}, not a heartbeat (a JSON string)")


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


async def discover_streams(redis: Redis, group: str, findings: Findings | None = None) -> list[str]:
    """Streams that have consumer group ``group`` (dead-letter streams excluded)."""
    return [stream for stream, g in await discover_groups(redis, findings) if g == group]


async def discover_groups(redis: Redis, findings: Findings | None = None) -> list[tuple[str, str]]:
    """Every ``(stream, group)`` pair in this Redis (dead-letter streams excluded), sorted.

    A stream or group whose name is not UTF-8 cannot be named in a command here: it is
    skipped and noted in ``findings``, as are reads the user may not run."""
    findings = Findings() if findings is None else findings
    found: list[tuple[str, str]] = []
    for raw in await findings.read("SCAN", _scan_streams(redis), []):
        name = _utf8(raw)
        if name is None:
            findings.skip(raw, "a stream whose name is not UTF-8")
            continue
        if name.endswith(":dead"):
            continue
        try:
            groups: Any = await findings.read("XINFO GROUPS", redis.xinfo_groups(name), [], key=name)
        except rx.ResponseError:  # deleted since the scan
            continue
        for g in groups:
            group = _utf8(g.get("name") or g.get(b"name") or b"")
            if group is None:
                findings.skip(
                    name, f"its group {printable(g.get('name') or b'')!r} has a name that is not UTF-8"
                )
            else:
                found.append((name, group))
    return sorted(found)


async def _scan_streams(redis: Redis) -> list[Any]:
    return [k async for k in redis.scan_iter(count=1000, _type="stream")]


def _utf8(value: bytes | str) -> str | None:
    """``value`` as text, or None if it is bytes that are not UTF-8."""
    if isinstance(value, str):
        return value
    try:
        return value.decode()
    except UnicodeDecodeError:
        return None


async def unread_unsharded(redis: Redis, streams: list[str], findings: Findings) -> list[str]:
    """Problems: the unsharded stream of a sharded one (``orders`` beside ``orders:{3}``) that
    holds entries no consumer group reads -- sent without the shard count (a producer that was
    not told it, before any worker recorded it), they wait where no worker looks."""
    problems = []
    for base in sorted({b for s in streams if (b := keys.shard_base(s)) is not None} - set(streams)):
        length = await findings.read("XLEN", redis.xlen(base), 0, base)
        if not length:
            continue
        groups: Any = await findings.read("XINFO GROUPS", redis.xinfo_groups(base), None, base)
        if groups is None or groups:
            continue  # not known, or read by a group of its own
        problems.append(
            f"{base}: {length} entries and no consumer group, but its handler is sharded "
            f"({keys.shard_stream(base, 0)}, ...): sent without the shard count, they wait where "
            f"no worker reads; producers find the count at {keys.shard_count_key(base)} once a "
            "worker serving it started (or pass shards=)"
        )
    return problems


async def actor_pools(
    redis: Redis, group: str, *, now: float | None = None, findings: Findings | None = None
) -> list[dict[str, Any]]:
    """Actor-mode workers' actors (``keys.actors_key``: written by each pool every few seconds)
    of ``group``, per group of handlers. A key that does not read as one (written by another
    program or version) is left out, never trusted, and noted in ``findings`` with why; reads
    the user may not run are noted there too (no pools then)."""
    now = time.time() if now is None else now
    findings = Findings() if findings is None else findings
    found = await findings.read("SCAN", _scan(redis, keys.actors_pattern(group)), [])
    values = await findings.read("MGET", _mget(redis, found), []) if found else []
    pools: list[dict[str, Any]] = []
    for key, value in zip(found, values, strict=False):
        if value is None:  # expired between SCAN and MGET, or not a string
            await _not_a_string(redis, key, findings)
            continue
        try:
            pools.append(_actor_pool(value, now))
        except (ValueError, TypeError, KeyError) as exc:
            findings.skip(key, f"not an actor pool: {exc}")
    return sorted(pools, key=lambda p: p["consumer"])


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
