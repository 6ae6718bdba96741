"""Executors: where a batch runs. The :class:`Executor` protocol is the seam between the
pipeline and the engine: :class:`InlineExecutor` runs a batch in a thread of this process
(development, tests, and each Ray actor of actor mode); :class:`streamtasks.ray.RayExecutor`
runs ONE Ray task per batch (task mode). The worker package imports no Ray.

Ray's own task retries are only for a worker process that died (``retry_exceptions`` stays
off); the handler's retries are counted by streamtasks alone, from Redis' delivery counter.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Mapping, Sequence
from typing import Protocol

from ..registry import HandlerSpec
from .run import BatchResult, RawEntry, run_batch

#: Threads of the inline executor: batches of different handlers run side by side.
INLINE_THREADS = 4


class Cluster(Protocol):
    """The engine batches run on, as monitoring sees it (a Ray cluster:
    :class:`streamtasks.ray.probe.RayProbe`). Both calls may block: call them in a thread."""

    def connected(self) -> bool:
        """True while this process is connected to the engine."""
        ...

    def resources(self) -> Mapping[str, Mapping[str, float]] | None:
        """``{"total": {name: amount}, "available": {...}}``; None when it cannot tell."""
        ...


class Executor(Protocol):
    """Where batches run. Several workers may share one: each calls :meth:`start` once and
    :meth:`close` once, and the executor releases its resources when the last one closes.
    ``cluster`` is what the batches run on, for monitoring (None: this process only)."""

    @property
    def cluster(self) -> Cluster | None: ...

    async def start(self) -> None: ...
    def submit(self, spec: HandlerSpec, entries: Sequence[RawEntry]) -> Awaitable[BatchResult]: ...
    def cancel(self, pending: Awaitable[BatchResult]) -> None: ...
    async def close(self) -> None: ...


class InlineExecutor:
    """Runs batches in a thread pool of this process (development, tests, a Ray actor's own
    batches: ``cluster`` is then the Ray cluster the actor runs in)."""

    def __init__(self, threads: int = INLINE_THREADS, cluster: Cluster | None = None) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="streamtasks-inline")
        self._users = 0
        self.cluster = cluster

    async def start(self) -> None:
        self._users += 1

    def submit(self, spec: HandlerSpec, entries: Sequence[RawEntry]) -> Awaitable[BatchResult]:
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._pool, run_batch, spec, list(entries))

    def cancel(self, pending: Awaitable[BatchResult]) -> None:
        return None  # a thread cannot be stopped; the batch finishes and is settled

    async def close(self) -> None:
        self._users -= 1
        if self._users <= 0:
            self._pool.shutdown(wait=False, cancel_futures=True)
