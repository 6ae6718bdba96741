"""Priority levels: which level of a prioritized stream is read and started first.

``stream_handler("orders", priorities=3)`` serves ``orders`` (level 0, the highest),
``orders:p1`` and ``orders:p2``, a lane each (per shard, when sharded). The lanes of one
stream (one shard) form :class:`Levels`, which share the handler's capacity -- at most
``max_in_flight`` batches running and ``max_in_flight + prefetch`` running or read, all
levels together -- and decide with two pure plans. A level is *drained* when it has no batch
read and waiting and its last read found nothing (nothing of it waits in Redis, as far as
this worker can tell).

* :func:`next_level`, when a batch may start: the highest level with a batch ready, but
  nothing below a level that is not drained (that level is read first) -- unless the
  **guard** applies: a level that was passed over :data:`PRIORITY_GUARD` times while it had a
  batch ready goes next (the highest such level first). So level ``k`` with a batch ready
  waits at most ``PRIORITY_GUARD + k`` starts of other levels: a busy level 0 leaves every
  lower level that has entries about one start in ``PRIORITY_GUARD + 1`` (10 %), never none.
* :func:`read_levels`, when the worker reads: a level is read while the levels above it are
  drained and the capacity has room for it (lower levels' batches read ahead do not take a
  higher level's room); below level 0, a level with no batch read is read anyway: one batch
  in reserve for the guard to start (at most one per level beyond the capacity).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from attrs import define, field

from .. import keys
from .lanes import Lane

#: A level with a batch ready is passed over at most this many times before it starts.
PRIORITY_GUARD = 9


def next_level(
    ready: Sequence[bool], drained: Sequence[bool], skipped: Sequence[int], guard: int = PRIORITY_GUARD
) -> int | None:
    """The level whose batch starts next (``ready[i]``: level i has one; ``drained[i]``: its
    last read found nothing; ``skipped[i]``: how often it was passed over, with a batch ready,
    since it last started): the highest level the guard makes due; else the highest ready
    level with no level above it that may still have entries in Redis; else None (nothing
    is ready, or a higher level is to be read first)."""
    due = [i for i, r in enumerate(ready) if r and skipped[i] >= guard]
    if due:
        return due[0]
    for level, (waiting, empty) in enumerate(zip(ready, drained, strict=True)):
        if waiting:
            return level
        if not empty:
            return None
    return None


def passed_over(ready: Sequence[bool], skipped: Sequence[int], chosen: int) -> list[int]:
    """``skipped`` after level ``chosen`` started: every other ready level was passed over once
    more; ``chosen`` starts from 0 again; a level with nothing ready owes nothing."""
    return [0 if i == chosen or not r else s + 1 for i, (r, s) in enumerate(zip(ready, skipped, strict=True))]


def read_levels(queued: Sequence[int], drained: Sequence[bool], in_flight: int, capacity: int) -> list[int]:
    """The levels to read now (``queued[i]``: batches read and not started; ``drained[i]``:
    its last read found nothing; ``in_flight``: the levels' batches running): level ``k``
    while the levels above it are drained and ``in_flight`` plus what levels 0..k have read
    leaves room in ``capacity``; a level below 0 with nothing read also (its reserve)."""
    out = []
    ahead = in_flight
    above_drained = True
    for level, (waiting, empty) in enumerate(zip(queued, drained, strict=True)):
        ahead += waiting
        if (above_drained and ahead < capacity) or (level > 0 and waiting == 0):
            out.append(level)
        above_drained = above_drained and empty and waiting == 0
    return out


@define(eq=False)
class Levels:
    """The lanes of one prioritized stream (or one shard of it), level 0 first."""

    lanes: list[Lane]
    max_in_flight: int
    capacity: int
    skipped: list[int] = field()
    drained: list[bool] = field()

    @skipped.default
    def _no_skips(self) -> list[int]:
        return [0] * len(self.lanes)

    @drained.default
    def _not_drained(self) -> list[bool]:
        return [False] * len(self.lanes)

    def to_read(self) -> list[Lane]:
        running = sum(len(lane.in_flight) for lane in self.lanes)
        queued = [len(lane.queue) for lane in self.lanes]
        return [self.lanes[i] for i in read_levels(queued, self.drained, running, self.capacity)]

    def saw(self, lane: Lane, found: bool) -> None:
        """``lane`` was read; ``found``: it returned entries."""
        self.drained[lane.spec.level] = not found

    def next_to_start(self) -> Lane | None:
        """The lane whose queued batch starts next (:func:`next_level`), recorded as started;
        None when the levels' running batches fill ``max_in_flight`` or nothing is ready."""
        if sum(len(lane.in_flight) for lane in self.lanes) >= self.max_in_flight:
            return None
        ready = [bool(lane.queue) and (lane.flow is None or lane.flow.open) for lane in self.lanes]
        level = next_level(ready, self.drained, self.skipped)
        if level is None:
            return None
        self.skipped = passed_over(ready, self.skipped, level)
        return self.lanes[level]


class Priorities:
    """Every prioritized stream of a worker: what to read, and what was read."""

    def __init__(self, lanes: Mapping[str, Lane]) -> None:
        groups: dict[tuple[str, str], list[Lane]] = {}
        for name, lane in lanes.items():
            if lane.spec.priorities:
                shard = name[len(keys.shard_base(name) or name) :]  # ':{3}', or ''
                groups.setdefault((lane.spec.priority_of, shard), []).append(lane)
        self.groups = []
        for members in groups.values():
            members.sort(key=lambda lane: lane.spec.level)
            spec = members[0].spec
            levels = Levels(members, spec.max_in_flight, members[0].prefetch + spec.max_in_flight)
            for lane in members:
                lane.levels = levels
            self.groups.append(levels)

    def readable(self, lanes: Iterable[Lane]) -> list[Lane]:
        """The lanes to read now: a plain lane with room; a prioritized stream's by its plan."""
        if not self.groups:
            return [lane for lane in lanes if lane.free_batches > 0]
        out = []
        for lane in lanes:
            if lane.levels is None:
                if lane.free_batches > 0:
                    out.append(lane)
            elif lane.spec.level == 0:
                out += lane.levels.to_read()
        return out

    def saw(self, read: Sequence[Lane], got: Mapping[Lane, Any]) -> None:
        """Record which levels' reads found entries (after a read of ``read``)."""
        for lane in read:
            if lane.levels is not None:
                lane.levels.saw(lane, lane in got)
