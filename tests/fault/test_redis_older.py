"""Redis outages in a row, and a Redis that comes back older than it was.

* A second outage 5 s after the first one ended is logged (start and end) like the first.
* Redis restarted from an RDB snapshot that lacks writes it had acknowledged: the worker logs
  it once, with the ids and the time span gone — whether the group survived in the snapshot
  (its position and the stream's newest id went backwards) or not (``NOGROUP``: the stream's
  ids went backwards) — and keeps serving.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from support import load_services
from support.invariants import Invariants, Workers, poll

pytestmark = [pytest.mark.fault, pytest.mark.integration]

DOWN = re.compile(r"Redis unavailable while")
BACK = re.compile(r"Redis is back after")
OLDER = re.compile(r"Redis came back older")


@pytest.mark.both_modes
async def test_an_outage_starting_5s_after_a_recovery_is_logged_start_and_end(
    inv: Invariants, workers: Workers, redis_server: Any
) -> None:
    """Down 3 s, up 5 s, down 4 s: two "unavailable" lines and two "back" lines."""
    w = workers.start(name="w")
    redis_server.stop()
    await poll(lambda: len(DOWN.findall(w.output())) >= 1, 15, "first outage logged", workers.logs)
    await asyncio.sleep(2)
    redis_server.start()
    await poll(lambda: len(BACK.findall(w.output())) >= 1, 15, "first recovery logged", workers.logs)
    back_at = time.monotonic()
    await asyncio.sleep(max(0.0, 5 - (time.monotonic() - back_at)))
    redis_server.stop()
    second = time.monotonic()
    await poll(lambda: len(DOWN.findall(w.output())) >= 2, 15, "second outage logged", workers.logs)
    logged_after = time.monotonic() - second
    await asyncio.sleep(max(0.0, 4 - (time.monotonic() - second)))
    redis_server.start()
    await poll(lambda: len(BACK.findall(w.output())) >= 2, 15, "second recovery logged", workers.logs)
    await inv.redis.connection_pool.disconnect()  # the test's own pooled connections broke
    keys = await inv.send(20)
    await inv.check(30, logs=workers.logs)
    assert len(DOWN.findall(w.output())) == 2 and len(BACK.findall(w.output())) == 2, w.output()
    assert set(keys) <= set(inv.handled())
    print(f"second outage (5 s after the first recovery) logged {logged_after:.1f}s after it began")


@pytest.fixture
def older_redis(tmp_path: Path) -> Iterator[Any]:
    """A throwaway redis-server whose RDB snapshot the test takes (SAVE) and puts back."""
    server = load_services().RedisServer(tmp_path / "older")
    server.start()
    yield server
    server.kill()


async def _snapshot_restored(client: aioredis.Redis, server: Any, snapshot: Path) -> None:
    """Stop the server, put ``snapshot`` back as its RDB file, start it (it loads the file)."""
    await asyncio.to_thread(server.stop)
    shutil.copy(snapshot, server.dir / "dump.rdb")
    await asyncio.to_thread(server.start)
    await client.connection_pool.disconnect()  # the test's own pooled connections broke


async def _save(client: aioredis.Redis, server: Any, into: Path) -> None:
    await client.save()
    shutil.copy(server.dir / "dump.rdb", into)


async def test_redis_back_from_an_older_snapshot_with_the_group_is_logged_once_with_what_was_lost(
    workers: Workers, ledger: Any, older_redis: Any, tmp_path: Path
) -> None:
    """Snapshot after 100 entries, 100 more handled, Redis restored from the snapshot: one
    line names the stream's newest id, the id this worker had read, and the time span gone;
    the worker serves on."""
    client = aioredis.Redis.from_url(older_redis.url)
    inv = Invariants(client, ledger)
    # each consumer reports what *it* had read: in actor mode one actor, so one line to check
    w = workers.start(name="w", redis_url=older_redis.url, args=workers.one_consumer("w")[0])
    await inv.send(100)
    await inv.check(30, logs=workers.logs)
    await _save(client, older_redis, tmp_path / "snap.rdb")
    newest_in_snapshot = max(inv.sent.values(), key=lambda i: tuple(map(int, i.split("-"))))
    await asyncio.sleep(0.05)  # the next ids are in a later millisecond
    later = await inv.send(100)
    await inv.check(30, logs=workers.logs)
    last_read = inv.sent[later[-1]]
    await _snapshot_restored(client, older_redis, tmp_path / "snap.rdb")
    took = await poll(lambda: OLDER.search(w.output()), 20, "older Redis reported", workers.logs)
    line = next(x for x in w.output().splitlines() if OLDER.search(x))
    assert (
        f"the newest entry of jobs is {newest_in_snapshot}, but this worker had read up to {last_read}"
        in line
    )
    assert "s of entries)" in line
    after = await inv.send(50)
    await inv.check(30, logs=workers.logs)
    assert set(after) <= set(inv.handled())
    assert len(OLDER.findall(w.output())) == 1, w.output()
    await client.aclose()
    print(f"older Redis (group in the snapshot): reported {took:.1f}s after the restart: {line[-250:]}")


async def test_redis_back_from_a_snapshot_without_the_group_says_the_ids_went_backwards(
    workers: Workers, ledger: Any, older_redis: Any, tmp_path: Path
) -> None:
    """Snapshot before the worker made its group: NOGROUP after the restore; the group is
    recreated from the start (its entries run again: nothing lost) and the line says Redis came
    back older, naming both ids."""
    client = aioredis.Redis.from_url(older_redis.url)
    inv = Invariants(client, ledger)
    first = await inv.send(50)
    await _save(client, older_redis, tmp_path / "snap.rdb")
    newest_in_snapshot = inv.sent[first[-1]]
    w = workers.start(name="w", redis_url=older_redis.url, args=workers.one_consumer("w")[0])
    await asyncio.sleep(0.05)
    later = await inv.send(50)
    await inv.check(30, logs=workers.logs)
    await _snapshot_restored(client, older_redis, tmp_path / "snap.rdb")
    await poll(lambda: OLDER.search(w.output()), 20, "older Redis reported", workers.logs)
    line = next(x for x in w.output().splitlines() if OLDER.search(x))
    assert f"the stream's newest entry is {newest_in_snapshot}, below {inv.sent[later[-1]]}" in line, line
    assert "consumer group fault on jobs was missing" in line
    await inv.check(30, may_repeat=first, logs=workers.logs)
    assert len(OLDER.findall(w.output())) == 1, w.output()
    await client.aclose()
