"""Flow control with real Redis and real workers (``flow_app``; in-process workers on the
``InlineExecutor``, and once in actor mode): a rate limit shared by two workers holds within
its bounds, its waiting entries are never retried or dead-lettered, ``max_concurrency`` is
never exceeded across workers, level 0 overtakes a level-2 backlog, and all of it on Redis
Cluster."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import flow_app
import pytest
from redis.asyncio import Redis
from support.waiting import wait_until

from streamtasks import Producer
from streamtasks.keys import concurrency_key
from streamtasks.limits import US, RateLimit
from streamtasks.observe.inspect import gather_status
from streamtasks.observe.metrics import WorkerMetrics
from streamtasks.worker import InlineExecutor, Worker, WorkerSettings
from streamtasks.worker.lanes import Batch, Lane
from streamtasks.worker.pending import PendingEntries
from streamtasks.worker.shutdown import Shutdown

pytestmark = pytest.mark.integration
GROUP = flow_app.registry.group
LIMIT = RateLimit.parse(f"{flow_app.RATE}/s")
#: Calls start within this long of their grant here (a batch waits for a thread, the GIL, a
#: loaded 2-core machine): the script's bound is on grants (tests/integration/test_flow_scripts.py).
START_JITTER_S = 0.1
#: The most calls any 1-s window may see: what the limit grants in 1 s plus START_JITTER_S.
MOST_IN_A_SECOND = int(LIMIT.shape.most_in(round((1 + START_JITTER_S) * US)))


@pytest.fixture
async def workers(
    redis: Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[..., Worker]]:
    """Start in-process workers of ``flow_app`` (handlers record into ``redis``); stop them."""
    monkeypatch.setenv("TEST_REDIS_URL", redis_url)
    started: list[tuple[Worker, asyncio.Task[None]]] = []

    def start(consumer: str, streams: list[str], client: Redis | None = None, **settings: Any) -> Worker:
        options = {"block": 0.1, "visibility_timeout": 5.0, "reclaim_interval": 0.2, **settings}
        registry = flow_app.registry.only(streams)
        worker = Worker(
            registry, client or redis, InlineExecutor(), WorkerSettings(consumer=consumer, **options)
        )
        started.append((worker, asyncio.create_task(worker.run())))
        return worker

    yield start
    for worker, _ in started:
        worker.stop()
    await asyncio.gather(*(task for _, task in started), return_exceptions=True)


def _max_window(times: list[float], width: float = 1.0) -> int:
    """The most calls in any window [t, t + width) starting at a call."""
    return max(bisect.bisect_left(times, t + width) - i for i, t in enumerate(times))


async def _calls(redis: Redis) -> list[tuple[float, int]]:
    rows = await redis.lrange("calls:limited", 0, -1)
    return sorted((float(t), int(a)) for t, a, _ in (r.decode().split("|") for r in rows))


async def test_a_rate_limit_shared_by_two_workers_holds_and_waiting_is_not_an_attempt(
    redis: Redis, workers: Callable[..., Worker]
) -> None:
    """120 entries at 40/s, two workers, a visibility timeout (1.5 s) shorter than the wait of
    the last entries (3 s) and max_retries=0: each worker runs some; no 1-s window gets more
    than MOST_IN_A_SECOND; the whole takes as long as the rate says; every call is attempt 1,
    nothing is retried, reclaimed or dead-lettered (a redelivered entry would be dead-lettered
    at once: max_retries=0)."""
    n = 120
    first, second = (workers(c, ["limited"], visibility_timeout=1.5) for c in ("rate-a", "rate-b"))
    await first.reading.wait()
    await second.reading.wait()
    await Producer(redis).send_many("limited", ({"n": i} for i in range(n)))
    await wait_until(lambda: _count(redis, "calls:limited", n), timeout=30)
    calls = await _calls(redis)
    times = [t for t, _ in calls]
    assert _max_window(times) <= MOST_IN_A_SECOND
    span = times[-1] - times[0]
    assert n <= LIMIT.shape.most_in(round((span + START_JITTER_S) * US))  # never faster than 40/s
    assert span <= 1.25 * n / flow_app.RATE  # and not much slower (a shared, loaded machine)
    assert {attempt for _, attempt in calls} == {1}
    lanes = [w.tally.lane("limited", "") for w in (first, second)]
    assert all(lane.handled > 0 for lane in lanes) and sum(lane.handled for lane in lanes) == n
    assert sum(lane.retried + lane.dead + lane.reclaimed for lane in lanes) == 0
    assert sum(lane.rate_waits for lane in lanes) > 0
    assert int(await redis.xlen("limited:dead")) == 0
    await wait_until(lambda: _pending_is(redis, "limited", 0))
    scrape = (await WorkerMetrics(first).exposition()).decode()
    assert 'streamtasks_flow_waits_total{handler="flow_app.limited",limit="rate",stream="limited"}' in scrape
    assert 'streamtasks_flow_limit{group="flow-tests",limit="rate",stream="limited"} 40.0' in scrape


async def test_max_concurrency_is_never_exceeded_across_two_workers(
    redis: Redis, workers: Callable[..., Worker]
) -> None:
    """60 entries of an async handler (concurrency 8, batches of 4, four in flight per worker:
    up to 32 calls at once unlimited) with max_concurrency=3: never more than 3 at once, all
    handled, every slot given back."""
    for consumer in ("conc-a", "conc-b"):
        workers(consumer, ["scarce"])
    await Producer(redis).send_many("scarce", ({"n": i} for i in range(60)))
    await wait_until(lambda: _count(redis, "done:scarce", 60), timeout=30)
    assert 2 <= int(await redis.get("peak:scarce") or 0) <= 3
    await wait_until(lambda: _zcard_is(redis, concurrency_key(GROUP, "scarce"), 0))


async def test_level_0_overtakes_a_level_2_backlog(redis: Redis, workers: Callable[..., Worker]) -> None:
    """A backlog of 400 at level 2 is being worked; 40 sent at level 0 are all done before
    more than the level-2 batches already running or read ahead (2 x 20) are; status shows
    the levels."""
    producer = Producer(redis)
    await producer.send_many("levels", ({"n": i} for i in range(400)), priority=2)
    workers("prio", ["levels"])
    await wait_until(lambda: _count(redis, "order:levels", 40), timeout=30)
    status = await gather_status(redis, ["levels", "levels:p1", "levels:p2"], GROUP, throughput=False)
    assert [row["level"] for row in status["levels"]["levels"]["levels"]] == [0, 1, 2]
    sent_at = await redis.llen("order:levels")
    await producer.send_many("levels", ({"n": i} for i in range(40)), priority=0)
    await wait_until(lambda: _level_done(redis, 40), timeout=30)
    order = [s.decode() for s in await redis.lrange("order:levels", sent_at, -1)]
    last_top = max(i for i, s in enumerate(order) if s == "levels")
    overtaken = order[: last_top + 1].count("levels:p2")
    runs = [(k, len(list(g))) for k, g in itertools.groupby(order)]
    assert overtaken <= 2 * 20, runs
    assert int(await redis.llen("order:levels")) < 440  # the level-2 backlog was not done first


async def test_a_rate_limit_holds_across_actors(
    redis: Redis, redis_url: str, ray_address: str, spawn: Any
) -> None:
    """Actor mode: two actors, each a Worker of its own, share one limit (one Redis key)."""
    n = 100
    spawn(
        [sys.executable, "-m", "streamtasks", "worker", "flow_app:registry", "--streams", "limited",
         "--redis-url", redis_url, "--ray-address", ray_address, "--actors", "2", "--mode", "actors",
         "--visibility-timeout", "2"],
        env={"TEST_REDIS_URL": redis_url},
    )  # fmt: skip
    await wait_until(lambda: _actors_reading(redis, 2), timeout=60)
    await Producer(redis).send_many("limited", ({"n": i} for i in range(n)))
    await wait_until(lambda: _count(redis, "calls:limited", n), timeout=60)
    calls = await _calls(redis)
    times = [t for t, _ in calls]
    assert _max_window(times) <= MOST_IN_A_SECOND
    assert n <= LIMIT.shape.most_in(round((times[-1] - times[0] + START_JITTER_S) * US))
    assert {attempt for _, attempt in calls} == {1}
    consumers = await redis.xinfo_consumers("limited", GROUP)
    assert len([c for c in consumers if c["name"].decode().endswith(("-a0", "-a1"))]) == 2
    assert int(await redis.xlen("limited:dead")) == 0


async def test_priorities_and_limits_on_redis_cluster(
    cluster_redis: Redis, redis: Redis, workers: Callable[..., Worker]
) -> None:
    """A prioritized stream with a rate limit and max_concurrency on Redis Cluster: every
    level's scripts name keys of one slot, the limits' keys live anywhere; all handled once."""
    workers("cl-a", ["{fcl}"], client=cluster_redis)
    workers("cl-b", ["{fcl}"], client=cluster_redis)
    producer = Producer(cluster_redis)
    await producer.send_many("{fcl}", ({"n": i} for i in range(60)), priority=1)
    await producer.send_many("{fcl}", ({"n": i} for i in range(60)))
    await wait_until(lambda: _count(redis, "done:fcl", 120), timeout=30)
    done = [r.decode().split("|") for r in await redis.lrange("done:fcl", 0, -1)]
    assert sorted({s for s, _ in done}) == ["{fcl}", "{fcl}:p1"] and {a for _, a in done} == {"1"}


async def _count(redis: Redis, key: str, n: int) -> bool:
    return int(await redis.llen(key)) >= n


async def _level_done(redis: Redis, n: int) -> bool:
    return len([s for s in await redis.lrange("order:levels", 0, -1) if s == b"levels"]) >= n


async def _pending_is(redis: Redis, stream: str, n: int) -> bool:
    return int((await redis.xpending(stream, GROUP))["pending"]) == n


async def _zcard_is(redis: Redis, key: str, n: int) -> bool:
    return int(await redis.zcard(key)) == n


async def _actors_reading(redis: Redis, actors: int) -> bool:
    found = 0
    async for key in redis.scan_iter(match=f"streamtasks:worker:{GROUP}:*"):
        body = await redis.get(key)
        found += bool(body and b'"state": "reading"' in body and b"-a" in key)
    return found >= actors


async def test_entries_a_limit_queued_again_while_the_worker_drains_are_handed_back(redis: Redis) -> None:
    """A batch admitted in part while the worker drains queues the rest again after the
    unstarted entries were handed back: the drain hands it back too (claimable at once, its
    attempt not used), instead of leaving it pending on a consumer that is gone."""
    await redis.xgroup_create("limited", GROUP, id="0", mkstream=True)
    for i in range(6):
        await redis.xadd("limited", {"n": str(i)})
    reply = await redis.xreadgroup(GROUP, "c", {"limited": ">"}, count=6)
    entries = [(raw_id.decode(), [], 1) for raw_id, _ in reply[0][1]]
    lane = Lane(flow_app.registry.handlers["limited"], prefetch=1)
    lane.accept(entries)
    batch = lane.queue.popleft()

    async def admitted_in_part() -> None:  # what Flow.admit does with a partial grant
        await asyncio.sleep(0.05)
        lane.queue.appendleft(Batch(batch.entries[2:]))
        batch.entries = batch.entries[:2]
        lane.release(batch.ids)  # the two that ran were settled

    task = asyncio.create_task(admitted_in_part())
    lane.in_flight[task] = batch
    shutdown = Shutdown(redis, PendingEntries(redis, GROUP, "c"), grace_period=5, emit=lambda e: None)
    await shutdown.hand_back_queued({"limited": lane})  # the drain's first step: nothing queued yet
    await shutdown.finish_in_flight({"limited": lane})
    claimed = await redis.xautoclaim("limited", GROUP, "other", 5000, count=10)
    assert sorted(i.decode() for i, _ in claimed[1]) == sorted(e[0] for e in entries[2:])
    counts = await redis.xpending_range("limited", GROUP, "-", "+", 10, consumername="other")
    assert {int(row["times_delivered"]) for row in counts} == {1}  # the hand-back's 0, + this claim
