"""The Ray actor of actor mode: one complete :class:`~streamtasks.worker.Worker` (the same
read, settle, lease, reclaim, hand-back and supervision code as task mode) with an
:class:`~streamtasks.worker.executors.InlineExecutor`, as its own consumer of the group: it
reads a batch, runs it in its own process (its resources, e.g. a connection pool, stay warm),
and acks or dead-letters it itself."""

from __future__ import annotations

import asyncio
import uuid

from redis.asyncio import Redis

from .. import logs
from ..connect import connect
from ..redisutil import REDIS_DOWN
from ..registry import Registry
from ..worker import InlineExecutor, Worker, WorkerSettings
from ..worker.events import Listener, Snapshot
from ..worker.health import RedisHealth
from ..worker.startup import freeze_after_start
from ..worker.tally import Tally
from .deaths import Identity, identity_here
from .probe import RayProbe


class WorkerActor:
    """One :class:`Worker` with an inline executor (an async actor, so ``stop`` and ``report``
    run while ``run`` serves)."""

    def __init__(
        self,
        registry: Registry,
        redis_url: str,
        settings: WorkerSettings,
        threads: int,
        log: tuple[str | int, str] = ("INFO", "text"),
    ) -> None:
        logs.configure(*log)  # the worker process' level and format (text or JSON lines)
        self.registry = registry
        self.redis_url = redis_url
        self.settings = settings
        self.threads = threads
        self.worker: Worker | None = None
        self._stopped = False
        self.tally = Tally(uuid.uuid4().hex)  # a new incarnation when Ray restarts the actor
        self._running: asyncio.Task[None] | None = None

    async def identity(self) -> Identity:
        """This incarnation's process and node (the pool asks before it lets it read)."""
        return identity_here()

    async def run(self) -> None:
        """Serve until stopped. A second call while serving (the caller's connection broke
        and it asks again) joins the first: one worker per actor, whatever the calls; a call
        after the worker ended (its start failed) starts a new one."""
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._run())
        await asyncio.shield(self._running)

    async def reclaim_now(self) -> None:
        """Look for claimable entries now (another actor's were just handed over)."""
        if self.worker is not None:
            self.worker.reclaim_soon()

    async def _run(self) -> None:
        redis = await self._connect()
        if redis is None:
            return  # stopped before Redis answered
        try:
            # Ray runs an async actor's methods on one loop for the actor's life: async
            # handlers and their resources run on it too, beside the worker's reads.
            executor = InlineExecutor(self.threads, RayProbe(), adopt_loop=True)
            listeners: list[Listener] = [freeze_after_start]  # this process is ours
            self.worker = Worker(
                self.registry, redis, executor, self.settings, listeners=listeners, tally=self.tally
            )
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
        """The worker's snapshot (None before it exists: Redis did not answer yet) and its
        tally: every count (metrics, status) and its Redis outages (logs)."""
        return None if self.worker is None else self.worker.snapshot(), self.tally
