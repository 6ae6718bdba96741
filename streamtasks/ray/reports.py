"""What an actor pool learns from its actors' reports, polled every second: their snapshots
(the pool's snapshot sums their gauges), what each one's tally grew by (added into the pool's
tally: metrics and status), and their Redis outages (folded into one line per outage for the
whole worker, :class:`~streamtasks.worker.health.OutageFold`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping

from ..worker.events import Event, LaneSnapshot, Snapshot
from ..worker.health import OutageFold
from ..worker.tally import Tally, growth

#: An actor's report: its worker's snapshot (None before it exists) and its tally.
Report = tuple[Snapshot | None, Tally]


class Reports:
    """The latest report of each actor, and the pool's :class:`Tally` they add up to."""

    def __init__(self, tally: Tally, emit: Callable[[Event], None]) -> None:
        self.tally = tally
        self.outages = OutageFold(emit)
        self.snapshots: dict[int, Snapshot] = {}
        self._tallies: dict[int, Tally] = {}  # actor -> its tally as last reported

    def take(self, reports: Mapping[int, Report | None]) -> None:
        """One poll's reports, by actor index (None: the actor did not answer)."""
        outages: list[tuple[float, int, Event]] = []
        for index, report in reports.items():
            if report is None:
                continue
            snapshot, tally = report
            if snapshot is not None:
                self.snapshots[index] = snapshot
            before = self._tallies.get(index)
            if before is not None and before.incarnation != tally.incarnation:
                self.outages.forget(index, time.time())  # restarted: its outage ended with it
            outages += [(at, index, event) for at, event in tally.outages_since(before)]
            self.tally.add(growth(before, tally))
            self._tallies[index] = tally
        for at, index, event in sorted(outages, key=lambda o: o[0]):  # the actors' in time order
            self.outages.see(index, at, event)
        self.outages.tick(time.time())

    def all_reading(self, actors: Collection[int]) -> bool:
        """True when every one of ``actors`` (indices) reported that it reads."""
        return all(i in self.snapshots and self.snapshots[i].state == "reading" for i in actors)

    def reading(self, index: int) -> bool:
        snapshot = self.snapshots.get(index)
        return snapshot is not None and snapshot.state == "reading"

    def forget(self, index: int) -> None:
        """Actor ``index`` is gone (removed): its gauges no longer count, its counts stay."""
        self.snapshots.pop(index, None)
        self._tallies.pop(index, None)
        self.outages.forget(index, time.time())

    def lanes(self, handlers: dict[str, str]) -> dict[str, LaneSnapshot]:
        """Per stream (``handlers``: stream -> handler name): the actors' gauges summed, and
        the counts of the pool's tally (which survive an actor's restart)."""
        out = {}
        for stream, handler in handlers.items():
            lanes = [s.lanes[stream] for s in self.snapshots.values() if stream in s.lanes]
            counts = self.tally.lane(stream, handler)
            out[stream] = LaneSnapshot(
                stream=stream,
                handler=handler,
                in_flight=sum(lane.in_flight for lane in lanes),
                queued=sum(lane.queued for lane in lanes),
                held=sum(lane.held for lane in lanes),
                handled=counts.handled,
                retried=counts.retried,
                dead=counts.dead,
                reclaimed=counts.reclaimed,
                lost=counts.lost,
            )
        return out

    def failing_loops(self) -> dict[str, str]:
        return {
            f"actor-{index}:{loop}": error
            for index, snap in self.snapshots.items()
            for loop, error in snap.failing_loops.items()
        }

    def redis_down_since(self) -> float | None:
        down = [s.redis_down_since for s in self.snapshots.values() if s.redis_down_since is not None]
        return min(down) if down else None
