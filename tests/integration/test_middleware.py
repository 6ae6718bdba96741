"""Middleware on real Redis in every mode: hooks run in the process that runs the handler (an
actor, a Ray task), settle hooks where settle runs, the middleware objects travel with the
registry, and a failing ``on_dead_letter`` hook neither loses the dead letter nor blocks the
batch."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import hooks_app
import pytest
from redis.asyncio import Redis
from support.waiting import wait_until

from streamtasks.serve import RayConfig, ServeConfig, build
from streamtasks.worker import InlineExecutor, Worker, WorkerSettings

pytestmark = pytest.mark.integration


@pytest.fixture
async def serving(
    redis: Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[..., Any]]:
    monkeypatch.setenv("TEST_REDIS_URL", redis_url)
    started: list[tuple[Any, asyncio.Task[None]]] = []

    def start(mode: str = "inline", **config: Any) -> None:
        settings = WorkerSettings(consumer="w", visibility_timeout=5)
        if mode == "inline":
            worker: Any = Worker(hooks_app.registry, redis, InlineExecutor(), settings)
        else:
            [worker] = build(
                hooks_app.registry, redis, redis_url, ServeConfig(mode=mode, settings=settings, **config)
            )
        started.append((worker, asyncio.create_task(worker.run())))

    yield start
    for worker, _ in started:
        worker.stop()
    await asyncio.wait_for(asyncio.gather(*(t for _, t in started)), 60)


async def calls(redis: Redis) -> list[tuple[int, str, list[str]]]:
    out = []
    for raw in await redis.lrange(hooks_app.CALLS, 0, -1):
        pid, hook, *rest = raw.decode().split()
        out.append((int(pid), hook, rest))
    return out


async def run_with_one_bad_entry(redis: Redis) -> str:
    pipe = redis.pipeline(transaction=False)
    for n in range(20):
        pipe.xadd("hooked", {"n": str(n), **({"bad": "1"} if n == 7 else {})})
    ids = await pipe.execute()
    await wait_until(lambda: _len_is(redis, hooks_app.HANDLED, 19), timeout=60)
    await wait_until(lambda: _dead_logged(redis), timeout=60)
    return ids[7].decode()


async def _len_is(redis: Redis, key: str, n: int) -> bool:
    return int(await redis.llen(key)) == n


async def _dead_logged(redis: Redis) -> bool:
    return any(hook == "on_dead_letter" for _, hook, _ in await calls(redis))


async def test_a_failing_on_dead_letter_hook_neither_loses_the_dead_letter_nor_blocks_the_batch(
    redis: Redis, serving: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    serving("inline")
    bad = await run_with_one_bad_entry(redis)
    [(dead_id, fields)] = await redis.xrange("hooked:dead")
    assert fields[b"id"].decode() == bad and fields[b"error_type"] == b"ValueError"
    assert int((await redis.xpending("hooked", "hooks-tests"))["pending"]) == 0  # batch-mates acked
    [(_, _, (entry_id, logged_dead_id))] = [c for c in await calls(redis) if c[1] == "on_dead_letter"]
    assert (entry_id, logged_dead_id) == (bad, dead_id.decode())  # the next hook still ran
    assert any("BrokenDeadLetterHook.on_dead_letter" in r.getMessage() for r in caplog.records)
    await redis.xadd("hooked", {"n": "later"})  # the worker goes on
    await wait_until(lambda: _len_is(redis, hooks_app.HANDLED, 20), timeout=30)


async def test_hooks_travel_to_the_actor_and_run_there(
    ray_address: str, redis: Redis, serving: Callable[..., Any]
) -> None:
    serving("actors", actors=1)
    await run_with_one_bad_entry(redis)
    seen = await calls(redis)
    assert {hook for _, hook, _ in seen} == {"around_call", "on_dead_letter"}
    assert len({pid for pid, _, _ in seen}) == 1 and seen[0][0] != os.getpid()  # all in the actor
    assert sum(hook == "around_call" for _, hook, _ in seen) == 20


async def test_in_task_mode_call_hooks_run_in_the_ray_task_and_settle_hooks_in_the_worker(
    ray_address: str, redis: Redis, serving: Callable[..., Any]
) -> None:
    serving("tasks", executor="ray", ray=RayConfig(address=ray_address))
    await run_with_one_bad_entry(redis)
    seen = await calls(redis)
    assert {pid for pid, hook, _ in seen if hook == "on_dead_letter"} == {os.getpid()}
    assert os.getpid() not in {pid for pid, hook, _ in seen if hook == "around_call"}
