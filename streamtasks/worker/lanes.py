"""Lanes: one per handler. A lane queues the batches read for its stream, tracks the batches
in flight and the entries this worker holds (for lease renewal), and sizes its batches.

Pure bookkeeping, no I/O: the read, dispatch, settle and recovery stages move batches
through it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from attrs import define, field

from ..registry import HandlerSpec
from .events import LaneSnapshot
from .run import RawEntry
from .tally import LaneTally

if TYPE_CHECKING:
    from .flow import Flow
    from .priority import Levels

#: Entries in a lane's first read when its stream was empty at start (sizes still unknown).
FIRST_READ_COUNT = 50


@define
class Batch:
    entries: list[RawEntry]

    @property
    def ids(self) -> list[str]:
        return [e[0] for e in self.entries]


@define(eq=False)
class Lane:
    """One handler and its stream: queue of read batches, batches in flight, held ids."""

    spec: HandlerSpec
    prefetch: int
    max_batch_bytes: int = 0  # 0: batches bounded by count only
    entry_bytes: int = 0  # running estimate of an entry's size, sampled from reads
    queue: deque[Batch] = field(factory=deque)
    in_flight: dict[asyncio.Task[None], Batch] = field(factory=dict)
    held: dict[str, float] = field(factory=dict)  # entry id -> last lease renewal (monotonic)
    cursor: str = "0-0"  # XAUTOCLAIM's cursor
    last_id: str | None = None  # the newest entry id this worker read
    #: Held while a batch's outcome is applied and while leases are renewed: a renewal that
    #: ran between a retry's "claimable in 0.4 s" and the release would push it back to a
    #: whole visibility timeout (and again, and again).
    lease_lock: asyncio.Lock = field(factory=asyncio.Lock)
    #: Its handler's rate/concurrency limits (:mod:`.flow`) and priority levels
    #: (:mod:`.priority`: the lanes of one prioritized stream start and read together).
    flow: Flow | None = None
    levels: Levels | None = None

    @property
    def stream(self) -> str:
        return self.spec.stream

    @property
    def free_batches(self) -> int:
        return self.spec.max_in_flight + self.prefetch - len(self.in_flight) - len(self.queue)

    @property
    def can_start(self) -> bool:
        open_ = self.flow is None or self.flow.open
        return bool(self.queue) and len(self.in_flight) < self.spec.max_in_flight and open_

    @property
    def batch_size(self) -> int:
        """``spec.batch_size``, fewer when entries are big: a batch stays under max_batch_bytes,
        so memory is bounded by bytes (in-flight + prefetched batches), not only by count."""
        size = self.spec.batch_size if self.flow is None else self.flow.batch_cap(self.spec)
        if not self.max_batch_bytes:
            return size
        if not self.entry_bytes:  # the stream was empty at start: a small read measures entries
            return min(size, FIRST_READ_COUNT)
        return max(1, min(size, self.max_batch_bytes // self.entry_bytes))

    def sample_size(self, entries: Sequence[RawEntry]) -> None:
        """Update the entry-size estimate from one entry of a read (cheap: one entry a read)."""
        size = sum(map(len, entries[len(entries) // 2][1]))
        self.entry_bytes = size if not self.entry_bytes else (3 * self.entry_bytes + size) // 4

    def accept(self, entries: Sequence[RawEntry]) -> None:
        """Split entries into batches of ``batch_size`` and queue them."""
        size = self.batch_size
        now = time.monotonic()
        for start in range(0, len(entries), size):
            chunk = list(entries[start : start + size])
            self.queue.append(Batch(chunk))
            for entry_id, _, _ in chunk:
                self.held[entry_id] = now

    def release(self, ids: Sequence[str]) -> None:
        """Forget held entries (settled or handed back): their leases are no longer renewed."""
        for entry_id in ids:
            self.held.pop(entry_id, None)

    def take_queued(self) -> list[RawEntry]:
        """Empty the queue (on shutdown) and return its entries, released."""
        entries = [entry for batch in self.queue for entry in batch.entries]
        self.queue.clear()
        self.release([e[0] for e in entries])
        return entries

    def stale(self, now: float, period: float) -> list[str]:
        """Held entries whose lease was last renewed ``period`` seconds ago or more."""
        return [i for i, t in self.held.items() if now - t >= period]

    def renewed(self, ids: Sequence[str], now: float) -> None:
        for entry_id in ids:
            if entry_id in self.held:
                self.held[entry_id] = now

    def snapshot(self, counts: LaneTally) -> LaneSnapshot:
        """This lane now, with its worker's ``counts`` of it."""
        return LaneSnapshot(
            stream=self.stream,
            handler=self.spec.name,
            in_flight=len(self.in_flight),
            queued=len(self.queue),
            held=len(self.held),
            handled=counts.handled,
            retried=counts.retried,
            dead=counts.dead,
            reclaimed=counts.reclaimed,
            lost=counts.lost,
        )
