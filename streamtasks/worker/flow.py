"""Flow control in the dispatch stage: ``rate_limit`` and ``max_concurrency`` across workers.

Both count *handler calls*: an entry for a per-entry handler, a batch for a batch handler.
Before a batch of a limited handler starts, :meth:`Flow.admit` asks Redis -- one script call
per limit per batch, never per entry -- and applies the pure plan :func:`plan_admission`:
start ``k`` of the batch's ``n`` entries now, the rest wait ``t`` seconds.

* ``max_concurrency``: a semaphore in Redis (:data:`~streamtasks.lua.SEM_ACQUIRE`), slots held
  per batch: its calls at once (:func:`calls_wanted`: 1 for a batch handler or a sync one,
  up to ``concurrency`` for an async per-entry handler, which then runs as many entries at
  once as it got slots). A slot expires one visibility timeout after it was taken or last
  renewed (:meth:`Flows.renew`, beside the lease renewal): a crashed holder's slots come
  back. Released when the batch is settled. Taken before the rate-limit permits, so permits
  are used the moment they are granted.
* ``rate_limit``: GCRA (:data:`~streamtasks.lua.GCRA`, :mod:`streamtasks.limits`).

Entries that wait stay queued in their lane, held by this consumer: their leases are renewed
like any queued entry's, so they stay in its pending list, nobody reclaims them, and their
delivery counter does not move (waiting is not an attempt; nothing is ever dead-lettered for
it). While a handler waits, its lanes start nothing (:attr:`Flow.open`) and a timer wakes the
dispatcher when the wait is over; other handlers' lanes are not affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from attrs import evolve, frozen
from redis.asyncio import Redis

from .. import keys, lua
from ..fanout import declared_stream
from ..limits import US
from ..redisutil import REDIS_DOWN
from ..registry import HandlerSpec
from .events import Event, Throttled
from .health import RedisHealth
from .lanes import Batch, Lane
from .run import RawEntry

#: While no concurrency slot is free, ask again after this long (slots freed by other workers
#: are not announced), or when the first slot held expires if that is sooner.
CONCURRENCY_POLL_S = 0.05
#: A rate-limited per-entry handler reads batches of at most this many seconds of its rate (at
#: least one entry), so a consumer holds little more than it may start soon.
RATE_BATCH_SECONDS = 1.0


def calls_wanted(spec: HandlerSpec, size: int) -> int:
    """Handler calls a batch of ``size`` entries runs at once: one for a batch handler and for
    a sync per-entry handler (its entries run one after another), up to ``concurrency`` for an
    async per-entry handler."""
    if spec.batch or not spec.is_async:
        return 1
    return max(1, min(spec.concurrency, size))


def permits_wanted(spec: HandlerSpec, size: int) -> int:
    """Rate-limit permits a batch of ``size`` entries uses: one per call."""
    return 1 if spec.batch else size


def refill_chunk(burst: int) -> int:
    """Permits a held-back handler waits for: half its burst (at least one), so a wake-up a
    little late still finds the bucket short of full and no permit goes unused."""
    return max(1, burst // 2)


@frozen
class Admission:
    """The plan for one batch: start its first ``start`` entries now; the rest wait ``wait``
    seconds before the handler asks again."""

    start: int
    wait: float


def plan_admission(spec: HandlerSpec, size: int, granted: int, wait_us: int) -> Admission:
    """Given ``granted`` rate-limit permits (and the wait for more), what a batch of ``size``
    does: a batch handler starts whole on one permit; a per-entry handler starts one entry
    per permit."""
    wait = wait_us / US
    if granted <= 0:
        return Admission(0, wait)
    if spec.batch or granted >= size:
        return Admission(size, 0.0)
    return Admission(granted, wait)


@frozen
class Hold:
    """Concurrency slots a running batch holds: members of the semaphore's sorted set."""

    members: tuple[str, ...]


class Flow:
    """One limited handler in this worker (all its lanes: levels and shards)."""

    def __init__(self, spec: HandlerSpec, flows: Flows) -> None:
        self.rate = spec.rate_limit
        self.max_concurrency = spec.max_concurrency
        stream = declared_stream(spec)
        self.rate_key = keys.rate_key(flows.group, stream)
        self.concurrency_key = keys.concurrency_key(flows.group, stream)
        self.flows = flows
        self.paused_until = 0.0  # monotonic: its lanes start nothing before
        self.admitting = False  # an admission is under way: one at a time
        self.holds: set[Hold] = set()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def open(self) -> bool:
        """May one of its lanes start a batch now?"""
        return not self.admitting and time.monotonic() >= self.paused_until

    def batch_cap(self, spec: HandlerSpec) -> int:
        """Most entries a read batch of ``spec`` should hold (:data:`RATE_BATCH_SECONDS`)."""
        if self.rate is None or spec.batch:
            return spec.batch_size
        return max(1, min(spec.batch_size, math.ceil(self.rate.per_second * RATE_BATCH_SECONDS)))

    async def admit(self, lane: Lane, batch: Batch) -> tuple[HandlerSpec, Hold | None] | None:
        """Admit (part of) ``batch`` of ``lane``, whose launch set :attr:`admitting`: the spec
        to run it with and the slots it holds, with ``batch.entries`` cut to what starts now
        and the rest queued again at the front of the lane; or None when nothing may start
        (the whole batch is queued again)."""
        try:
            return await self._admit(lane, batch)
        finally:
            self.admitting = False
            self._schedule_wake()

    async def _admit(self, lane: Lane, batch: Batch) -> tuple[HandlerSpec, Hold | None] | None:
        spec, entries = lane.spec, batch.entries
        hold = None
        if self.max_concurrency:
            hold, wait = await self._take_slots(calls_wanted(spec, len(entries)))
            if hold is None:
                self._hold_back(lane, entries, "concurrency", wait)
                return None
            if len(hold.members) < calls_wanted(spec, len(entries)):
                spec = evolve(spec, concurrency=len(hold.members))
        if self.rate is not None:
            want = permits_wanted(spec, len(entries))
            shape = self.rate.shape
            chunk = min(want, refill_chunk(shape.burst))
            args = [shape.interval_us, shape.bank, shape.peak_interval_us, shape.burst, want, chunk, ""]
            reply = await self.flows.call(self.flows.gcra, [self.rate_key], args)
            plan = plan_admission(spec, len(entries), int(reply[0]), int(reply[1]))
            if plan.start < len(entries):
                self._hold_back(lane, entries[plan.start :], "rate", plan.wait)
            if plan.start == 0:
                await self.release(hold)
                return None
            batch.entries = entries = entries[: plan.start]
            hold = await self._trim(hold, calls_wanted(spec, len(entries)))
        return spec, hold

    def _hold_back(self, lane: Lane, entries: Sequence[RawEntry], limit: str, wait: float) -> None:
        """Queue ``entries`` again at the front of ``lane`` (still held, leases renewed) and
        pause this handler for ``wait`` seconds."""
        lane.queue.appendleft(Batch(list(entries)))
        self.paused_until = max(self.paused_until, time.monotonic() + wait)
        self.flows.emit(Throttled(lane.stream, lane.spec.name, limit, len(entries), wait))

    async def _take_slots(self, want: int) -> tuple[Hold | None, float]:
        """Up to ``want`` concurrency slots; none: how long to wait before asking again."""
        holder = self.flows.new_holder()
        args = [self.max_concurrency, want, holder, self.flows.ttl_ms, ""]
        granted, _, until_first = await self.flows.call(self.flows.acquire, [self.concurrency_key], args)
        if int(granted) <= 0:  # ask again soon, or when the first slot held expires if sooner
            expires = int(until_first) / 1000 if int(until_first) > 0 else CONCURRENCY_POLL_S
            return None, min(CONCURRENCY_POLL_S, expires)
        hold = Hold(tuple(f"{holder}:{i}" for i in range(1, int(granted) + 1)))
        self.holds.add(hold)
        return hold, 0.0

    async def _trim(self, hold: Hold | None, needed: int) -> Hold | None:
        """Give back the slots of ``hold`` past ``needed`` (the rate limit let fewer entries start)."""
        if hold is None or len(hold.members) <= needed:
            return hold
        kept = Hold(hold.members[:needed])
        await self.release(Hold(hold.members[needed:]))
        self.holds.discard(hold)
        self.holds.add(kept)
        return kept

    async def release(self, hold: Hold | None) -> None:
        """Give the slots back (settled); a Redis outage leaves them to expire instead."""
        if hold is None:
            return
        self.holds.discard(hold)
        with contextlib.suppress(*REDIS_DOWN):
            await self.flows.redis.zrem(self.concurrency_key, *hold.members)

    async def renew(self) -> None:
        """Push back the expiry of every slot held by a batch still running."""
        members = [m for hold in self.holds for m in hold.members]
        if members:
            await self.flows.renew_script(keys=[self.concurrency_key], args=[self.flows.ttl_ms, "", *members])

    def _schedule_wake(self) -> None:
        """Wake the dispatcher when this handler may start again (at once if it may now)."""
        loop = asyncio.get_running_loop()
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, self.paused_until - time.monotonic())
        self._timer = loop.call_later(delay, self.flows.wake)


class Flows:
    """The limited handlers of one worker (a :class:`Flow` each), and their scripts."""

    def __init__(
        self,
        redis: Redis,
        group: str,
        consumer: str,
        ttl_ms: int,
        wake: Callable[[], None],
        emit: Callable[[Event], None],
        health: RedisHealth,
    ) -> None:
        self.redis, self.group, self.ttl_ms = redis, group, ttl_ms
        self.wake, self.emit, self.health = wake, emit, health
        self.gcra = redis.register_script(lua.GCRA)
        self.acquire = redis.register_script(lua.SEM_ACQUIRE)
        self.renew_script = redis.register_script(lua.SEM_RENEW)
        self._holders = (f"{consumer}:{n}" for n in itertools.count(1))
        self.flows: dict[str, Flow] = {}

    def bind(self, lanes: Mapping[str, Lane]) -> None:
        """Give every lane of a limited handler its handler's :class:`Flow`."""
        for lane in lanes.values():
            spec = lane.spec
            if spec.rate_limit is None and spec.max_concurrency is None:
                continue
            stream = declared_stream(spec)
            if stream not in self.flows:
                self.flows[stream] = Flow(spec, self)
            lane.flow = self.flows[stream]

    def new_holder(self) -> str:
        return next(self._holders)

    async def call(self, script: Any, keys: list[str], args: list[Any]) -> list[Any]:
        """Run a flow script, waiting out Redis outages (the batch waits, held, meanwhile)."""
        while True:
            try:
                reply: list[Any] = await script(keys=keys, args=args)
                self.health.ok()
                return reply
            except REDIS_DOWN as exc:
                await self.health.failed(exc, "asking a flow limit")

    async def renew(self) -> None:
        """The lease loop's part: renew the concurrency slots of running batches."""
        for flow in self.flows.values():
            with contextlib.suppress(*REDIS_DOWN):
                await flow.renew()
