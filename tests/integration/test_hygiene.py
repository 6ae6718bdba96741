"""Consumer hygiene against a real redis-server: a consumer is removed only when no live
heartbeat names it, it holds nothing and it has been idle past the grace period, checked
atomically with the removal; what Redis reports is read defensively (hypothesis)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from streamtasks import keys, lua
from streamtasks.redisutil import text
from streamtasks.worker.health import RedisHealth
from streamtasks.worker.hygiene import Hygiene, candidates

pytestmark = pytest.mark.integration
GRACE = 0.3


async def _consumers(redis: aioredis.Redis) -> set[str]:
    rows: Any = await redis.xinfo_consumers("s", "g")
    return {row["name"].decode() for row in rows}


async def _read(redis: aioredis.Redis, consumer: str, count: int = 1) -> None:
    await redis.xreadgroup("g", consumer, {"s": ">"}, count=count)


async def test_only_gone_empty_consumers_idle_past_the_grace_are_removed(redis: aioredis.Redis) -> None:
    for i in range(5):
        await redis.xadd("s", {"i": str(i)})
    await redis.xgroup_create("s", "g", "0")
    await redis.xgroup_createconsumer("s", "g", "gone")  # a dead worker's, nothing held
    await redis.xgroup_createconsumer("s", "g", "beats")  # alive on a quiet stream: idle, beats
    await redis.set(keys.heartbeat_key("g", "beats"), "{}", ex=30)
    await _read(redis, "holds")  # dead, but holds an entry: its entries are reclaimed first
    await redis.xgroup_createconsumer("s", "g", "me")
    await asyncio.sleep(GRACE + 0.1)
    await redis.xgroup_createconsumer("s", "g", "recent")  # gone, but inside the grace period
    hygiene = Hygiene(redis, "g", "me", ["s", "no-such-stream"], GRACE, RedisHealth())
    assert await hygiene.sweep() == {"s": ["gone"]}
    assert await _consumers(redis) == {"beats", "holds", "me", "recent"}
    await redis.xautoclaim("s", "g", "me", 0, "0")  # its entry reclaimed by another
    await asyncio.sleep(GRACE + 0.1)
    assert await hygiene.sweep() == {"s": ["holds", "recent"]}
    assert await _consumers(redis) == {"beats", "me"}


async def test_the_removal_rechecks_pending_and_idle_in_the_same_step(redis: aioredis.Redis) -> None:
    """A consumer that was a candidate but read (or got an entry) since is kept."""
    await redis.xadd("s", {"i": "1"})
    await redis.xgroup_create("s", "g", "0")
    await redis.xgroup_createconsumer("s", "g", "late")
    await asyncio.sleep(GRACE + 0.1)
    rows: Any = await redis.xinfo_consumers("s", "g")
    assert candidates(rows, int(GRACE * 1000), "me") == ["late"]
    await _read(redis, "late")  # a worker under that name read meanwhile
    forget = redis.register_script(lua.FORGET_CONSUMER)
    assert await forget(keys=["s"], args=["g", "late", int(GRACE * 1000)]) == 0
    await redis.xack("s", "g", *[e[0] for e in (await redis.xrange("s"))])
    assert await forget(keys=["s"], args=["g", "late", int(GRACE * 1000)]) == 0  # idle 0 now
    assert await _consumers(redis) == {"late"}


names = st.one_of(st.text(max_size=8), st.binary(max_size=8))
numbers = st.one_of(st.integers(-5, 10**6), st.text(max_size=4), st.none())
consumer_rows = st.fixed_dictionaries(
    {"name": names, "pending": st.integers(0, 3), "idle": st.integers(0, 2000)},
    optional={"inactive": numbers},
)
garbage_rows = st.dictionaries(st.sampled_from(["name", "pending", "idle", "x"]), numbers)
rows = st.lists(st.one_of(consumer_rows, garbage_rows), max_size=6)


@given(rows)
def test_any_reply_gives_only_named_empty_idle_consumers(replies: list[dict[Any, Any]]) -> None:
    """Whatever a server answers, nothing raises, and only named, empty consumers idle past
    the grace come out."""
    out = candidates(replies, 1000, "me")
    assert "me" not in out and all(out)
    expected = [
        text(r["name"])
        for r in replies
        if set(r) >= {"name", "pending", "idle"}
        and _int(r["pending"]) == 0
        and (_int(r["idle"]) or 0) >= 1000
        and text(r["name"]) not in ("", "me")
    ]
    assert out == expected


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
