"""Ack-aware trimming against a real redis-server: the CLI, the script and the worker's loop."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest
import trim_app
from redis.asyncio import Redis

from streamtasks.aio import cancel_and_wait
from streamtasks.redisutil import id_key
from streamtasks.streams import NO_GROUP, RETENTION, GroupPosition, trim_point
from streamtasks.worker import InlineExecutor, Worker, WorkerSettings
from streamtasks.worker.trim import trim_once

pytestmark = pytest.mark.integration


async def fill(redis: Redis, stream: str, n: int, prefix: str = "", **extra: str) -> list[str]:
    pipe = redis.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(stream, {"n": f"{prefix}{i}", **extra})
    return [i.decode() for i in await pipe.execute()]


async def read_ack(redis: Redis, stream: str, group: str, count: int, ack: int) -> list[str]:
    """Read ``count`` entries as ``group``; ack the first ``ack`` of them."""
    reply: Any = await redis.xreadgroup(group, "c", {stream: ">"}, count=count)
    if not reply:  # nothing new (the slow group caught up with the producer)
        return []
    ids = [i.decode() for i, _ in (reply[0][1] if isinstance(reply, list) else reply[stream.encode()][0])]
    if ack:
        await redis.xack(stream, group, *ids[:ack])
    return ids


async def positions(redis: Redis, stream: str) -> list[GroupPosition]:
    out = []
    for g in await redis.xinfo_groups(stream):
        name = g["name"].decode()
        summary = await redis.xpending(stream, name)
        oldest = summary["min"].decode() if summary["pending"] else None
        out.append(GroupPosition(name, g["last-delivered-id"].decode(), oldest))
    return out


async def test_a_stopped_group_keeps_what_it_has_not_read_until_it_acks(redis: Redis) -> None:
    """Two groups, one consuming and one stopped: nothing the stopped one has not acked is
    trimmed; once both acked, the stream shrinks to the retention (here: nothing kept)."""
    ids = await fill(redis, "s", 2000)
    await redis.xgroup_create("s", "consuming", id="0")
    await redis.xgroup_create("s", "stopped", id="0")
    await read_ack(redis, "s", "consuming", 2000, ack=2000)
    result = await trim_once(redis, "s", keep_seconds=0)
    assert (result.removed, result.held_by) == (0, "stopped")
    assert await redis.xlen("s") == 2000
    await read_ack(redis, "s", "stopped", 1500, ack=700)  # 800 pending from ids[700]
    expected = trim_point(await positions(redis, "s"), cap=None)
    result = await trim_once(redis, "s", keep_seconds=0)
    assert (result.removed, result.minid, result.held_by) == (700, ids[700], "stopped")
    assert result.minid == expected.minid
    rest: Any = await redis.xrange("s", count=1)
    assert rest[0][0].decode() == ids[700]  # everything the stopped group still needs is there
    await redis.xack("s", "stopped", *ids[700:1500])
    await read_ack(redis, "s", "stopped", 1000, ack=1000)
    result = await trim_once(redis, "s", keep_seconds=3600)
    assert (result.removed, result.held_by) == (0, RETENTION)  # all acked, but recent
    result = await trim_once(redis, "s", keep_seconds=0)
    assert result.removed == 1300 and await redis.xlen("s") == 0


async def test_streams_without_groups_are_never_trimmed(redis: Redis) -> None:
    await fill(redis, "nogroup", 10)
    assert (await trim_once(redis, "nogroup", 0)).held_by == NO_GROUP
    assert (await trim_once(redis, "missing", 0)).removed == 0
    assert await redis.xlen("nogroup") == 10


async def test_trim_command_prints_what_it_removed_and_who_holds_back(redis: Redis, redis_url: str) -> None:
    ids = await fill(redis, "orders:{0}", 10) + await fill(redis, "orders:{1}", 10)
    for shard in ("orders:{0}", "orders:{1}"):
        await redis.xgroup_create(shard, "billing", id="0")
    await read_ack(redis, "orders:{0}", "billing", 10, ack=4)
    argv = [sys.executable, "-m", "streamtasks", "trim", "orders", "--redis-url", redis_url]
    result = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"orders:{{0}}: removed 4, 6 left; held back by group 'billing' at {ids[4]}"
    assert lines[1].startswith("orders:{1}: removed 0, 10 left; held back by group 'billing'")
    result = await asyncio.to_thread(subprocess.run, [*argv, "--json"], capture_output=True, text=True)
    assert [r["removed"] for r in json.loads(result.stdout)] == [0, 0]


class TrimRace:
    """A trimmer racing the consumers, checking the invariant after every trim."""

    def __init__(self, redis: Redis, stream: str) -> None:
        self.redis, self.stream = redis, stream
        self.sent: list[str] = []
        self.violations: list[str] = []
        self.trims = 0

    async def check(self) -> None:
        """No group has a pending entry below the stream's first id, nor an undelivered one."""
        first: Any = await self.redis.xrange(self.stream, count=1)
        if not first:
            return
        first_id = first[0][0].decode()
        trimmed = [i for i in self.sent if id_key(i) < id_key(first_id)]
        for g in await positions(self.redis, self.stream):
            below: Any = await self.redis.xpending_range(self.stream, g.name, "-", f"({first_id}", 1)
            if below:
                self.violations.append(f"{g.name} has pending {below[0]['message_id']!r} below {first_id}")
            if trimmed and id_key(trimmed[-1]) > id_key(g.last_delivered):
                self.violations.append(f"{g.name} delivered up to {g.last_delivered}, {trimmed[-1]} trimmed")

    async def trim_forever(self) -> None:
        while True:
            await trim_once(self.redis, self.stream, 0)
            self.trims += 1
            await self.check()
            await asyncio.sleep(0.01)

    async def slow_group(self, group: str) -> None:
        while True:
            got = await read_ack(self.redis, self.stream, group, 37, ack=0)
            await asyncio.sleep(0.02)
            if got:
                await self.redis.xack(self.stream, group, *got)

    async def state(self, handled: int, worker: Worker, *tasks: asyncio.Task[Any]) -> str:
        """What the race looks like, for a failure message."""
        groups = [
            (
                g.name,
                g.last_delivered,
                g.oldest_pending,
                (await self.redis.xpending(self.stream, g.name))["pending"],
            )
            for g in await positions(self.redis, self.stream)
        ]
        dead = int(await self.redis.xlen(f"{self.stream}:dead"))
        ended = [
            t.get_name() + ": " + repr(t.exception() if not t.cancelled() else "cancelled")
            for t in tasks
            if t.done()
        ]
        return (
            f"sent {len(self.sent)}, handled {handled}, dead {dead}, stream length "
            f"{await self.redis.xlen(self.stream)}, groups (name, last delivered, oldest pending, pending) "
            f"{groups}, {self.trims} trims, violations {self.violations[:5]}, ended tasks {ended}, "
            f"worker {worker.snapshot()}"
        )

    async def settled(self, handled: int) -> bool:
        dead = int(await self.redis.xlen(f"{self.stream}:dead"))
        b_pending = (await self.redis.xpending(self.stream, "trim-b"))["pending"]
        return handled + dead >= len(self.sent) and b_pending == 0


async def until(predicate: Any, timeout: float, state: Any = None) -> None:
    """Poll ``predicate`` until it holds; past ``timeout`` seconds fail, with ``state()`` if given."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"not within {timeout} s: {await state() if state else predicate}")
        await asyncio.sleep(0.1)


async def test_trimming_never_overtakes_any_group_under_slow_consumers_reclaim_and_dead_letters(
    redis: Redis,
) -> None:
    """A worker trimming with retention 0 (and a second trimmer racing it) beside a slow
    second group, a dead consumer's entries being reclaimed and entries being dead-lettered:
    after every trim no group has a pending entry below the stream's first id, and no group
    has an undelivered one there; in the end every entry is handled or dead-lettered."""
    trim_app.handled.clear()
    stream, n = "trimmed", 3000
    race = TrimRace(redis, stream)
    race.sent = await fill(redis, stream, n // 2, "a") + await fill(redis, stream, 50, "f", fail="1")
    await redis.xgroup_create(stream, "trim-a", id="0")
    await redis.xgroup_create(stream, "trim-b", id="0")
    ghost = await read_ack(redis, stream, "trim-a", 100, ack=0)  # a dead consumer's entries
    settings = WorkerSettings(consumer="w1", block=0.1, visibility_timeout=1, reclaim_interval=0.2)
    worker = Worker(trim_app.registry, redis, InlineExecutor(), settings)
    task = asyncio.create_task(worker.run())
    racers = [asyncio.create_task(race.trim_forever()), asyncio.create_task(race.slow_group("trim-b"))]
    race.sent += await fill(redis, stream, n // 2, "b")
    try:
        await until(
            lambda: race.settled(len(trim_app.handled)),
            timeout=60,
            state=lambda: race.state(len(trim_app.handled), worker, task, *racers),
        )

        async def emptied() -> bool:
            await trim_once(redis, stream, 0)
            return int(await redis.xlen(stream)) == 0

        await until(emptied, timeout=10)
    finally:
        await cancel_and_wait(racers)
        worker.stop()
        await task
    assert not race.violations, race.violations[:5]
    assert race.trims > 10
    assert len(trim_app.handled) == n and await redis.xlen("trimmed:dead") == 50
    assert worker.snapshot().lanes[stream].lost == 0
    assert set(ghost) <= set(race.sent) and await redis.xlen(stream) == 0


async def test_the_worker_trims_acked_entries_and_expired_dead_letters_by_itself(redis: Redis) -> None:
    """With trim_acked_after=0 and dead_letter_retention=0 the worker's own loop empties the
    stream once everything is acked, and its dead-letter stream too; it says so in events."""
    from streamtasks.worker.events import Event, Trimmed

    seen: list[Trimmed] = []

    def listen(event: Event) -> None:
        if isinstance(event, Trimmed):
            seen.append(event)

    await fill(redis, "expiring", 200)
    settings = WorkerSettings(consumer="w1", block=0.1)
    worker = Worker(trim_app.short_lived, redis, InlineExecutor(), settings, listeners=[listen])
    task = asyncio.create_task(worker.run())
    try:

        async def emptied() -> bool:
            return int(await redis.xlen("expiring")) == 0 and int(await redis.xlen("expiring:dead")) == 0

        await until(emptied, timeout=20)
        assert "trim" not in worker.snapshot().failing_loops
    finally:
        worker.stop()
        await task
    lane = worker.snapshot().lanes["expiring"]
    assert (lane.handled, lane.dead) == (100, 100)
    assert sum(e.removed for e in seen if e.stream == "expiring") == 200
    assert sum(e.removed for e in seen if e.stream == "expiring:dead") == 100


async def test_dlq_list_of_a_sharded_stream_shows_every_shards_dead_letters(
    redis: Redis, redis_url: str
) -> None:
    from streamtasks.deadletter import dead_letter_fields
    from streamtasks.retry import ErrorInfo

    for shard, n in (("orders:{0}", 2), ("orders:{1}", 3)):
        await redis.xadd(shard, {"n": "x"})
        for i in range(n):
            fields = dead_letter_fields(
                stream=shard, entry_id=f"1-{i}", group="g", handler="h", error=ErrorInfo("E", "bad"),
                attempts=1, raw={"n": str(i)},
            )  # fmt: skip
            await redis.execute_command("XADD", f"{shard}:dead", "*", "first_failure_ms", "1", *fields)
    argv = [sys.executable, "-m", "streamtasks", "dlq", "list", "orders", "--json", "--redis-url", redis_url]
    result = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["total"] == 5 and doc["shards"] == {"orders:{0}:dead": 2, "orders:{1}:dead": 3}
    assert len(doc["entries"]) == 5
