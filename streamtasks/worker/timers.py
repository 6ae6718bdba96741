"""The worker's time-driven loops: the delayed-entry mover and the periodic ticker.

Both keep nothing due in memory: what is scheduled, and the last tick claimed, live in Redis
(:mod:`streamtasks.delayed`, :func:`~streamtasks.keys.tick_key`), and each step is one atomic
script, so any number of workers (and actors) may run them side by side and a kill -9 at any
point loses nothing. One mover and one ticker per worker process is enough: actor mode runs
them in the worker process (:class:`~streamtasks.ray.ActorPool`), not in each actor, and task
mode in the first of its workers (``WorkerSettings.timers``).

**The mover** (:class:`DelayedMover`) calls :data:`~streamtasks.lua.MOVE_DUE` for each stream it
serves: due entries (by Redis' clock) are added to the stream, :data:`~streamtasks.delayed.MOVE_COUNT`
per call, again at once while calls come back full. Then it sleeps until the soonest next due
time the script reported, at most ``WorkerSettings.delayed_poll`` (0.25 s): an entry added
meanwhile with an earlier due time waits at most that long. So an entry enters its stream
within ``delayed_poll`` plus one round trip of its due time while a worker runs, and is read at
once by a worker blocked in ``XREADGROUP``: the lateness the handler sees adds the read and
the batch ahead of it.

**The ticker** (:class:`Ticker`) wakes at the next tick of any periodic handler (by Redis'
``TIME``, so every worker agrees; at most :data:`TICK_POLL_S` apart), reads each handler's last
tick, plans with :func:`streamtasks.schedule.plan_ticks` (catch-up included) and claims the
ticks with :data:`~streamtasks.lua.CLAIM_TICKS`: a tick later than the recorded last one
becomes one entry (``_st_mid`` derived from the stream and the tick, ``_st_tick``), once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence

from redis.asyncio import Redis

from .. import keys, lua
from ..aio import wait_set
from ..delayed import MOVE_COUNT, move_due
from ..redisutil import REDIS_DOWN, text
from ..registry import HandlerSpec
from ..schedule import plan_ticks, tick_message_id
from .events import Event, Lost, Moved, Ticked
from .health import RedisHealth
from .settings import WorkerSettings
from .supervise import Supervisor

log = logging.getLogger("streamtasks.worker")

#: The longest the ticker sleeps (it wakes at the next tick; this bounds a clock change).
TICK_POLL_S = 1.0


class DelayedMover:
    """Moves due delayed entries into the streams of ``specs``; see the module docstring."""

    def __init__(
        self,
        redis: Redis,
        specs: Sequence[HandlerSpec],
        group: str,
        health: RedisHealth,
        emit: Callable[[Event], None],
        poll: float,
    ) -> None:
        self.redis, self.specs, self.group = redis, list(specs), group
        self.health, self.emit, self.poll = health, emit, poll

    async def run(self, stopping: asyncio.Event, healthy: Callable[[], None]) -> None:
        while not stopping.is_set():
            try:
                wait = await self.move_all()
                self.health.ok()
            except REDIS_DOWN as exc:
                await self.health.failed(exc, "moving delayed entries")
                continue
            healthy()
            await wait_set(stopping, wait)

    async def move_all(self) -> float:
        """Move every due entry now; returns the seconds until the next may be due (capped)."""
        waits = await asyncio.gather(*(self._move(spec) for spec in self.specs))
        return min([self.poll, *waits])

    async def _move(self, spec: HandlerSpec) -> float:
        while True:
            result = await move_due(self.redis, spec.stream, spec.dead_letter_stream, self.group, spec.name)
            if result.moved or result.bad:
                self.emit(Moved(spec.stream, spec.name, result.moved, result.bad))
            if result.bad:
                dead = spec.dead_letter_stream
                log.error(
                    "%d delayed entries of %s unreadable: dead-lettered to %s", result.bad, spec.stream, dead
                )
            if result.missing:
                self.emit(Lost(spec.stream, spec.name, result.missing, "delayed entry without fields"))
            if result.moved + result.bad + result.missing < MOVE_COUNT:
                break
        if result.next_due_ms is None:
            return self.poll
        return max(0.0, (result.next_due_ms - result.now_ms) / 1000)


class Ticker:
    """Claims the ticks of the periodic handlers among ``specs``; see the module docstring."""

    def __init__(
        self, redis: Redis, specs: Sequence[HandlerSpec], health: RedisHealth, emit: Callable[[Event], None]
    ) -> None:
        self.redis, self.health, self.emit = redis, health, emit
        self.specs = [spec for spec in specs if spec.periodic is not None]
        self._claim = redis.register_script(lua.CLAIM_TICKS)

    async def run(self, stopping: asyncio.Event, healthy: Callable[[], None]) -> None:
        while not stopping.is_set():
            try:
                wait = await self.tick_all()
                self.health.ok()
            except REDIS_DOWN as exc:
                await self.health.failed(exc, "claiming periodic ticks")
                continue
            healthy()
            await wait_set(stopping, wait)

    async def tick_all(self) -> float:
        """Claim every due tick now; returns the seconds until the next one (capped)."""
        now_ms = await self._redis_ms()
        waits = await asyncio.gather(*(self._tick(spec, now_ms) for spec in self.specs))
        return min([TICK_POLL_S, *waits])

    async def _tick(self, spec: HandlerSpec, now_ms: int) -> float:
        assert spec.periodic is not None
        key = keys.tick_key(spec.stream)
        last = _last_tick(key, await self.redis.hget(key, "last"))
        plan = plan_ticks(spec.periodic, last, now_ms)
        if plan.ticks or last is None or plan.upto > last:
            mids = [v for t in plan.ticks for v in (str(t), tick_message_id(spec.stream, t))]
            args = [
                str(plan.upto),
                "" if plan.next is None else str(plan.next),
                spec.periodic.describe(),
                *mids,
            ]
            added, moved = map(int, await self._claim(keys=[key, spec.stream], args=args))
            skipped = plan.skipped if moved else 0  # another ticker's claim: its skips, not ours
            if added or skipped:
                self.emit(Ticked(spec.stream, spec.name, added, skipped))
            if skipped:
                policy = spec.periodic.catch_up
                log.warning(
                    "periodic %s: %d missed ticks skipped (catch_up=%r)", spec.stream, skipped, policy
                )
        return TICK_POLL_S if plan.next is None else max(0.0, (plan.next - now_ms) / 1000)

    async def _redis_ms(self) -> int:
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000


def _last_tick(key: str, raw: object) -> int | None:
    """The ``last`` tick of a tick hash (None: none yet). A value that is not a number of
    milliseconds (not ours) counts as none, loudly: the schedule starts again from now."""
    if raw is None:
        return None
    value = text(raw)
    if value.lstrip("-").isdigit() and value.isascii() and len(value) <= 16:
        return int(value)
    log.error("%s: 'last' is %r, not milliseconds: the schedule starts again from now", key, value[:40])
    return None


class Timers:
    """The mover and (when there are periodic handlers) the ticker of one worker process."""

    def __init__(
        self,
        redis: Redis,
        specs: Iterable[HandlerSpec],
        group: str,
        health: RedisHealth,
        emit: Callable[[Event], None],
        settings: WorkerSettings,
    ) -> None:
        specs = list(specs)
        self.enabled = settings.timers
        self.mover = DelayedMover(redis, specs, group, health, emit, settings.delayed_poll)
        self.ticker = Ticker(redis, specs, health, emit)

    def spawn(self, supervisor: Supervisor, stopping: asyncio.Event) -> None:
        """Run the loops under ``supervisor`` until ``stopping`` is set (if enabled here)."""
        if not self.enabled:
            return
        supervisor.spawn("delayed", lambda: self.mover.run(stopping, _healthy(supervisor, "delayed")))
        if self.ticker.specs:
            supervisor.spawn("periodic", lambda: self.ticker.run(stopping, _healthy(supervisor, "periodic")))


def _healthy(supervisor: Supervisor, name: str) -> Callable[[], None]:
    return lambda: supervisor.healthy(name)
