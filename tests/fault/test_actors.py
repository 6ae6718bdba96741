"""Actor mode (``--mode actors``) keeps the guarantees: every entry handled once, poison
entries dead-lettered after their retries, an actor process killed mid-batch is replaced and its
entries are reclaimed and handled, SIGTERM drains and exits 0."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
import redis.asyncio as aioredis
from support.invariants import VISIBILITY_S, Invariants, Workers, poll

pytestmark = [pytest.mark.fault, pytest.mark.integration]

ACTORS = ["--mode", "actors", "--actors", "2"]


async def _consumers(redis: aioredis.Redis) -> set[str]:
    info: Any = await redis.xinfo_consumers("jobs", "fault")
    return {c["name"].decode() if isinstance(c["name"], bytes) else c["name"] for c in info}


async def test_actor_mode_handles_every_entry_once_with_poison_dead_lettered(
    inv: Invariants, workers: Workers, ledger: Any, redis: aioredis.Redis
) -> None:
    """3,000 entries, 6 poison, two actors (each its own consumer): 2,994 handled once, the
    poison entries dead-lettered after 1 + max_retries attempts; SIGTERM exits 0."""
    w = workers.start(name="pool", args=[*ACTORS, "--consumer", "pool"], env={"FAULT_BATCH_SIZE": "100"})
    items: list[dict[str, str | bytes]] = [{} for _ in range(3000)]
    for i in range(250, 3000, 500):
        items[i] = {"poison": "1"}
    keys = await inv.send_each(items)
    poison = {keys[i] for i in range(250, 3000, 500)}
    out, took = await inv.check(60, logs=workers.logs)
    assert len(out.handled) == 2994 and set(out.dead) == poison and not out.duplicates
    assert {letter.attempts for letter in out.dead.values()} == {4}
    assert {letter.reason for letter in out.dead.values()} == {"handler_error"}
    assert {"pool-a0", "pool-a1"} <= await _consumers(redis)
    print(f"actor mode: 3,000 entries (6 poison) settled in {took:.1f}s")
    w.terminate()
    assert w.wait(60) == 0, w.output_tail()


async def test_an_actor_killed_mid_batch_is_replaced_and_its_entries_are_handled(
    inv: Invariants, workers: Workers, ledger: Any
) -> None:
    """kill -9 of an actor's process while it runs a batch: Ray restarts the actor, the
    entries it held are reclaimed after the visibility timeout and handled, nothing is lost,
    and only that batch ran twice."""
    w = workers.start(name="pool", args=ACTORS, env={"FAULT_BATCH_SIZE": "10"})
    marker = (await inv.send_each([{"pid": "1"}]))[0]
    await inv.send(200)
    await poll(lambda: ledger.llen("pids") >= 1, 30, "handler recorded its pid", workers.logs)
    pid = int(ledger.lindex("pids", 0).split()[0])
    os.kill(pid, signal.SIGKILL)
    await poll(lambda: ledger.llen("pids") >= 2, VISIBILITY_S + 30, "the marker ran again", workers.logs)
    assert int(ledger.lindex("pids", 1).split()[0]) != pid
    ledger.set("release", 1)
    out, _ = await inv.check(VISIBILITY_S + 30, may_repeat=inv.sent, logs=workers.logs)
    assert len(out.handled) == 201 and not out.dead
    assert set(out.duplicates) <= set(inv.sent) and len(out.duplicates) <= 10  # the killed batch only
    assert int(ledger.hget("runs", marker)) == 2
    w.terminate()
    assert w.wait(60) == 0, w.output_tail()


async def test_sigterm_drains_the_actors_and_a_second_worker_takes_the_rest(
    inv: Invariants, workers: Workers, ledger: Any
) -> None:
    """SIGTERM to an actor-mode worker with a backlog and a task-mode worker beside it: the
    actors finish their batches and hand back what they had read; every entry is handled once."""
    env = {"FAULT_BATCH_SIZE": "200"}
    first = workers.start(name="first", args=ACTORS, env=env)
    await inv.send(6000, sleep="0.001")
    await poll(lambda: len(inv.handled()) >= 500, 60, "first handled 500", workers.logs)
    second = workers.start(name="second", env=env)
    first.terminate()
    assert first.wait(60) == 0, first.output_tail()
    out, _ = await inv.check(90, logs=workers.logs)
    assert len(out.handled) == 6000 and not out.dead and not out.duplicates
    second.terminate()
    assert second.wait(60) == 0
