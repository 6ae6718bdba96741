"""Consumer hygiene under restarts: workers restarted again and again (SIGTERM and kill -9
mixed) leave no consumers behind once their grace period is over, never one that held an
entry (nothing is lost): task-mode workers, and an actor-mode worker whose actors die with it.
By hand: ``benchmarks/elastic.py restarts --restarts 50``."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from support.invariants import READY_LOG, WORKER_START_S, Invariants, Workers, poll

pytestmark = [pytest.mark.fault, pytest.mark.integration]

GRACE = ["--consumer-grace", "2"]
INLINE = ["--mode", "tasks", "--executor", "inline", *GRACE]
#: A killed worker's heartbeat lives 10 s, then the grace period, then a round (<= 1.5 s).
GONE_WITHIN_S = 30.0


async def _consumers(inv: Invariants) -> set[str]:
    rows: Any = await inv.redis.xinfo_consumers("jobs", "fault")
    return {row["name"].decode() for row in rows}


async def _send_until(inv: Invariants, done: asyncio.Event) -> None:
    while not done.is_set():
        await inv.send(5, sleep="0.01")
        await asyncio.sleep(0.05)


async def test_restarted_workers_leave_no_consumers_behind(
    inv: Invariants, workers: Workers, ledger: Any
) -> None:
    """Beside a long-lived worker, while entries keep coming: 4 times two task-mode workers
    started side by side, one stopped (SIGTERM) and one killed (kill -9); and an actor-mode
    worker (2 actors) killed. Every restarted worker's consumer is gone 2 s (the grace) after
    its heartbeat expired; nothing is lost."""
    keep = workers.start(name="keep", args=["--consumer", "keep", *INLINE], local_ray=True)
    done = asyncio.Event()
    sender = asyncio.create_task(_send_until(inv, done))
    pool = workers.start(name="pool", args=["--actors", "2", *GRACE], wait=False)
    most = 0
    try:
        for i in range(4):
            pair = [workers.start(name=f"w{i}{j}", args=INLINE, local_ray=True, wait=False) for j in "ab"]
            for w in pair:
                await asyncio.to_thread(w.wait_for_log, READY_LOG, timeout=WORKER_START_S)
            await asyncio.sleep(0.5)
            pair[0].terminate()
            pair[1].kill9()
            assert await asyncio.to_thread(pair[0].wait, 60) == 0, pair[0].output_tail()
            most = max(most, len(await _consumers(inv)))
        await asyncio.to_thread(pool.wait_for_log, READY_LOG, timeout=WORKER_START_S)
        pool.kill9()
    finally:
        done.set()
        await sender
    out, _ = await inv.check(60, may_repeat=inv.sent, logs=workers.logs)
    assert not out.lost and not out.dead, out.summary()
    assert keep.running
    took = await poll(lambda: _only(inv, {"keep"}), GONE_WITHIN_S, "gone consumers removed", workers.logs)
    print(f"10 restarts: up to {most} consumers at once -> 1 in {took:.1f}s after the last")
    assert "removed" in workers.logs()


async def _only(inv: Invariants, live: set[str]) -> bool:
    with contextlib.suppress(Exception):
        return await _consumers(inv) == live
    return False
