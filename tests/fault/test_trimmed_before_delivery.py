"""Entries trimmed before any consumer was given them: counted and logged as lost (once), the
group's lag drains, and ``status`` flags the lag that cannot drain while nobody corrects it."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
import urllib.request
from typing import Any

import pytest
import redis.asyncio as aioredis
from support.invariants import GROUP, Invariants, Workers, poll
from support.procs import free_port

pytestmark = [pytest.mark.fault, pytest.mark.integration]

LOST_LINE = re.compile(r"(\d+) entries of jobs were trimmed or deleted before group fault read them: lost")


async def _undelivered(redis: aioredis.Redis, inv: Invariants) -> set[str]:
    """Keys of sent entries not yet delivered to the group (ids above its last-delivered-id)."""
    groups: Any = await redis.xinfo_groups("jobs")
    last = next(g["last-delivered-id"] for g in groups if g["name"] == GROUP.encode()).decode()
    position = tuple(map(int, last.split("-")))
    return {k for k, i in inv.sent.items() if tuple(map(int, i.split("-"))) > position}


async def _status(spawn: Any, redis_url: str) -> tuple[int, dict[str, Any]]:
    proc = spawn(
        [sys.executable, "-m", "streamtasks", "status", "--redis-url", redis_url, "--group", GROUP,
         "--streams", "jobs", "--json"],
        name="status",
    )  # fmt: skip
    rc = await asyncio.to_thread(proc.wait, 60)
    return rc, json.loads(proc.stdout())


def _lost_metric(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        body = resp.read().decode()
    found = re.search(r'^streamtasks_entries_lost_total\{[^}]*stream="jobs"[^}]*\} (\S+)$', body, re.M)
    return float(found.group(1)) if found else 0.0


async def test_entries_trimmed_while_the_worker_is_busy_are_reported_lost_once_and_lag_drains(
    inv: Invariants, workers: Workers, redis: aioredis.Redis, ledger: Any
) -> None:
    """The worker's lane is full (held batches), 300 entries arrive and the stream is trimmed
    to its last 100: every entry trimmed before delivery is reported lost — one log line, the
    metric — within the check interval; the rest are handled once; pending and lag end at 0."""
    port = free_port()
    one = workers.one_consumer("w")[0]  # actor mode: one actor, whose lane the held batches fill
    w = workers.start(name="w", args=[*one, "--metrics-port", str(port)])
    await inv.send(10)
    await inv.check(30, logs=workers.logs)
    ledger.set("hold", 1)
    await inv.send(300, hold="1")  # fills the lane: 2 batches running, 2 queued
    lag: list[int] = []

    async def lane_full() -> bool:  # the group's position stops moving
        groups: Any = await redis.xinfo_groups("jobs")
        lag.append(int(groups[0]["lag"]))
        return len(lag) > 20 and len(set(lag[-20:])) == 1 and lag[-1] > 0

    await poll(lane_full, 30, "the worker stops reading", workers.logs)
    await inv.send(300)
    undelivered = await _undelivered(redis, inv)
    await redis.xtrim("jobs", maxlen=100, approximate=False)
    trimmed_at = time.monotonic()
    left = {k for k, i in inv.sent.items() if await redis.xrange("jobs", i, i)}
    lost = undelivered - left
    assert lost, "nothing undelivered was trimmed: the test set-up is wrong"
    await poll(lambda: LOST_LINE.search(w.output()), 15, "loss reported", workers.logs)
    reported_after = time.monotonic() - trimmed_at
    ledger.delete("hold")
    out, took = await inv.check(60, may_lose=lost, logs=workers.logs)
    assert out.lost == lost
    lines = LOST_LINE.findall(w.output())
    assert [int(n) for n in lines] == [len(lost)], lines
    # the metric crosses a process boundary in actor mode (each actor's counts are polled every
    # second), so it may trail the log line by a poll or two
    await poll(lambda: _lost_metric(port) == len(lost), 10, f"metric lost = {len(lost)}", workers.logs)
    print(
        f"trim: {len(lost)} entries trimmed before delivery reported lost {reported_after:.1f}s after "
        f"the trim (one line, metric {len(lost)}); the rest settled, lag 0, in {took:.1f}s"
    )


async def test_status_flags_a_lag_that_cannot_drain_until_a_worker_reports_it(
    inv: Invariants, workers: Workers, redis: aioredis.Redis, redis_url: str, spawn: Any
) -> None:
    """No worker: 10 entries, 3 read and acked, the stream trimmed to its last 4: ``status``
    says the lag of 7 cannot drain (3 lost) and exits unhealthy; a worker reports the 3 as lost,
    handles the 4, and ``status`` is healthy again."""
    await redis.xgroup_create("jobs", GROUP, id="0", mkstream=True)
    await inv.send(10)
    got: Any = await redis.xreadgroup(GROUP, "someone", {"jobs": ">"}, count=3)
    read = [i for _, entries in got for i, _ in entries]
    await redis.xack("jobs", GROUP, *read)
    await redis.xgroup_delconsumer("jobs", GROUP, "someone")
    await redis.xtrim("jobs", maxlen=4, approximate=False)
    rc, out = await _status(spawn, redis_url)
    assert rc not in (0, 1) and not out["ok"], out
    assert (
        "jobs: lag 7 cannot drain: 3 entries were trimmed or deleted before group 'fault' read them (lost)"
        in (out["problems"])
    ), out["problems"]
    assert out["streams"][0]["undeliverable"] == 3

    w = workers.start(name="w")
    await poll(lambda: LOST_LINE.search(w.output()), 15, "loss reported", workers.logs)
    order = sorted(inv.sent, key=lambda k: tuple(map(int, inv.sent[k].split("-"))))
    # the first 3 were read (and acked) by hand, the next 3 trimmed unread: none is handled
    out_inv, _ = await inv.wait_settled(30, may_lose=order[:6], logs=workers.logs)
    assert set(out_inv.handled) == set(order[6:]) and out_inv.pending == 0 and out_inv.lag == 0
    assert [int(n) for n in LOST_LINE.findall(w.output())] == [3]
    rc, out = await _status(spawn, redis_url)
    assert rc == 0 and out["ok"], out["problems"]
