"""Task mode's executor: ONE Ray task per batch (:class:`RayExecutor`).

Ray's own task retries are only for a worker process that died (``retry_exceptions`` stays
off); the handler's retries are counted by streamtasks alone, from Redis' delivery counter.
"""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

import ray

from ..config import RAY_START_TIMEOUT_S
from ..registry import HandlerSpec
from ..worker.run import BatchResult, RawEntry, run_packed_batch
from .probe import RayProbe
from .start import RayThread, start_ray

#: Ray's retries of a task whose worker *process* died (not of handler errors).
RAY_PROCESS_RETRIES = 3


class RayExecutor:
    """ONE Ray task per batch. Starts a local Ray unless ``address`` names a cluster (see
    :func:`~streamtasks.ray.start.start_ray`); starting or joining takes at most
    ``start_timeout`` seconds, else a one-line error.

    ``env`` is set in the tasks' processes (Ray ``runtime_env``): on a cluster, the nodes do
    not share the worker's environment, so the handlers' configuration travels this way
    (:meth:`~streamtasks.Registry.forwarded_env` says which variables).
    """

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        *,
        env: Mapping[str, str] | None = None,
        process_retries: int = RAY_PROCESS_RETRIES,
        start_timeout: float = RAY_START_TIMEOUT_S,
    ) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.env = dict(env or {})
        self.process_retries = process_retries
        self.start_timeout = start_timeout
        self.cluster = RayProbe()
        self._remote: dict[str, Any] = {}
        self._owns_ray = False  # True when start() called ray.init (a Ray already up is left alone)
        self._users = 0
        self._lock = asyncio.Lock()
        self._thread = RayThread()

    async def start(self) -> None:
        async with self._lock:  # workers sharing this executor start Ray once, not in a race
            self._users += 1
            if not ray.is_initialized():
                await start_ray(self._thread, self.address, self.num_cpus, self.start_timeout)
                self._owns_ray = True  # our driver connection: closed by close()

    def _task(self, spec: HandlerSpec) -> Any:
        remote = self._remote.get(spec.stream)
        if remote is None:
            options: dict[str, Any] = {"num_cpus": 1, "max_retries": self.process_retries}
            if self.env:
                options["runtime_env"] = {"env_vars": self.env}
            options.update(spec.ray_options)
            options["retry_exceptions"] = False  # handler errors are outcomes, not Ray retries
            remote = ray.remote(run_packed_batch).options(name=f"streamtasks:{spec.stream}", **options)
            self._remote[spec.stream] = remote
        return remote

    def submit(self, spec: HandlerSpec, entries: Sequence[RawEntry]) -> Awaitable[BatchResult]:
        # One bytes argument instead of a list of tuples: Ray's serializer walks containers
        # entry by entry (msgpack with an extension per tuple), ~5x slower than this.
        packed = pickle.dumps(list(entries), protocol=pickle.HIGHEST_PROTOCOL)
        ref = self._task(spec).remote(spec, packed)
        return _RayPending(ref)

    def cancel(self, pending: Awaitable[BatchResult]) -> None:
        if isinstance(pending, _RayPending):
            ray.cancel(pending.ref, force=True)

    async def close(self) -> None:
        self._users -= 1
        if self._users <= 0 and self._owns_ray and ray.is_initialized():
            await self._thread.call(ray.shutdown)


class _RayPending:
    """An awaitable Ray result that remembers its ObjectRef (so it can be cancelled)."""

    def __init__(self, ref: Any) -> None:
        self.ref = ref

    def __await__(self) -> Any:
        return self.ref.__await__()
