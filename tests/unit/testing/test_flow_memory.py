"""Flow control in the in-memory app (``streamtasks.testing``): rate limits on the fake clock,
priority levels in the worker's order, max_concurrency -- on the worker's own plans."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from streamtasks import Message, Registry
from streamtasks.limits import US, RateLimit
from streamtasks.testing import InMemoryApp
from streamtasks.worker.priority import PRIORITY_GUARD


async def test_a_rate_limit_runs_on_the_fake_clock_and_held_back_entries_stay_pending(
    streamtasks_app: Callable[..., InMemoryApp],
) -> None:
    registry = Registry(group="g")
    calls: list[tuple[float, int]] = []

    @registry.stream_handler("api", rate_limit="10/s", max_retries=0)
    def call_api(msg: Message) -> None:
        calls.append((app.clock.now, msg.attempt))

    app = streamtasks_app(registry)
    start = app.clock.now
    for n in range(25):
        await call_api.send({"n": n})
    await app.run_until_idle()
    assert len(calls) == 1  # 10/s: a burst of one, then one every 0.1 s
    assert set(app.pending("api").values()) == {1} and len(app.pending("api")) == 24  # held, not retried
    await app.run_for(1.0)
    assert len(calls) == 11
    app.advance(5.0)  # a jump: one burst now; what the jump left unused comes at the peak rate
    await app.run_until_idle()
    assert len(calls) == 12
    await app.drain()
    assert len(calls) == 25 and app.pending("api") == {} and app.dead_letters("api") == []
    assert {attempt for _, attempt in calls} == {1}  # waiting was never an attempt
    times = [t - start for t, _ in calls]
    peak = RateLimit.parse("10/s").shape.peak_interval_us / US  # making up the jump: 3 % faster
    assert all(b - a >= peak - 1e-6 for a, b in itertools.pairwise(times))


async def test_a_rate_limited_batch_handler_takes_one_permit_per_batch(
    streamtasks_app: Callable[..., InMemoryApp],
) -> None:
    registry = Registry(group="g")
    sizes: list[int] = []

    @registry.stream_handler("bulk", batch=True, batch_size=10, rate_limit="1/s")
    def load(msgs: list[Message]) -> None:
        sizes.append(len(msgs))

    app = streamtasks_app(registry)
    for n in range(30):
        await load.send({"n": n})
    await app.run_until_idle()
    assert sizes == [10]
    await app.run_for(2.0)
    assert sizes == [10, 10, 10]


async def test_level_0_runs_first_and_the_guard_gives_lower_levels_their_share(
    streamtasks_app: Callable[..., InMemoryApp],
) -> None:
    registry = Registry(group="g")
    order: list[str] = []

    @registry.stream_handler("jobs", priorities=3, batch_size=1)
    def run(msg: Message) -> None:
        order.append(msg.stream)

    app = streamtasks_app(registry)
    for n in range(3):
        await run.send({"n": n}, priority=2)
    for n in range(20):
        await run.send({"n": n})
    await app.run_until_idle()
    assert order[:PRIORITY_GUARD] == ["jobs"] * PRIORITY_GUARD
    assert order[PRIORITY_GUARD] == "jobs:p2"  # passed over PRIORITY_GUARD times: its turn
    assert order.index("jobs:p2") == PRIORITY_GUARD and order.count("jobs:p2") == 3
    assert order[-1] == "jobs:p2" and len(order) == 23


async def test_max_concurrency_bounds_an_async_handlers_entries_at_once(
    streamtasks_app: Callable[..., InMemoryApp],
) -> None:
    registry = Registry(group="g")
    running, peak = 0, 0

    @registry.stream_handler("scarce", concurrency=16, max_concurrency=3)
    async def use(msg: Message) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1

    app = streamtasks_app(registry)
    for n in range(12):
        await use.send({"n": n})
    await app.run_until_idle()
    assert peak == 3 and len(app.acked("scarce")) == 12


@dataclass
class Job:
    n: int


async def test_a_typed_handler_sends_to_the_level_asked_for(
    streamtasks_app: Callable[..., InMemoryApp],
) -> None:
    registry = Registry(group="g")
    seen: list[int] = []

    @registry.stream_handler("typed_jobs", priorities=2, batch_size=1)
    def run(job: Job) -> None:
        seen.append(job.n)

    app = streamtasks_app(registry)
    await run.send(Job(1), priority=1)
    await run.send(Job(2))
    assert [len(app.entries(s)) for s in ("typed_jobs", "typed_jobs:p1")] == [1, 1]
    await app.run_until_idle()
    assert seen == [2, 1]  # level 0 first, though sent second
    with pytest.raises(ValueError, match="from 0 to 1"):
        await run.send(Job(3), priority=2)
