"""Actor mode: the data path runs inside long-lived Ray actors, with no driver in between.

Each actor (:class:`~streamtasks.ray.actor.WorkerActor`) runs a complete worker as its own
consumer of the group (``<consumer>-a<i>``). The worker process only supervises: it starts
the actors (:mod:`.slots`), hands a dead actor's entries to the live ones the moment Ray
reports the death (:mod:`.deaths`), forwards a stop, and adds up their reports (:mod:`.reports`)
for metrics, ``/readyz`` and logs.

Why: in task mode every entry passes through the worker process twice (read, pickle, dispatch;
result, settle), and that single-threaded hop is the largest cost on a simple job. Here each
entry crosses no process boundary between Redis and the handler.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Sequence
from typing import Any

from attrs import evolve
from redis.asyncio import Redis

from ..aio import wait_set
from ..registry import Registry
from ..scaling import Autoscale
from ..worker import WorkerSettings
from ..worker.events import Events, ExecutorStarted, Listener, Snapshot, StateChanged
from ..worker.health import RedisHealth
from ..worker.heartbeat import Heartbeat
from ..worker.preflight import check_handlers
from ..worker.startup import start_unless_stopped
from ..worker.supervise import Supervisor
from ..worker.tally import Tally
from ..worker.timers import Timers
from .controller import Controller
from .executor import RayExecutor
from .placement import cluster_cpus, partition, plan
from .reports import Report, Reports
from .slots import Actors, groups_of

log = logging.getLogger("streamtasks.worker")

#: Seconds between two polls of the actors' reports.
POLL_INTERVAL_S = 1.0
#: Seconds after which actors Ray has not started are logged (the worker is not ready meanwhile).
PLACE_WARN_S = 30.0
#: Seconds past the grace period the worker waits for its actors to drain before killing them.
STOP_SLACK_S = 15.0
#: Seconds a stopping worker waits, once its actors drained, before it kills them and shuts
#: Ray down: their log lines reach this process' stderr through Ray's log monitor, which polls
#: their log files every 0.1 s; lines still on the way when Ray shuts down stay in Ray's logs.
LOG_FORWARD_S = 0.5


class ActorPool:
    """Serves a registry on ``actors`` Ray actors; the same face as a
    :class:`~streamtasks.worker.Worker` (:class:`~streamtasks.worker.events.Serving`)."""

    def __init__(
        self,
        registry: Registry,
        redis: Redis,
        redis_url: str,
        executor: RayExecutor,
        settings: WorkerSettings | None = None,
        *,
        actors: int | None = None,
        autoscale: Autoscale | None = None,
        listeners: Sequence[Listener] = (),
    ) -> None:
        self.registry, self.redis, self.redis_url, self.executor = registry, redis, redis_url, executor
        self.settings = settings or WorkerSettings()
        self.group, self.consumer = registry.group, self.settings.consumer
        self.per_group = actors  # --actors: per group of handlers (None: the CPUs shared out)
        self.cluster = executor.cluster
        self.events = Events()
        self.tally = Tally("pool")  # the actors' counts added up, and what an inline start settled
        self.events.subscribe(self.tally)
        for listener in listeners:
            self.events.subscribe(listener)
        self.supervisor = Supervisor(self.events.emit)
        self.reports = Reports(self.tally, self.events.emit)
        self.heartbeat = Heartbeat(redis, self.group, self.settings, self.snapshot, self.cluster)
        # The delayed-entry mover and the periodic ticker run here, once for all the actors.
        health = RedisHealth(self.events.emit)
        health.quiet = True  # the actors report Redis outages, folded into one line per outage
        handlers = registry.handlers.values()
        self.timers = Timers(redis, handlers, self.group, health, self.events.emit, self.settings)
        self.started_at = time.time()
        self.state = "starting"
        self.reading = asyncio.Event()
        self._stopping = asyncio.Event()
        self.actors = Actors(
            redis, redis_url, self.settings, executor.env, self.supervisor, lambda: self.stopping
        )
        self.actors.on_removed = self._removed
        self.controller = Controller(redis, self.actors, self.reports, self.tally, self.settings, autoscale)
        self._warned = False

    def stop(self) -> None:
        self._stopping.set()
        self.heartbeat.due.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> None:
        self.supervisor.spawn("heartbeat", self._announce_starting)  # status sees it at once
        started = False
        try:
            # a permission the actors lack fails this worker at once, as in task mode (an actor
            # would only fail its start over and over, restarted by the supervisor)
            await check_handlers(
                self.redis, self.registry.handlers.values(), self.group, self.actors.consumer(0)
            )
            started = await start_unless_stopped(self.executor.start(), asyncio.sleep(0), self._stopping)
            if not started:  # stopped while Ray started: nothing was read
                return
            self.events.emit(ExecutorStarted())
            self.timers.spawn(self.supervisor, self._stopping)
            self._start_actors()
            await self._poll_until_stopped()
        finally:
            await self._drain(started)

    async def _announce_starting(self) -> None:
        """While Ray starts and the actors are placed, this process announces itself in a
        heartbeat of its own (state ``starting``); once the actors read (each announces itself)
        or a stop comes first, that heartbeat is deleted."""
        try:
            await self.heartbeat.beat(
                lambda: self.state != "starting" or self.stopping,
                lambda: self.supervisor.healthy("heartbeat"),
            )
        finally:
            await self.heartbeat.delete()

    def heartbeat_consumers(self) -> list[str]:
        """This process' own heartbeat while it starts, then its actors' (each writes its own)."""
        if self.state == "starting" or not self.actors.slots:
            return [self.consumer]
        return [slot.consumer for slot in self.actors.slots.values()]

    def _start_actors(self) -> None:
        """The actors of each group of handlers that share their Ray options; see
        :func:`~streamtasks.ray.placement.plan`."""
        groups = groups_of(partition(self.registry))
        counts = plan([(g.registry, g.options) for g in groups], self.per_group, cluster_cpus())
        planned = [(evolve(g, options=o), n) for g, (_, o, n) in zip(groups, counts, strict=True)]
        self.controller.start(self.group, self.consumer, planned)
        healthy = functools.partial(self.supervisor.healthy, "actors")
        self.supervisor.spawn("actors", functools.partial(self.controller.run, self._stopping, healthy))

    def _removed(self, index: int, report: Report | None) -> None:
        self.reports.take({index: report})
        self.reports.forget(index)

    async def _poll_until_stopped(self) -> None:
        while not self.stopping:
            await self._poll()
            await wait_set(self._stopping, POLL_INTERVAL_S)

    async def _poll(self) -> None:
        slots = list(self.actors.slots.values())
        reports = await asyncio.gather(*(self._report(s.index, s.handle) for s in slots))
        self.reports.take({slot.index: report for slot, report in zip(slots, reports, strict=True)})
        if self.state == "starting":
            self._check_started()

    def _check_started(self) -> None:
        slots = self.actors.slots
        if self.reports.all_reading(slots):
            self._set_state("reading")
            self.reading.set()
            streams = ", ".join(self.registry.streams)
            log.info(
                "worker %s reading %s as group %s on %d actors",
                self.consumer,
                streams,
                self.group,
                len(slots),
            )
        elif not self._warned and time.time() - self.started_at > PLACE_WARN_S:
            self._warned = True
            waiting = [i for i in slots if i not in self.reports.snapshots]
            log.warning(
                "worker %s: actors %s not running after %.0f s (can Ray place them? %s); the "
                "worker is not ready until they are",
                self.consumer,
                ", ".join(map(str, waiting)),
                PLACE_WARN_S,
                "; ".join(slots[i].group.asks for i in waiting),
            )

    async def _report(self, index: int, handle: Any) -> Report | None:
        try:
            report: Report = await asyncio.wait_for(handle.report.remote(), POLL_INTERVAL_S * 5)
            return report
        except Exception as exc:  # a dead, restarting or unplaced actor: its loop reports it
            log.debug("report of actor %d failed: %s", index, exc)
            return None

    def _set_state(self, state: str) -> None:
        self.state = state
        self.heartbeat.due.set()
        self.events.emit(StateChanged(state))

    def snapshot(self) -> Snapshot:
        handlers = {stream: spec.name for stream, spec in self.registry.handlers.items()}
        return Snapshot(
            consumer=self.consumer,
            group=self.group,
            state=self.state,
            started_at=self.started_at,
            lanes=self.reports.lanes(handlers),
            redis_down_since=self.reports.redis_down_since(),
            failing_loops={**self.supervisor.failing, **self.reports.failing_loops()},
            actors=self.controller.states(),
        )

    async def _drain(self, started: bool) -> None:
        self._stopping.set()
        self._set_state("draining")
        await self.actors.stop_all()
        await self.supervisor.wait(self.settings.grace_period + STOP_SLACK_S)  # the actors drain
        await self.supervisor.close()
        if self.actors.slots:  # their last lines are in Ray's log files: let Ray forward them here
            await asyncio.sleep(LOG_FORWARD_S)
        self.actors.kill_all()
        await self.controller.unpublish()
        if started:
            await self.executor.close()
        self._set_state("stopped")
