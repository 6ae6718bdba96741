"""Redis Sentinel (``redis+sentinel://``): a worker, a producer and ``status`` find the master
through the sentinels; when the master is killed (kill -9) under load the sentinels fail over
to the replica, the worker reconnects to the new master and goes on, with one log line when
the outage starts and one when it ends, and no entry is lost.

The set-up is real: a master, a replica and 3 ``redis-sentinel`` processes (quorum 2), started
once per session (``redis_sentinel`` in ``tests/conftest.py``) and healed before each test."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest
import redis.asyncio as aioredis
from support.invariants import Invariants, Workers, poll

from streamtasks.connect import connect
from streamtasks.redisutil import REDIS_DOWN

pytestmark = [pytest.mark.fault, pytest.mark.integration]

#: Entries written (and confirmed on the replica) before the master is killed, and after.
BEFORE, AFTER = 600, 300
CHUNK = 50


async def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=60)


async def _send(inv: Invariants, redis: aioredis.Redis, count: int, replicated: bool) -> set[str]:
    """XADD ``count`` entries (``sleep`` makes the worker take a while), in chunks; with
    ``replicated`` each chunk waits until the replica has it (``WAIT 1``), so a kill of the
    master cannot lose it. A chunk that fails is sent again: returns the keys sent twice."""
    again: set[str] = set()
    for _ in range(0, count, CHUNK):
        keys = [inv.new_key() for _ in range(CHUNK)]
        while True:
            try:
                pipe = redis.pipeline(transaction=False)
                for key in keys:
                    pipe.xadd(inv.stream, {"k": key, "sleep": "0.004"})
                if replicated:
                    pipe.execute_command("WAIT", 1, 2000)
                replies = await pipe.execute()
            except REDIS_DOWN:
                again.update(keys)
                await asyncio.sleep(0.1)
                continue
            if replicated and replies[-1] < 1:
                again.update(keys)
                continue
            for key, entry_id in zip(keys, replies, strict=False):
                inv.sent[key] = entry_id.decode()
            break
    return again


async def test_connect_and_status_go_through_the_sentinels(sentinel_servers: Any) -> None:
    """:func:`connect` reaches the master the sentinels name; ``status --redis-url
    redis+sentinel://...`` reads it (exit 0, Redis answering)."""
    redis = await connect(sentinel_servers.url)
    try:
        await redis.xadd("s", {"a": "1"})
        info: Any = await redis.info("server")
        assert int(info["tcp_port"]) == sentinel_servers.master().port
    finally:
        await redis.aclose()
    argv = [sys.executable, "-m", "streamtasks", "status", "--streams", "s", "--json"]
    done = await _run([*argv, "--redis-url", sentinel_servers.url])
    status = json.loads(done.stdout)
    assert status["redis"]["ok"], done.stderr
    assert [s["length"] for s in status["streams"]] == [1]


@pytest.mark.both_modes
async def test_a_worker_carries_on_through_a_failover_with_nothing_lost(
    sentinel_servers: Any, workers: Workers, ledger: Any
) -> None:
    """kill -9 of the master while the worker works through a backlog: the sentinels promote
    the replica, the worker reconnects to it and handles every entry (some twice: acks the
    old master had not passed on are lost with it, so those entries run again), one outage
    in its log; ``status`` through the Sentinel URL is healthy afterwards."""
    redis = await connect(sentinel_servers.url)
    inv = Invariants(redis, ledger)
    try:
        w = workers.start(name="sentinel", redis_url=sentinel_servers.url, env={"FAULT_BATCH_SIZE": "20"})
        again = await _send(inv, redis, BEFORE, replicated=True)
        await poll(lambda: len(inv.handled()) >= 100, 30, "the worker handled 100", workers.logs)
        old = await asyncio.to_thread(sentinel_servers.kill_master)
        again |= await _send(inv, redis, AFTER, replicated=False)  # through the failover
        await asyncio.to_thread(sentinel_servers.wait_failover, old.port)
        out, took = await inv.check(60, may_repeat=inv.sent, logs=workers.logs)
        assert len(out.handled) == BEFORE + AFTER and not out.dead, out.summary()
        print(f"failover: {out.summary()}, resent {len(again)}, settled {took:.1f}s after")
        log = w.output()
        assert log.count("Redis unavailable") == 1, w.output_tail()
        assert log.count("Redis is back") == 1, w.output_tail()
        argv = [sys.executable, "-m", "streamtasks", "status", "--streams", "jobs", "--group", "fault"]
        done = await _run([*argv, "--redis-url", sentinel_servers.url])
        assert done.returncode == 0, done.stdout + done.stderr
        w.terminate()
        assert w.wait(60) == 0, w.output_tail()
    finally:
        await redis.aclose()


async def test_the_blocking_read_follows_the_failover_and_a_stop_still_ends_it_at_once(
    sentinel_servers: Any,
) -> None:
    """The reader's own connection (the blocking XREADGROUP's) dies with the master; the next
    read is on the new master (redis-py would reconnect that connection to the dead address),
    and ``CLIENT UNBLOCK`` through the Sentinel-managed pool ends it at once."""
    from streamtasks import Registry
    from streamtasks.worker.lanes import Lane
    from streamtasks.worker.read import Reader

    registry = Registry(group="g")
    registry.stream_handler("unblock")(lambda msg: None)
    lane = Lane(registry.handlers["unblock"], prefetch=1)
    redis = await connect(sentinel_servers.url)
    reader = Reader(redis, "g", "c1", {"unblock": lane})
    try:
        await reader.ensure_groups()
        read = asyncio.create_task(reader.read([lane], block=30))
        await asyncio.sleep(0.2)
        old = await asyncio.to_thread(sentinel_servers.kill_master)
        with pytest.raises(REDIS_DOWN):
            await asyncio.wait_for(read, 5)
        new = await asyncio.to_thread(sentinel_servers.wait_failover, old.port)
        await asyncio.to_thread(sentinel_servers.heal)
        read = asyncio.create_task(reader.read([lane], block=30))
        await poll(lambda: _blocked_on(new.port), 10, "a blocking read on the new master")
        started = asyncio.get_running_loop().time()
        await reader.unblock()
        assert await asyncio.wait_for(read, 5) == {}
        assert asyncio.get_running_loop().time() - started < 2
    finally:
        await reader.close()
        await redis.aclose()


def _blocked_on(port: int) -> bool:
    from support import load_services

    out = load_services().redis_command(port, "client", "list")
    return any("cmd=xreadgroup" in line and "flags=b" in line for line in out.splitlines())
