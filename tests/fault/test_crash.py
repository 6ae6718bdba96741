"""Delivery under crashes: two workers, kill -9 of a worker, kill -9 of a Ray worker process,
a poison entry among thousands, SIGTERM hand-off to a second worker."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from support.invariants import VISIBILITY_S, Invariants, Workers, poll
from support.procs import ManagedProcess

pytestmark = [pytest.mark.fault, pytest.mark.integration]


async def test_two_workers_share_a_group_and_handle_every_entry_once(
    inv: Invariants, workers: Workers
) -> None:
    """Baseline: 2,000 entries, two workers in one group -> all handled once, nothing pending."""
    a, b = workers.start(name="a"), workers.start(name="b")
    await inv.send(2000)
    out, took = await inv.check(30, logs=workers.logs)
    assert len(out.handled) == 2000 and not out.dead
    print(f"baseline: 2000 entries settled in {took:.2f}s")
    a.terminate(), b.terminate()
    assert a.wait() == 0 and b.wait() == 0


async def _pending_by_consumer(redis: aioredis.Redis) -> dict[str, int]:
    info: Any = await redis.xpending("jobs", "fault")
    return {
        (c["name"].decode() if isinstance(c["name"], bytes) else c["name"]): int(c["pending"])
        for c in info.get("consumers") or ()
    }


@pytest.mark.both_modes
async def test_kill9_of_the_worker_mid_batch_loses_nothing(
    inv: Invariants, workers: Workers, redis: aioredis.Redis
) -> None:
    """kill -9 of the worker while batches run, then a new worker: every entry is handled
    (re-runs only for the batches that were in flight), pending empty within the visibility
    timeout + a few seconds of the new worker being up."""
    first = workers.start(name="first", env={"FAULT_BATCH_SIZE": "50", "FAULT_MAX_IN_FLIGHT": "2"})
    # 1,200 entries, 300 handled before the kill: the 900 left take the new worker about 2.7 s
    # of handler time (3 ms each), so the bound below measures the recovery (reclaim after the
    # visibility timeout), not how fast a loaded 2-core machine works off a long tail (with
    # 1,700 left it once took 8.5 s on such a machine).
    await inv.send(1200, sleep="0.003")
    await poll(lambda: len(inv.handled()) >= 300, 30, "first handled 300", workers.logs)
    first.kill9()
    killed_at = time.monotonic()
    snapshot = await inv.snapshot()
    assert snapshot.pending > 0, "the kill should leave entries pending"
    second = workers.start(name="second")
    ready = time.monotonic() - killed_at
    out, took = await inv.check(VISIBILITY_S + 10, may_repeat=inv.sent, logs=workers.logs)
    # Only entries of batches in flight at the kill (2 x 50) may have run twice.
    assert len(out.duplicates) <= 100 and set(out.duplicates.values()) <= {2}, out.duplicates
    assert not out.dead
    print(
        f"kill -9: {snapshot.pending} pending at the kill; new worker up after {ready:.1f}s; "
        f"pending empty {took:.1f}s later ({ready + took:.1f}s after the kill); "
        f"{len(out.duplicates)} re-run"
    )
    assert took <= VISIBILITY_S + 5
    second.terminate()
    assert second.wait() == 0


@pytest.mark.parametrize("workers", ["tasks"], indirect=True)
async def test_kill9_of_a_ray_worker_process_mid_task_reruns_the_batch_without_using_an_attempt(
    inv: Invariants, workers: Workers, ledger: Any
) -> None:
    """Task mode: a Ray worker process killed mid-task: Ray re-runs the batch (process
    retries), the entries are handled once, and Redis' delivery count - the handler's attempt -
    stays 1. (A killed actor's batch is a new delivery, attempt 2, as a killed worker's is:
    test_actors.py::test_an_actor_killed_mid_batch_is_replaced_and_its_entries_are_handled.)"""
    w = workers.start()
    keys = await inv.send(20)
    marker = (await inv.send_each([{"pid": "1"}]))[0]
    keys += await inv.send(20) + [marker]
    await poll(lambda: ledger.llen("pids") >= 1, 30, "handler recorded its pid", workers.logs)
    pid = int(ledger.lindex("pids", 0).split()[0])
    os.kill(pid, signal.SIGKILL)
    await poll(lambda: ledger.llen("pids") >= 2, 30, "Ray re-ran the batch", workers.logs)
    ledger.set("release", 1)
    out, _ = await inv.check(30, logs=workers.logs)
    assert len(out.handled) == 41 and not out.dead
    attempts = {int(v) for v in ledger.hvals("attempts")}
    assert attempts == {1}, f"attempts seen by the handler: {attempts}"
    assert int(ledger.hget("runs", marker)) == 2
    second_pid = int(ledger.lindex("pids", 1).split()[0])
    assert second_pid != pid
    w.terminate()
    assert w.wait() == 0


async def test_poison_entries_among_ten_thousand_are_dead_lettered_after_max_retries(
    inv: Invariants, workers: Workers, ledger: Any
) -> None:
    """Acceptance 1: 10,000 entries, 20 poison (max_retries=3): 9,980 handled once, 20 dead
    letters with attempts=4 and the error, nothing pending."""
    env = {"FAULT_BATCH_SIZE": "500", "FAULT_MAX_RETRIES": "3", "FAULT_BACKOFF_BASE": "0.05"}
    workers.start(name="a", env=env), workers.start(name="b", env=env)
    items: list[dict[str, str | bytes]] = [{} for _ in range(10_000)]
    for i in range(250, 10_000, 500):
        items[i] = {"poison": "1"}
    keys = await inv.send_each(items)
    poison = {keys[i] for i in range(250, 10_000, 500)}
    out, took = await inv.check(60, logs=workers.logs)
    assert len(out.handled) == 9_980 and set(out.dead) == poison
    for key, letter in out.dead.items():
        assert letter.attempts == 4, (key, letter)
        assert letter.error_type == "ValueError" and letter.error == f"poison entry {key}"
        assert letter.reason == "handler_error" and "ValueError" in letter.traceback
        assert letter.id == inv.sent[key] and letter.stream == "jobs"
        assert letter.first_failure_ms < letter.last_failure_ms
        assert int(ledger.hget("runs", key)) == 4
    assert not await inv.redis.exists("jobs:failures:fault")
    print(f"poison: 10,000 entries (20 poison) settled in {took:.1f}s")


async def _sigterm_with_backlog(
    inv: Invariants, workers: Workers, ledger: Any, redis: aioredis.Redis, hold_after: float = 0.0
) -> tuple[ManagedProcess, ManagedProcess, float]:
    """First worker: one 5,000-entry batch in flight (held), 5,000 read but unstarted; a
    second worker idle; SIGTERM to the first; the batch is released ``hold_after`` seconds
    after the hand-off. Returns (first, second, hand-off seconds)."""
    env = {"FAULT_BATCH_SIZE": "5000", "FAULT_MAX_IN_FLIGHT": "1"}
    ledger.set("hold", 1)
    await inv.send_each([{"hold": "1"}])
    await inv.send(9_999)
    args, consumer = workers.one_consumer("first")  # actor mode: one actor, so one consumer
    first = workers.start(name="first", env=env, args=args)

    async def first_read_all() -> bool:
        return (await _pending_by_consumer(redis)).get(consumer) == 10_000

    await poll(first_read_all, 30, "first worker read 10,000", workers.logs)
    second = workers.start(name="second", env=env, args=workers.one_consumer("second")[0])
    first.terminate()

    async def handed_over() -> bool:
        return (await _pending_by_consumer(redis)).get(consumer, 0) <= 5_000

    took = await poll(handed_over, 10, "5,000 entries handed over", workers.logs)
    await asyncio.sleep(hold_after)
    ledger.delete("hold")
    return first, second, took


@pytest.mark.both_modes
async def test_sigterm_hands_unstarted_entries_to_the_other_worker_at_once(
    inv: Invariants, workers: Workers, ledger: Any, redis: aioredis.Redis
) -> None:
    """Acceptance 3: SIGTERM with 5,000 read-but-unstarted entries and a second worker
    running: the second worker has them within 2 s; the first finishes its in-flight batch
    and stops; every entry handled once, the handed-back ones still at attempt 1."""
    first, second, took = await _sigterm_with_backlog(inv, workers, ledger, redis)
    print(f"SIGTERM hand-off: 5,000 unstarted entries taken over in {took:.2f}s")
    assert took < 2.0
    first.wait(30)
    assert "handed back 5000 unstarted entries" in first.output()
    assert "worker first stopped" in first.output()
    out, _ = await inv.check(30, logs=workers.logs)
    assert len(out.handled) == 10_000 and not out.dead
    assert {int(v) for v in ledger.hvals("attempts")} == {1}
    second.terminate()
    assert second.wait() == 0


async def test_sigterm_with_backlog_exits_0(
    inv: Invariants, workers: Workers, ledger: Any, redis: aioredis.Redis
) -> None:
    """The worker stopped by SIGTERM (backlog handed over, batch finished) exits 0."""
    first, _second, _ = await _sigterm_with_backlog(inv, workers, ledger, redis)
    assert first.wait(30) == 0, first.output_tail()


async def test_a_drain_longer_than_the_visibility_timeout_keeps_its_lease_and_exits_0(
    inv: Invariants, workers: Workers, ledger: Any, redis: aioredis.Redis
) -> None:
    """SIGTERM while a batch runs for 8 s more (past the 3 s visibility timeout and past the
    alarm Ray's native signal handler arms on SIGTERM): the lease is renewed through the
    drain, so the other worker never runs those entries; the worker exits 0."""
    first, second, _ = await _sigterm_with_backlog(inv, workers, ledger, redis, hold_after=8.0)
    assert first.wait(30) == 0, first.output_tail()
    out, _ = await inv.check(30, logs=workers.logs)
    assert len(out.handled) == 10_000 and not out.dead
    assert {int(v) for v in ledger.hvals("attempts")} == {1}
    second.terminate()
    assert second.wait() == 0
