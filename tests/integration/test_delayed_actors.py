"""Actor mode: the worker process runs the one mover and ticker for its actors; delayed
entries and ticks reach the actors' handlers, each once."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from support.waiting import wait_until

from streamtasks import Producer

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.integration


async def test_actor_mode_moves_each_delayed_entry_once_and_ticks_once(
    redis: Redis, redis_url: str, ray_address: str, spawn: Any
) -> None:
    worker = spawn(
        [sys.executable, "-m", "streamtasks", "worker", "timers_app:registry", "--mode", "actors",
         "--actors", "2", "--redis-url", redis_url, "--ray-address", ray_address],
        cwd=HERE,
    )  # fmt: skip
    sent = await Producer(redis).send_many("delayed", [{"n": str(i)} for i in range(100)], delay=1.0)
    assert await redis.zcard("delayed:delayed") == 100

    async def all_handled() -> bool:
        return int(await redis.hlen("timers:handled")) >= 100 and int(await redis.hlen("timers:ticks")) >= 3

    await wait_until(all_handled, timeout=90)
    handled = {k.decode(): int(v) for k, v in (await redis.hgetall("timers:handled")).items()}
    assert set(handled) == set(sent) and set(handled.values()) == {1}
    assert await redis.xlen("delayed") == 100  # each entered the stream once
    ticks = await redis.hgetall("timers:ticks")
    assert set(ticks.values()) == {b"1"}
    worker.terminate()
    assert worker.wait(60) == 0, worker.output_tail()
