"""A stop ends a worker's blocking read at once (``CLIENT UNBLOCK``) instead of waiting for its
``BLOCK`` to run out, whenever the stop comes; a user without the ``CLIENT`` permission (the
docs' least-privilege ACL, docs/guides/configuration.md) reads, handles and stops as before.
Real redis-server."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from support.waiting import equals, wait_until

from streamtasks import Message, Registry
from streamtasks.worker import InlineExecutor, Worker, WorkerSettings
from streamtasks.worker.lanes import Lane
from streamtasks.worker.read import Reader

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GROUP, STREAM = "unblock-tests", "unblock"
LONG_BLOCK = 30.0  # a stop that waited for the read would take this long
USER, PASSWORD = "st-least", "least-pw"


def _registry(handled: list[str] | None = None) -> Registry:
    registry = Registry(group=GROUP)

    def handle(msg: Message) -> None:
        if handled is not None:
            handled.append(msg.id)

    registry.stream_handler(STREAM)(handle)
    return registry


def _reader(redis: aioredis.Redis) -> tuple[Reader, Lane]:
    lane = Lane(_registry().handlers[STREAM], prefetch=1)
    return Reader(redis, GROUP, "c1", {STREAM: lane}), lane


async def _blocked_reads(redis: aioredis.Redis) -> int:
    """Clients blocked in XREADGROUP now (CLIENT LIST: flag ``b``)."""
    clients = await redis.client_list()
    return sum(1 for c in clients if c["cmd"] == "xreadgroup" and "b" in c["flags"])


async def _pending(redis: aioredis.Redis) -> int:
    return int((await redis.xpending(STREAM, GROUP))["pending"])


async def test_unblock_ends_a_blocking_read_at_once_and_it_delivers_nothing(redis: aioredis.Redis) -> None:
    reader, lane = _reader(redis)
    await reader.ensure_groups()
    read = asyncio.create_task(reader.read([lane], block=LONG_BLOCK))
    await wait_until(lambda: equals(_blocked_reads(redis), 1), timeout=5)
    started = time.monotonic()
    await reader.unblock()
    assert await asyncio.wait_for(read, 5) == {}
    assert time.monotonic() - started < 2
    assert await _pending(redis) == 0
    # and no new blocking read starts after it: a read returns empty at once
    assert await asyncio.wait_for(reader.read([lane], block=LONG_BLOCK), 2) == {}
    await reader.close()


@pytest.mark.parametrize("yields", range(6))
async def test_an_unblock_that_comes_before_the_read_reaches_redis_still_ends_it(
    redis: aioredis.Redis, yields: int
) -> None:
    """The unblock may run at any step of the read (asking CLIENT ID, sending XREADGROUP on
    another connection than the unblock's): the read ends within seconds, not after its block."""
    reader, lane = _reader(redis)
    await reader.ensure_groups()
    read = asyncio.create_task(reader.read([lane], block=LONG_BLOCK))
    for _ in range(yields):
        await asyncio.sleep(0)
    await asyncio.wait_for(reader.unblock(), 5)
    assert await asyncio.wait_for(read, 5) == {}
    assert await _blocked_reads(redis) == 0
    await reader.close()


async def test_a_stopped_worker_does_not_wait_for_its_blocking_read(redis: aioredis.Redis) -> None:
    """An idle worker with a 30 s read block: stop() ends it within seconds, and an entry
    handled before the stop stays handled (acked), nothing pending."""
    handled: list[str] = []
    settings = WorkerSettings(consumer="idle", block=LONG_BLOCK)
    worker = Worker(_registry(handled), redis, InlineExecutor(), settings)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.reading.wait(), 10)
    entry = (await redis.xadd(STREAM, {"n": "1"})).decode()
    await wait_until(lambda: handled == [entry], timeout=10)
    await wait_until(lambda: equals(_blocked_reads(redis), 1), timeout=5)  # idle again, blocked
    started = time.monotonic()
    worker.stop()
    await asyncio.wait_for(task, LONG_BLOCK / 2)
    assert time.monotonic() - started < 5
    assert await _pending(redis) == 0


def _docs_acl_rules() -> list[str]:
    """The rules of the documented least-privilege ``ACL SETUSER app ...`` (no CLIENT among
    them), in docs/guides/configuration.md ("Redis permissions")."""
    text = (ROOT / "docs" / "guides" / "configuration.md").read_text()
    block = re.search(r"ACL SETUSER app on >password (.+?)\n```", text, re.S)
    assert block, "the documented ACL example is gone"
    return block.group(1).replace("\\\n", " ").split()


@pytest.fixture
async def least_privileged(redis: aioredis.Redis, redis_url: str) -> AsyncIterator[aioredis.Redis]:
    rules = _docs_acl_rules()
    assert not any(r.startswith("+client") for r in rules)
    await redis.execute_command("ACL", "SETUSER", USER, "reset", "on", f">{PASSWORD}", *rules)
    client = aioredis.Redis.from_url(redis_url.replace("redis://", f"redis://{USER}:{PASSWORD}@"))
    try:
        yield client
    finally:
        await client.aclose()
        await redis.execute_command("ACL", "DELUSER", USER)


async def test_the_documented_least_privileged_user_reads_handles_and_stops_without_client(
    redis: aioredis.Redis, least_privileged: aioredis.Redis
) -> None:
    """The documented ACL (no CLIENT): the worker reads and handles entries as before; its stop
    falls back to waiting for the read's block (1 s here) instead of failing."""
    handled: list[str] = []
    settings = WorkerSettings(consumer="least", block=1.0)
    worker = Worker(_registry(handled), least_privileged, InlineExecutor(), settings)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.reading.wait(), 10)
    ids = [(await redis.xadd(STREAM, {"n": str(i)})).decode() for i in range(3)]
    await wait_until(lambda: sorted(handled) == sorted(ids), timeout=10)
    assert not worker.snapshot().failing_loops
    worker.stop()
    await asyncio.wait_for(task, 10)
    assert await _pending(redis) == 0
