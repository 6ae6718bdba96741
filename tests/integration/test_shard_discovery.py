"""A keyed send to a sharded stream reaches its shard though the producer was never told the
shard count: the workers record it in Redis and producers look it up. A key nothing says is
sharded is an error, never an entry in a stream no worker reads; ``status`` names entries that
went to the unsharded stream anyway."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from streamtasks import Message, Producer, Registry
from streamtasks.errors import ConfigError
from streamtasks.keys import pick_shard, shard_count_key, shard_stream
from streamtasks.observe.inspect import gather_status
from streamtasks.worker import InlineExecutor, Worker, WorkerSettings

pytestmark = pytest.mark.integration

SHARDS = 8
handled: collections.Counter[str] = collections.Counter()
registry = Registry(group="shop")


@registry.stream_handler("orders", shards=SHARDS, batch=True)
def on_orders(msgs: list[Message]) -> None:
    handled.update(f"{m.stream}|{m['user']}|{m['n']}" for m in msgs)


@pytest.fixture
async def worker(redis: Redis) -> AsyncIterator[Worker]:
    handled.clear()
    w = Worker(registry, redis, InlineExecutor(), WorkerSettings(consumer="w", block=0.05))
    task = asyncio.create_task(w.run())
    await asyncio.wait_for(w.reading.wait(), 30)
    yield w
    w.stop()
    await asyncio.wait_for(task, 30)


async def until(check: object, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "not within the time"
        await asyncio.sleep(0.02)


async def test_a_producer_not_told_the_shards_sends_each_key_to_its_shard(
    worker: Worker, redis: Redis, redis_url: str
) -> None:
    """The issue's case: Producer(url=...).send("orders", fields, key=...) for a handler with
    shards=8, without shards on the producer: every entry handled, each in its key's shard."""
    assert await redis.get(shard_count_key("orders")) == str(SHARDS).encode()
    users = [f"user-{i}" for i in range(40)]
    async with Producer(url=redis_url) as producer:
        await asyncio.gather(
            *(producer.send("orders", {"user": u, "n": str(n)}, key=u) for u in users for n in range(25))
        )
        await producer.send_many(
            "orders", [{"user": "bulk", "n": str(n)} for n in range(50)], keys=["bulk"] * 50
        )
    await until(lambda: sum(handled.values()) == 1050)
    assert await redis.exists("orders") == 0  # nothing went to the unsharded stream
    for entry, times in handled.items():
        stream, user, _ = entry.split("|")
        assert times == 1 and stream == shard_stream("orders", pick_shard(user, SHARDS)), entry


async def test_a_key_for_a_stream_nothing_says_is_sharded_is_an_error(redis: Redis, redis_url: str) -> None:
    async with Producer(url=redis_url) as producer:
        with pytest.raises(ConfigError, match=r"a key was given for stream 'payments'.*shards="):
            await producer.send("payments", {"n": "1"}, key="user-1")
        with pytest.raises(ConfigError, match=r"a key was given for stream 'payments'"):
            await producer.send_many("payments", [{"n": "1"}], keys=["user-1"])
        assert await producer.send("payments", {"n": "1"})  # no key: the plain stream, as asked
    assert await redis.xlen("payments") == 1


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.one_of(st.binary(max_size=30), st.integers(-10, 10_000).map(lambda i: str(i).encode())))
async def test_a_recorded_count_that_does_not_fit_is_an_error_naming_the_key(
    redis: Redis, redis_url: str, value: bytes
) -> None:
    """Whatever another process wrote there: a valid count routes by it, anything else is one
    ConfigError naming the key."""
    await redis.set(shard_count_key("orders"), value)
    async with Producer(url=redis_url) as producer:
        text = value.decode("utf-8", "replace")
        if text.isascii() and text.isdigit() and 1 <= int(text) <= 4096:
            assert await producer.send("orders", {"n": "1"}, key="k")
            assert await redis.xlen(shard_stream("orders", pick_shard("k", int(text)))) >= 1
        else:
            with pytest.raises(ConfigError, match=r"streamtasks:shards:orders holds .*not a shard count"):
                await producer.send("orders", {"n": "1"}, key="k")
    await redis.flushall()


async def test_status_names_entries_left_in_the_unsharded_stream(worker: Worker, redis: Redis) -> None:
    await redis.xadd("orders", {"user": "u", "n": "1"})  # a producer that knew nothing of the shards
    status = await gather_status(redis, list(registry.streams), "shop", throughput=False)
    [problem] = [p for p in status["problems"] if p.startswith("orders:")]
    assert "1 entries and no consumer group, but its handler is sharded" in problem
    assert shard_count_key("orders") in problem
