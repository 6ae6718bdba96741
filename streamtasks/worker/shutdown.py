"""Shutdown: hand back what never started, finish what runs within the grace period, sign off.

Unstarted entries are made claimable at once (idle far past the visibility timeout), with
their delivery count lowered by one: an entry that never ran does not use up an attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

from redis import exceptions as rx
from redis.asyncio import Redis

from .. import keys
from ..logs import LOGGED_IDS
from ..redisutil import REDIS_DOWN
from .events import Event, HandedBack
from .lanes import Lane
from .pending import HANDBACK_IDLE_MS, PendingEntries
from .run import RawEntry

log = logging.getLogger("streamtasks.worker")


#: How long a hand-back waits for the lane's lease lock. A renewal holds it for a few round
#: trips; a settlement waiting out a Redis outage holds it as long as the outage lasts, and the
#: hand-back then goes ahead without it (it fails with Redis, or lands first).
RENEWAL_WAIT_S = 5.0


@contextlib.asynccontextmanager
async def renewals_held(lane: Lane) -> AsyncIterator[None]:
    """The lane's lease lock, so that a renewal already under way cannot land after a hand-back
    and hide the entries from other workers for a whole visibility timeout; waited for at most
    :data:`RENEWAL_WAIT_S`."""
    held = False
    try:
        held = await asyncio.wait_for(lane.lease_lock.acquire(), RENEWAL_WAIT_S)
    except asyncio.TimeoutError:
        log.warning("handing back entries of %s without waiting longer for its lease lock", lane.stream)
    try:
        yield
    finally:
        if held:
            lane.lease_lock.release()


def by_attempt(entries: Sequence[RawEntry]) -> dict[int, list[str]]:
    """Entry ids grouped by their delivery attempt (one RESET call per group)."""
    groups: dict[int, list[str]] = {}
    for entry_id, _, attempt in entries:
        groups.setdefault(attempt, []).append(entry_id)
    return groups


class Shutdown:
    def __init__(
        self, redis: Redis, pending: PendingEntries, grace_period: float, emit: Callable[[Event], None]
    ) -> None:
        self.redis = redis
        self.pending = pending
        self.grace_period = grace_period
        self.emit = emit

    async def hand_back_queued(self, lanes: Mapping[str, Lane]) -> None:
        for lane in lanes.values():
            if not lane.queue:  # nothing to hand back: no wait for the lock
                continue
            async with renewals_held(lane):
                for attempt, ids in by_attempt(lane.take_queued()).items():
                    with contextlib.suppress(*REDIS_DOWN):
                        # RETRYCOUNT attempt-1: an entry that never started does not use an attempt
                        await self.pending.reset(lane.stream, ids, HANDBACK_IDLE_MS, retrycount=attempt - 1)
                        log.info(
                            "handed back %d unstarted entries of %s",
                            len(ids),
                            lane.stream,
                            extra={"stream": lane.stream, "consumer": self.pending.consumer},
                        )
                        self.emit(HandedBack(lane.stream, len(ids), running=False))

    async def finish_in_flight(self, lanes: Mapping[str, Lane]) -> None:
        """Wait for running batches up to the grace period; hand back what is still running,
        and what a flow limit queued again meanwhile (the rest of a batch it let start in part)."""
        tasks = {task: lane for lane in lanes.values() for task in lane.in_flight}
        if not tasks:
            return
        try:
            await self._finish(tasks)
        finally:
            await self.hand_back_queued(lanes)

    async def _finish(self, tasks: Mapping[asyncio.Task[None], Lane]) -> None:
        log.info(
            "finishing %d in-flight batch(es) (grace %.0fs)",
            len(tasks),
            self.grace_period,
            extra={"consumer": self.pending.consumer},
        )
        _, late = await asyncio.wait(tasks, timeout=self.grace_period)
        for task in late:
            lane = tasks[task]
            batch = lane.in_flight.get(task)
            if batch is None:
                continue
            task.cancel()
            async with renewals_held(lane):  # released first: the lease loop renews until the drain ends
                lane.release(batch.ids)
                with contextlib.suppress(*REDIS_DOWN):
                    await self.pending.reset(lane.stream, batch.ids, HANDBACK_IDLE_MS)
            log.warning(
                "grace period over: handed back %d running entries of %s",
                len(batch.ids),
                lane.stream,
                extra={
                    "stream": lane.stream,
                    "handler": lane.spec.name,
                    "consumer": self.pending.consumer,
                    "entry_ids": list(batch.ids[:LOGGED_IDS]),
                },
            )
            self.emit(HandedBack(lane.stream, len(batch.ids), running=True))

    async def sign_off(self, lanes: Mapping[str, Lane]) -> bool:
        """Delete our heartbeat; forget this consumer where nothing is pending on it. True when
        it is forgotten on every lane (False: something is still pending on it, or Redis failed)."""
        group, consumer = self.pending.group, self.pending.consumer
        forgotten = 0
        with contextlib.suppress(*REDIS_DOWN, rx.ResponseError):
            await self.redis.delete(keys.heartbeat_key(group, consumer))
            for lane in lanes.values():
                info = await self.redis.xpending_range(lane.stream, group, "-", "+", 1, consumername=consumer)
                if not info:  # nothing pending on us (no scheduled retries): forget this consumer
                    await self.redis.xgroup_delconsumer(lane.stream, group, consumer)
                    forgotten += 1
        return forgotten == len(lanes)
