"""What a worker is told: its consumer name and the knobs of its read/settle loop."""

from __future__ import annotations

import os
import socket
import uuid

from attrs import field, frozen


def default_consumer_name() -> str:
    """``<host>-<pid>-<random>``: unique per process, readable in ``XINFO CONSUMERS``."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@frozen
class WorkerSettings:
    """Knobs of the read/settle loop. Times in seconds."""

    consumer: str = field(factory=default_consumer_name)
    block: float = 1.0
    visibility_timeout: float = 30.0
    reclaim_interval: float = 1.0
    grace_period: float = 30.0
    prefetch: int | None = None  # batches read ahead per handler; default: max_in_flight
    heartbeat_interval: float = 2.0
    heartbeat_ttl: float = 10.0
    dead_letter_maxlen: int = 0  # approximate MAXLEN of dead-letter streams; 0 = unbounded
    max_batch_bytes: int = 4 * 1024 * 1024  # big entries make smaller batches; 0 = count only
    gap_check_interval: float = 5.0  # seconds between looks for entries trimmed before delivery
    #: Run the delayed-entry mover and the periodic ticker (:mod:`.timers`) here: one per
    #: worker process is enough (actor mode runs them in the worker process, not in each actor).
    timers: bool = True
    #: The longest the mover sleeps: an entry added while it slept, due before the one it
    #: knew, is moved at most this late (plus the move); see :mod:`.timers`.
    delayed_poll: float = 0.25
    #: Seconds a consumer with no live heartbeat and nothing pending may stay idle before it is
    #: removed from the group (:mod:`streamtasks.worker.hygiene`).
    consumer_grace: float = 120.0

    @property
    def visibility_ms(self) -> int:
        return int(self.visibility_timeout * 1000)
