"""Producer against a real redis-server."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from streamtasks import Producer, Registry

pytestmark = pytest.mark.integration


async def test_send_and_send_many_write_flat_fields_with_a_message_id(redis: Redis) -> None:
    producer = Producer(redis)
    one = await producer.send("s", {"a": "x", "n": 1, "d": {"k": [1, 2]}})
    many = await producer.send_many("s", [{"i": i} for i in range(2500)], chunk=1000)
    assert len(many) == 2500 and len(set(many)) == 2500
    entries = await redis.xrange("s")
    assert entries[0][0].decode() == one
    assert entries[0][1][b"d"] == b'{"k":[1,2]}' and entries[0][1][b"n"] == b"1"
    assert [e[0].decode() for e in entries[1:]] == many
    assert len({e[1][b"_st_mid"] for e in entries}) == 2501


async def test_concurrent_sends_are_coalesced_into_few_pipelines(redis: Redis) -> None:
    """10,000 gathered send() calls: every one gets its own id, in far fewer round trips."""
    producer = Producer(redis)
    before = int((await redis.info("stats"))["total_commands_processed"])
    ids = await asyncio.gather(*(producer.send("c", {"i": i}) for i in range(10_000)))
    after = int((await redis.info("stats"))["total_commands_processed"])
    assert len(set(ids)) == 10_000
    assert int(await redis.xlen("c")) == 10_000
    assert after - before <= 10_000 + 50  # one XADD each, no per-send extra commands
    assert producer.flushes <= 100  # ~10 pipelines of 1,000, not 10,000 round trips


async def test_explicit_message_id_makes_a_resend_recognisable(redis: Redis) -> None:
    producer = Producer(redis)
    await producer.send("s", {"a": 1}, message_id="fixed")
    await producer.send("s", {"a": 1}, message_id="fixed")
    assert [f[b"_st_mid"] for _, f in await redis.xrange("s")] == [b"fixed", b"fixed"]


async def test_maxlen_trims_approximately(redis: Redis) -> None:
    producer = Producer(redis, maxlen=100)
    await producer.send_many("t", [{"i": i} for i in range(5000)])
    assert int(await redis.xlen("t")) < 1000


async def test_handler_send_adds_to_the_handlers_stream(redis: Redis) -> None:
    registry = Registry()

    @registry.stream_handler("orders")
    def on_order(msg: object) -> None: ...

    entry_id = await on_order.send({"order_id": 7}, producer=Producer(redis), note="x")
    [(got, fields)] = await redis.xrange("orders")
    assert got.decode() == entry_id and fields[b"order_id"] == b"7" and fields[b"note"] == b"x"


async def test_a_failed_send_raises_for_its_caller_only(redis: Redis) -> None:
    await redis.set("not-a-stream", "x")
    producer = Producer(redis)
    good, bad = await asyncio.gather(
        producer.send("ok", {"a": 1}), producer.send("not-a-stream", {"a": 1}), return_exceptions=True
    )
    assert isinstance(good, str)
    assert isinstance(bad, Exception) and "WRONGTYPE" in str(bad)


async def test_sharded_sends_land_on_the_shard_of_their_key(redis: Redis, redis_url: str) -> None:
    """``Producer.send(key=)`` and ``handler.send(shard_key=)`` write to the key's shard, keep a
    ``key`` field a field, and a producer of its own connects on first use."""
    from streamtasks import Message, keys

    registry = Registry(group="g")

    @registry.stream_handler("orders", shards=4)
    def on_order(msg: Message) -> None: ...

    shard = keys.shard_stream("orders", keys.pick_shard("cust-1", 4))
    producer = Producer(url=redis_url, shards={"orders": 4})
    for i in range(3):
        await producer.send("orders", {"i": i}, key="cust-1")
    await on_order.send({"i": 3}, producer=producer, shard_key="cust-1", key="a field")
    entries = await redis.xrange(shard)
    assert [e[1][b"i"] for e in entries] == [b"0", b"1", b"2", b"3"]
    assert entries[-1][1][b"key"] == b"a field"
    spread = [await producer.send("orders", {"i": i}) for i in range(4)]
    assert len(spread) == 4 and all([await redis.xlen(s) for s in keys.shard_streams("orders", 4)])
    await producer.close()
