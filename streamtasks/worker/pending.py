"""This consumer's pending entries: set their idle time (and delivery count) atomically.

One Lua script (:data:`streamtasks.lua.RESET`) serves three stages: a lease renewal (idle 0),
a scheduled retry (idle = visibility timeout - delay) and a hand-back (idle far past any
visibility timeout). It touches only entries still pending on this consumer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from .. import lua
from ..connect import queue_script

#: Ids per script call: bounded arguments whatever the batch size.
RESET_CHUNK = 1000
#: Idle time given to entries handed back on shutdown: far past any visibility timeout.
HANDBACK_IDLE_MS = 10**12
#: Keep the entry's delivery counter.
KEEP_COUNT = -1


class PendingEntries:
    """The RESET script bound to one group and consumer."""

    def __init__(self, redis: Redis, group: str, consumer: str) -> None:
        self.group = group
        self.consumer = consumer
        self._redis = redis
        self._script = redis.register_script(lua.RESET)

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
