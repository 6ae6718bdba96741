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
* ``undeliverable`` -- entries trimmed or deleted before the group read them, which its
  ``lag`` still counts, so the lag cannot drain (see :mod:`streamtasks.worker.gaps`; a running
  worker reports them as lost and corrects the count);
* ``dead_letters`` -- ``XLEN`` of the dead-letter stream;
* ``consumers`` -- ``XINFO CONSUMERS`` (name, pending, idle) joined with the worker
  heartbeat keys: a consumer with pending entries and no live heartbeat is *dead*;
* ``trim`` -- ``removed``: entries deleted from the stream so far (``entries-added`` minus
  the length: ack-aware trimming, ``MAXLEN``, ``XDEL``), and what ack-aware trimming waits on
  right now: ``held_by`` (the group furthest behind, ``no consumer group``) at ``minid``;
* ``shards`` (in :func:`gather_status`) -- per sharded stream (``orders`` for ``orders:{0}``
  ...), the shards' length, lag, pending and dead letters added up;
* ``added_1m`` -- entries added in the last 60 s, counted with ``XRANGE`` from the id
  ``now-60s`` (capped at :data:`THROUGHPUT_SCAN_CAP`; ``added_1m_capped`` says so).
  This is the arrival rate; whether the group keeps up shows in ``lag``.

:func:`gather_status` returns one JSON-able dict with ``ok`` and ``problems`` (one readable
line per problem); :func:`streamtasks.cli.status.render` draws it as a rich table.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from redis import exceptions as rx
from redis.asyncio import Redis

from .. import keys
from ..redisutil import REDIS_DOWN, id_seconds, text
from ..streams import GroupPosition, GroupState, StreamState, lost_before_delivery, trim_point
from .discover import NO_GROUP as NO_GROUP  # re-exported names: status and the dashboard use them
from .discover import actor_pools as actor_pools
from .discover import discover_groups as discover_groups
from .discover import discover_streams as discover_streams
from .discover import live_workers as live_workers
from .discover import shards_of as shards_of

#: Default for ``--stuck-after``: a pending entry older than this (since XADD) is "stuck".
DEFAULT_STUCK_AFTER = 300.0
#: ``added_1m`` counts at most this many entries (one XRANGE page).
THROUGHPUT_SCAN_CAP = 10_000
THROUGHPUT_WINDOW_S = 60.0


def secs(value: float | None) -> str:
    """A duration as people read it in a table: ``4.2s``, ``3.5m``, ``2.0h`` (``-`` for none)."""
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f}s"
    if value < 7200:
        return f"{value / 60:.1f}m"
    return f"{value / 3600:.1f}h"


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
        out["oldest_pending_age"] = max(0.0, now - id_seconds(oldest))
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
        "undeliverable": 0,
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
        with contextlib.suppress(rx.ResponseError):  # deleted since: nothing to say
            stream_state = StreamState.of(await redis.xinfo_stream(stream))
            sample["undeliverable"] = lost_before_delivery(stream_state, GroupState.of(info))
        sample.update(await _pending(redis, stream, group, now))
        if consumers:
            sample["consumers"] = await _consumers(redis, stream, group)
    if throughput:
        sample["added_1m"], sample["added_1m_capped"] = await _added_since(redis, stream, now)
    if sample["exists"]:
        sample["trim"] = await trim_state(redis, stream, length)
    return sample


async def trim_state(redis: Redis, stream: str, length: int) -> dict[str, Any]:
    """What was removed from ``stream`` and what ack-aware trimming waits on (see above)."""
    try:
        info = _norm(await redis.xinfo_stream(stream))
        groups = [_norm(g) for g in await redis.xinfo_groups(stream)]
    except rx.ResponseError:
        return {"removed": None, "held_by": None, "minid": None}
    positions = []
    for g in groups:
        summary = _norm(await redis.xpending(stream, g["name"]))
        oldest = summary.get("min") if summary.get("pending") else None
        positions.append(GroupPosition(g["name"], g["last-delivered-id"], oldest))
    point = trim_point(positions, None)
    added = info.get("entries-added")
    removed = int(added) - length if added is not None else None
    return {"removed": removed, "held_by": point.held_by, "minid": point.minid}


def shard_totals(samples: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per sharded stream: its shards' numbers added up (``lag`` None if any shard's is)."""
    out: dict[str, dict[str, Any]] = {}
    for s in samples:
        base = keys.shard_base(s["stream"])
        if base is None:
            continue
        total = out.setdefault(base, {"shards": 0, "length": 0, "lag": 0, "pending": 0, "dead_letters": 0})
        total["shards"] += 1
        for name in ("length", "pending", "dead_letters"):
            total[name] += int(s[name] or 0)
        total["lag"] = None if total["lag"] is None or s["lag"] is None else total["lag"] + s["lag"]
    return out


# -- the whole picture ---------------------------------------------------------------------


def _failing_or_lost(streams: list[dict[str, Any]], workers: list[dict[str, Any]]) -> list[str]:
    """Workers whose background loops fail; lags that cannot drain (entries trimmed unread)."""
    problems = [
        f"worker {w['consumer']}: background loop {', '.join(map(repr, w['failing_loops']))} failing "
        "(see its log)"
        for w in workers
        if w.get("failing_loops")
    ]
    problems += [
        f"{s['stream']}: lag {s['lag']} cannot drain: {s['undeliverable']} entries were trimmed or "
        f"deleted before group {s['group']!r} read them (lost)"
        for s in streams
        if s.get("undeliverable")
    ]
    return problems


def _judge(
    streams: list[dict[str, Any]],
    workers: list[dict[str, Any]],
    stuck_after: float,
    named: Collection[str] = (),
) -> tuple[list[str], list[dict[str, Any]]]:
    """Problems (one line each) and dead consumers (pending entries, no live heartbeat).

    A stream without its group is a problem when it has entries, or when it is ``named``
    (asked for by name: nothing reads it, perhaps a typo), unless a live worker of the group
    serves it (a starting worker creates its group).
    """
    problems: list[str] = _failing_or_lost(streams, workers)
    dead: list[dict[str, Any]] = []
    for s in streams:
        name = s["stream"]
        of_group = [w for w in workers if w.get("group", s["group"]) == s["group"]]
        live = {w["consumer"] for w in of_group}
        serving = [w for w in of_group if not w["streams"] or name in w["streams"]]
        if not s["group_exists"]:
            if not serving and (s["length"] or name in named):
                what = f"{s['length']} entries" if s["length"] else "no entries"
                grp = f" {s['group']!r}" if s["group"] != NO_GROUP else ""
                problems.append(f"{name}: {what} and no consumer group{grp}: no worker reads it")
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
        if not serving and (s["pending"] or s["lag"]):
            problems.append(
                f"{name}: no live worker, but {s['pending']} pending and {s['lag'] or 0} undelivered entries"
            )
    return problems, dead


async def gather_status(
    redis: Redis,
    streams: Sequence[str] | None,
    group: str | None = keys.DEFAULT_GROUP,
    *,
    dead_letter_streams: Mapping[str, str] | None = None,
    stuck_after: float = DEFAULT_STUCK_AFTER,
    throughput: bool = True,
    named: Collection[str] = (),
) -> dict[str, Any]:
    """The status of ``streams`` (all streams with ``group`` when ``None``) as a JSON-able dict.

    ``group=None``: every consumer group of ``streams`` (of every stream when ``None``).
    ``named``: streams the user asked for by name; one without its group is a problem.
    Keys: ``ok`` (bool), ``problems`` (list of one-line strings), ``checked_at``, ``group``,
    ``groups`` (the groups looked at), ``redis`` (``{"ok", "error", "version", "refused"}``:
    ``refused`` when Redis rejected the credentials), ``streams`` (one :func:`sample_stream`
    dict each, with its ``group``), ``workers`` (live heartbeats, each with its ``group`` and
    ``state``), ``dead_consumers``, ``actors`` (actor-mode workers' actors per group of
    handlers: :func:`~streamtasks.observe.discover.actor_pools`), ``malformed`` (one line per key
    that did not read as what it should be: shown, left out, not a problem of the
    deployment). Never raises for Redis being down: that is a problem.
    """
    now = time.time()
    out: dict[str, Any] = {
        "ok": False, "problems": [], "checked_at": now, "group": group, "groups": [],
        "stuck_after": stuck_after, "redis": {"ok": False, "error": None, "version": None, "refused": False},
        "streams": [], "shards": {}, "workers": [], "dead_consumers": [], "actors": [], "malformed": [],
    }  # fmt: skip
    try:
        server = await redis.info("server")
        out["redis"].update(ok=True, version=_norm(server).get("redis_version"))
        pairs = await _targets(redis, streams, group)
        out["groups"] = sorted({g for _, g in pairs} | ({group} if group else set()))
        dead_names = dict(dead_letter_streams or {})
        out["streams"] = list(
            await asyncio.gather(
                *(
                    sample_stream(redis, s, g, dead_names.get(s), now=now, throughput=throughput)
                    for s, g in pairs
                )
            )
        )
        out["shards"] = shard_totals(out["streams"])
        for g in out["groups"]:
            out["workers"] += await live_workers(redis, g, now=now)
            pools, malformed = await actor_pools(redis, g, now=now)
            out["actors"] += pools
            out["malformed"] += malformed
    except REDIS_DOWN as exc:
        from ..logs import redact

        out["redis"]["error"] = redact(f"{type(exc).__name__}: {exc}")
        if isinstance(exc, rx.AuthenticationError):
            out["redis"]["refused"] = True
            out["problems"] = [f"Redis refused the credentials: {out['redis']['error']}"]
        else:
            out["problems"] = [f"Redis is unreachable: {out['redis']['error']}"]
        return out
    out["problems"], out["dead_consumers"] = _judge(out["streams"], out["workers"], stuck_after, named)
    out["ok"] = not out["problems"]
    return out


async def _targets(redis: Redis, streams: Sequence[str] | None, group: str | None) -> list[tuple[str, str]]:
    """The ``(stream, group)`` pairs to sample."""
    if group is None:
        pairs = await discover_groups(redis)
        if streams is None:
            return pairs
        # A named stream without any group is still sampled (as group NO_GROUP): a problem.
        return [p for s in streams for p in ([q for q in pairs if q[0] == s] or [(s, NO_GROUP)])]
    names = list(streams) if streams is not None else await discover_streams(redis, group)
    return [(s, group) for s in names]
