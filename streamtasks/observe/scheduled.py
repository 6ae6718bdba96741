"""What Redis holds of a stream's delayed entries and periodic handler, for ``status``,
``/metrics`` and the dashboard: read by :func:`read_schedule`, the one reader of those keys.

The keys were written by other processes (producers, workers, maybe a foreign one), so every
value is checked: one that is not what streamtasks writes is reported as a problem naming the
key, and shown as unknown; nothing here raises for it.

* ``scheduled``  -- delayed entries waiting (``ZCARD <stream>:delayed``);
* ``next_due``   -- the soonest due time (seconds since the epoch), ``next_due_in`` seconds
  from now (negative: overdue, no worker has moved it yet);
* ``periodic``   -- for a stream with a periodic handler (``<stream>:tick``): its
  ``schedule``, ``last_tick`` and ``next_tick`` (seconds since the epoch), ``next_tick_in``,
  and ``claimed_at`` (when the last tick was claimed); None without one.
"""

from __future__ import annotations

import math
from typing import Any

from redis import exceptions as rx
from redis.asyncio import Redis

from ..keys import delayed_key, tick_key
from ..redisutil import text
from .readings import Findings

#: Tick hash fields holding milliseconds since the epoch ('' allowed for ``next``: none).
_TICK_TIMES = {"last": "last_tick", "next": "next_tick", "claimed_at": "claimed_at"}
_MAX_MS = 253_402_300_799_999


async def read_schedule(
    redis: Redis, stream: str, now: float, findings: Findings | None = None
) -> dict[str, Any]:
    """``scheduled``, ``next_due``, ``next_due_in``, ``periodic`` and ``schedule_problems``
    (one line each) of ``stream``; see the module docstring. A read the Redis user may not run
    leaves its numbers unknown (None) and is noted in ``findings``."""
    f = Findings() if findings is None else findings
    out: dict[str, Any] = {"scheduled": None, "next_due": None, "next_due_in": None, "periodic": None}
    problems: list[str] = []
    key = delayed_key(stream)
    try:
        count = await f.read("ZCARD", redis.zcard(key), None, key=key)
        out["scheduled"] = None if count is None else int(count)
        first: Any = await f.read("ZRANGE", redis.zrange(key, 0, 0, withscores=True), [], key=key)
    except rx.ResponseError as exc:  # WRONGTYPE: someone else's key of that name
        problems.append(f"{key}: {text(exc)} (expected the sorted set of delayed entries)")
        first = []
    if first:
        due = first[0][1]
        if isinstance(due, (int, float)) and math.isfinite(due) and 0 <= due <= _MAX_MS:
            out["next_due"] = due / 1000
            out["next_due_in"] = due / 1000 - now
        else:
            problems.append(f"{key}: due time {due!r} of {text(first[0][0])!r} is not milliseconds")
    out["periodic"] = await _tick_state(redis, tick_key(stream), now, problems, f)
    out["schedule_problems"] = problems
    return out


async def _tick_state(
    redis: Redis, key: str, now: float, problems: list[str], f: Findings
) -> dict[str, Any] | None:
    try:
        raw: Any = await f.read("HGETALL", redis.hgetall(key), {}, key=key)
    except rx.ResponseError as exc:
        problems.append(f"{key}: {text(exc)} (expected the hash of a periodic handler)")
        return None
    if not raw:
        return None
    fields = {text(k): text(v) for k, v in raw.items()}
    state: dict[str, Any] = {"schedule": fields.get("schedule") or None}
    for name, shown in _TICK_TIMES.items():
        value = fields.get(name)
        state[shown] = None
        if value is None or (value == "" and name == "next"):
            continue
        if value.isascii() and value.isdigit() and len(value) <= 15 and int(value) <= _MAX_MS:
            state[shown] = int(value) / 1000
        else:
            problems.append(f"{key}: {name} is {value[:40]!r}, not milliseconds since the epoch")
    state["next_tick_in"] = None if state["next_tick"] is None else state["next_tick"] - now
    return state


def due_in(seconds: float | None) -> str:
    """``in 4.2s``, ``1.5s overdue`` or ``-``: a next due time or tick, from now."""
    from .inspect import secs

    if seconds is None:
        return "-"
    return f"in {secs(seconds)}" if seconds >= 0 else f"{secs(-seconds)} overdue"


def schedule_problems(samples: list[dict[str, Any]]) -> list[str]:
    """Every problem :func:`read_schedule` found in ``samples`` (``sample_stream`` dicts)."""
    return [p for s in samples for p in s.get("schedule_problems") or ()]
