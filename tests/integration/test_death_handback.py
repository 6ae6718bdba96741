"""The hand-over of a dead actor's entries (real redis-server): exactly that consumer's
pending entries become claimable at once, in pages; a live consumer's keep their idle time."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from streamtasks.ray import deaths
from streamtasks.worker.pending import HANDBACK_IDLE_MS

pytestmark = pytest.mark.integration


async def _idle(redis: aioredis.Redis, consumer: str) -> list[int]:
    rows: Any = await redis.xpending_range("s", "g", "-", "+", 100, consumername=consumer)
    return [int(row["time_since_delivered"]) for row in rows]


async def test_only_the_dead_consumers_entries_are_handed_over(
    redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deaths, "PAGE", 3)  # several pages
    for i in range(20):
        await redis.xadd("s", {"i": str(i)})
    await redis.xgroup_create("s", "g", "0")
    await redis.xreadgroup("g", "w-a0", {"s": ">"}, count=8)  # the live one
    await redis.xreadgroup("g", "w-a1", {"s": ">"}, count=7)  # the dead one
    await redis.xreadgroup("g", "w-a10", {"s": ">"}, count=5)  # a name the dead one's starts
    moved = await deaths.hand_back(redis, "g", "w-a1", ["s", "absent"])
    assert moved == {"s": 7}
    assert all(idle >= HANDBACK_IDLE_MS for idle in await _idle(redis, "w-a1"))
    assert all(idle < 60_000 for idle in await _idle(redis, "w-a0") + await _idle(redis, "w-a10"))
    assert await deaths.hand_back(redis, "g", "nobody", ["s"]) == {}
