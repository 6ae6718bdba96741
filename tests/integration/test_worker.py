"""The worker end to end: real redis-server, real Ray, entries written with a raw XADD."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import core_app
import pytest
from redis.asyncio import Redis
from support.entries import handled, pending, xadd_many
from support.waiting import wait_until

from streamtasks.ray import RayExecutor
from streamtasks.worker import Worker, WorkerSettings

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.integration


@pytest.fixture
async def app(ray_address: str) -> Any:
    return core_app


@pytest.fixture
async def running(redis: Redis, app: Any) -> AsyncIterator[Any]:
    """Start in-process workers (sharing the session's Ray) and stop them after the test."""
    started: list[tuple[Worker, asyncio.Task[None]]] = []

    def start(consumer: str, **settings: Any) -> Worker:
        worker = Worker(
            app.registry,
            redis,
            RayExecutor(),
            WorkerSettings(consumer=consumer, visibility_timeout=5, reclaim_interval=0.2, **settings),
        )
        started.append((worker, asyncio.create_task(worker.run())))
        return worker

    yield start
    for worker, _ in started:
        worker.stop()
    await asyncio.gather(*(task for _, task in started))


async def test_raw_xadd_entries_are_handled_by_every_kind_of_handler(redis: Redis, running: Any) -> None:
    """Sync/async, per-entry/batch handlers all handle raw XADD entries once, and ack them."""
    sent = {
        s: await xadd_many(redis, s, 300) for s in ("sync_each", "async_each", "sync_batch", "async_batch")
    }
    running("w1")
    for stream, ids in sent.items():
        expected = len(ids)
        await wait_until(lambda s=stream, n=expected: _count_is(redis, s, n))
        counts = await handled(redis, stream)
        assert set(counts) == set(ids)
        assert set(counts.values()) == {1}
        await wait_until(lambda s=stream: _pending_is(redis, s, 0))


async def _count_is(redis: Redis, stream: str, n: int) -> bool:
    return len(await handled(redis, stream)) == n


async def _pending_is(redis: Redis, stream: str, n: int) -> bool:
    return await pending(redis, stream, "core-tests") == n


async def test_one_failing_entry_does_not_fail_or_rerun_its_batch_mates(redis: Redis, running: Any) -> None:
    """A failing entry is dead-lettered (max_retries=0); its batch-mates are handled once."""
    good = await xadd_many(redis, "sync_each", 50)
    bad = await redis.xadd("sync_each", {"fail": "1"})
    good += await xadd_many(redis, "sync_each", 50)
    good_b = await xadd_many(redis, "async_batch", 50)
    bad_b = await redis.xadd("async_batch", {"fail": "1"})
    running("w1")
    await wait_until(lambda: _dead_is(redis, "sync_each:dead", 1))
    await wait_until(lambda: _dead_is(redis, "async_batch:dead", 1))
    counts = await handled(redis, "sync_each")
    assert set(counts) == set(good) and set(counts.values()) == {1}
    counts_b = await handled(redis, "async_batch")
    assert set(counts_b) == set(good_b) and set(counts_b.values()) == {1}
    [(_, dead)] = await redis.xrange("sync_each:dead")
    assert dead[b"id"] == bad and dead[b"error_type"] == b"ValueError"
    [(_, dead_b)] = await redis.xrange("async_batch:dead")
    assert dead_b[b"id"] == bad_b
    await wait_until(lambda: _pending_is(redis, "sync_each", 0))


async def _dead_is(redis: Redis, stream: str, n: int) -> bool:
    return int(await redis.xlen(stream)) == n


async def test_two_workers_share_the_group_and_handle_each_entry_once(redis: Redis, running: Any) -> None:
    """Two consumers of one group split the entries; none is handled twice."""
    ids = await xadd_many(redis, "sync_each", 3000, sleep="0.0005")
    running("w1")
    running("w2")
    await wait_until(lambda: _count_is(redis, "sync_each", 3000), timeout=60)
    counts = await handled(redis, "sync_each")
    assert set(counts) == set(ids) and set(counts.values()) == {1}
    groups = await redis.xinfo_consumers("sync_each", "core-tests")
    assert len(groups) == 2


async def test_in_flight_batches_are_bounded(redis: Redis, running: Any) -> None:
    """Backpressure: a slow handler does not make the worker read the whole stream."""
    await xadd_many(redis, "sync_each", 5000, sleep="0.01")
    worker = running("w1")
    await asyncio.sleep(2.0)
    lane = worker.lanes["sync_each"]
    held = len(lane.held)
    bound = (lane.spec.max_in_flight + lane.prefetch) * lane.spec.batch_size
    assert 0 < held <= bound
    assert await pending(redis, "sync_each", "core-tests") <= bound
