"""Property, against a real redis-server and the worker: whatever shape the entries have
(thousands of fields, names that are not UTF-8, values past the size limit, random reserved
``_st_*`` values, an explicit entry id far in the future), each one ends handled once or
dead-lettered once — with its fields byte for byte, and replayed byte for byte — and
nothing stays pending.

Each example runs an in-process worker (inline executor: ``run_batch`` in a thread, the real
read / settle / Lua path) on a stream of its own; ``max_examples`` keeps it under a minute."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import asyncpg
import pytest
import redis as syncredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from support.hostile import MAX_ENTRY_BYTES, Pairs, entries, first_ids, parse_all

from streamtasks import DecodeError, Message, Registry
from streamtasks.adserving.records import parse_inference
from streamtasks.adserving.store import store_inference
from streamtasks.deadletter import list_dead, replay
from streamtasks.message import decode_entry
from streamtasks.worker import InlineExecutor, Worker, WorkerSettings

pytestmark = pytest.mark.integration
GROUP = "hostile-prop"
SETTLE_S = 20.0
_streams = itertools.count()


def _registry(stream: str, ledger: syncredis.Redis) -> Registry:
    registry = Registry(group=GROUP)

    @registry.stream_handler(stream, batch=True, max_retries=20, max_entry_bytes=MAX_ENTRY_BYTES)
    def store(msgs: list[Message]) -> dict[str, Exception] | None:
        ok, failures = parse_all(msgs)
        if ok:
            pipe = ledger.pipeline(transaction=False)
            for entry_id in ok:
                pipe.hincrby(f"handled:{stream}", entry_id, 1)
            pipe.execute()
        return failures or None

    return registry


async def _settled(redis: Redis, stream: str, sent: int) -> bool:
    groups: Any = await redis.xinfo_groups(stream)
    if not groups or int(groups[0]["pending"]) or groups[0]["lag"]:
        return False
    handled = int(await redis.hlen(f"handled:{stream}"))
    dead = int(await redis.exists(f"{stream}:dead") and await redis.xlen(f"{stream}:dead"))
    return handled + dead >= sent


async def _scenario(
    redis_url: str, ledger: syncredis.Redis, batch: list[Pairs], first_id: str | None
) -> None:
    stream = f"hostile{next(_streams)}"
    redis = Redis.from_url(redis_url)
    settings_ = WorkerSettings(consumer="w", visibility_timeout=2, reclaim_interval=0.1, block=0.05)
    worker = Worker(_registry(stream, ledger), redis, InlineExecutor(), settings_)
    task = asyncio.create_task(worker.run())
    try:
        sent: dict[str, Pairs] = {}
        for n, pairs in enumerate(batch):
            entry_id = first_id if n == 0 and first_id else "*"
            new: Any = await redis.execute_command("XADD", stream, entry_id, *[b for kv in pairs for b in kv])
            sent[new.decode()] = pairs
        deadline = time.monotonic() + SETTLE_S
        while not await _settled(redis, stream, len(sent)):
            assert time.monotonic() < deadline, f"stuck: not settled within {SETTLE_S}s"
            await asyncio.sleep(0.02)
        handled = {k.decode(): int(v) for k, v in (await redis.hgetall(f"handled:{stream}")).items()}
        dead: dict[str, list[Any]] = {}
        for letter in await list_dead(redis, f"{stream}:dead", count=10_000):
            dead.setdefault(letter.id, []).append(letter)
        assert set(handled) | set(dead) == set(sent) and not set(handled) & set(dead)
        assert all(n == 1 for n in handled.values()), handled
        for entry_id, letters in dead.items():
            assert len(letters) == 1, f"{entry_id} dead-lettered {len(letters)} times"
            assert letters[0].attempts == 1, (letters[0].reason, letters[0].error)
            assert list(letters[0].pairs) == sent[entry_id]
        await _replay_all(redis, stream, dead, sent)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
        await redis.aclose()


ORIGIN = (b"_st_origin_stream", b"_st_origin_id")


async def _replay_all(redis: Redis, stream: str, dead: dict[str, list[Any]], sent: dict[str, Pairs]) -> None:
    """Replay every dead letter onto another stream: each arrives with its very bytes, plus
    the origin markers (the entry's own, if it carried them)."""
    letters = [found[0] for found in dead.values()]
    target = f"{stream}:replayed"
    moved = await replay(redis, f"{stream}:dead", letters, target=target)
    assert len(moved) == len(letters) and int(await redis.xlen(f"{stream}:dead")) == 0
    raw = Redis(connection_pool=redis.connection_pool)
    raw.response_callbacks.pop("XRANGE", None)
    entries: Any = await raw.xrange(target) if letters else []
    for letter, (_, flat) in zip(letters, entries, strict=True):
        pairs = sent[letter.id]
        own = dict(pairs)
        expected = [kv for kv in pairs if kv[0] not in ORIGIN]
        expected += [
            (ORIGIN[0], own.get(ORIGIN[0], stream.encode())),
            (ORIGIN[1], own.get(ORIGIN[1], letter.id.encode())),
        ]
        assert list(zip(flat[0::2], flat[1::2], strict=True)) == expected


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(st.lists(entries(), min_size=1, max_size=5), first_ids)
def test_each_hostile_entry_is_handled_once_or_dead_lettered_once_never_stuck(
    redis_url: str, batch: list[Pairs], first_id: str | None
) -> None:
    ledger = syncredis.Redis.from_url(redis_url)
    try:
        asyncio.run(_scenario(redis_url, ledger, batch, first_id))
    finally:
        ledger.close()


async def _store_all(dsn: str, batch: list[Pairs]) -> None:
    msgs = [decode_or_none(f"1700000000000-{i}", pairs) for i, pairs in enumerate(batch)]
    records = []
    for msg in msgs:
        if msg is None:
            continue
        try:
            records.append(parse_inference(msg))
        except DecodeError:
            continue
    conn = await asyncpg.connect(dsn)
    try:
        await store_inference(conn, records)  # must not raise: PostgreSQL takes what parsing took
        keys = [r.idempotency_key for r in records]
        found = await conn.fetchval(
            "SELECT count(*) FROM inference_results WHERE idempotency_key = ANY($1::text[])", keys
        )
        assert found == len(set(keys))
    finally:
        await conn.close()


def decode_or_none(entry_id: str, pairs: Pairs) -> Message | None:
    try:
        return decode_entry(
            "inference_results_stream", entry_id, [b for kv in pairs for b in kv], 1, MAX_ENTRY_BYTES
        )
    except DecodeError:
        return None


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(st.lists(entries(), min_size=1, max_size=8))
def test_whatever_the_parser_accepts_postgresql_stores(schema: str, batch: list[Pairs]) -> None:
    """No hostile entry that passes parsing makes the batch's COPY fail (which would fail,
    and retry, all its batch-mates)."""
    asyncio.run(_store_all(schema, batch))
