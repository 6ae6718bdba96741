"""The in-memory app: a registry's handlers run on the worker's own decision code, no services.

What is shared with the real worker, not re-implemented: decoding, the handler call and the
retry decision (:func:`~streamtasks.worker.run.run_batch`, :meth:`RetryPolicy.decide`), a
batch that fails or times out as a whole (:meth:`RetryPolicy.decide_all`,
:func:`~streamtasks.worker.dispatch.batch_deadline`), the delivery limit
(:meth:`RetryPolicy.over_delivery_limit`), the settlement plan
(:meth:`~streamtasks.worker.settle.Settlement.of`: done, retry after a delay capped by the
visibility timeout, dead) and the dead-letter format (:func:`dead_letter_fields`,
:class:`DeadLetter`), the delay arithmetic (:func:`~streamtasks.delayed.due_ms`) and the tick
planning of periodic handlers (:func:`~streamtasks.schedule.plan_ticks`). What is in memory:
the streams and the group's pending entries (:mod:`.broker`), what is scheduled
(:mod:`.timers`), and the clock.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
from collections.abc import Iterator, Sequence
from typing import Any

from ..producer import Sender, sender_override
from ..registry import HandlerSpec, Registry
from ..resources import _resources, process_loop
from ..retry import Dead
from ..worker.dispatch import batch_deadline
from ..worker.run import BatchResult, RawEntry, run_batch
from ..worker.settle import Settlement, dead_letter_of
from .answers import Answers
from .broker import Delivery, FakeClock, MemoryStream
from .flow import MemoryFlow, run_for
from .outcomes import Outcomes
from .sending import Sending
from .timers import MemoryTimers

#: Batches one ``run_until_idle`` may run before it decides the handlers never go idle.
MAX_BATCHES = 10_000
DEFAULT_VISIBILITY_TIMEOUT = 30.0


class InMemoryApp(Sending, Answers, Outcomes):
    """Serves ``registry`` from in-memory streams; ``await app.send(...)`` then
    ``await app.run_until_idle()``, and look at :meth:`handled`, :meth:`dead_letters`,
    :meth:`acked` (both), :meth:`pending`. While it is active (:meth:`activate`, ``async with``, or the pytest
    fixture), ``await handler.send(...)`` adds to this app instead of Redis."""

    def __init__(
        self,
        registry: Registry,
        *,
        clock: FakeClock | None = None,
        visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT,
    ) -> None:
        self.registry = registry
        """The registry served."""
        self.group = registry.group
        """Its consumer group."""
        self.clock = clock or FakeClock()
        """The fake clock retries wait on (:meth:`advance` moves it)."""
        self.visibility_ms = int(visibility_timeout * 1000)
        """The visibility timeout, in ms: the longest retry delay, as on Redis."""
        self.streams: dict[str, MemoryStream] = {}
        """The in-memory streams, by name."""
        #: Delayed entries and periodic ticks, released as the clock moves (:meth:`advance`).
        self.timers = MemoryTimers(registry.handlers.values(), self.clock.ms)
        #: Stored outcomes of ``results=True`` handlers: stream -> message -> ``v...``/``d...``.
        self.stored: dict[str, dict[str, bytes]] = {}
        self.hook_calls: list[str] = []  # every middleware hook called: "Class.hook", in order
        self._token: contextvars.Token[Sender | None] | None = None
        self._turns: dict[str, Iterator[int]] = {}
        self.flow = MemoryFlow()  # priority order and rate limits (.flow)

    def activate(self) -> InMemoryApp:
        """Make ``handler.send(...)`` (the default producer) add to this app, in this context."""
        self._token = sender_override.set(self)
        return self

    def deactivate(self) -> None:
        """Undo :meth:`activate`: ``handler.send(...)`` goes to Redis again."""
        if self._token is not None:
            try:
                sender_override.reset(self._token)
            except ValueError:  # reset from another context (a fixture's teardown)
                if sender_override.get() is self:
                    sender_override.set(None)
            self._token = None

    async def __aenter__(self) -> InMemoryApp:
        return self.activate()

    async def __aexit__(self, *exc: object) -> None:
        self.deactivate()
        await self.close()

    async def close(self) -> None:
        """Close the per-process resources the handlers created (``registry.resource``)."""
        if _resources.closers:
            await asyncio.to_thread(process_loop().run, _resources.close())

    # -- the clock and the loop ----------------------------------------------------------------

    def advance(self, seconds: float, *, outage: bool = False) -> None:
        """Move the fake clock: retries whose delay is over become runnable, delayed entries
        that came due are added to their streams, and periodic handlers get their ticks (each
        on time, as with workers running; ``outage=True``: no worker ran meanwhile, so their
        ``catch_up`` policy decides which missed ticks run)."""
        self.clock.advance(seconds)
        now_ms = math.ceil(self.clock.now * 1000 - 1e-3)  # due times are whole ms, rounded up
        for _, stream, fields in self.timers.release(now_ms, outage):
            self._xadd(stream, fields)

    async def run_until_idle(self, *, max_batches: int = MAX_BATCHES) -> int:
        """Run batches until no entry is runnable now (retries not yet due wait for
        :meth:`advance`); returns how many batches ran."""
        ran = 0
        while work := self._take_work():
            for spec, entries in work:
                if ran >= max_batches:
                    raise RuntimeError(f"still busy after {max_batches} batches (a handler feeding itself?)")
                with self._recording():
                    await self._run(spec, entries)
                ran += 1
        return ran

    async def drain(self, *, max_batches: int = MAX_BATCHES) -> int:
        """:meth:`run_until_idle`, moving the clock to each pending retry and delayed entry
        until none is left (periodic ticks in between come too)."""
        ran = await self.run_until_idle(max_batches=max_batches)
        while (due := self._next_due()) is not None:
            self.advance(max(0.0, due - self.clock.now))
            ran += await self.run_until_idle(max_batches=max_batches)
        return ran

    async def run_for(self, seconds: float, *, max_batches: int = MAX_BATCHES) -> int:
        """Let ``seconds`` pass, running what is runnable at every due time on the way
        (:func:`.flow.run_for`: a rate-limited handler's calls run at their permitted times)."""
        return await run_for(self, seconds, max_batches)

    # -- internals -------------------------------------------------------------------------------

    def _next_due(self) -> float | None:
        dues = [d for s in self.streams.values() if (d := s.next_due()) is not None]
        if (scheduled := self.timers.next_due()) is not None:
            dues.append(scheduled / 1000)
        dues += self.flow.next_due(list(self.registry.handlers.values()))
        return min(dues) if dues else None

    def _take_work(self) -> list[tuple[HandlerSpec, list[Delivery]]]:
        """Reclaim due retries and read new entries, in batches of each handler's size, in the
        order of their priority levels and as far as their rate limits let them start now."""
        work: list[tuple[HandlerSpec, list[Delivery]]] = []
        for name, spec in self.registry.handlers.items():
            stream = self._stream(name)
            entries = self.flow.take_held(name)
            entries += stream.claim_due(self.clock.now, math.inf) + stream.read(len(stream.unread))
            work += [
                (spec, entries[i : i + spec.batch_size]) for i in range(0, len(entries), spec.batch_size)
            ]
        return self.flow.admit(self.flow.order(work), self.clock.now)

    async def _run(self, spec: HandlerSpec, entries: Sequence[Delivery]) -> None:
        exhausted = [i for i, e in enumerate(entries) if spec.retry.over_delivery_limit(e[2])]
        if exhausted:  # the recovery step's check, before running anything
            dead = Dead(spec.retry.delivery_limit_error())
            self._settle(
                spec,
                [entries[i] for i in exhausted],
                BatchResult(len(exhausted), dict.fromkeys(range(len(exhausted)), dead)),
            )
            entries = [e for i, e in enumerate(entries) if i not in set(exhausted)]
        if entries:
            self._settle(spec, entries, await execute(spec, entries))

    def _settle(self, spec: HandlerSpec, entries: Sequence[RawEntry], result: BatchResult) -> None:
        """Apply the worker's settlement plan to the in-memory group, as the Lua scripts do."""
        plan = Settlement.of(entries, result, self.visibility_ms)
        stream, now_ms = self._stream(spec.stream), self.clock.ms
        for entry_id in plan.done:
            stream.ack(entry_id, handled=True)
            stream.first_failure_ms.pop(entry_id, None)
        dead_ids: dict[str, str] = {}
        for idle, ids in plan.delays.items():
            for entry_id in ids:
                stream.first_failure_ms.setdefault(entry_id, now_ms)
                stream.pending[entry_id].due = self.clock.now + (self.visibility_ms - idle) / 1000
        for entry, error in plan.dead:
            entry_id, raw, attempt = entry
            fields = dead_letter_of(spec, self.group, entry, error, now_ms)
            first = stream.first_failure_ms.pop(entry_id, now_ms)
            dead_id = self._xadd(spec.dead_letter_stream, _pairs(["first_failure_ms", str(first), *fields]))
            stream.ack(entry_id, handled=False)
            dead_ids[entry_id] = dead_id
            if spec.results:
                self._store_dead(spec, (entry_id, raw, attempt), dead_id, error)
        self._settled(spec, entries, result, dead_ids)


async def execute(spec: HandlerSpec, entries: Sequence[RawEntry]) -> BatchResult:
    """The batch on a thread (async handlers on the process loop, as in a Ray worker),
    bounded by the worker's deadline; a batch that fails as a whole gets the policy's outcome."""
    try:
        return await asyncio.wait_for(
            asyncio.to_thread(run_batch, spec, list(entries)), batch_deadline(spec, len(entries))
        )
    except asyncio.TimeoutError:
        error: BaseException = TimeoutError(f"batch of {len(entries)} exceeded its deadline")
    except Exception as exc:
        error = exc
    return BatchResult(len(entries), spec.retry.decide_all(error, [e[2] for e in entries]))


def _pairs(flat: list[Any]) -> dict[str, str | bytes]:
    return dict(zip(flat[0::2], flat[1::2], strict=True))
