"""Dead letters of hostile entries against a real redis-server (issue 12, items 4 and 8):
an entry with 20,000 fields is dead-lettered (by a handler, and by the delivery limit in the
reclaim loop) and replayed; field names that are not UTF-8 survive both byte for byte.

The worker runs in this process with the inline executor: the Lua scripts and the worker's
settle path are the real ones, Ray adds nothing here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from streamtasks import Message, Registry, Reject
from streamtasks.deadletter import list_dead, replay
from streamtasks.worker import InlineExecutor, Worker, WorkerSettings

pytestmark = pytest.mark.integration

GROUP = "hostile"
MANY = 20_000
registry = Registry(group=GROUP)


@registry.stream_handler("reject", max_retries=1, max_entry_bytes=16 * 1024 * 1024)
def reject_all(msg: Message) -> None:
    """Dead-letters whatever it gets, except entries with ``ok``."""
    if "ok" not in msg.fields:
        raise Reject("not wanted")


def many_fields(n: int = MANY) -> list[tuple[bytes, bytes]]:
    return [(f"f{i:05d}".encode(), f"v{i}".encode()) for i in range(n)]


async def xadd_raw(redis: Redis, stream: str, pairs: list[tuple[bytes, bytes]]) -> str:
    entry_id: Any = await redis.execute_command("XADD", stream, "*", *[b for kv in pairs for b in kv])
    return str(entry_id.decode())


async def raw_entry(redis: Redis, stream: str) -> tuple[str, list[tuple[bytes, bytes]]]:
    """The only entry of ``stream``, its fields as Redis holds them (no dict in between)."""
    raw = Redis(connection_pool=redis.connection_pool)
    raw.response_callbacks.pop("XRANGE", None)
    entries: Any = await raw.xrange(stream)
    assert len(entries) == 1, entries
    entry_id, flat = entries[0]
    return entry_id.decode(), list(zip(flat[0::2], flat[1::2], strict=True))


async def until(check: Any, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.05)


async def settled(redis: Redis, stream: str, dead: int) -> bool:
    if int(await redis.xlen(f"{stream}:dead")) < dead:
        return False
    groups: Any = await redis.xinfo_groups(stream)
    return all(int(g["pending"]) == 0 and not g["lag"] for g in groups)


@pytest.fixture
async def start_worker(redis: Redis) -> AsyncIterator[Any]:
    """``await start_worker()``: an in-process worker on ``registry``, stopped after the test."""
    started: list[tuple[Worker, asyncio.Task[None]]] = []

    async def start() -> Worker:
        settings = WorkerSettings(consumer="w1", visibility_timeout=1, reclaim_interval=0.1)
        w = Worker(registry, redis, InlineExecutor(), settings)
        started.append((w, asyncio.create_task(w.run())))
        await asyncio.wait_for(w.reading.wait(), 10)
        return w

    yield start
    for w, task in started:
        w.stop()
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def worker(start_worker: Any) -> Worker:
    return await start_worker()  # type: ignore[no-any-return]


async def test_an_entry_with_20k_fields_is_dead_lettered_and_replayed_byte_for_byte(
    redis: Redis, worker: Worker
) -> None:
    """Lua cannot pass 40,000 values to XADD: the dead letter packs them, the replay uses
    MULTI. The replayed entry has the very fields, in order; a second replay adds nothing."""
    pairs = many_fields()
    await xadd_raw(redis, "reject", pairs)
    await until(lambda: settled(redis, "reject", 1), 20, "dead-lettered, nothing pending")
    [letter] = await list_dead(redis, "reject:dead")
    assert (letter.reason, letter.attempts) == ("rejected", 1)
    assert list(letter.pairs) == pairs
    assert letter.fields["f19999"] == b"v19999"
    worker.stop()  # the replayed entry must stay where it lands
    moved = await replay(redis, "reject:dead", [letter], target="replayed")
    assert len(moved) == 1 and await replay(redis, "reject:dead", [letter], target="replayed") == []
    _, replayed = await raw_entry(redis, "replayed")
    assert replayed[:MANY] == pairs
    assert replayed[MANY:] == [(b"_st_origin_stream", b"reject"), (b"_st_origin_id", letter.id.encode())]
    assert int(await redis.xlen("reject:dead")) == 0


async def test_an_entry_with_20k_fields_past_its_delivery_limit_does_not_kill_the_reclaim_loop(
    redis: Redis, start_worker: Any
) -> None:
    """An entry whose workers kept dying (delivery count past the limit) is dead-lettered by
    the reclaim loop, which goes on reclaiming the entries after it."""
    await redis.xgroup_create("reject", GROUP, id="0", mkstream=True)
    big = await xadd_raw(redis, "reject", [*many_fields(), (b"ok", b"1")])
    small = await xadd_raw(redis, "reject", [(b"ok", b"1")])
    # A consumer that died holding both, after they were delivered 10 times.
    await redis.xreadgroup(GROUP, "ghost", {"reject": ">"}, count=2)
    await redis.xclaim("reject", GROUP, "ghost", 0, [big, small], idle=60_000, retrycount=10)
    await start_worker()
    await until(lambda: settled(redis, "reject", 2), 20, "both dead-lettered by the reclaim loop")
    letters = await list_dead(redis, "reject:dead")
    assert sorted((d.id, d.reason, len(d.pairs)) for d in letters) == sorted(
        [(big, "delivery_limit", MANY + 1), (small, "delivery_limit", 1)]
    )


@pytest.mark.parametrize(
    "name",
    [b"\xff\xfe", b"caf\xe9", b"\xed\xa0\x80", b"ok\x00nul", "名前".encode(), b"f:nested", b""],
    ids=["invalid", "latin-1", "encoded surrogate", "NUL", "CJK", "prefix-like", "empty"],
)
async def test_field_names_that_are_not_utf8_are_kept_byte_for_byte(
    redis: Redis, worker: Worker, name: bytes
) -> None:
    """The dead letter holds ``f:<name>`` with the name's very bytes, and the replay sends
    them back: not a backslash-escaped spelling of them."""
    pairs = [(name, b"\xff value \x00"), (b"k", b"1")]
    await xadd_raw(redis, "reject", pairs)
    await until(lambda: settled(redis, "reject", 1), 20, "dead-lettered")
    _, dead_fields = await raw_entry(redis, "reject:dead")
    assert (b"f:" + name, b"\xff value \x00") in dead_fields
    [letter] = await list_dead(redis, "reject:dead")
    assert list(letter.pairs) == pairs
    worker.stop()
    await replay(redis, "reject:dead", [letter], target="replayed")
    _, replayed = await raw_entry(redis, "replayed")
    assert replayed[:2] == pairs
