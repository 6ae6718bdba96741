"""The handler's world fails: a dependency down for a while, a handler slower than the
visibility timeout."""

from __future__ import annotations

import time
from typing import Any

import pytest
from support.invariants import VISIBILITY_S, Invariants, Workers, poll

pytestmark = [pytest.mark.fault, pytest.mark.integration]

OUTAGE_S = 10.0


async def test_dependency_down_for_a_while_nothing_dead_lettered_early_all_handled_after(
    inv: Invariants, workers: Workers, ledger: Any
) -> None:
    """The handler's dependency is down (it raises ConnectionError): entries wait in the
    pending list with backoff and are retried (each at least once more in the 10 s after every
    entry's first attempt), none is dead-lettered before its retries are spent, and all are
    handled once the dependency is back."""
    env = {"FAULT_MAX_RETRIES": "20", "FAULT_BACKOFF_BASE": "0.5", "FAULT_BACKOFF_MAX": "2"}
    workers.start(name="a", env=env), workers.start(name="b", env=env)
    ledger.set("dep_down", 1)
    keys = await inv.send(200, dep="1")
    # The window starts once every entry failed once: a first attempt may wait for Ray to
    # start the handlers' worker processes (seconds on a loaded machine), a retry may not.
    await poll(lambda: all(ledger.hget("runs", k) for k in keys), 60, "every entry tried once", workers.logs)
    down_at = time.monotonic()
    while time.monotonic() - down_at < OUTAGE_S:  # watch the outage: nothing dead-lettered
        assert not await inv.redis.exists("jobs:dead"), "dead-lettered during the outage"
        await poll(lambda: True, 1, "tick")
        await inv.redis.ping()
    retries = [int(ledger.hget("attempts", k) or 0) for k in keys]
    ledger.delete("dep_down")
    out, took = await inv.check(VISIBILITY_S + 15, logs=workers.logs)
    assert len(out.handled) == 200 and not out.dead
    assert min(retries) >= 2, "entries were not retried during the outage"
    assert max(retries) <= 21
    print(
        f"dependency down {OUTAGE_S:.0f}s: attempts during the outage {min(retries)}-{max(retries)} "
        f"(of 21); all handled {took:.1f}s after it ended"
    )


async def test_handler_slower_than_the_visibility_timeout_keeps_its_lease(
    inv: Invariants, workers: Workers, ledger: Any
) -> None:
    """Entries that take 2.5x the visibility timeout, with an idle second worker ready to
    reclaim: the lease is extended, each runs once, attempt stays 1."""
    workers.start(name="a", env={"FAULT_BATCH_SIZE": "1"})
    keys = await inv.send(3, sleep=str(VISIBILITY_S * 2.5))
    await poll(lambda: ledger.hlen("runs") >= 2, 30, "slow entries started", workers.logs)
    workers.start(name="thief", env={"FAULT_BATCH_SIZE": "1"})
    out, _ = await inv.check(VISIBILITY_S * 6 + 10, logs=workers.logs)
    assert not out.dead
    assert [int(ledger.hget("runs", k)) for k in keys] == [1, 1, 1]
    assert {int(v) for v in ledger.hvals("attempts")} == {1}
