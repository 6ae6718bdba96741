"""kill -9 of a worker while it moves delayed entries: nothing is lost, nothing enters the
stream twice, nothing is handled before its due time (small scale: 300 entries over 3 s)."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from support.waiting import wait_until

from streamtasks import Producer

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.fault
ENTRIES = 300


def _worker(spawn: Any, redis_url: str, name: str) -> Any:
    return spawn(
        [sys.executable, "-m", "streamtasks", "worker", "timers_app:registry", "--mode", "tasks",
         "--executor", "inline", "--consumer", name, "--visibility-timeout", "2", "--redis-url", redis_url],
        cwd=HERE, name=name, env={"TEST_REDIS_URL": redis_url},
    )  # fmt: skip


async def test_kill_9_while_moving_loses_nothing(redis: Redis, redis_url: str, spawn: Any) -> None:
    first = _worker(spawn, redis_url, "first")
    await first.await_log(r"reading", timeout=30)
    items = [{"n": str(i)} for i in range(ENTRIES)]
    sent = await Producer(redis).send_many(
        "delayed", items, delay=[0.05 + 3.0 * i / ENTRIES for i in range(ENTRIES)]
    )

    async def some_handled() -> bool:
        return int(await redis.hlen("timers:handled")) >= ENTRIES // 4

    await wait_until(some_handled, timeout=30)
    first.kill9()
    assert await redis.zcard("delayed:delayed") > 0, "the kill came too late to test anything"
    second = _worker(spawn, redis_url, "second")

    async def all_handled() -> bool:
        return int(await redis.hlen("timers:handled")) >= ENTRIES

    await wait_until(all_handled, timeout=60)
    entries: Any = await redis.xrange("delayed")
    in_stream = Counter(f[b"_st_mid"].decode() for _, f in entries)
    assert set(in_stream) == set(sent) and set(in_stream.values()) == {1}  # each entered once
    late = [float(v) for v in (await redis.hgetall("timers:late")).values()]
    assert len(late) == ENTRIES and min(late) >= 0  # none handled before its due time
    assert await redis.zcard("delayed:delayed") == 0 and await redis.hlen("delayed:delayed:fields") == 0
    second.terminate()
    assert second.wait(30) == 0, second.output_tail()
