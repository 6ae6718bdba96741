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
  ``lag`` still counts, so the lag cannot drain (see :mod:`streamtasks.streams`; a running
  worker reports them as lost and corrects the count);
* ``undelivered`` -- the part of ``lag`` still in the stream: ``lag`` less ``undeliverable``,
  never more than ``length`` (:func:`streamtasks.streams.undelivered`);
* ``dead_letters`` -- ``XLEN`` of the dead-letter stream;
* ``consumers`` -- ``XINFO CONSUMERS`` (name, pending, idle) joined with the worker
  heartbeat keys: a consumer with pending entries and no live heartbeat is *dead*;
* ``trim`` -- ``removed``: entries deleted from the stream so far (``entries-added`` minus
  the length: ack-aware trimming, ``MAXLEN``, ``XDEL``), and what ack-aware trimming waits on
  right now: ``held_by`` (the group furthest behind, ``no consumer group``) at ``minid``;
* ``shards`` (in :func:`gather_status`) -- per sharded stream (``orders`` for ``orders:{0}``
  ...), the shards' length, lag, undelivered, pending, dead letters and delayed entries added up;
* ``scheduled``, ``next_due``, ``periodic`` -- delayed entries waiting and the soonest due
  time, and the periodic handler's last and next tick (:mod:`.scheduled`);
* ``levels`` (in :func:`gather_status`) -- per prioritized stream (``orders`` for ``orders``,
  ``orders:p1`` ... and their shards), each level's length, lag, pending and dead letters
  (its shards added up) and all levels together;
* ``added_1m`` -- entries added in the last 60 s, counted with ``XRANGE`` from the id
  ``now-60s`` (capped at :data:`THROUGHPUT_SCAN_CAP`; ``added_1m_capped`` says so).
  This is the arrival rate; whether the group keeps up shows in ``lag``.

:func:`gather_status` returns one JSON-able dict with ``ok`` and ``problems`` (one readable
line per problem); :func:`streamtasks.cli.status.render` draws it as a rich table. A number
the Redis user may not read is ``None`` (and named in ``not_checked``); a key whose value or
type does not fit is skipped and named (``bad_keys``, :mod:`.readings`); the rest is reported.
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
from ..streams import GroupPosition, GroupState, StreamState, lost_before_delivery, trim_point, undelivered
from .discover import NO_GROUP as NO_GROUP  # re-exported names: status and the dashboard use them
from .discover import actor_pools as actor_pools
from .discover import discover_groups as discover_groups
from .discover import discover_streams as discover_streams
from .discover import live_workers as live_workers
from .discover import shards_of as shards_of
from .discover import unread_unsharded
from .judge import judge
from .readings import Findings
from .scheduled import read_schedule
from .totals import level_totals, shard_totals

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
    """``group``'s row of ``XINFO GROUPS stream`` (str keys), or ``None`` if either is missing
    (``NoPermissionError`` when the user may not ask)."""
    try:
        groups = await redis.xinfo_groups(stream)
    except rx.NoPermissionError:
        raise
    except rx.ResponseError:  # no such key, or not a stream
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
    findings: Findings | None = None,
) -> dict[str, Any]:
    """Everything Redis says about ``stream`` and ``group`` (see the module docstring).

    A read the user may not run leaves its numbers ``None`` (``group_exists`` too: unknown)
    and is noted in ``findings``."""
    now = time.time() if now is None else now
    f = Findings() if findings is None else findings
    sample = blank_sample(stream, group, dead_letter_stream)
    length = sample["length"] = await f.read("XLEN", redis.xlen(stream), None, key=stream)
    exists = True if length else await f.read("EXISTS", redis.exists(stream), None, key=stream)
    sample["exists"] = None if exists is None else bool(exists)
    dead = sample["dead_letter_stream"]
    sample["dead_letters"] = await _dead_letters(redis, dead, f)
    sample.update(await read_schedule(redis, stream, now, f))
    info = await f.read("XINFO GROUPS", group_info(redis, stream, group), DENIED, key=stream)
    sample["group_exists"] = None if info is DENIED else info is not None
    if info is None:
        sample["pending"] = 0  # no group: nothing was delivered
    if isinstance(info, dict):
        await _group_numbers(redis, sample, info, now, f)
        if consumers:
            sample["consumers"] = await f.read(
                "XINFO CONSUMERS", _consumers(redis, stream, group), [], key=stream
            )
    if throughput:
        added = await f.read("XRANGE", _added_since(redis, stream, now), (None, False), key=stream)
        sample["added_1m"], sample["added_1m_capped"] = added
    if sample["exists"]:
        sample["trim"] = await trim_state(redis, stream, sample["length"], f)
    return sample


async def _dead_letters(redis: Redis, dead: str, f: Findings) -> int | None:
    """``XLEN`` of the dead-letter stream; a key of another type there is skipped and named."""
    try:
        return await f.read("XLEN", redis.xlen(dead), None, key=dead)
    except rx.ResponseError as exc:
        f.skip(dead, f"cannot be read as a stream: {exc}")
        return None


#: ``group_info`` when the user may not run ``XINFO GROUPS``.
DENIED: Any = object()


def blank_sample(stream: str, group: str, dead_letter_stream: str | None = None) -> dict[str, Any]:
    """A stream's sample with nothing known yet (what is left when it cannot be read)."""
    return {
        "stream": stream,
        "group": group,
        "exists": None,
        "group_exists": None,
        "length": None,
        "lag": None,
        "undelivered": None,
        "entries_read": None,
        "last_delivered_id": None,
        "pending": None,
        "oldest_pending_id": None,
        "oldest_pending_age": None,
        "oldest_pending_idle": None,
        "oldest_pending_deliveries": None,
        "undeliverable": 0,
        "dead_letter_stream": dead_letter_stream or keys.dead_letter_stream(stream),
        "dead_letters": None,
        "consumers": [],
        "scheduled": None,
        "next_due": None,
        "next_due_in": None,
        "periodic": None,
        "schedule_problems": [],
    }


async def _group_numbers(
    redis: Redis, sample: dict[str, Any], info: dict[str, Any], now: float, f: Findings
) -> None:
    """Lag, read counter, position, entries lost before delivery and pending, of one group."""
    stream, group = sample["stream"], sample["group"]
    lag, read = info.get("lag"), info.get("entries-read")
    sample["lag"] = int(lag) if lag is not None else None
    sample["entries_read"] = int(read) if read is not None else None
    sample["last_delivered_id"] = info.get("last-delivered-id")
    with contextlib.suppress(rx.ResponseError):  # deleted since: nothing to say
        raw = await f.read("XINFO STREAM", redis.xinfo_stream(stream), None, key=stream)
        if raw is not None:
            state = StreamState.of(raw)
            sample["undeliverable"] = lost_before_delivery(state, GroupState.of(info))
            if sample["length"] is None:
                sample["length"] = state.length
    sample["undelivered"] = undelivered(sample["lag"], sample["length"], sample["undeliverable"])
    pending = await f.read("XPENDING", _pending(redis, stream, group, now), None, key=stream)
    sample.update(pending or {})


async def trim_state(
    redis: Redis, stream: str, length: int | None, findings: Findings | None = None
) -> dict[str, Any]:
    """What was removed from ``stream`` and what ack-aware trimming waits on (see above)."""
    f = Findings() if findings is None else findings
    unknown: dict[str, Any] = {"removed": None, "held_by": None, "minid": None}
    try:
        info = await f.read("XINFO STREAM", redis.xinfo_stream(stream), None, key=stream)
        groups = await f.read("XINFO GROUPS", redis.xinfo_groups(stream), None, key=stream)
        if info is None or groups is None:
            return unknown
        positions = []
        for g in map(_norm, groups):
            summary = _norm(await redis.xpending(stream, g["name"]))
            oldest = summary.get("min") if summary.get("pending") else None
            positions.append(GroupPosition(g["name"], g["last-delivered-id"], oldest))
    except rx.NoPermissionError:
        f.deny("XPENDING", stream)
        return unknown
    except rx.ResponseError:
        return unknown
    point = trim_point(positions, None)
    added = _norm(info).get("entries-added")
    removed = int(added) - length if added is not None and length is not None else None
    return {"removed": removed, "held_by": point.held_by, "minid": point.minid}


# -- the whole picture ---------------------------------------------------------------------


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
    ``state``; ``workers_known`` False when they could not be read), ``dead_consumers``,
    ``actors`` (actor-mode workers' actors per group of handlers:
    :func:`~streamtasks.observe.discover.actor_pools`), ``bad_keys`` (``{"count", "keys":
    [{"key", "error"}]}``: keys skipped because their value does not fit; each is a problem
    too) and ``not_checked`` (reads the Redis user may not run, one line each: ``INFO: no
    permission (NOPERM)``). Never raises for Redis being down (that is a problem), nor for a
    key of the wrong type or shape, nor for a denied read.
    """
    now = time.time()
    findings = Findings()
    out: dict[str, Any] = {
        "ok": False,
        "problems": [],
        "checked_at": now,
        "group": group,
        "groups": [],
        "stuck_after": stuck_after,
        "redis": {"ok": False, "error": None, "version": None, "refused": False},
        "streams": [],
        "shards": {},
        "levels": {},
        "workers": [],
        "workers_known": True,
        "dead_consumers": [],
        "actors": [],
        "bad_keys": findings.as_dict(),
        "not_checked": [],
    }
    try:
        server = await findings.read("INFO", redis.info("server"), {})
        out["redis"].update(ok=True, version=_norm(server).get("redis_version"))
        pairs = await _targets(redis, streams, group, findings)
        out["groups"] = sorted({g for _, g in pairs} | ({group} if group else set()))
        dead_names = dict(dead_letter_streams or {})
        samples = (
            sample_or_skip(redis, s, g, dead_names.get(s), now, throughput, findings) for s, g in pairs
        )
        out["streams"] = list(await asyncio.gather(*samples))
        out["shards"] = shard_totals(out["streams"])
        out["levels"] = level_totals(out["streams"])
        for g in out["groups"]:
            out["workers"] += await live_workers(redis, g, now=now, findings=findings)
            out["actors"] += await actor_pools(redis, g, now=now, findings=findings)
    except REDIS_DOWN as exc:
        return _unreachable(out, exc)
    out["workers_known"] = not findings.denied_any("SCAN", "MGET")
    workers = out["workers"] if out["workers_known"] else None
    out["problems"], out["dead_consumers"] = judge(out["streams"], workers, stuck_after, named)
    with contextlib.suppress(*REDIS_DOWN, rx.ResponseError):  # the rest of the report stands
        out["problems"] += await unread_unsharded(redis, [s for s, _ in pairs], findings)
    out["problems"] += findings.problems()
    out["bad_keys"], out["not_checked"] = findings.as_dict(), findings.not_checked()
    out["ok"] = not out["problems"]
    return out


async def sample_or_skip(
    redis: Redis, stream: str, group: str, dead: str | None, now: float, throughput: bool, findings: Findings
) -> dict[str, Any]:
    """:func:`sample_stream`, or, for a key that is not a stream (``WRONGTYPE``) or gone
    meanwhile, what is left: the key skipped and named."""
    try:
        return await sample_stream(
            redis, stream, group, dead, now=now, throughput=throughput, findings=findings
        )
    except rx.ResponseError as exc:
        findings.skip(stream, f"cannot be read as a stream: {exc}")
        return blank_sample(stream, group, dead)


def _unreachable(out: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    from ..logs import redact

    out["redis"]["error"] = redact(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, rx.AuthenticationError):
        out["redis"]["refused"] = True
        out["problems"] = [f"Redis refused the credentials: {out['redis']['error']}"]
    else:
        out["problems"] = [f"Redis is unreachable: {out['redis']['error']}"]
    return out


async def _targets(
    redis: Redis, streams: Sequence[str] | None, group: str | None, findings: Findings
) -> list[tuple[str, str]]:
    """The ``(stream, group)`` pairs to sample."""
    if group is None:
        pairs = await discover_groups(redis, findings)
        if streams is None:
            return pairs
        # A named stream without any group is still sampled (as group NO_GROUP): a problem.
        return [p for s in streams for p in ([q for q in pairs if q[0] == s] or [(s, NO_GROUP)])]
    names = list(streams) if streams is not None else await discover_streams(redis, group, findings)
    return [(s, group) for s in names]
