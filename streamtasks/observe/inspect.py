"""What is going on in Redis, read straight from it: ``status``, metrics, the facade.

Everything here is *sampled* from Redis, so it works from any machine, with or without a
worker running, and agrees with what ``XINFO`` / ``XPENDING`` say:

* ``length``   -- ``XLEN``;
* ``lag``      -- ``XINFO GROUPS`` ``lag``: entries not yet delivered to the group (``None``
  when Redis cannot tell, e.g. after an ``XDEL`` in the undelivered range);
* ``pending``  -- ``XPENDING`` summary: delivered, not yet acked (running, or waiting for a
  retry, or held by a dead consumer);
* ``oldest_pending_age`` -- seconds since the *XADD* of the oldest pending entry (its id's
  time), and ``oldest_pending_idle`` -- seconds since that entry was last delivered or had
  its lease renewed (``XPENDING`` range ``idle``);
* ``dead_letters`` -- ``XLEN`` of the dead-letter stream;
* ``consumers`` -- ``XINFO CONSUMERS`` (name, pending, idle) joined with the worker
  heartbeat keys: a consumer with pending entries and no live heartbeat is *dead*;
* ``added_1m`` -- entries added in the last 60 s, counted with ``XRANGE`` from the id
  ``now-60s`` (capped at :data:`THROUGHPUT_SCAN_CAP`; ``added_1m_capped`` says so).
  This is the arrival rate; whether the group keeps up shows in ``lag``.

:func:`gather_status` returns one JSON-able dict with ``ok`` and ``problems`` (one readable
line per problem); :func:`streamtasks.cli.status.render` draws it as a rich table.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from redis import exceptions as rx
from redis.asyncio import Redis

from .. import keys
from ..redisutil import REDIS_DOWN, text

#: Default for ``--stuck-after``: a pending entry older than this (since XADD) is "stuck".
DEFAULT_STUCK_AFTER = 300.0
#: ``added_1m`` counts at most this many entries (one XRANGE page).
THROUGHPUT_SCAN_CAP = 10_000
THROUGHPUT_WINDOW_S = 60.0


def entry_time(entry_id: str) -> float:
    """The XADD time (seconds since the epoch) carried by an entry id ``"<ms>-<seq>"``."""
    return int(entry_id.partition("-")[0]) / 1000.0


def _norm(mapping: Mapping[Any, Any]) -> dict[str, Any]:
    """A Redis reply dict with ``str`` keys and ``bytes`` values turned into ``str``."""
    return {text(k): (text(v) if isinstance(v, bytes) else v) for k, v in mapping.items()}


# -- one stream ------------------------------------------------------------------------------


async def group_info(redis: Redis, stream: str, group: str) -> dict[str, Any] | None:
    """``group``'s row of ``XINFO GROUPS stream`` (str keys), or ``None`` if either is missing."""
    try:
        groups = await redis.xinfo_groups(stream)
    except rx.ResponseError:  # no such key
        return None
    for raw in groups:
        info = _norm(raw)
        if info.get("name") == group:
            return info
    return None


async def _pending(redis: Redis, stream: str, group: str, now: float) -> dict[str, Any]:
    summary = _norm(await redis.xpending(stream, group))
    out: dict[str, Any] = {
        "pending": int(summary.get("pending") or 0),
        "oldest_pending_id": None,
        "oldest_pending_age": None,
        "oldest_pending_idle": None,
        "oldest_pending_deliveries": None,
    }
    oldest = summary.get("min")
    if out["pending"] and oldest:
        out["oldest_pending_id"] = oldest
        out["oldest_pending_age"] = max(0.0, now - entry_time(oldest))
        rows = await redis.xpending_range(stream, group, oldest, oldest, 1)
        if rows:
            row = _norm(rows[0])
            out["oldest_pending_idle"] = int(row["time_since_delivered"]) / 1000.0
            out["oldest_pending_deliveries"] = int(row["times_delivered"])
    return out


async def _consumers(redis: Redis, stream: str, group: str) -> list[dict[str, Any]]:
    rows = await redis.xinfo_consumers(stream, group)
    out = []
    for raw in rows:
        row = _norm(raw)
        out.append(
            {"name": row["name"], "pending": int(row.get("pending") or 0), "idle": int(row["idle"]) / 1000.0}
        )
    return out


async def _added_since(redis: Redis, stream: str, now: float) -> tuple[int, bool]:
    start = f"{int((now - THROUGHPUT_WINDOW_S) * 1000)}-0"
    rows = await redis.xrange(stream, min=start, max="+", count=THROUGHPUT_SCAN_CAP) or []
    return len(rows), len(rows) >= THROUGHPUT_SCAN_CAP


async def sample_stream(
    redis: Redis,
    stream: str,
    group: str,
    dead_letter_stream: str | None = None,
    *,
    now: float | None = None,
    throughput: bool = True,
    consumers: bool = True,
) -> dict[str, Any]:
    """Everything Redis says about ``stream`` and ``group`` (see the module docstring)."""
    now = time.time() if now is None else now
    dead = dead_letter_stream or keys.dead_letter_stream(stream)
    length = int(await redis.xlen(stream))
    info = await group_info(redis, stream, group)
    sample: dict[str, Any] = {
        "stream": stream,
        "group": group,
        "exists": bool(length) or bool(await redis.exists(stream)),
        "group_exists": info is not None,
        "length": length,
        "lag": None,
        "entries_read": None,
        "last_delivered_id": None,
        "pending": 0,
        "oldest_pending_id": None,
        "oldest_pending_age": None,
        "oldest_pending_idle": None,
        "oldest_pending_deliveries": None,
        "dead_letter_stream": dead,
        "dead_letters": int(await redis.xlen(dead)),
        "consumers": [],
    }
    if info is not None:
        lag = info.get("lag")
        sample["lag"] = int(lag) if lag is not None else None
        read = info.get("entries-read")
        sample["entries_read"] = int(read) if read is not None else None
        sample["last_delivered_id"] = info.get("last-delivered-id")
        sample.update(await _pending(redis, stream, group, now))
        if consumers:
            sample["consumers"] = await _consumers(redis, stream, group)
    if throughput:
        sample["added_1m"], sample["added_1m_capped"] = await _added_since(redis, stream, now)
    return sample


# -- workers -------------------------------------------------------------------------------


async def live_workers(redis: Redis, group: str, *, now: float | None = None) -> list[dict[str, Any]]:
    """The heartbeats of ``group``'s workers (each key expires ~10 s after its worker died)."""
    now = time.time() if now is None else now
    found = [k async for k in redis.scan_iter(match=keys.heartbeat_pattern(group), count=500)]
    values = await redis.mget(found) if found else []
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
                "host": beat.get("host"),
                "pid": beat.get("pid"),
                "streams": beat.get("streams", []),
                "in_flight": beat.get("in_flight"),
                "state": beat.get("state"),
                "failing_loops": beat.get("failing_loops", []),
                "ray": beat.get("ray"),
                "heartbeat_age": max(0.0, now - float(ts)) if ts is not None else None,
            }
        )
    return sorted(workers, key=lambda w: str(w["consumer"]))


async def discover_streams(redis: Redis, group: str) -> list[str]:
    """Streams that have consumer group ``group`` (dead-letter streams excluded)."""
    found = []
    async for raw in redis.scan_iter(count=1000, _type="stream"):
        name = text(raw)
        if name.endswith(":dead"):
            continue
        if await group_info(redis, name, group) is not None:
            found.append(name)
    return sorted(found)


# -- the whole picture ---------------------------------------------------------------------


def _judge(
    streams: list[dict[str, Any]], workers: list[dict[str, Any]], stuck_after: float
) -> tuple[list[str], list[dict[str, Any]]]:
    """Problems (one line each) and dead consumers (pending entries, no live heartbeat)."""
    problems: list[str] = []
    dead: list[dict[str, Any]] = []
    live = {w["consumer"] for w in workers}
    for s in streams:
        name = s["stream"]
        if not s["group_exists"]:
            if s["length"]:
                problems.append(f"{name}: {s['length']} entries but no consumer group {s['group']!r}")
            continue
        for c in s["consumers"]:
            c["live"] = c["name"] in live
            if c["pending"] and not c["live"]:
                dead.append(
                    {"stream": name, "consumer": c["name"], "pending": c["pending"], "idle": c["idle"]}
                )
                problems.append(
                    f"{name}: dead consumer {c['name']} holds {c['pending']} pending entries "
                    f"(no heartbeat; idle {c['idle']:.0f}s)"
                )
        age = s["oldest_pending_age"]
        if age is not None and age > stuck_after:
            problems.append(
                f"{name}: oldest pending entry {s['oldest_pending_id']} is {age:.0f}s old "
                f"(> --stuck-after {stuck_after:.0f}s)"
            )
        serving = [w for w in workers if not w["streams"] or name in w["streams"]]
        if not serving and (s["pending"] or s["lag"]):
            problems.append(
                f"{name}: no live worker, but {s['pending']} pending and {s['lag'] or 0} undelivered entries"
            )
    return problems, dead


async def gather_status(
    redis: Redis,
    streams: Sequence[str] | None,
    group: str = keys.DEFAULT_GROUP,
    *,
    dead_letter_streams: Mapping[str, str] | None = None,
    stuck_after: float = DEFAULT_STUCK_AFTER,
    throughput: bool = True,
) -> dict[str, Any]:
    """The status of ``streams`` (all streams with ``group`` when ``None``) as a JSON-able dict.

    Keys: ``ok`` (bool), ``problems`` (list of one-line strings), ``checked_at``, ``group``,
    ``redis`` (``{"ok", "error", "version"}``), ``streams`` (one :func:`sample_stream` dict
    each), ``workers`` (live heartbeats), ``dead_consumers``. Never raises for Redis being
    down: that is reported as a problem.
    """
    now = time.time()
    out: dict[str, Any] = {
        "ok": False, "problems": [], "checked_at": now, "group": group, "stuck_after": stuck_after,
        "redis": {"ok": False, "error": None, "version": None},
        "streams": [], "workers": [], "dead_consumers": [],
    }  # fmt: skip
    try:
        server = await redis.info("server")
        out["redis"].update(ok=True, version=_norm(server).get("redis_version"))
        names = list(streams) if streams is not None else await discover_streams(redis, group)
        dead_names = dict(dead_letter_streams or {})
        out["streams"] = list(
            await asyncio.gather(
                *(
                    sample_stream(redis, s, group, dead_names.get(s), now=now, throughput=throughput)
                    for s in names
                )
            )
        )
        out["workers"] = await live_workers(redis, group, now=now)
    except REDIS_DOWN as exc:
        from ..logs import redact

        out["redis"]["error"] = redact(f"{type(exc).__name__}: {exc}")
        out["problems"] = [f"Redis is unreachable: {out['redis']['error']}"]
        return out
    out["problems"], out["dead_consumers"] = _judge(out["streams"], out["workers"], stuck_after)
    out["ok"] = not out["problems"]
    return out
