"""Workers inside the facade's process (``AsyncProcessingSystem.start_workers``), built by
:mod:`streamtasks.serve` on one shared executor (one Ray connection per process), in the mode
``streamtasks worker`` runs: actor mode (the default) serves the registry on ``n`` Ray actors,
each a consumer that reads, runs and settles its own batches, so the facade's process (an
API's) only supervises them; task mode runs ``n`` workers here, one Ray task per batch."""

from __future__ import annotations

import asyncio
import logging

from attrs import evolve
from redis.asyncio import Redis

from ..errors import StreamtasksError
from ..logs import redact
from ..registry import Registry
from ..serve import RayConfig, ServeConfig, build, make_executor
from ..worker import WorkerSettings, default_consumer_name
from ..worker.events import Serving
from ..worker.executors import Cluster
from .config import ConsumerConfig

log = logging.getLogger("streamtasks.system")


class LocalWorkers:
    """Start ``n`` consumers, wait until all read (or raise the first one's error), stop them."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.workers: list[tuple[Serving, asyncio.Task[None]]] = []
        self.consumers = 0
        #: What the workers run on (Ray), once started: the facade's status reports it.
        self.cluster: Cluster | None = None

    async def start(
        self, registry: Registry, redis: Redis, redis_url: str, ray: RayConfig, consumer: ConsumerConfig
    ) -> None:
        """``consumer.num_workers`` consumers of ``registry`` (``n``): one pool of ``n`` actors
        (actor mode; ``n`` per group of handlers with equal Ray options; with
        ``consumer.autoscale``, as many as the backlog needs instead), or ``n`` task-mode
        workers. The actors connect to Redis themselves, at ``redis_url``."""
        n, mode, autoscale = consumer.num_workers, consumer.mode, consumer.autoscale
        settings = evolve(self.settings, consumer=default_consumer_name())
        fixed = n if mode == "actors" and autoscale is None else None
        config = ServeConfig(
            mode=mode, actors=fixed, autoscale=autoscale, workers=n, ray=ray, settings=settings
        )
        executor = make_executor(registry, config)
        # Ray starts once, here, not in a race between the workers: each worker's own
        # start() then finds it up, and only the last worker to stop shuts it down.
        await executor.start()
        self.cluster = executor.cluster
        self.workers = [
            (w, asyncio.create_task(w.run())) for w in build(registry, redis, redis_url, config, executor)
        ]
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
