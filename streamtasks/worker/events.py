"""What a worker tells the world: events as it works, and a read-only snapshot on request.

Metrics, heartbeats, ``status`` and the dashboard consume these and never a stage's
attributes. A listener is a callable taking one event; it runs synchronously on the worker's
loop, so it must be quick, and an exception in it is logged and never reaches the data path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from attrs import field, frozen

if TYPE_CHECKING:
    import asyncio

    from redis.asyncio import Redis

    from ..registry import HandlerSpec, Registry
    from .executors import Cluster
    from .run import BatchResult, RawEntry
    from .settle import Settlement
    from .supervise import Supervisor
    from .tally import Tally

log = logging.getLogger("streamtasks.worker")


@frozen
class BatchStarted:
    stream: str
    size: int


@frozen
class BatchSettled:
    """A batch's outcomes were applied (acked, retries scheduled, dead-lettered)."""

    spec: HandlerSpec
    entries: Sequence[RawEntry]
    plan: Settlement
    result: BatchResult


@frozen
class Reclaimed:
    """Entries idle past the visibility timeout (a dead consumer's) were claimed to run again."""

    stream: str
    handler: str
    count: int


@frozen
class Lost:
    """Entries Redis no longer had: trimmed or deleted before they were handled."""

    stream: str
    handler: str
    count: int
    why: str


@frozen
class Trimmed:
    """Ack-aware trimming deleted ``removed`` entries of ``stream`` (every group had acked
    them); ``held_by`` says what keeps the rest: a group's name, or ``retention``."""

    stream: str
    removed: int
    held_by: str


@frozen
class Moved:
    """Delayed entries of ``stream`` came due and were moved into it (``bad``: dead-lettered,
    their fields unreadable)."""

    stream: str
    handler: str
    count: int
    bad: int = 0


@frozen
class Ticked:
    """The periodic handler of ``stream`` got ``added`` entries; its catch-up policy (or its
    bound) ``skipped`` ticks."""

    stream: str
    handler: str
    added: int
    skipped: int


@frozen
class Throttled:
    """A flow limit (``rate`` or ``concurrency``) held ``count`` entries back: they wait
    ``wait`` seconds, queued and held, before their handler asks again (not an attempt)."""

    stream: str
    handler: str
    limit: str
    count: int
    wait: float


@frozen
class HandedBack:
    """Entries returned on shutdown, claimable by any other worker at once."""

    stream: str
    count: int
    running: bool  # True: they were running when the grace period ended


@frozen
class RedisDown:
    doing: str
    error: str


@frozen
class RedisUp:
    down_for: float


@frozen
class LoopFailed:
    """A supervised background loop raised; it is restarted after ``retry_in`` seconds."""

    loop: str
    error: str
    retry_in: float


@frozen
class StateChanged:
    state: str  # starting, reading, draining, stopped


@frozen
class ExecutorStarted:
    """The executor is up (``ray.init`` returned): the CLI takes its signal handlers back."""


Event = (
    BatchStarted
    | BatchSettled
    | Reclaimed
    | Lost
    | HandedBack
    | Trimmed
    | Moved
    | Ticked
    | Throttled
    | RedisDown
    | RedisUp
    | LoopFailed
    | StateChanged
    | ExecutorStarted
)
Listener = Callable[[Event], None]


class Events:
    """The worker's event hub: ``subscribe(listener)``, ``emit(event)``."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def emit(self, event: Event) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("an event listener failed on %s", type(event).__name__)


class Serving(Protocol):
    """What serves a registry, as metrics, health endpoints and the CLI see it: a
    :class:`~streamtasks.worker.Worker`, or an :class:`~streamtasks.worker.actors.ActorPool`."""

    registry: Registry
    redis: Redis
    group: str
    consumer: str
    events: Events
    reading: asyncio.Event
    supervisor: Supervisor
    #: Every count of what it settled (actor mode: its actors' added up).
    tally: Tally

    @property
    def cluster(self) -> Cluster | None:
        """What its batches run on, for monitoring (None: this process only)."""
        ...

    @property
    def stopping(self) -> bool: ...
    def snapshot(self) -> Snapshot: ...
    def stop(self) -> None: ...
    async def run(self) -> None: ...
    def heartbeat_consumers(self) -> list[str]:
        """The consumers whose heartbeat keys say this worker is alive (an actor pool's actors')."""
        ...


@frozen
class LaneSnapshot:
    """One handler's stream as this worker sees it."""

    stream: str
    handler: str
    in_flight: int
    queued: int
    held: int
    handled: int
    retried: int
    dead: int
    reclaimed: int
    lost: int


@frozen
class ActorGroupState:
    """Actor mode: the actors of one group of handlers (equal Ray options): how many are
    wanted, how many read, how many Ray has not started yet, the bounds (None: a fixed
    number), and why the number is what it is."""

    handlers: tuple[str, ...]  # the group's streams
    desired: int
    running: int
    starting: int
    min: int | None = None
    max: int | None = None
    reason: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "handlers": list(self.handlers),
            "desired": self.desired,
            "running": self.running,
            "starting": self.starting,
            "min": self.min,
            "max": self.max,
            "reason": self.reason,
        }


@frozen
class Snapshot:
    """A read-only picture of one worker, for metrics, heartbeats, status and the dashboard."""

    consumer: str
    group: str
    state: str
    started_at: float
    lanes: Mapping[str, LaneSnapshot]
    redis_down_since: float | None  # monotonic time, None while Redis answers
    failing_loops: Mapping[str, str] = field(factory=dict)  # loop name -> its last error
    actors: tuple[ActorGroupState, ...] = ()  # actor mode: per group of handlers

    @property
    def in_flight(self) -> int:
        return sum(lane.in_flight for lane in self.lanes.values())

    def heartbeat(self, host: str, pid: int, now: float) -> dict[str, Any]:
        """The JSON body of the worker's heartbeat key."""
        return {
            "consumer": self.consumer,
            "group": self.group,
            "host": host,
            "pid": pid,
            "state": self.state,
            "streams": list(self.lanes),
            "started_at": self.started_at,
            "ts": now,
            "in_flight": self.in_flight,
            "failing_loops": sorted(self.failing_loops),
        }
