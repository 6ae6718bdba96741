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
from ..resources import adopt_process_loop
from .run import BatchResult, RawEntry, run_batch, run_batch_async

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
    batches: ``cluster`` is then the Ray cluster the actor runs in).

    ``adopt_loop``: the loop that starts it, which must run as long as the process does (a
    Ray actor's), becomes the process loop (:func:`~streamtasks.resources.adopt_process_loop`),
    and batches of async handlers run on it as tasks: no pool thread and no second loop
    between the read and the handler, and a batch that times out is cancelled. Sync
    handlers still run in the pool, so they never block the loop."""

    def __init__(
        self, threads: int = INLINE_THREADS, cluster: Cluster | None = None, adopt_loop: bool = False
    ) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="streamtasks-inline")
        self._users = 0
        self._adopt = adopt_loop
        self._on_process_loop = False  # async batches run as tasks on the loop (start)
        self.cluster = cluster

    async def start(self) -> None:
        self._users += 1
        if self._adopt:
            self._on_process_loop = adopt_process_loop(asyncio.get_running_loop())

    def submit(self, spec: HandlerSpec, entries: Sequence[RawEntry]) -> Awaitable[BatchResult]:
        if spec.is_async and self._on_process_loop:
            return asyncio.ensure_future(run_batch_async(spec, entries))
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._pool, run_batch, spec, list(entries))

    def cancel(self, pending: Awaitable[BatchResult]) -> None:
        if isinstance(pending, asyncio.Task):
            pending.cancel()  # an async batch on this loop stops at its next await
        # a thread cannot be stopped: its batch finishes, and its outcome is not used

    async def close(self) -> None:
        self._users -= 1
        if self._users <= 0:
            self._pool.shutdown(wait=False, cancel_futures=True)
