"""Workers inside the facade's process (``AsyncProcessingSystem.start_workers``), on one
shared executor (one Ray connection per process), in the mode ``streamtasks worker`` runs:
actor mode (the default) serves the registry on ``n`` Ray actors, each a consumer that reads,
runs and settles its own batches, so the facade's process (an API's) only supervises them;
task mode runs ``n`` :class:`~streamtasks.worker.Worker` here, one Ray task per batch."""

from __future__ import annotations

import asyncio
import logging

from attrs import evolve
from redis.asyncio import Redis

from ..errors import StreamtasksError
from ..logs import redact
from ..registry import Registry
from ..worker import RayExecutor, Worker, WorkerSettings, default_consumer_name
from ..worker.events import Serving

log = logging.getLogger("streamtasks.system")


class LocalWorkers:
    """Start ``n`` consumers, wait until all read (or raise the first one's error), stop them."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.workers: list[tuple[Serving, asyncio.Task[None]]] = []
        self.consumers = 0

    async def start(
        self, registry: Registry, redis: Redis, redis_url: str, executor: RayExecutor, n: int, mode: str
    ) -> None:
        """``n`` consumers of ``registry``: one pool of ``n`` actors (``mode="actors"``; ``n``
        per group of handlers with equal Ray options), or ``n`` task-mode workers. The actors
        connect to Redis themselves, at ``redis_url``."""
        # Ray starts once, here, not in a race between the workers: each worker's own
        # start() then finds it up, and only the last worker to stop shuts it down.
        await executor.start()
        if mode == "actors":
            from ..worker.actors import ActorPool

            settings = evolve(self.settings, consumer=default_consumer_name())
            servers: list[Serving] = [ActorPool(registry, redis, redis_url, executor, settings, actors=n)]
        else:
            servers = [
                Worker(registry, redis, executor, evolve(self.settings, consumer=default_consumer_name()))
                for _ in range(n)
            ]  # each its own name
        self.workers = [(w, asyncio.create_task(w.run())) for w in servers]
        try:
            await asyncio.gather(*(_reading(w, task) for w, task in self.workers))
        except BaseException:
            await self.stop()
            raise
        finally:
            await executor.close()  # our own start's reference
        # n per group of handlers with equal Ray options in actor mode: count what reads
        self.consumers = sum(len(w.heartbeat_consumers()) for w, _ in self.workers)
        kind = "actors" if mode == "actors" else "workers"
        log.info("started %d %s on %s", self.consumers, kind, ", ".join(registry.streams))

    async def stop(self) -> None:
        workers, self.workers, self.consumers = self.workers, [], 0
        for worker, _ in workers:
            worker.stop()
        results = await asyncio.gather(*(task for _, task in workers), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.error("a worker ended with an error: %s", redact(str(result)))


async def _reading(worker: Serving, task: asyncio.Task[None]) -> None:
    """Wait until ``worker`` reads; raise its error if it stopped before that."""
    reading = asyncio.ensure_future(worker.reading.wait())
    await asyncio.wait({reading, task}, return_when=asyncio.FIRST_COMPLETED)
    if not reading.done():
        reading.cancel()
        task.result()  # raises the worker's error
        raise StreamtasksError(f"worker {worker.consumer} stopped before reading")
