"""``GapWatch`` against a real redis-server: entries trimmed before the group read them are
reported once, as many as there were, and the group's lag then tells the truth."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import redis as syncredis
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamtasks import Message, Registry
from streamtasks.worker.events import Event, Lost
from streamtasks.worker.gaps import GapWatch
from streamtasks.worker.health import RedisHealth
from streamtasks.worker.lanes import Lane
from streamtasks.worker.read import Reader

pytestmark = pytest.mark.integration

STREAM, GROUP = "gapped", "g"


def _lane(stream: str = STREAM) -> Lane:
    registry = Registry(group=GROUP)

    def handle(msg: Message) -> None: ...

    registry.stream_handler(stream)(handle)
    return Lane(registry.handlers[stream], prefetch=1)


def _watch(redis: aioredis.Redis, lane: Lane) -> tuple[GapWatch, list[Event]]:
    events: list[Event] = []
    return GapWatch(redis, GROUP, {lane.stream: lane}, RedisHealth(), events.append), events


def _lag(client: syncredis.Redis) -> int:
    return int(next(g["lag"] for g in client.xinfo_groups(STREAM) if g["name"] == GROUP.encode()))


ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 15)),
        st.tuples(st.just("read"), st.integers(1, 15)),
        st.tuples(st.just("trim"), st.integers(0, 15)),
        st.tuples(st.just("check"), st.just(0)),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=ops)
def test_lost_entries_are_reported_once_and_as_many_as_were_trimmed_unread(
    redis_url: str, steps: list[tuple[str, int]]
) -> None:
    """Any mix of XADD, XREADGROUP, XTRIM MAXLEN and looks: the total reported never exceeds
    the entries trimmed before delivery, equals it once the group has read to the end, and the
    lag is then exactly what is left to read."""
    client = syncredis.Redis.from_url(redis_url)
    client.delete(STREAM)
    asyncio.run(_create_group(redis_url))  # as the worker does
    delivered: set[bytes] = set()
    truth = 0

    async def look() -> int:
        redis = aioredis.Redis.from_url(redis_url)
        try:
            watch, events = _watch(redis, _lane())
            await watch.check(watch.lanes[STREAM])
            return sum(e.count for e in events if isinstance(e, Lost))
        finally:
            await redis.aclose()

    reported = 0
    try:
        for op, n in steps:
            if op == "add":
                for _ in range(n):
                    client.xadd(STREAM, {"k": "v"})
            elif op == "read":
                got: Any = client.xreadgroup(GROUP, "c", {STREAM: ">"}, count=n)
                delivered.update(i for _, entries in got for i, _ in entries)
            elif op == "trim":
                before = [i for i, _ in client.xrange(STREAM)]
                client.xtrim(STREAM, maxlen=n, approximate=False)
                after = {i for i, _ in client.xrange(STREAM)}
                truth += sum(1 for i in before if i not in after and i not in delivered)
            else:
                reported += asyncio.run(look())
                assert reported <= truth
        while client.xreadgroup(GROUP, "c", {STREAM: ">"}, count=100):  # read to the end
            pass
        reported += asyncio.run(look())
        assert reported == truth
        assert _lag(client) == 0
        assert asyncio.run(look()) == 0  # reported once
    finally:
        client.close()


async def _create_group(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    try:
        await Reader(redis, GROUP, "c", {STREAM: _lane()}).ensure_groups()
    finally:
        await redis.aclose()


async def test_a_group_made_on_a_trimmed_stream_does_not_count_what_was_gone_before(
    redis: aioredis.Redis,
) -> None:
    """Entries trimmed before the group existed are not its loss; a trim after it was made,
    before its first read, is."""
    for _ in range(10):
        await redis.xadd(STREAM, {"k": "v"})
    await redis.xtrim(STREAM, maxlen=4, approximate=False)
    lane = _lane()
    await Reader(redis, GROUP, "c", {STREAM: lane}).ensure_groups()
    watch, events = _watch(redis, lane)
    await watch.check(lane)
    assert events == []
    await redis.xtrim(STREAM, maxlen=1, approximate=False)
    await watch.check(lane)
    assert events == [Lost(STREAM, lane.spec.name, 3, "trimmed or deleted before delivery")]


async def test_a_loss_is_logged_once_however_many_workers_look(
    redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """Two workers' watches look at the same trimmed stream: one reports, the other sees the
    corrected counter; one log line, one Lost event."""
    await redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    for _ in range(10):
        await redis.xadd(STREAM, {"k": "v"})
    await redis.xreadgroup(GROUP, "c", {STREAM: ">"}, count=3)
    await redis.xtrim(STREAM, maxlen=4, approximate=False)
    (a, a_events), (b, b_events) = _watch(redis, _lane()), _watch(redis, _lane())
    with caplog.at_level(logging.ERROR, "streamtasks.worker"):
        await a.check(a.lanes[STREAM])
        await b.check(b.lanes[STREAM])
    assert a_events == [Lost(STREAM, a.lanes[STREAM].spec.name, 3, "trimmed or deleted before delivery")]
    assert b_events == []
    assert [r.getMessage() for r in caplog.records] == [
        f"3 entries of {STREAM} were trimmed or deleted before group {GROUP} read them: lost "
        "(the group's read counter is corrected, so its lag can drain)"
    ]
    groups: Any = await redis.xinfo_groups(STREAM)
    assert groups[0]["lag"] == 4  # what is left, no longer 7


async def test_a_stream_whose_newest_id_is_below_what_the_worker_read_is_reported_once(
    redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis came back older (here: the stream rebuilt with older ids): logged once, with the
    ids and the number of entries this worker still held past the stream's end."""
    await redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    await redis.xadd(STREAM, {"k": "v"}, id="1000-1")
    lane = _lane()
    lane.last_id = "5000-0"
    lane.held.update({"1000-1": 0.0, "4000-0": 0.0, "5000-0": 0.0})
    watch, _ = _watch(redis, lane)
    with caplog.at_level(logging.ERROR, "streamtasks.worker"):
        await watch.check(lane)
        await watch.check(lane)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert (
        "Redis came back older: the newest entry of gapped is 1000-1, but this worker had read up to 5000-0"
        in (lines[0])
    )
    assert "(4.0s of entries)" in lines[0] and "2 of them still held by this worker" in lines[0]


async def test_an_id_delivered_again_is_reported_as_redis_coming_back_older(
    redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    lane = _lane()
    watch, _ = _watch(redis, lane)
    with caplog.at_level(logging.ERROR, "streamtasks.worker"):
        watch.saw(lane, [("1000-0", [], 1), ("2000-0", [], 1)])
        watch.saw(lane, [("3000-0", [], 1)])
        assert caplog.records == []
        watch.saw(lane, [("1500-0", [], 1)])
    assert lane.last_id == "1500-0"
    assert "group g delivered gapped/1500-0 again, though this worker had already read up to 3000-0" in (
        caplog.records[0].getMessage()
    )


async def test_looks_racing_busy_reads_never_cry_rewind(
    redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A producer and a reader at full speed while the watch looks 200 times: no false
    "came back older", no loss reported."""
    lane = _lane()
    await Reader(redis, GROUP, "c", {STREAM: lane}).ensure_groups()
    watch, events = _watch(redis, lane)
    stop = asyncio.Event()

    async def produce() -> None:
        while not stop.is_set():
            await redis.xadd(STREAM, {"k": "v"})

    async def consume() -> None:
        while not stop.is_set():
            got: Any = await redis.xreadgroup(GROUP, "c", {STREAM: ">"}, count=5)
            for _, entries in got or ():
                watch.saw(lane, [(i.decode(), [], 1) for i, _ in entries])

    tasks = [asyncio.create_task(produce()), asyncio.create_task(consume())]
    with caplog.at_level(logging.ERROR, "streamtasks.worker"):
        for _ in range(200):
            await watch.check(lane)
    stop.set()
    await asyncio.gather(*tasks)
    assert lane.last_id is not None
    assert caplog.records == [] and events == []


async def test_a_read_counter_behind_with_nothing_removed_is_corrected_without_a_loss(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A promoted replica can carry a group read counter behind the stream's (seen after
    kill -9 of a cluster master: thousands "lost" that were all handled). With nothing ever
    deleted from the stream, nothing can have been trimmed before delivery: the counter is
    corrected, a warning says those entries were not lost, and no ``Lost`` event is emitted."""
    client = syncredis.Redis.from_url(redis_url)
    client.delete(STREAM)
    await _create_group(redis_url)
    for _ in range(50):
        client.xadd(STREAM, {"k": "v"})
    while client.xreadgroup(GROUP, "c", {STREAM: ">"}, count=20):
        pass
    client.execute_command("XGROUP", "SETID", STREAM, GROUP, "$", "ENTRIESREAD", 30)  # the drift
    assert _lag(client) == 20
    redis = aioredis.Redis.from_url(redis_url)
    try:
        watch, events = _watch(redis, _lane())
        with caplog.at_level(logging.WARNING, logger="streamtasks.worker"):
            await watch.check(watch.lanes[STREAM])
    finally:
        await redis.aclose()
        client.close()
    assert not [e for e in events if isinstance(e, Lost)]
    assert "was 20 behind what was ever removed from the stream" in caplog.text
    assert "those entries were not lost" in caplog.text
    assert "lost (the group's read counter" not in caplog.text
    assert _lag(syncredis.Redis.from_url(redis_url)) == 0
