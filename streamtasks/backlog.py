"""A stream's backlog for one consumer group, in two commands: entries not delivered yet (the
group's ``lag``), pending (delivered, not acked) and the age of the oldest pending one. What the
autoscaling controller looks at every few seconds (``status`` reads the same numbers, and more,
through :mod:`streamtasks.observe.inspect`)."""

from __future__ import annotations

import time
from typing import Any

from attrs import frozen
from redis import exceptions as rx
from redis.asyncio import Redis

from .redisutil import id_seconds, text


@frozen
class Backlog:
    undelivered: int
    pending: int
    oldest_age: float | None  # seconds since the XADD of the oldest pending entry

    def plus(self, other: Backlog) -> Backlog:
        ages = [a for a in (self.oldest_age, other.oldest_age) if a is not None]
        return Backlog(
            self.undelivered + other.undelivered, self.pending + other.pending, max(ages, default=None)
        )


NOTHING = Backlog(0, 0, None)


async def backlog(redis: Redis, stream: str, group: str, now: float | None = None) -> Backlog:
    """``stream``'s backlog for ``group`` (nothing when either is missing; a lag Redis cannot
    tell, after an XDEL of undelivered entries, counts as 0)."""
    try:
        groups: Any = await redis.xinfo_groups(stream)
        summary: Any = await redis.xpending(stream, group)
    except rx.ResponseError:  # no such key, NOGROUP
        return NOTHING
    row = next((g for g in groups if text(g.get("name", g.get(b"name", b""))) == group), None)
    if row is None:
        return NOTHING
    lag = row.get("lag", row.get(b"lag"))
    pending = int(summary.get("pending") or 0)
    oldest = summary.get("min")
    age = None
    if pending and oldest:
        age = max(0.0, (time.time() if now is None else now) - id_seconds(text(oldest)))
    return Backlog(int(lag or 0), pending, age)
