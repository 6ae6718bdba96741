"""Shutdown's hand-back against the lease loop, on a real Redis: entries handed back are
claimable by another worker at once, whether a lease renewal was already under way (it must
not land after the hand-back) or comes after it (it must not renew them again), and a lock held
through a Redis outage delays the hand-back only so long."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest
from redis.asyncio import Redis

from streamtasks import Message, Registry
from streamtasks.worker import shutdown
from streamtasks.worker.health import RedisHealth
from streamtasks.worker.lanes import Lane
from streamtasks.worker.pending import KEEP_COUNT, PendingEntries
from streamtasks.worker.recovery import Leases
from streamtasks.worker.run import RawEntry
from streamtasks.worker.shutdown import Shutdown

pytestmark = pytest.mark.integration

STREAM, GROUP, VISIBILITY_S = "handback", "g", 3.0


class PausedRenewal(PendingEntries):
    """Real resets, but a lease renewal (idle 0) waits at ``gate`` once it has its ids."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis, GROUP, "c")
        self.renewing = asyncio.Event()
        self.gate = asyncio.Event()

    async def reset(
        self, stream: str, ids: Sequence[str], idle_ms: int, retrycount: int = KEEP_COUNT, client: Any = None
    ) -> int:
        if idle_ms == 0:
            self.renewing.set()
            await self.gate.wait()
        return await super().reset(stream, ids, idle_ms, retrycount, client)


def _lane() -> Lane:
    registry = Registry(group=GROUP)

    def handle(msg: Message) -> None: ...

    registry.stream_handler(STREAM)(handle)
    return Lane(registry.handlers[STREAM], prefetch=1)


async def _delivered(redis: Redis, n: int) -> list[RawEntry]:
    """``n`` entries read by consumer ``c``, their leases due for renewal."""
    for i in range(n):
        await redis.xadd(STREAM, {"n": str(i)})
    await redis.xgroup_create(STREAM, GROUP, id="0")
    reply = await redis.xreadgroup(GROUP, "c", {STREAM: ">"}, count=n)
    return [(raw_id.decode(), [], 1) for raw_id, _ in reply[0][1]]


async def _claimable(redis: Redis) -> list[str]:
    """What another worker's reclaim (idle past the visibility timeout) would take now."""
    _, claimed, _ = await redis.xautoclaim(STREAM, GROUP, "other", int(VISIBILITY_S * 1000), count=100)
    return [raw_id.decode() for raw_id, _ in claimed]


def _stale(lane: Lane) -> None:
    for entry_id in lane.held:
        lane.held[entry_id] = 0.0  # last renewed long ago: the next renewal takes them


async def test_a_renewal_under_way_does_not_land_after_the_hand_back_of_queued_entries(redis: Redis) -> None:
    entries = await _delivered(redis, 10)
    lane, pending = _lane(), PausedRenewal(redis)
    lane.accept(entries)
    _stale(lane)
    leases = Leases(pending, VISIBILITY_S, RedisHealth())
    shutdown = Shutdown(redis, pending, grace_period=1, emit=lambda _: None)
    renewing = asyncio.create_task(leases.renew({STREAM: lane}))
    await pending.renewing.wait()  # the renewal has its ids and is about to reset them
    handing = asyncio.create_task(shutdown.hand_back_queued({STREAM: lane}))
    await asyncio.wait({handing}, timeout=0.5)  # without the lease lock it is done by now
    pending.gate.set()
    await asyncio.gather(renewing, handing)
    assert await _claimable(redis) == [e[0] for e in entries]


async def test_entries_handed_back_when_the_grace_period_ends_are_not_renewed_after(redis: Redis) -> None:
    entries = await _delivered(redis, 10)
    lane, pending = _lane(), PendingEntries(redis, GROUP, "c")
    lane.accept(entries)
    running = asyncio.create_task(asyncio.Event().wait())  # a batch that outlasts the grace period
    lane.in_flight[running] = lane.queue.popleft()
    shutdown = Shutdown(redis, pending, grace_period=0.1, emit=lambda _: None)
    await shutdown.finish_in_flight({STREAM: lane})
    _stale(lane)
    await Leases(pending, VISIBILITY_S, RedisHealth()).renew({STREAM: lane})  # the drain's last
    assert await _claimable(redis) == [e[0] for e in entries]
    await asyncio.wait({running})
    assert running.cancelled()


async def test_a_lease_lock_held_through_an_outage_delays_the_hand_back_only_so_long(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A settlement waiting out a Redis outage holds the lease lock as long as the outage
    lasts: the hand-back waits at most ``RENEWAL_WAIT_S``, then goes ahead without it."""
    monkeypatch.setattr(shutdown, "RENEWAL_WAIT_S", 0.3)
    entries = await _delivered(redis, 10)
    lane = _lane()
    lane.accept(entries)
    await lane.lease_lock.acquire()  # the settlement that does not end
    started = time.monotonic()
    await Shutdown(redis, PendingEntries(redis, GROUP, "c"), 1, lambda _: None).hand_back_queued(
        {STREAM: lane}
    )
    assert 0.3 <= time.monotonic() - started < 2.0
    assert await _claimable(redis) == [e[0] for e in entries]
    assert lane.lease_lock.locked()  # still the settlement's
