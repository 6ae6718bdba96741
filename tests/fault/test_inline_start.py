"""``--inline-start``: the worker process handles entries while Ray starts, then hands over to
Ray the graceful way. Every entry is handled once, whether the hand-over happens (Ray came up)
or a SIGTERM arrives first."""

from __future__ import annotations

import re
from typing import Any

import pytest
import redis.asyncio as aioredis
from support.invariants import Invariants, Workers, poll

pytestmark = [pytest.mark.fault, pytest.mark.integration]

INLINE = ["--inline-start", "--consumer", "early"]
HANDED_OVER = re.compile(r"inline start: (\d+) entries handled in this process")


async def _consumers(redis: aioredis.Redis, workers: Workers) -> bool:
    """True once ``early-inline`` is no longer a consumer of the group (and ``early``, or in
    actor mode its actors, is)."""
    info: Any = await redis.xinfo_consumers("jobs", "fault")
    names = {c["name"].decode() if isinstance(c["name"], bytes) else c["name"] for c in info}
    early = workers.consumer_names("early")
    return any(early.fullmatch(n) for n in names) and "early-inline" not in names


@pytest.mark.both_modes
async def test_the_inline_start_hands_over_to_ray_and_every_entry_is_handled_once(
    inv: Invariants, workers: Workers, redis: aioredis.Redis
) -> None:
    """A backlog of 3,000 slow-ish entries, a worker joining Ray with --inline-start: the worker
    process handles the first entries itself, Ray the rest; what the inline consumer read but
    did not start is handed back and reclaimed, and it then leaves the group."""
    await inv.send(3000, sleep="0.003")
    w = workers.start(name="early", args=INLINE, env={"FAULT_BATCH_SIZE": "20"}, wait=False)
    out, took = await inv.check(120, logs=workers.logs)
    assert len(out.handled) == 3000 and not out.dead and not out.duplicates
    inline = int(w.wait_for_log(HANDED_OVER, timeout=30).group(1))
    assert 0 < inline < 3000, f"{inline} of 3,000 handled inline: the hand-over was not exercised"
    await poll(lambda: _consumers(redis, workers), 30, "the inline consumer left the group", workers.logs)
    print(f"inline start: {inline} of 3,000 entries in the worker process, all settled in {took:.1f}s")
    w.terminate()
    assert w.wait(60) == 0, w.output_tail()


async def test_sigterm_during_the_inline_start_settles_what_it_read_and_exits_0(
    inv: Invariants, workers: Workers
) -> None:
    """SIGTERM while the worker still starts its own local Ray (seconds) and handles entries
    inline: it finishes its running batches, hands back what it read, exits 0 without Ray; a
    second worker takes the rest; every entry is handled once."""
    await inv.send(3000, sleep="0.003")
    w = workers.start(
        name="early", args=[*INLINE, "--num-cpus", "1"], env={"FAULT_BATCH_SIZE": "20"}, wait=False,
        local_ray=True,
    )  # fmt: skip
    await poll(lambda: len(inv.handled()) >= 100, 60, "100 entries handled inline", workers.logs)
    w.terminate()
    assert w.wait(60) == 0, w.output_tail()
    assert not re.search(r"worker early reading", w.output()), "Ray was up before the SIGTERM"
    inline = int(HANDED_OVER.search(w.output()).group(1))  # type: ignore[union-attr]
    assert inline >= 100
    workers.start(name="second", env={"FAULT_BATCH_SIZE": "20"})
    out, _ = await inv.check(120, logs=workers.logs)
    assert len(out.handled) == 3000 and not out.dead and not out.duplicates


async def test_a_ray_that_never_comes_ends_the_worker_with_what_it_read_settled(
    inv: Invariants, workers: Workers
) -> None:
    """Joining a Ray that does not answer (``--ray-start-timeout 3``): the inline worker handles
    entries meanwhile, then the worker exits 1 with one line, and nothing it read is left pending
    or handled twice (a second worker takes the rest)."""
    await inv.send(3000, sleep="0.003")
    w = workers.start(
        name="early", args=[*INLINE, "--ray-address", "127.0.0.1:1", "--ray-start-timeout", "3"],
        env={"FAULT_BATCH_SIZE": "20"}, wait=False, local_ray=True,
    )  # fmt: skip
    assert w.wait(60) == 1, w.output_tail()
    assert "cannot join Ray at 127.0.0.1:1: no answer within 3s" in w.output()
    assert int(HANDED_OVER.search(w.output()).group(1)) > 0  # type: ignore[union-attr]
    workers.start(name="second", env={"FAULT_BATCH_SIZE": "20"})
    out, _ = await inv.check(120, logs=workers.logs)
    assert len(out.handled) == 3000 and not out.dead and not out.duplicates
