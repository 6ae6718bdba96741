"""The in-memory broker: streams, one consumer group's pending entries, and a fake clock.

It keeps what Redis keeps for a consumer group (entries, unread ones, pending ones with their
delivery count and the time they become claimable again, the first-failure times) and nothing
more; what to do with an entry is decided by the worker's own code (:mod:`.app`).
"""

from __future__ import annotations

import time
from collections import deque

from attrs import define, field

from ..message import RawFields

#: (entry id, raw fields, delivery attempt) as the worker's batch runner takes them.
Delivery = tuple[str, RawFields, int]


@define
class FakeClock:
    """Seconds since the epoch that move only when told to (``advance``)."""

    now: float = field(factory=time.time)

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward (never back)."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self.now += seconds

    @property
    def ms(self) -> int:
        """The time in whole milliseconds (what entry ids are made of)."""
        return int(self.now * 1000)


@define
class Pending:
    """An entry delivered to the group and not acknowledged yet."""

    raw: list[bytes]
    deliveries: int
    due: float  # when it may be claimed again (a retry's delay over); inf while running


@define
class MemoryStream:
    """One stream and its consumer group's state."""

    name: str
    entries: dict[str, list[bytes]] = field(factory=dict)
    unread: deque[str] = field(factory=deque)
    pending: dict[str, Pending] = field(factory=dict)
    acked: list[str] = field(factory=list)  # handled and dead-lettered, in ack order
    handled: list[str] = field(factory=list)
    first_failure_ms: dict[str, int] = field(factory=dict)
    _last: tuple[int, int] = (0, 0)

    def add(self, raw: list[bytes], now_ms: int) -> str:
        """XADD: a new id after the last one, from the clock's milliseconds."""
        ms, seq = self._last
        self._last = (now_ms, 0) if now_ms > ms else (ms, seq + 1)
        entry_id = f"{self._last[0]}-{self._last[1]}"
        self.entries[entry_id] = raw
        self.unread.append(entry_id)
        return entry_id

    def read(self, count: int) -> list[Delivery]:
        """XREADGROUP ``>``: up to ``count`` unread entries, now pending (delivery 1)."""
        out: list[Delivery] = []
        while self.unread and len(out) < count:
            entry_id = self.unread.popleft()
            raw = self.entries[entry_id]
            self.pending[entry_id] = Pending(raw, 1, float("inf"))
            out.append((entry_id, raw, 1))
        return out

    def claim_due(self, now: float, count: float) -> list[Delivery]:
        """XAUTOCLAIM: pending entries whose delay is over, their delivery count bumped."""
        out: list[Delivery] = []
        for entry_id, p in self.pending.items():
            if len(out) >= count:
                break
            if p.due <= now:
                p.deliveries += 1
                p.due = float("inf")
                out.append((entry_id, p.raw, p.deliveries))
        return out

    def next_due(self) -> float | None:
        """When the first pending retry becomes claimable (None: none waits)."""
        dues = [p.due for p in self.pending.values() if p.due != float("inf")]
        return min(dues) if dues else None

    def ack(self, entry_id: str, *, handled: bool) -> None:
        """XACK a pending entry: ``handled`` (its handler succeeded) or dead-lettered."""
        if self.pending.pop(entry_id, None) is not None:
            self.acked.append(entry_id)
            if handled:
                self.handled.append(entry_id)
