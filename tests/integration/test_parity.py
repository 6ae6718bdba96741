"""One scenario list, two runners: the in-memory app and a real worker on Redis + Ray give the
same outcome, reason and attempt count for every entry (they share the decision code)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import pytest
import scenario_app
from redis.asyncio import Redis

from streamtasks.deadletter import DeadLetter
from streamtasks.ray import RayExecutor
from streamtasks.testing import InMemoryApp
from streamtasks.worker import Worker, WorkerSettings

pytestmark = pytest.mark.integration

BIG = "x" * (scenario_app.MAX_ENTRY_BYTES + 1)
#: (stream, fields) of each entry, numbered by ``n``.
SCENARIOS: list[tuple[str, dict[str, str]]] = [
    ("scenario_each", {"do": "ok"}),
    ("scenario_each", {"do": "fail"}),  # handler error: retried, then dead-lettered
    ("scenario_each", {"do": "flaky"}),  # handler error once, then handled
    ("scenario_each", {"do": "retry_after"}),  # Retry(after=0.2) twice, then handled
    ("scenario_each", {"do": "reject"}),
    ("scenario_each", {"do": "json", "v": "{not json"}),  # bad JSON
    ("scenario_each", {"do": "ok", "v": BIG}),  # too large
    ("scenario_batch", {"do": "ok"}),  # a batch partly failing
    ("scenario_batch", {"do": "fail"}),
    ("scenario_batch", {"do": "ok"}),
]
#: n -> (outcome, reason, attempts, error type, error)
EXPECTED = {
    0: ("done", "", 1, "", ""),
    1: ("dead", "handler_error", 3, "ValueError", "always fails (attempt 3)"),
    2: ("done", "", 2, "", ""),
    3: ("done", "", 3, "", ""),
    4: ("dead", "rejected", 1, "Reject", "not for us"),
    5: ("dead", "invalid_json", 1, "DecodeError", "invalid_json: field 'v': Expecting property name enclosed "
        "in double quotes: line 1 column 2 (char 1)"),
    6: ("dead", "too_large", 1, "DecodeError", "too_large: entry is 308 bytes, over the 300-byte limit"),
    7: ("done", "", 1, "", ""),
    8: ("dead", "handler_error", 2, "RuntimeError", "this entry of the batch failed"),
    9: ("done", "", 1, "", ""),
}  # fmt: skip
Outcomes = dict[int, tuple[str, str, int, str, str]]


def entries() -> list[tuple[str, dict[str, str]]]:
    return [(stream, {"n": str(n), **fields}) for n, (stream, fields) in enumerate(SCENARIOS)]


def outcomes(handled: list[Mapping[str, bytes]], dead: list[DeadLetter]) -> Outcomes:
    out: Outcomes = {}
    for fields in handled:
        n = int(fields["n"])
        assert n not in out, f"entry {n} handled twice"
        out[n] = ("done", "", int(fields["attempt"]), "", "")
    for letter in dead:
        n = int(letter.fields["n"])
        assert n not in out, f"entry {n} both handled and dead"
        out[n] = ("dead", letter.reason, letter.attempts, letter.error_type, letter.error)
    return out


async def run_in_memory() -> Outcomes:
    async with InMemoryApp(scenario_app.registry) as app:
        for stream, fields in entries():
            await app.send_raw(stream, fields)
        await app.drain()
        handled = [fields for _, fields in app.entries(scenario_app.HANDLED)]
        dead = app.dead_letters("scenario_each") + app.dead_letters("scenario_batch")
        assert all(not app.pending(s) for s in scenario_app.registry.streams)
    return outcomes(handled, dead)


async def run_on_redis_and_ray(redis: Redis, redis_url: str) -> Outcomes:
    for stream, fields in entries():
        await redis.xadd(stream, fields)  # type: ignore[arg-type]
    executor = RayExecutor(env={"REDIS_URL": redis_url})  # the handlers' Producer
    settings = WorkerSettings(consumer="parity", visibility_timeout=2, reclaim_interval=0.1)
    worker = Worker(scenario_app.registry, redis, executor, settings)
    task = asyncio.create_task(worker.run())
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            handled, dead = await _read_back(redis)
            if len(handled) + len(dead) >= len(SCENARIOS):
                break
            await asyncio.sleep(0.1)
    finally:
        worker.stop()
        await task
    for stream in scenario_app.registry.streams:
        assert int((await redis.xpending(stream, "scenarios"))["pending"]) == 0
    return outcomes(*await _read_back(redis))


async def _read_back(redis: Redis) -> tuple[list[Mapping[str, bytes]], list[DeadLetter]]:
    handled = [{k.decode(): v for k, v in f.items()} for _, f in await redis.xrange(scenario_app.HANDLED)]
    dead = [
        DeadLetter.from_entry(i, f)
        for s in ("scenario_each", "scenario_batch")
        for i, f in await redis.xrange(f"{s}:dead")
    ]
    return handled, dead


async def test_the_scenarios_end_the_same_in_memory_and_on_redis_and_ray(
    redis: Redis, redis_url: str, ray_address: Any
) -> None:
    in_memory = await run_in_memory()
    real = await run_on_redis_and_ray(redis, redis_url)
    assert in_memory == EXPECTED
    assert real == in_memory
