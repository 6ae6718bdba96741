"""Actor mode: the data path runs inside long-lived Ray actors, with no driver in between.

Each actor (:class:`~streamtasks.ray.actor.WorkerActor`) runs a complete worker as its own
consumer of the group (``<consumer>-a<i>``). The worker process only supervises: it starts
the actors, restarts one that died (its entries are reclaimed like any dead consumer's),
forwards a stop, and adds up their reports (:mod:`.reports`) for metrics, ``/readyz`` and logs.

Why: in task mode every entry passes through the worker process twice (read, pickle, dispatch;
result, settle), and that single-threaded hop is the largest cost on a simple job. Here each
entry crosses no process boundary between Redis and the handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Sequence
from typing import Any

import ray
from attrs import evolve
from redis.asyncio import Redis

from .. import logs
from ..aio import wait_set
from ..registry import Registry
from ..worker import WorkerSettings
from ..worker.events import Events, ExecutorStarted, Listener, Snapshot, StateChanged
from ..worker.health import RedisHealth
from ..worker.heartbeat import Heartbeat
from ..worker.preflight import check_handlers
from ..worker.startup import start_unless_stopped
from ..worker.supervise import Supervisor
from ..worker.tally import Tally
from ..worker.timers import Timers
from .actor import WorkerActor
from .executor import RayExecutor
from .placement import actor_options, asks, cluster_cpus, partition, plan
from .reports import Report, Reports

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
        listeners: Sequence[Listener] = (),
    ) -> None:
        self.registry, self.redis, self.redis_url, self.executor = registry, redis, redis_url, executor
        self.settings = settings or WorkerSettings()
        self.group, self.consumer = registry.group, self.settings.consumer
        self.actors = actors
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
        self._handles: list[Any] = []
        self._asks: list[str] = []  # actor -> what it asks Ray for, and for which streams
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
                self.redis, self.registry.handlers.values(), self.group, self._actor_consumer(0)
            )
            started = await start_unless_stopped(self.executor.start(), asyncio.sleep(0), self._stopping)
            if not started:  # stopped while Ray started: nothing was read
                return
            self.events.emit(ExecutorStarted())
            self.timers.spawn(self.supervisor, self._stopping)
            self._handles = self._start_actors()
            for index, handle in enumerate(self._handles):
                self.supervisor.spawn(f"actor-{index}", functools.partial(self._serve, index, handle))
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
        if self.state == "starting" or not self._handles:
            return [self.consumer]
        return [self._actor_consumer(index) for index in range(len(self._handles))]

    def _start_actors(self) -> list[Any]:
        """The actors of each group of handlers that share their Ray options; see
        :func:`~streamtasks.ray.placement.plan`."""
        handles: list[Any] = []
        for registry, options, count in plan(partition(self.registry), self.actors, cluster_cpus()):
            threads = max(spec.max_in_flight for spec in registry.handlers.values())
            remote = ray.remote(WorkerActor).options(
                max_restarts=-1, max_concurrency=16, **actor_options(options, self.executor.env)
            )
            for _ in range(count):
                self._asks.append(asks(registry, options))
                settings = evolve(self.settings, consumer=self._actor_consumer(len(handles)), timers=False)
                handles.append(remote.remote(registry, self.redis_url, settings, threads, logs.configured()))
        return handles

    def _actor_consumer(self, index: int) -> str:
        """Actor ``index``'s consumer name: each actor is a consumer of its own."""
        return f"{self.consumer}-a{index}"

    async def _serve(self, index: int, handle: Any) -> None:
        if self.stopping:
            return  # an actor that died while draining is not started again
        await handle.run.remote()
        if not self.stopping:
            raise RuntimeError(f"actor {index} stopped serving")

    async def _poll_until_stopped(self) -> None:
        while not self.stopping:
            await self._poll()
            await wait_set(self._stopping, POLL_INTERVAL_S)

    async def _poll(self) -> None:
        reports = await asyncio.gather(*(self._report(i, h) for i, h in enumerate(self._handles)))
        self.reports.take(reports)
        if self.state == "starting":
            self._check_started()

    def _check_started(self) -> None:
        if self.reports.all_reading(len(self._handles)):
            self._set_state("reading")
            self.reading.set()
            streams = ", ".join(self.registry.streams)
            log.info(
                "worker %s reading %s as group %s on %d actors",
                self.consumer,
                streams,
                self.group,
                len(self._handles),
            )
        elif not self._warned and time.time() - self.started_at > PLACE_WARN_S:
            self._warned = True
            waiting = [i for i in range(len(self._handles)) if i not in self.reports.snapshots]
            log.warning(
                "worker %s: actors %s not running after %.0f s (can Ray place them? %s); the "
                "worker is not ready until they are",
                self.consumer,
                ", ".join(map(str, waiting)),
                PLACE_WARN_S,
                "; ".join(self._asks[i] for i in waiting),
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
        )

    async def _drain(self, started: bool) -> None:
        self._stopping.set()
        self._set_state("draining")
        for handle in self._handles:
            with contextlib.suppress(Exception):
                await handle.stop.remote()
        await self.supervisor.wait(self.settings.grace_period + STOP_SLACK_S)  # the actors drain
        await self.supervisor.close()
        if self._handles:  # their last lines are in Ray's log files: let Ray forward them here
            await asyncio.sleep(LOG_FORWARD_S)
        for handle in self._handles:
            with contextlib.suppress(Exception):
                ray.kill(handle)
        if started:
            await self.executor.close()
        self._set_state("stopped")
