"""Delayed entries and periodic ticks of the in-memory app, on its fake clock.

The same rules as the worker's (:mod:`streamtasks.worker.timers`): a delayed entry enters its
stream once the clock reaches its due time (with ``_st_due``; sending a message id again
replaces it), and a periodic handler's ticks are planned by :func:`streamtasks.schedule.plan_ticks`
(the first tick is the first one after the app was made). While the clock moves with workers
running, every tick is claimed on time; :meth:`MemoryTimers.release` with ``outage=True``
plans once at the end instead, as a worker that starts after an outage does, so the
handler's ``catch_up`` policy decides.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..keys import FIELD_DUE, FIELD_MESSAGE_ID, FIELD_TICK
from ..registry import HandlerSpec
from ..schedule import plan_ticks, tick_after, tick_message_id

#: Ticks one clock move may add at most (a handler ticking every millisecond for a day would
#: otherwise fill memory): more is an error naming the handler.
MAX_TICKS_PER_MOVE = 100_000

#: (due or tick ms, stream, fields) of an entry to add.
Release = tuple[int, str, dict[str, str | bytes]]


class MemoryTimers:
    """What is scheduled, and the last tick of each periodic handler."""

    def __init__(self, specs: Iterable[HandlerSpec], now_ms: int) -> None:
        self.periodic = {spec.stream: spec for spec in specs if spec.periodic is not None}
        self.last_tick: dict[str, int] = {}
        for stream, spec in self.periodic.items():
            assert spec.periodic is not None
            self.last_tick[stream] = plan_ticks(spec.periodic, None, now_ms).upto
        #: stream -> message id -> (due ms, fields)
        self.scheduled: dict[str, dict[str, tuple[int, dict[str, str | bytes]]]] = {}

    def schedule(self, stream: str, due_ms: int, fields: dict[str, str | bytes]) -> str:
        mid = str(fields[FIELD_MESSAGE_ID])
        self.scheduled.setdefault(stream, {})[mid] = (due_ms, {**fields, FIELD_DUE: str(due_ms)})
        return mid

    def next_due(self) -> int | None:
        """The soonest due time of a delayed entry (ticks not included: they never end)."""
        dues = [due for entries in self.scheduled.values() for due, _ in entries.values()]
        return min(dues) if dues else None

    def release(self, now_ms: int, outage: bool = False) -> list[Release]:
        """Delayed entries due by ``now_ms`` and the ticks up to it, in time order, taken."""
        out: list[Release] = []
        for stream, entries in self.scheduled.items():
            for mid, (due, fields) in list(entries.items()):
                if due <= now_ms:
                    out.append((due, stream, fields))
                    del entries[mid]
        for stream in self.periodic:
            out += self._ticks(stream, now_ms, outage)
        return sorted(out, key=lambda r: r[0])

    def _ticks(self, stream: str, now_ms: int, outage: bool) -> list[Release]:
        periodic = self.periodic[stream].periodic
        assert periodic is not None
        last, ticks = self.last_tick[stream], list[int]()
        while True:
            at = now_ms if outage else tick_after(periodic, last)
            if at is None or at > now_ms:
                break
            plan = plan_ticks(periodic, last, at)
            ticks += plan.ticks
            last = plan.upto
            if len(ticks) > MAX_TICKS_PER_MOVE:
                raise RuntimeError(f"moving the clock adds more than {MAX_TICKS_PER_MOVE} ticks of {stream}")
            if outage:
                break
        self.last_tick[stream] = last
        return [
            (t, stream, {FIELD_MESSAGE_ID: tick_message_id(stream, t), FIELD_TICK: str(t)}) for t in ticks
        ]
