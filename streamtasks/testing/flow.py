"""Flow control in the in-memory app, on the worker's own plans and the fake clock.

* Priority levels: batches of a prioritized stream run in the order the worker starts them
  (:func:`~streamtasks.worker.priority.next_level`, with its guard), level 0 first.
* ``rate_limit``: GCRA (:func:`streamtasks.limits.gcra`, the arithmetic of the worker's Lua
  script) on the fake clock, one limit per handler; what it holds back stays pending with its
  delivery count unchanged and runs when :meth:`InMemoryApp.advance` (or ``drain``) moves the
  clock far enough.
* ``max_concurrency``: the app runs one batch at a time, so a per-entry async handler runs at
  most ``min(concurrency, max_concurrency)`` entries at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from attrs import evolve

from .. import keys
from ..fanout import declared_stream
from ..limits import US, Shape, gcra
from ..registry import HandlerSpec
from ..worker.flow import permits_wanted, plan_admission
from ..worker.priority import next_level, passed_over
from .broker import Delivery

if TYPE_CHECKING:
    from .app import InMemoryApp

Work = list[tuple[HandlerSpec, list[Delivery]]]


class MemoryFlow:
    """The app's priority order and rate limits (state: the guard's counts, each limit's TAT)."""

    def __init__(self) -> None:
        self.skipped: dict[tuple[str, str], list[int]] = {}
        self.tats: dict[str, tuple[int, int]] = {}
        self.shapes: dict[str, Shape] = {}  # declared stream -> its limit's shape
        #: Entries a rate limit held back, by stream: read (pending), not started.
        self.held: dict[str, list[Delivery]] = {}

    def take_held(self, stream: str) -> list[Delivery]:
        return self.held.pop(stream, [])

    def order(self, work: Work) -> Work:
        """``work`` with each prioritized stream's batches in the worker's start order."""
        out: Work = []
        groups: dict[tuple[str, str], list[deque[tuple[HandlerSpec, list[Delivery]]]]] = {}
        for spec, entries in work:
            if not spec.priorities:
                out.append((spec, entries))
                continue
            shard = spec.stream[len(keys.shard_base(spec.stream) or spec.stream) :]
            levels = groups.setdefault((spec.priority_of, shard), [deque() for _ in range(spec.priorities)])
            levels[spec.level].append((spec, entries))
        for key, levels in groups.items():
            skipped = self.skipped.get(key, [0] * len(levels))
            while True:
                ready = [bool(queue) for queue in levels]
                level = next_level(ready, [True] * len(levels), skipped)  # everything was read
                if level is None:
                    break
                skipped = passed_over(ready, skipped, level)
                out.append(levels[level].popleft())
            self.skipped[key] = skipped
        return out

    def admit(self, work: Work, now: float) -> Work:
        """What may run now under the rate limits; the rest is held (:attr:`held`). Once a
        handler is out of permits its later batches wait too, so order is kept."""
        now_us = round(now * US)
        out: Work = []
        blocked: set[str] = set()
        for spec, entries in work:
            limit = spec.rate_limit
            if spec.max_concurrency and not spec.batch and spec.is_async:
                spec = evolve(spec, concurrency=min(spec.concurrency, spec.max_concurrency))
            if limit is None:
                out.append((spec, entries))
                continue
            key = declared_stream(spec)
            shape = self.shapes[key] = limit.shape
            start = 0
            if key not in blocked:
                want = permits_wanted(spec, len(entries))
                grant = gcra(self.tats.get(key, (0, 0)), now_us, shape, want, want)
                self.tats[key] = grant.tats
                start = plan_admission(spec, len(entries), grant.granted, grant.wait_us).start
            if start:
                out.append((spec, entries[:start]))
            if start < len(entries):
                blocked.add(key)
                self.held.setdefault(spec.stream, []).extend(entries[start:])
        return out

    def next_due(self, streams: Sequence[HandlerSpec]) -> list[float]:
        """When the first held-back call of each limit would get a permit (fake clock)."""
        dues = []
        for spec in streams:
            if self.held.get(spec.stream):
                shape = self.shapes[declared_stream(spec)]
                tats = self.tats.get(declared_stream(spec), (0, 0))
                cells = zip(tats, shape.cells, strict=True)
                dues.append(max(t - (tol - 1) * interval for t, (interval, tol) in cells) / US)
        return dues


async def run_for(app: InMemoryApp, seconds: float, max_batches: int) -> int:
    """:meth:`InMemoryApp.run_for`: let ``seconds`` pass on the fake clock, running what is
    runnable at every due time on the way (retries, calls a rate limit held back), so handlers
    see the clock a worker would: at ``rate_limit="10/s"``, ``run_for(1)`` runs 10 calls 0.1 s
    apart, where ``advance(1)`` jumps: one burst at the new time, and what the jump left unused
    (up to the limit's bank) at the peak rate after it."""
    end = app.clock.now + seconds
    ran = await app.run_until_idle(max_batches=max_batches)
    while (due := app._next_due()) is not None and due <= end:
        app.clock.advance(max(0.0, due - app.clock.now))
        ran += await app.run_until_idle(max_batches=max_batches)
    app.clock.advance(max(0.0, end - app.clock.now))
    return ran + await app.run_until_idle(max_batches=max_batches)
