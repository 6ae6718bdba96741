"""Actor mode: the data path runs inside long-lived Ray actors, with no driver in between.

Each actor runs a complete :class:`~streamtasks.worker.Worker` (the same read, settle, lease,
reclaim, hand-back and supervision code as task mode) with an :class:`InlineExecutor`, as its
own consumer of the group (``<consumer>-a<i>``): it reads a batch, runs it in its own process
(its resources, e.g. a connection pool, stay warm), and acks or dead-letters it itself. The
worker process only supervises: it starts the actors, restarts one that died (its entries are
reclaimed like any dead consumer's), forwards a stop, and aggregates their snapshots for
metrics, ``/readyz`` and logs.

Why: in task mode every entry passes through the worker process twice (read, pickle, dispatch;
result, settle), and that single-threaded hop is the largest cost on a simple job. Here each
entry crosses no process boundary between Redis and the handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from typing import Any

from attrs import evolve
from redis.asyncio import Redis

from .. import keys, logs
from ..aio import wait_set
from ..connect import connect
from ..redisutil import REDIS_DOWN
from ..registry import Registry
from .events import Event, Events, ExecutorStarted, LaneSnapshot, Listener, Snapshot, StateChanged, Totals
from .executors import InlineExecutor, RayExecutor, RayResources
from .health import OutageFold, RedisHealth
from .preflight import check_handlers
from .startup import freeze_after_start, start_unless_stopped
from .supervise import Supervisor
from .tally import Tally, growth
from .worker import Worker, WorkerSettings

log = logging.getLogger("streamtasks.worker")

#: Seconds between two polls of the actors' snapshots.
POLL_INTERVAL_S = 1.0
#: Seconds after which actors Ray has not started are logged (the worker is not ready meanwhile).
PLACE_WARN_S = 30.0
#: The actor options that decide where (and whether) Ray can place it.
PLACED_BY = ("num_cpus", "num_gpus", "memory", "resources", "accelerator_type")
#: Seconds past the grace period the worker waits for its actors to drain before killing them.
STOP_SLACK_S = 15.0
#: Seconds a stopping worker waits, once its actors drained, before it kills them and shuts
#: Ray down: their log lines reach this process' stderr through Ray's log monitor, which polls
#: their log files every 0.1 s; lines still on the way when Ray shuts down stay in Ray's logs.
LOG_FORWARD_S = 0.5


class WorkerActor:
    """The Ray actor: one :class:`Worker` with an inline executor (an async actor, so ``stop``
    and ``snapshot`` run while ``run`` serves)."""

    def __init__(
        self, registry: Registry, redis_url: str, settings: WorkerSettings, threads: int,
        log: tuple[str | int, str] = ("INFO", "text"),
    ) -> None:  # fmt: skip
        logs.configure(*log)  # the worker process' level and format (text or JSON lines)
        self.registry = registry
        self.redis_url = redis_url
        self.settings = settings
        self.threads = threads
        self.worker: Worker | None = None
        self._stopped = False
        self.tally = Tally(uuid.uuid4().hex)  # a new incarnation when Ray restarts the actor

    async def run(self) -> None:
        redis = await self._connect()
        if redis is None:
            return  # stopped before Redis answered
        try:
            executor = InlineExecutor(self.threads, RayResources())  # it runs inside Ray
            listeners: list[Listener] = [self.tally, freeze_after_start]  # this process is ours
            self.worker = Worker(self.registry, redis, executor, self.settings, listeners=listeners)
            self.worker.health.quiet = True  # the worker process logs outages once for all actors
            if self._stopped:  # a stop that came while this actor connected: read nothing
                self.worker.stop()
            await self.worker.run()
        finally:
            await redis.aclose()

    async def _connect(self) -> Redis | None:
        """One node or a Redis Cluster, as the worker's; an actor (re)started while Redis is
        down waits for it with the worker's backoff, an outage like any other."""
        health = RedisHealth(self.tally)
        health.quiet = True
        while not self._stopped:
            try:
                redis = await connect(self.redis_url)
            except REDIS_DOWN as exc:  # the worker's own test of "Redis can't answer now"
                await health.failed(exc, "connecting")
                continue
            health.ok()
            return redis
        return None

    async def stop(self) -> None:
        self._stopped = True
        if self.worker is not None:
            self.worker.stop()

    async def report(self) -> tuple[Snapshot | None, Tally]:
        """The worker's snapshot (None before it exists: Redis did not answer yet) and the
        tally of its settled batches (metrics) and Redis outages (logs)."""
        return None if self.worker is None else self.worker.snapshot(), self.tally


class ActorPool:
    """Serves a registry on ``actors`` Ray actors; the same face as :class:`Worker` for the CLI,
    metrics and ``/readyz`` (``run``, ``stop``, ``snapshot``, ``events``, ``reading``)."""

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
        self.events = Events()
        for listener in listeners:
            self.events.subscribe(listener)
        self.supervisor = Supervisor(self.events.emit)
        self.outages = OutageFold(self.events.emit)
        self.started_at = time.time()
        self.state = "starting"
        self.reading = asyncio.Event()
        self._stopping = asyncio.Event()
        self.changed = asyncio.Event()  # a new state, or a stop
        self._handles: list[Any] = []
        self._snapshots: dict[int, Snapshot] = {}
        self._tallies: dict[int, Tally] = {}  # actor -> its tally as last reported
        self._asks: list[str] = []  # actor -> what it asks Ray for, and for which streams
        self._warned = False

    def stop(self) -> None:
        self._stopping.set()
        self.changed.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> None:
        self.supervisor.spawn("heartbeat", lambda: announce_starting(self))  # status sees it at once
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
            self._handles = self._start_actors()
            for index, handle in enumerate(self._handles):
                self.supervisor.spawn(f"actor-{index}", self._serve(index, handle))
            await self._poll_until_stopped()
        finally:
            await self._drain(started)

    def heartbeat_consumers(self) -> list[str]:
        """This process' own heartbeat while it starts, then its actors' (each writes its own)."""
        if self.state == "starting" or not self._handles:
            return [self.consumer]
        return [self._actor_consumer(index) for index in range(len(self._handles))]

    def _start_actors(self) -> list[Any]:
        """The actors of each group of handlers that share their Ray options (an actor runs in
        one process: its handlers share its resources and runtime environment); see
        :func:`plan`."""
        import ray

        handles: list[Any] = []
        for registry, options, count in plan(partition(self.registry), self.actors, _cluster_cpus()):
            threads = max(spec.max_in_flight for spec in registry.handlers.values())
            remote = ray.remote(WorkerActor).options(
                max_restarts=-1, max_concurrency=16, **actor_options(options, self.executor.env)
            )
            asked = [f"{k}={options[k]}" for k in PLACED_BY if k in options]  # not runtime_env: secrets
            ask = f"{', '.join(registry.streams)} asks for {', '.join(asked) or 'a node with a CPU'}"
            for _ in range(count):
                self._asks.append(ask)
                settings = self._actor_settings(len(handles))
                handles.append(remote.remote(registry, self.redis_url, settings, threads, logs.configured()))
        return handles

    def _actor_settings(self, index: int) -> WorkerSettings:
        return evolve(self.settings, consumer=self._actor_consumer(index))

    def _actor_consumer(self, index: int) -> str:
        """Actor ``index``'s consumer name: each actor is a consumer of its own."""
        return f"{self.consumer}-a{index}"

    def _serve(self, index: int, handle: Any) -> Any:
        async def serve() -> None:
            if self.stopping:
                return  # an actor that died while draining is not started again
            await handle.run.remote()
            if not self.stopping:
                raise RuntimeError(f"actor {index} stopped serving")

        return serve

    async def _poll_until_stopped(self) -> None:
        while not self.stopping:
            await self._poll()
            await wait_set(self._stopping, POLL_INTERVAL_S)

    async def _poll(self) -> None:
        reports = await asyncio.gather(*(self._report(i, h) for i, h in enumerate(self._handles)))
        outages: list[tuple[float, int, Event]] = []
        for index, report in enumerate(reports):
            if report is not None:
                snapshot, tally = report
                if snapshot is not None:
                    self._snapshots[index] = snapshot
                before = self._tallies.get(index)
                if before is not None and before.incarnation != tally.incarnation:
                    self.outages.forget(index, time.time())  # restarted: its outage ended with it
                outages += [(at, index, event) for at, event in tally.outages_since(before)]
                for grown in growth(before, tally):
                    self.events.emit(Totals(grown))
                self._tallies[index] = tally
        for at, index, event in sorted(outages, key=lambda o: o[0]):  # the actors' in time order
            self.outages.see(index, at, event)
        self.outages.tick(time.time())
        if self.state != "starting":
            return
        if len(self._snapshots) == len(self._handles) and all(
            s.state == "reading" for s in self._snapshots.values()
        ):
            self._set_state("reading")
            self.reading.set()
            log.info(
                "worker %s reading %s as group %s on %d actors",
                self.consumer, ", ".join(self.registry.streams), self.group, len(self._handles),
            )  # fmt: skip
        elif not self._warned and time.time() - self.started_at > PLACE_WARN_S:
            self._warned = True
            waiting = [i for i in range(len(self._handles)) if i not in self._snapshots]
            log.warning(
                "worker %s: actors %s not running after %.0f s (can Ray place them? %s); the "
                "worker is not ready until they are",
                self.consumer, ", ".join(map(str, waiting)), PLACE_WARN_S,
                "; ".join(self._asks[i] for i in waiting),
            )  # fmt: skip

    async def _report(self, index: int, handle: Any) -> tuple[Snapshot | None, Tally] | None:
        try:
            report: tuple[Snapshot | None, Tally] = await asyncio.wait_for(
                handle.report.remote(), POLL_INTERVAL_S * 5
            )
            return report
        except Exception as exc:  # a dead, restarting or unplaced actor: its loop reports it
            log.debug("report of actor %d failed: %s", index, exc)
            return None

    def _set_state(self, state: str) -> None:
        self.state = state
        self.changed.set()
        self.events.emit(StateChanged(state))

    def snapshot(self) -> Snapshot:
        snaps = list(self._snapshots.values())
        lanes = {
            name: _sum_lanes(name, spec.name, [s.lanes[name] for s in snaps if name in s.lanes])
            for name, spec in self.registry.handlers.items()
        }
        failing = dict(self.supervisor.failing)
        for index, snap in self._snapshots.items():
            failing.update({f"actor-{index}:{loop}": error for loop, error in snap.failing_loops.items()})
        down = [s.redis_down_since for s in snaps if s.redis_down_since is not None]
        return Snapshot(
            consumer=self.consumer, group=self.group, state=self.state, started_at=self.started_at,
            lanes=lanes, redis_down_since=min(down) if down else None, failing_loops=failing,
        )  # fmt: skip

    async def _drain(self, started: bool) -> None:
        import ray

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


async def announce_starting(pool: ActorPool) -> None:
    """While Ray starts and the actors are placed, the worker process announces itself in a
    heartbeat of its own (state ``starting``), so ``status`` and the dashboard see it; once the
    actors read (each announces itself) or a stop comes first, that heartbeat is deleted."""
    key = keys.heartbeat_key(pool.group, pool.consumer)
    host, pid = socket.gethostname(), os.getpid()
    try:
        while pool.state == "starting" and not pool.stopping:
            body = pool.snapshot().heartbeat(host, pid, time.time())
            with contextlib.suppress(*REDIS_DOWN):  # the actors report outages
                await pool.redis.set(key, json.dumps(body), ex=max(1, int(pool.settings.heartbeat_ttl)))
            pool.supervisor.healthy("heartbeat")
            await wait_set(pool.changed, pool.settings.heartbeat_interval)  # reading, or a stop: at once
            pool.changed.clear()
    finally:
        with contextlib.suppress(*REDIS_DOWN):
            await pool.redis.delete(key)


def partition(registry: Registry) -> list[tuple[Registry, dict[str, Any]]]:
    """The registry split into groups of handlers with equal Ray options."""
    groups: dict[str, tuple[list[str], dict[str, Any]]] = {}
    for stream, spec in registry.handlers.items():
        options = dict(spec.ray_options)
        groups.setdefault(repr(sorted(options.items())), ([], options))[0].append(stream)
    return [(registry.only(streams), options) for streams, options in groups.values()]


def plan(
    groups: list[tuple[Registry, dict[str, Any]]], per_group: int | None, cpus: float
) -> list[tuple[Registry, dict[str, Any], int]]:
    """How many actors each group gets, and their Ray options. ``per_group`` (``--actors``) is
    taken as asked; by default the cluster's CPUs are shared out, at least one actor per group.

    An actor reserves what its handlers ask for and nothing more: without ``num_cpus`` it takes
    Ray's default for actors (a node with a CPU to be placed, none held while it runs), so any
    number of workers' actors fit beside each other, as task mode's workers share a cluster.
    Unless the handlers choose a ``scheduling_strategy``, the actors are spread over the nodes."""
    counts = [per_group or max(1, int(cpus) // len(groups)) for _ in groups]
    return [
        (registry, {"scheduling_strategy": "SPREAD", **options}, count)
        for (registry, options), count in zip(groups, counts, strict=True)
    ]


def actor_options(ray_options: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """A handler's Ray task options as actor options: ``max_retries`` does not apply (an actor
    is restarted instead), and the worker's forwarded environment joins ``runtime_env``."""
    options = {k: v for k, v in ray_options.items() if k != "max_retries"}
    if env:
        runtime_env = dict(options.get("runtime_env") or {})
        runtime_env["env_vars"] = {**env, **dict(runtime_env.get("env_vars") or {})}
        options["runtime_env"] = runtime_env
    return options


def _sum_lanes(stream: str, handler: str, lanes: list[LaneSnapshot]) -> LaneSnapshot:
    def total(attr: str) -> int:
        return sum(getattr(lane, attr) for lane in lanes)

    return LaneSnapshot(
        stream=stream, handler=handler, in_flight=total("in_flight"), queued=total("queued"),
        held=total("held"), handled=total("handled"), retried=total("retried"), dead=total("dead"),
        reclaimed=total("reclaimed"), lost=total("lost"),
    )  # fmt: skip


def _cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 1))  # type: ignore[no-untyped-call]
