"""Delayed entries and periodic ticks against a real redis-server: the move script under any
interleaving of movers, adds and cancels (hypothesis), workers end to end (none early, each
once, within the lateness bound), several tickers claiming each tick once, Redis Cluster."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from support.waiting import wait_until

from streamtasks import Message, Producer, Registry
from streamtasks.aio import cancel_and_wait
from streamtasks.delayed import cancel, list_scheduled, move_due
from streamtasks.keys import delayed_key, tick_key
from streamtasks.worker import InlineExecutor, Worker, WorkerSettings

pytestmark = pytest.mark.integration
_examples = itertools.count()
FUTURE_S = 3600.0

# -- the move script, any interleaving --------------------------------------------------------

# One client's sequence: ("add", due now?) | ("cancel", index of an earlier add) | ("move",)
step = st.one_of(
    st.tuples(st.just("add"), st.booleans()),
    st.tuples(st.just("cancel"), st.integers(0, 40)),
    st.tuples(st.just("move"), st.integers(1, 5)),
)
clients = st.lists(st.lists(step, max_size=25), min_size=2, max_size=4)


async def _run_client(
    redis: Redis, producer: Producer, stream: str, steps: list[Any], log: dict[str, Any]
) -> None:
    for op, arg in steps:
        if op == "add":
            mid = f"m{len(log['added'])}-{id(steps)}"
            log["added"][mid] = arg
            await producer.send(stream, {"mid": mid}, message_id=mid, delay=0.0005 if arg else FUTURE_S)
        elif op == "cancel" and log["added"]:
            mid = list(log["added"])[arg % len(log["added"])]
            if await cancel(redis, stream, [mid]):
                log["cancelled"].append(mid)
        elif op == "move":
            await move_due(redis, stream, f"{stream}:dead", "g", "h", count=arg)


async def _interleaving(redis_url: str, plan: list[list[Any]]) -> None:
    stream = f"moveprop{next(_examples)}"
    conns = [Redis.from_url(redis_url) for _ in plan]
    log: dict[str, Any] = {"added": {}, "cancelled": []}
    try:
        producers = [Producer(c) for c in conns]
        await asyncio.gather(
            *(_run_client(c, p, stream, s, log) for c, p, s in zip(conns, producers, plan, strict=True))
        )
        await asyncio.sleep(0.002)  # every "due now" entry is due
        while (await move_due(conns[0], stream, f"{stream}:dead", "g", "h", count=7)).moved:
            pass
        entries: Any = await conns[0].xrange(stream)
        in_stream = [f[b"mid"].decode() for _, f in entries]
        _, waiting = await list_scheduled(conns[0], stream, 10_000)
        scheduled = [e.message_id for e in waiting]
        assert len(in_stream) == len(set(in_stream)), "an entry entered the stream twice"
        assert len(log["cancelled"]) == len(set(log["cancelled"])), "an entry was cancelled twice"
        for mid, due_now in log["added"].items():
            places = (mid in in_stream) + (mid in scheduled) + (mid in log["cancelled"])
            assert places == 1, f"{mid} is in {places} places (stream, scheduled, cancelled)"
            if not due_now:
                assert mid not in in_stream, f"{mid} was moved before it was due"
            elif mid not in log["cancelled"]:
                assert mid in in_stream, f"{mid} was due and not moved"
        assert await conns[0].xlen(f"{stream}:dead") == 0
    finally:
        await conns[0].delete(stream, delayed_key(stream), f"{stream}:delayed:fields")
        for c in conns:
            await c.aclose()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=clients)
def test_any_interleaving_of_movers_adds_and_cancels_moves_each_entry_once(
    redis_url: str, plan: list[list[Any]]
) -> None:
    """Clients adding (due now or in an hour), cancelling and moving at once, on their own
    connections: every entry ends in exactly one place (the stream once, still scheduled, or
    cancelled), nothing early, nothing due left behind."""
    asyncio.run(_interleaving(redis_url, plan))


# -- workers ---------------------------------------------------------------------------------


def _registry(handled: list[tuple[str, float, float]], ticks: list[int]) -> Registry:
    registry = Registry(group="delays")

    @registry.stream_handler("later", batch_size=50)
    def later(msg: Message) -> None:
        assert msg.due is not None
        handled.append((str(msg.message_id), msg.due.timestamp(), time.time()))

    @registry.periodic("beat", every=0.5)
    def beat(msg: Message) -> None:
        assert msg.tick is not None
        ticks.append(round(msg.tick.timestamp() * 1000))

    return registry


async def _serve(workers: list[Worker], until: Any, timeout: float) -> None:
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        await wait_until(until, timeout=timeout)
    finally:
        for w in workers:
            w.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        await cancel_and_wait(tasks)


async def test_two_workers_handle_each_delayed_entry_once_never_early(redis: Redis) -> None:
    """Two workers (each with its mover and ticker): 200 delayed entries over 0-1.5 s are each
    handled once, none before its due time, within 1 s of it; each 0.5 s tick comes once."""
    handled: list[tuple[str, float, float]] = []
    ticks: list[int] = []
    registry = _registry(handled, ticks)
    workers = [
        Worker(registry, redis, InlineExecutor(), WorkerSettings(consumer=f"w{i}", block=0.2))
        for i in range(2)
    ]
    sent = await Producer(redis).send_many(
        "later", [{"n": str(i)} for i in range(200)], delay=[(i + 1) * 0.0075 for i in range(200)]
    )
    await _serve(workers, lambda: len(handled) >= 200 and len(ticks) >= 5, timeout=30)
    assert sorted(mid for mid, _, _ in handled) == sorted(sent)
    lateness = [at - due for _, due, at in handled]
    assert min(lateness) >= 0, "an entry was handled before its due time"
    assert max(lateness) < 1.0
    assert len(ticks) == len(set(ticks)) and all(t % 500 == 0 for t in ticks)
    assert sorted(ticks) == list(range(min(ticks), max(ticks) + 1, 500))  # none missed in between
    moved = sum(w.tally.lanes["later"].moved for w in workers if "later" in w.tally.lanes)
    assert moved == 200
    state = await redis.hgetall(tick_key("beat"))
    assert int(state[b"last"]) >= max(ticks) and state[b"schedule"] == b"every 500ms"


async def test_a_worker_moves_entries_added_while_it_sleeps(redis: Redis) -> None:
    """The mover sleeps until the next due time it knows (here: an hour away), at most
    delayed_poll: an entry due sooner, added meanwhile, is still moved within the bound."""
    handled: list[tuple[str, float, float]] = []
    registry = _registry(handled, [])
    worker = Worker(registry, redis, InlineExecutor(), WorkerSettings(block=0.2, delayed_poll=0.25))
    producer = Producer(redis)
    await producer.send("later", {"n": "far"}, delay=FUTURE_S)

    async def soon() -> None:
        await asyncio.sleep(0.5)
        await producer.send("later", {"n": "soon"}, delay=0.1)

    feeder = asyncio.create_task(soon())
    await _serve([worker], lambda: handled, timeout=10)
    await feeder
    [(_, due, at)] = handled
    assert 0 <= at - due < 0.25 + 0.5  # the poll bound plus a generous read and run
    total, left = await list_scheduled(redis, "later")
    assert total == 1 and left[0].fields is not None and (b"n", b"far") in left[0].fields


async def test_on_redis_cluster_entries_and_ticks_stay_in_the_stream_slot(cluster_redis: Redis) -> None:
    """A hash-tagged stream on Redis Cluster: send_many with delays (one script per pipeline),
    the mover and the ticker all work on keys of the stream's slot."""
    handled: list[str] = []
    ticks: list[int] = []
    registry = Registry(group="cluster-delays")

    @registry.stream_handler("{later}")
    def later(msg: Message) -> None:
        handled.append(str(msg.message_id))

    @registry.periodic("{beat}", every=0.5)
    def beat(msg: Message) -> None:
        ticks.append(round(msg.tick.timestamp() * 1000) if msg.tick else -1)

    sent = await Producer(cluster_redis).send_many("{later}", [{"n": str(i)} for i in range(50)], delay=0.3)
    worker = Worker(registry, cluster_redis, InlineExecutor(), WorkerSettings(block=0.2))
    await _serve([worker], lambda: len(handled) >= 50 and len(ticks) >= 2, timeout=30)
    assert sorted(handled) == sorted(sent)
    assert len(ticks) == len(set(ticks)) >= 2
