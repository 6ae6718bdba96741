"""Results through a kill -9 of the worker: every call is answered or times out, and no call
is answered with a value other than the one stored for its message (the handler answers
something new on every run, so a re-run after the crash could only show through)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
import results_app
from redis.asyncio import Redis
from support.invariants import READY_LOG, WORKER_START_S, poll
from support.modes import MODE

from streamtasks import CallTimeout, Producer

pytestmark = [pytest.mark.fault, pytest.mark.integration]
CALLS = 200
VISIBILITY_S = 3


async def test_kill9_of_the_worker_during_calls_answers_each_call_once(
    redis: Redis, redis_url: str, ray_address: str, spawn: Any
) -> None:
    argv = [
        sys.executable, "-m", "streamtasks", "worker", "results_app:registry", "--mode", MODE,
        "--ray-address", ray_address, "--redis-url", redis_url, "--streams", "crash_calls",
        "--visibility-timeout", str(VISIBILITY_S),
    ]  # fmt: skip
    first = spawn(argv, name="first")
    first.wait_for_log(READY_LOG, timeout=WORKER_START_S)
    async with Producer(redis) as producer:
        calls = [
            asyncio.create_task(
                results_app.crash.call({"x": i}, producer=producer, timeout=60, message_id=f"c{i}")
            )
            for i in range(CALLS)
        ]
        await poll(lambda: sum(c.done() for c in calls) >= 20, 60, "20 calls answered", first.output_tail)
        first.kill9()
        answered_before = sum(c.done() for c in calls)
        second = spawn(argv, name="second")
        second.wait_for_log(READY_LOG, timeout=WORKER_START_S)
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        unexpected = [o for o in outcomes if isinstance(o, BaseException) and not isinstance(o, CallTimeout)]
        assert unexpected == []
        answered = {i: o for i, o in enumerate(outcomes) if not isinstance(o, BaseException)}
        assert answered_before < CALLS and len(answered) > answered_before
        for i, value in answered.items():
            assert value["x"] == str(i)
            assert await results_app.crash.result(f"c{i}", producer=producer) == value
        again = await asyncio.gather(
            *(
                results_app.crash.call({"x": i}, producer=producer, timeout=30, message_id=f"c{i}")
                for i in answered
            )
        )
        assert again == list(answered.values())  # a second call of a message gets the same answer
        print(f"kill -9 during {CALLS} calls: {answered_before} answered before, {len(answered)} in all")
