"""Redis itself fails: restarted without persistence under load, the consumer group
destroyed mid-run, unreachable behind a network partition. The worker recreates the group,
logs once per incident, does not spin, and keeps serving."""

from __future__ import annotations

import contextlib
import re
import time
from typing import Any

import psutil
import pytest
import redis.asyncio as aioredis
from support.invariants import READY_LOG, VISIBILITY_S, WORKER_START_S, Invariants, Workers, poll
from support.proxy import TcpProxy

pytestmark = [pytest.mark.fault, pytest.mark.integration]

RECREATED = re.compile(r"consumer group fault on jobs was missing")
UNAVAILABLE = re.compile(r"Redis unavailable while")


def _cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


@pytest.mark.both_modes
async def test_redis_restart_under_load_recreates_the_group_once_and_keeps_serving(
    inv: Invariants, workers: Workers, redis_server: Any, redis: aioredis.Redis, ledger: Any
) -> None:
    """Redis restarted (no persistence) while a backlog is handled: one warning for the
    outage, one for the recreated group, no hot loop (CPU while idle), every entry sent after
    the restart handled once, and leases of long batches still extended afterwards."""
    w = workers.start(name="w")
    before = await inv.send(1000, sleep="0.004")
    await poll(lambda: len(inv.handled()) >= 100, 30, "some handled", workers.logs)
    redis_server.restart()
    restarted_at = time.monotonic()
    with contextlib.suppress(aioredis.ConnectionError):  # the test's own pooled connection
        await redis.ping()
    await poll(lambda: RECREATED.search(w.output()) is not None, 30, "group recreated", workers.logs)
    recreated = time.monotonic() - restarted_at
    after = await inv.send(500)
    out, took = await inv.check(30, may_lose=before, logs=workers.logs)
    assert set(after) <= set(out.handled)
    lost = out.lost
    # idle for 3 s: a hot loop would burn a core
    cpu0, t0 = _cpu_seconds(w.pid), time.monotonic()
    await poll(lambda: time.monotonic() - t0 >= 3, 5, "idle period")
    cpu = (_cpu_seconds(w.pid) - cpu0) / (time.monotonic() - t0)
    log = w.output()
    assert len(RECREATED.findall(log)) == 1, log
    assert len(UNAVAILABLE.findall(log)) <= 1, log
    assert cpu < 0.2, f"worker used {cpu:.0%} CPU while idle after the restart"
    # leases after the incident: a batch slower than the visibility timeout, a second worker
    # that would steal it if the lease was not extended
    workers.start(name="thief")
    slow = await inv.send(1, sleep=str(VISIBILITY_S * 2.5))
    await inv.check(VISIBILITY_S * 2.5 + 15, may_lose=before, logs=workers.logs)
    assert int(ledger.hget("runs", slow[0])) == 1, "the slow entry ran twice: its lease was not extended"
    print(
        f"redis restart: group recreated {recreated:.2f}s after the restart; {len(lost)} of "
        f"{len(before)} pre-restart entries lost with Redis; post-restart entries settled in "
        f"{took:.1f}s; idle CPU {cpu:.1%}"
    )


async def test_destroyed_consumer_group_is_recreated_once_without_losing_entries(
    inv: Invariants, workers: Workers, redis: aioredis.Redis, ledger: Any
) -> None:
    """XGROUP DESTROY mid-run (a slow batch in flight): the worker recreates the group where
    it left off, logs it once, does not spin, and every entry is handled once; pending and
    lag end at 0; leases of later slow batches are still extended."""
    # One consumer (actor mode: one actor). With several, the first to notice recreates the
    # group at the last id *it* read, and a batch another had read past it runs again: the
    # known limit of a destroyed group (benchmarks/README.md, the fault suite in actor mode).
    w = workers.start(name="w", args=workers.one_consumer("w")[0])
    slow = await inv.send(1, sleep=str(VISIBILITY_S * 2))
    await inv.send(1000, sleep="0.004")
    await poll(lambda: len(inv.handled()) >= 100, 30, "some handled", workers.logs)
    await redis.xgroup_destroy("jobs", "fault")
    await poll(lambda: RECREATED.search(w.output()) is not None, 30, "group recreated", workers.logs)
    await inv.send(200)
    out, took = await inv.check(30, logs=workers.logs)
    assert len(out.handled) == 1201 and not out.dead
    # leases after the incident: a slow entry and a second worker that would steal it
    workers.start(name="thief")
    slow += await inv.send(1, sleep=str(VISIBILITY_S * 2.5))
    await inv.check(VISIBILITY_S * 2.5 + 15, logs=workers.logs)
    assert int(ledger.hget("runs", slow[1])) == 1, "the slow entry ran twice: its lease was not extended"
    cpu0, t0 = _cpu_seconds(w.pid), time.monotonic()
    await poll(lambda: time.monotonic() - t0 >= 3, 5, "idle period")
    cpu = (_cpu_seconds(w.pid) - cpu0) / (time.monotonic() - t0)
    assert len(RECREATED.findall(w.output())) == 1, w.output()
    assert cpu < 0.2, f"worker used {cpu:.0%} CPU while idle"
    print(f"group destroyed: settled {took:.1f}s after; idle CPU {cpu:.1%}")
    w.terminate()
    assert w.wait() == 0


BACK = re.compile(r"Redis is back after (\d+\.\d)s")
PARTITION_S = 6.0


@pytest.mark.both_modes
async def test_a_network_partition_is_logged_once_when_it_starts_and_once_when_it_ends(
    inv: Invariants, workers: Workers, redis_server: Any
) -> None:
    """Redis unreachable with nothing reset (packets dropped, as in a network partition): no
    command fails, they all wait, so only the worker's probe notices. One line when the outage
    starts, one when it ends with its duration, once per worker (actor mode: once for all its
    actors, from its own process); every entry is handled once after."""
    async with TcpProxy("127.0.0.1", redis_server.port) as proxy:  # runs on this test's loop:
        w = workers.start(name="w", redis_url=f"redis://127.0.0.1:{proxy.port}/0", wait=False)
        await poll(lambda: re.search(READY_LOG, w.output()), WORKER_START_S, "worker ready", workers.logs)
        before = await inv.send(200)
        await poll(lambda: len(inv.handled()) >= len(before), 30, "handled before", workers.logs)
        proxy.blackhole()
        started = time.monotonic()
        await poll(lambda: UNAVAILABLE.search(w.output()), 15, "outage logged", workers.logs)
        noticed = time.monotonic() - started
        await poll(lambda: time.monotonic() - started >= PARTITION_S, PARTITION_S + 1, "the partition")
        proxy.resume()
        await poll(lambda: BACK.search(w.output()), 15, "end of the outage logged", workers.logs)
        after = await inv.send(200)
        out, _ = await inv.check(60, logs=workers.logs)
    assert set(after) <= set(out.handled)
    log = w.output()
    assert len(UNAVAILABLE.findall(log)) == 1, log
    [down_for] = BACK.findall(log)
    assert PARTITION_S - 1.5 <= float(down_for) <= PARTITION_S + 4, log  # from the unanswered PING
    print(f"partition of {PARTITION_S:.0f}s: noticed after {noticed:.1f}s, logged as {down_for}s")
