"""Priority levels: which level of a prioritized stream is read and started first.

``stream_handler("orders", priorities=3)`` serves ``orders`` (level 0, the highest),
``orders:p1`` and ``orders:p2``, a lane each (per shard, when sharded). The lanes of one
stream (one shard) form :class:`Levels`, which share the handler's capacity -- at most
``max_in_flight`` batches running and ``max_in_flight + prefetch`` read, all levels together
-- and decide with two pure plans:

* :func:`next_level`, when a batch may start: the highest level with a batch ready, unless
  the **guard** applies -- a lower level that was passed over :data:`PRIORITY_GUARD` times
  while it had a batch ready goes next (the highest such level first). So level ``k`` with a
  batch ready waits at most ``PRIORITY_GUARD + k`` starts of other levels: a busy level 0
  leaves every lower level that waits about one start in ``PRIORITY_GUARD + 1`` (10 %).
* :func:`read_levels`, when the worker reads: a level is read while every level above it is
  drained (nothing read and waiting, and its last read found nothing), so lower levels fill
  the capacity only when higher ones have nothing; with a higher level busy, a lower level is
  still read when it has no batch ready -- one batch in reserve, for the guard to start.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from attrs import define, field

from .. import keys
from .lanes import Lane

#: A level with a batch ready is passed over at most this many times before it starts.
PRIORITY_GUARD = 9


def next_level(ready: Sequence[bool], skipped: Sequence[int], guard: int = PRIORITY_GUARD) -> int | None:
    """The level whose batch starts next (``ready[i]``: level i has one; ``skipped[i]``: how
    often it was passed over since it last started): the highest level the guard makes due,
    else the highest ready level; None when no level is ready."""
    due = [i for i, r in enumerate(ready) if r and skipped[i] >= guard]
    if due:
        return due[0]
    return next((i for i, r in enumerate(ready) if r), None)


def passed_over(ready: Sequence[bool], skipped: Sequence[int], chosen: int) -> list[int]:
    """``skipped`` after level ``chosen`` started: every other ready level was passed over once
    more; ``chosen`` starts from 0 again; a level with nothing ready owes nothing."""
    return [0 if i == chosen or not r else s + 1 for i, (r, s) in enumerate(zip(ready, skipped, strict=True))]


def read_levels(queued: Sequence[int], drained: Sequence[bool], free: int) -> list[int]:
    """The levels to read now (``queued[i]``: batches read and not started; ``drained[i]``:
    its last read found nothing; ``free``: batches the shared capacity has room for): none
    when it is full; else each level whose higher levels are all drained, and each level with
    nothing queued (its one reserve batch). The reads of one round go out together, so they
    may overfill the capacity by at most one batch per level."""
    if free <= 0:
        return []
    out = []
    above_drained = True
    for level, (waiting, empty) in enumerate(zip(queued, drained, strict=True)):
        if above_drained or waiting == 0:
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
        used = sum(len(lane.in_flight) + len(lane.queue) for lane in self.lanes)
        queued = [len(lane.queue) for lane in self.lanes]
        return [self.lanes[i] for i in read_levels(queued, self.drained, self.capacity - used)]

    def saw(self, lane: Lane, found: bool) -> None:
        """``lane`` was read; ``found``: it returned entries."""
        self.drained[lane.spec.level] = not found

    def next_to_start(self) -> Lane | None:
        """The lane whose queued batch starts next (:func:`next_level`), recorded as started;
        None when the levels' running batches fill ``max_in_flight`` or nothing is ready."""
        if sum(len(lane.in_flight) for lane in self.lanes) >= self.max_in_flight:
            return None
        ready = [bool(lane.queue) and (lane.flow is None or lane.flow.open) for lane in self.lanes]
        level = next_level(ready, self.skipped)
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
