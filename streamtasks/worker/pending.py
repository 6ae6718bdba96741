"""This consumer's pending entries: set their idle time (and delivery count) atomically.

One Lua script (:data:`streamtasks.lua.RESET`) serves three stages: a lease renewal (idle 0),
a scheduled retry (idle = visibility timeout - delay) and a hand-back (idle far past any
visibility timeout). It touches only entries still pending on this consumer.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from redis.asyncio import Redis

from .. import lua
from ..connect import queue_script
from ..redisutil import id_key, text

#: Ids per script call: bounded arguments whatever the batch size.
RESET_CHUNK = 1000
#: Idle time given to entries handed back on shutdown: far past any visibility timeout.
HANDBACK_IDLE_MS = 10**12
#: :meth:`PendingEntries.mine` reads this many more of the consumer's entries than it asks
#: about, for other entries of this consumer between them (past a full page: taken as still ours).
MINE_SLACK = 1000
#: Keep the entry's delivery counter.
KEEP_COUNT = -1


class PendingEntries:
    """The RESET script bound to one group and consumer."""

    def __init__(self, redis: Redis, group: str, consumer: str) -> None:
        self.group = group
        self.consumer = consumer
        self._redis = redis
        self._script = redis.register_script(lua.RESET)

    async def mine(self, stream: str, ids: Collection[str]) -> set[str]:
        """Those of ``ids`` still pending on this consumer (not acked, not claimed by another)."""
        if not ids:
            return set()
        ordered = sorted(ids, key=id_key)
        count = len(ordered) + MINE_SLACK
        rows = await self._redis.xpending_range(
            stream, self.group, ordered[0], ordered[-1], count, consumername=self.consumer
        )
        found = {text(row["message_id"]) for row in rows}
        mine = found & set(ids)
        if len(rows) >= count:  # a page: the ids past it are not known to be gone
            last = id_key(text(rows[-1]["message_id"]))
            mine |= {i for i in ids if id_key(i) > last}
        return mine

    async def reset(
        self, stream: str, ids: Sequence[str], idle_ms: int, retrycount: int = KEEP_COUNT, client: Any = None
    ) -> int:
        """Set the idle time of ``ids`` (those still ours); returns how many were touched."""
        touched = 0
        for start in range(0, len(ids), RESET_CHUNK):
            chunk = ids[start : start + RESET_CHUNK]
            args = [self.group, self.consumer, idle_ms, retrycount, *chunk]
            result = await queue_script(self._script, [stream], args, client or self._redis)
            touched += 0 if client is not None else int(result)
        return touched
