"""Workers inside the facade's process (``AsyncProcessingSystem.start_workers``): several
:class:`~streamtasks.worker.Worker` on one shared executor (one Ray connection per process)."""

from __future__ import annotations

import asyncio
import logging

from attrs import evolve
from redis.asyncio import Redis

from ..errors import StreamtasksError
from ..logs import redact
from ..registry import Registry
from ..worker import Executor, Worker, WorkerSettings, default_consumer_name

log = logging.getLogger("streamtasks.system")


class LocalWorkers:
    """Start ``n`` workers, wait until all read (or raise the first one's error), stop them."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.workers: list[tuple[Worker, asyncio.Task[None]]] = []

    async def start(self, registry: Registry, redis: Redis, executor: Executor, n: int) -> None:
        # Ray starts once, here, not in a race between the workers: each worker's own
        # start() then finds it up, and only the last worker to stop shuts it down.
        await executor.start()
        for _ in range(n):
            settings = evolve(self.settings, consumer=default_consumer_name())  # each its own name
            worker = Worker(registry, redis, executor, settings)
            self.workers.append((worker, asyncio.create_task(worker.run())))
        try:
            await asyncio.gather(*(_reading(w, task) for w, task in self.workers))
        except BaseException:
            await self.stop()
            raise
        finally:
            await executor.close()  # our own start's reference
        log.info("started %d worker(s) on %s", len(self.workers), ", ".join(registry.streams))

    async def stop(self) -> None:
        workers, self.workers = self.workers, []
        for worker, _ in workers:
            worker.stop()
        results = await asyncio.gather(*(task for _, task in workers), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.error("a worker ended with an error: %s", redact(str(result)))


async def _reading(worker: Worker, task: asyncio.Task[None]) -> None:
    """Wait until ``worker`` reads; raise its error if it stopped before that."""
    reading = asyncio.ensure_future(worker.reading.wait())
    await asyncio.wait({reading, task}, return_when=asyncio.FIRST_COMPLETED)
    if not reading.done():
        reading.cancel()
        task.result()  # raises the worker's error
        raise StreamtasksError(f"worker {worker.consumer} stopped before reading")
