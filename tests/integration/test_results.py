"""Results end to end on a real Redis: ``handler.call`` round trips through an in-process
worker (inline executor, Ray task mode, actor mode), dead letters, timeouts and late fetches,
a thousand concurrent calls on one waiter, and Redis Cluster."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import results_app
from redis.asyncio import Redis

from streamtasks import CallTimeout, DeadLettered, Producer, ResultNotFound
from streamtasks.keys import result_key
from streamtasks.serve import RayConfig, ServeConfig, build
from streamtasks.worker import InlineExecutor, Worker, WorkerSettings

pytestmark = pytest.mark.integration
Start = Callable[..., Any]


@pytest.fixture
async def serving(redis: Redis, redis_url: str) -> AsyncIterator[Start]:
    """``serving(registry, mode=..., executor=...)`` starts a worker in this process."""
    started: list[tuple[Any, asyncio.Task[None]]] = []

    def start(registry: Any = results_app.registry, client: Redis = redis, **config: Any) -> Any:
        if config.get("mode", "tasks") == "tasks" and config.get("executor", "inline") == "inline":
            worker: Any = Worker(registry, client, InlineExecutor(), WorkerSettings(consumer="w-inline"))
        else:
            cfg = ServeConfig(settings=WorkerSettings(consumer="w-ray"), **config)
            [worker] = build(registry, client, redis_url, cfg)
        started.append((worker, asyncio.create_task(worker.run())))
        return worker

    yield start
    for worker, _ in started:
        worker.stop()
    await asyncio.wait_for(asyncio.gather(*(task for _, task in started)), 60)


@pytest.fixture
async def producer(redis: Redis) -> AsyncIterator[Producer]:
    async with Producer(redis) as p:
        yield p


async def test_a_call_round_trip_and_its_stored_result(
    redis: Redis, serving: Start, producer: Producer
) -> None:
    serving()
    assert await results_app.double.call({"x": 21}, producer=producer, message_id="m-21") == 42
    assert await results_app.double.result("m-21", producer=producer) == 42
    ttl = await redis.pttl(result_key("calls", "m-21"))
    assert 3_500_000 < ttl <= 3_600_000  # kept for result_ttl (one hour)
    assert await results_app.batch_double.call({"x": 4}, producer=producer) == 8


async def test_a_thousand_concurrent_calls_are_all_answered_by_one_waiter(
    serving: Start, producer: Producer
) -> None:
    serving()
    answers = await asyncio.gather(
        *(results_app.double.call({"x": i}, producer=producer, timeout=60) for i in range(1000))
    )
    assert answers == [2 * i for i in range(1000)]
    assert producer._replies is not None
    assert producer._replies.reads < 1000  # notifications arrive in batches on one read


async def test_a_dead_lettered_call_raises_with_the_reason(
    redis: Redis, serving: Start, producer: Producer
) -> None:
    serving()
    with pytest.raises(DeadLettered) as caught:
        await results_app.refuse.call({"x": 1}, producer=producer, message_id="r-1")
    error = caught.value
    assert (error.reason, error.error_type, error.error) == ("refused", "Reject", "refused on purpose")
    [(dead_id, fields)] = await redis.xrange("refusals:dead")
    assert error.dead_letter_id == dead_id.decode() and fields[b"reason"] == b"refused"
    with pytest.raises(DeadLettered):  # stored too, in the same step
        await results_app.refuse.result("r-1", producer=producer)


async def test_a_timeout_leaves_the_entry_to_be_handled_and_fetched_later(
    serving: Start, producer: Producer
) -> None:
    serving()
    with pytest.raises(CallTimeout) as caught:
        await results_app.slow.call({"s": 0.5}, producer=producer, timeout=0.05, message_id="s-1")
    assert isinstance(caught.value, TimeoutError) and caught.value.message_id == "s-1"
    with pytest.raises(ResultNotFound):
        await results_app.slow.result("s-1", producer=producer)
    assert await results_app.slow.result("s-1", producer=producer, timeout=10) == "late"


async def test_calls_in_task_mode_run_in_ray_tasks(
    ray_address: str, serving: Start, producer: Producer
) -> None:
    serving(mode="tasks", executor="ray", ray=RayConfig(address=ray_address))
    got = await results_app.whose.call({"x": 3}, producer=producer, timeout=60)
    assert got["x"] == 3 and got["pid"] != os.getpid()
    with pytest.raises(DeadLettered, match="refused"):
        await results_app.refuse.call({"x": 1}, producer=producer, timeout=60)


async def test_calls_in_actor_mode_are_answered_by_an_actor(
    ray_address: str, serving: Start, producer: Producer
) -> None:
    serving(mode="actors", actors=1)
    got = await results_app.whose.call({"x": 5}, producer=producer, timeout=60)
    assert got["x"] == 5 and got["pid"] != os.getpid()
    assert await results_app.batch_double.call({"x": 6}, producer=producer, timeout=60) == 12
    with pytest.raises(DeadLettered, match="refused"):
        await results_app.refuse.call({"x": 1}, producer=producer, timeout=60)


async def test_calls_on_redis_cluster_keep_their_keys_in_the_entrys_slot(
    cluster_redis: Redis, serving: Start
) -> None:
    serving(results_app.cluster_registry, client=cluster_redis)
    async with Producer(cluster_redis) as producer:
        assert await results_app.tagged.call({"x": "abc"}, producer=producer, timeout=30) == "ABC"
