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
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

from attrs import evolve
from redis.asyncio import Redis

from ..connect import connect
from ..registry import Registry
from .events import Events, LaneSnapshot, Listener, Snapshot, StateChanged, Totals
from .executors import InlineExecutor, RayExecutor
from .supervise import Supervisor
from .tally import Tally, growth
from .worker import Worker, WorkerSettings

log = logging.getLogger("streamtasks.worker")

#: Seconds between two polls of the actors' snapshots.
POLL_INTERVAL_S = 1.0
#: Seconds past the grace period the worker waits for its actors to drain before killing them.
STOP_SLACK_S = 15.0


class WorkerActor:
    """The Ray actor: one :class:`Worker` with an inline executor (an async actor, so ``stop``
    and ``snapshot`` run while ``run`` serves)."""

    def __init__(self, registry: Registry, redis_url: str, settings: WorkerSettings, threads: int) -> None:
        self.registry = registry
        self.redis_url = redis_url
        self.settings = settings
        self.threads = threads
        self.worker: Worker | None = None
        self.tally = Tally(uuid.uuid4().hex)  # a new incarnation when Ray restarts the actor

    async def run(self) -> None:
        redis = await connect(self.redis_url)  # one node or a Redis Cluster, as the worker's
        try:
            executor = InlineExecutor(self.threads)
            self.worker = Worker(self.registry, redis, executor, self.settings, listeners=[self.tally])
            await self.worker.run()
        finally:
            await redis.aclose()

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()

    async def report(self) -> tuple[Snapshot, Tally] | None:
        """The worker's snapshot and the tally of its settled batches (metrics)."""
        return None if self.worker is None else (self.worker.snapshot(), self.tally)


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
        self.started_at = time.time()
        self.state = "starting"
        self.reading = asyncio.Event()
        self._stopping = asyncio.Event()
        self._handles: list[Any] = []
        self._snapshots: dict[int, Snapshot] = {}
        self._tallies: dict[int, Tally] = {}  # actor -> its tally as last reported

    def stop(self) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> None:
        await self.executor.start()
        try:
            self._handles = self._start_actors(self.actors or _cluster_cpus())
            for index, handle in enumerate(self._handles):
                self.supervisor.spawn(f"actor-{index}", self._serve(index, handle))
            await self._poll_until_stopped()
        finally:
            await self._drain()

    def _start_actors(self, count: int) -> list[Any]:
        """``count`` actors for each group of handlers that share their Ray options (an actor
        runs in one process: its handlers share its resources and runtime environment)."""
        import ray

        handles: list[Any] = []
        for registry, ray_options in partition(self.registry):
            threads = max(spec.max_in_flight for spec in registry.handlers.values())
            options = {"num_cpus": 1, **actor_options(ray_options, self.executor.env)}
            remote = ray.remote(WorkerActor).options(max_restarts=-1, max_concurrency=16, **options)
            for _ in range(count):
                settings = self._actor_settings(len(handles))
                handles.append(remote.remote(registry, self.redis_url, settings, threads))
        return handles

    def _actor_settings(self, index: int) -> WorkerSettings:
        return evolve(self.settings, consumer=f"{self.consumer}-a{index}")

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
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), POLL_INTERVAL_S)

    async def _poll(self) -> None:
        for index, handle in enumerate(self._handles):
            try:
                report = await asyncio.wait_for(handle.report.remote(), POLL_INTERVAL_S * 5)
            except Exception as exc:  # a dead or restarting actor: its loop reports it
                log.debug("report of actor %d failed: %s", index, exc)
                continue
            if report is not None:
                self._snapshots[index], tally = report
                for grown in growth(self._tallies.get(index), tally):
                    self.events.emit(Totals(grown))
                self._tallies[index] = tally
        if (
            self.state == "starting"
            and self._snapshots
            and all(s.state == "reading" for s in self._snapshots.values())
        ):
            self._set_state("reading")
            self.reading.set()
            log.info(
                "worker %s reading %s as group %s on %d actors",
                self.consumer, ", ".join(self.registry.streams), self.group, len(self._handles),
            )  # fmt: skip

    def _set_state(self, state: str) -> None:
        self.state = state
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

    async def _drain(self) -> None:
        import ray

        self._stopping.set()
        self._set_state("draining")
        for handle in self._handles:
            with contextlib.suppress(Exception):
                await handle.stop.remote()
        await self.supervisor.wait(self.settings.grace_period + STOP_SLACK_S)  # the actors drain
        await self.supervisor.close()
        for handle in self._handles:
            with contextlib.suppress(Exception):
                ray.kill(handle)
        await self.executor.close()
        self._set_state("stopped")


def partition(registry: Registry) -> list[tuple[Registry, dict[str, Any]]]:
    """The registry split into groups of handlers with equal Ray options."""
    groups: dict[str, tuple[list[str], dict[str, Any]]] = {}
    for stream, spec in registry.handlers.items():
        options = dict(spec.ray_options)
        groups.setdefault(repr(sorted(options.items())), ([], options))[0].append(stream)
    return [(registry.only(streams), options) for streams, options in groups.values()]


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


def _cluster_cpus() -> int:
    import ray

    cpus = ray.cluster_resources().get("CPU", 1)  # type: ignore[no-untyped-call]
    return max(1, int(cpus))
