"""What a worker counted: one :class:`Tally` per worker, the one place every count lives.

Per stream a :class:`LaneTally` holds what ``/metrics``, ``status``, the snapshot and the
actors' roll-up all read: entries handled, retried, dead-lettered, reclaimed and found lost,
batches, handler time per batch, entries per batch and the end-to-end latency of each done
entry; beside them, the entries ack-aware trimming removed (per stream and what held the rest)
and the latest Redis outage events. A :class:`Tally` is a listener of its worker's events, and
plain data that can be pickled, subtracted and added: in actor mode each actor's worker keeps
its own, the worker process polls them and adds what each grew by (:func:`growth`) into its
own tally, so both modes expose the same series, histograms included, and a restarted actor's
counts, new from 0, never make a counter go down.
"""

from __future__ import annotations

import operator
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from attrs import define, field, frozen

from ..redisutil import id_seconds
from .events import (
    BatchSettled,
    Event,
    Lost,
    Moved,
    Reclaimed,
    RedisDown,
    RedisUp,
    Throttled,
    Ticked,
    Trimmed,
)

#: End-to-end latency buckets (seconds): from a few ms (idle system) to 10 min (a backlog).
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip
#: Handler time per batch (seconds).
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: A tally keeps this many of its worker's latest Redis outage events (read once a second).
OUTAGE_EVENTS_KEPT = 32
#: Entries per batch.
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)

_split_id = operator.methodcaller("partition", "-")  # "<ms>-<seq>" -> ("<ms>", "-", "<seq>")
_first = operator.itemgetter(0)


@define
class Buckets:
    """A histogram's state: how many observations fell in each bucket (``counts[i]``: at most
    ``bounds[i]`` and above the bound before; the last one is ``+Inf``), and their sum."""

    bounds: tuple[float, ...]
    counts: list[int]
    total: float = 0.0

    @classmethod
    def empty(cls, bounds: tuple[float, ...]) -> Buckets:
        return cls(bounds, [0] * (len(bounds) + 1))

    def observe(self, value: float, times: int = 1) -> None:
        self.counts[bisect_left(self.bounds, value)] += times
        self.total += value * times

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus' ``le`` buckets: ``[("0.005", n), ..., ("+Inf", count)]``."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else str(float(bound)), float(running)))
        return out

    def plus(self, other: Buckets) -> Buckets:
        return self.combine(other, operator.add)

    def minus(self, before: Buckets) -> Buckets:
        return self.combine(before, operator.sub)

    def combine(self, other: Buckets, op: Callable[[Any, Any], Any]) -> Buckets:
        """Bucket by bucket, and the sums, combined with ``op``."""
        counts = [op(a, b) for a, b in zip(self.counts, other.counts, strict=True)]
        return Buckets(self.bounds, counts, op(self.total, other.total))


@define
class LaneTally:
    """One handler's settled batches, counted since its worker started."""

    stream: str
    handler: str
    handled: int = 0
    retried: int = 0
    dead: int = 0
    batches: int = 0
    #: Entries Redis no longer had when the worker came to them (trimmed or deleted unhandled).
    lost: int = 0
    #: Entries idle past the visibility timeout (a dead consumer's) claimed to run again.
    reclaimed: int = 0
    #: Delayed entries moved into the stream; entries a periodic handler got, and ticks its
    #: catch-up policy skipped.
    moved: int = 0
    ticks: int = 0
    ticks_skipped: int = 0
    #: Times a flow limit held entries of a batch back (``rate_limit``, ``max_concurrency``).
    rate_waits: int = 0
    concurrency_waits: int = 0
    duration: Buckets = field(factory=lambda: Buckets.empty(DURATION_BUCKETS))
    size: Buckets = field(factory=lambda: Buckets.empty(BATCH_SIZE_BUCKETS))
    latency: Buckets = field(factory=lambda: Buckets.empty(LATENCY_BUCKETS))

    def record(self, size: int, duration: float, retried: int, dead: int, done: Iterable[str]) -> None:
        """One settled batch of ``size`` entries, whose handler ran ``duration`` seconds (0: it
        never ran: a timeout, a lost Ray worker, retries exhausted), with the ids of the entries
        acked as done; their latency is measured from their XADD to now (their XACK was sent)."""
        now = time.time()
        self.batches += 1
        self.retried += retried
        self.dead += dead
        self.size.observe(size)
        if duration > 0:
            self.duration.observe(duration)
        # Entries added in the same millisecond have the same latency: one observation each
        # (a batch of 1,000 produced at 50,000/s spans ~20 milliseconds). Counted by the id's
        # text before the "-" (half the cost of parsing each id), parsed once per millisecond.
        for ms, times in Counter(map(_first, map(_split_id, done))).items():
            self.latency.observe(max(0.0, now - id_seconds(ms)), times)
            self.handled += times

    def plus(self, other: LaneTally) -> LaneTally:
        return self._combine(other, operator.add)

    def minus(self, before: LaneTally) -> LaneTally:
        return self._combine(before, operator.sub)

    def _combine(self, other: LaneTally, op: Callable[[Any, Any], Any]) -> LaneTally:
        return LaneTally(
            self.stream,
            self.handler,
            handled=op(self.handled, other.handled),
            retried=op(self.retried, other.retried),
            dead=op(self.dead, other.dead),
            batches=op(self.batches, other.batches),
            lost=op(self.lost, other.lost),
            reclaimed=op(self.reclaimed, other.reclaimed),
            moved=op(self.moved, other.moved),
            ticks=op(self.ticks, other.ticks),
            ticks_skipped=op(self.ticks_skipped, other.ticks_skipped),
            rate_waits=op(self.rate_waits, other.rate_waits),
            concurrency_waits=op(self.concurrency_waits, other.concurrency_waits),
            duration=self.duration.combine(other.duration, op),
            size=self.size.combine(other.size, op),
            latency=self.latency.combine(other.latency, op),
        )

    @property
    def empty(self) -> bool:
        moves = self.moved or self.ticks or self.ticks_skipped
        waits = self.rate_waits or self.concurrency_waits
        return self.batches == 0 and self.lost == 0 and self.reclaimed == 0 and not moves and not waits


@define
class Tally:
    """A listener of one worker's events keeping a :class:`LaneTally` per stream, under an
    ``incarnation`` that is new for every process (an actor restarted by Ray counts from 0
    again under a new one, so its poller never takes a restart for negative work)."""

    incarnation: str
    lanes: dict[str, LaneTally] = field(factory=dict)
    #: The latest Redis outage events, and how many there were in all (a poller that last saw
    #: ``outages_seen`` = n takes the ones numbered n + 1 ... on: :meth:`outages_since`).
    outages: list[tuple[float, RedisDown | RedisUp]] = field(factory=list)  # (when, event)
    outages_seen: int = 0
    #: Entries removed by ack-aware trimming: (stream, what held the rest back) -> how many.
    trimmed: dict[tuple[str, str], int] = field(factory=dict)

    def __call__(self, event: Event) -> None:
        if isinstance(event, BatchSettled):
            plan = event.plan
            lane = self.lane(event.spec.stream, event.spec.name)
            lane.record(len(event.entries), event.result.duration, plan.retried, len(plan.dead), plan.done)
        elif isinstance(event, Lost):
            self.lane(event.stream, event.handler).lost += event.count
        elif isinstance(event, Reclaimed):
            self.lane(event.stream, event.handler).reclaimed += event.count
        elif isinstance(event, Moved):
            self.lane(event.stream, event.handler).moved += event.count
        elif isinstance(event, Ticked):
            lane = self.lane(event.stream, event.handler)
            lane.ticks += event.added
            lane.ticks_skipped += event.skipped
        elif isinstance(event, Throttled):
            lane = self.lane(event.stream, event.handler)
            if event.limit == "rate":
                lane.rate_waits += 1
            else:
                lane.concurrency_waits += 1
        elif isinstance(event, Trimmed):
            key = (event.stream, event.held_by)
            self.trimmed[key] = self.trimmed.get(key, 0) + event.removed
        elif isinstance(event, (RedisDown, RedisUp)):
            self.outages = [*self.outages[1 - OUTAGE_EVENTS_KEPT :], (time.time(), event)]
            self.outages_seen += 1

    def outages_since(self, before: Tally | None) -> list[tuple[float, RedisDown | RedisUp]]:
        """The outage events added since ``before`` was seen (all kept, for a new incarnation)."""
        seen = 0 if before is None or before.incarnation != self.incarnation else before.outages_seen
        return self.outages[len(self.outages) - min(len(self.outages), self.outages_seen - seen) :]

    def add(self, grown: Growth) -> None:
        """Add what another worker's tally grew by (an actor's, in actor mode)."""
        for lane in grown.lanes:
            self.lanes[lane.stream] = self.lane(lane.stream, lane.handler).plus(lane)
        for key, removed in grown.trimmed.items():
            self.trimmed[key] = self.trimmed.get(key, 0) + removed

    def lane(self, stream: str, handler: str) -> LaneTally:
        lane = self.lanes.get(stream)
        if lane is None:
            lane = self.lanes[stream] = LaneTally(stream, handler)
        return lane


@frozen
class Growth:
    """What a tally grew by between two looks: per stream, and entries trimmed."""

    lanes: list[LaneTally]
    trimmed: dict[tuple[str, str], int]

    @property
    def empty(self) -> bool:
        return not self.lanes and not self.trimmed


def growth(before: Tally | None, now: Tally) -> Growth:
    """What ``now`` added since ``before`` was seen: everything when ``before`` is of another
    incarnation (first seen, or restarted), never a negative count."""
    if before is None or before.incarnation != now.incarnation:
        lanes = [lane for lane in now.lanes.values() if not lane.empty]
        return Growth(lanes, {k: v for k, v in now.trimmed.items() if v})
    grown = []
    for stream, lane in now.lanes.items():
        seen = before.lanes.get(stream)
        delta = lane if seen is None else lane.minus(seen)
        if not delta.empty:
            grown.append(delta)
    trimmed = {k: v - before.trimmed.get(k, 0) for k, v in now.trimmed.items()}
    return Growth(grown, {k: v for k, v in trimmed.items() if v > 0})
