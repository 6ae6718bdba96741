"""Executors: where a batch runs. :class:`RayExecutor` runs ONE Ray task per batch;
:class:`InlineExecutor` runs it in a thread of this process (development and tests).

Ray's own task retries are only for a worker process that died (``retry_exceptions`` stays
off); the handler's retries are counted by streamtasks alone, from Redis' delivery counter.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import pickle
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from ..errors import StreamtasksError
from ..registry import HandlerSpec
from .run import BatchResult, RawEntry, run_batch, run_packed_batch

log = logging.getLogger("streamtasks.worker")

#: Threads of the inline executor: batches of different handlers run side by side.
INLINE_THREADS = 4
#: Ray's retries of a task whose worker *process* died (not of handler errors).
RAY_PROCESS_RETRIES = 3
#: Seconds Ray may take to start (or to join a cluster) before the worker gives up.
RAY_START_TIMEOUT_S = 60.0
#: Seconds between two questions to Ray about its resources (for the heartbeat).
RESOURCES_EVERY_S = 10.0


class Executor(Protocol):
    """Where batches run. Several workers may share one: each calls :meth:`start` once and
    :meth:`close` once, and the executor releases its resources when the last one closes."""

    async def start(self) -> None: ...
    def submit(self, spec: HandlerSpec, entries: Sequence[RawEntry]) -> Awaitable[BatchResult]: ...
    def cancel(self, pending: Awaitable[BatchResult]) -> None: ...
    async def close(self) -> None: ...


class InlineExecutor:
    """Runs batches in a thread pool of this process: for development and tests."""

    def __init__(self, threads: int = INLINE_THREADS, resources: RayResources | None = None) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="streamtasks-inline")
        self._users = 0
        self.resources = resources  # an actor's: Ray's resources for its heartbeat

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


class RayExecutor:
    """ONE Ray task per batch. Starts a local Ray unless ``address`` names a cluster.

    Without ``address`` the local Ray is always a new one (``ray.init(address="local")``):
    never a cluster recorded by an earlier ``ray start`` (whose processes may be long dead)
    and never ``RAY_ADDRESS``. Joining a cluster picks up its token (``RAY_AUTH_TOKEN``, or
    the token file ``~/.ray/auth_token``) and turns on token authentication by itself.
    Starting or joining takes at most ``start_timeout`` seconds, else one-line error.

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
        self._remote: dict[str, Any] = {}
        self._owns_ray = False  # True when start() called ray.init (a Ray already up is left alone)
        self._users = 0
        self._lock = asyncio.Lock()
        self._thread = _RayThread()
        #: Ray's resources for the heartbeat, which calls ``executor.resources()`` if it has one.
        self.resources = RayResources()

    async def start(self) -> None:
        import ray

        async with self._lock:  # workers sharing this executor start Ray once, not in a race
            self._users += 1
            if not ray.is_initialized():
                await self._start_ray()

    async def _start_ray(self) -> None:
        where = f"join Ray at {self.address}" if self.address else "start a local Ray"
        try:
            await asyncio.wait_for(self._thread.call(self._init_ray), self.start_timeout)
        except asyncio.TimeoutError:
            raise StreamtasksError(
                f"cannot {where}: no answer within {self.start_timeout:.0f}s (--ray-start-timeout)"
            ) from None
        except Exception as exc:  # ConnectionError, RuntimeError, ValueError from ray.init
            message = " ".join(f"{type(exc).__name__}: {exc}".split())
            raise StreamtasksError(f"cannot {where}: {message}") from None

    def _init_ray(self) -> None:
        import ray

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        _quiet_sigterm_warning()
        if self.address:
            _token_auth_if_token_available()
            _refused_by(self.address)
            ray.init(address=self.address, log_to_driver=True, logging_level=logging.WARNING)
        else:
            _quiet_token_auth_warning()
            ray.init(
                address="local",  # a new Ray: not one recorded by `ray start`, not RAY_ADDRESS
                num_cpus=self.num_cpus,
                include_dashboard=False,
                log_to_driver=True,
                logging_level=logging.WARNING,
            )
            log.info("started a local Ray (token authentication %s)", _token_auth_state())
        self._owns_ray = True  # our driver connection: closed by close(); a joined cluster stays

    def _task(self, spec: HandlerSpec) -> Any:
        remote = self._remote.get(spec.stream)
        if remote is None:
            import ray

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
        import ray

        if isinstance(pending, _RayPending):
            ray.cancel(pending.ref, force=True)

    async def close(self) -> None:
        import ray

        self._users -= 1
        if self._users <= 0 and self._owns_ray and ray.is_initialized():
            await self._thread.call(ray.shutdown)


#: What ``ray.init`` logs when it is called outside the main thread, as here (see
#: :class:`_RayThread`): it then leaves SIGTERM alone, which is what a worker wants (the worker
#: command handles SIGTERM itself; a host process of ``start_workers()`` keeps its own).
SIGTERM_NOT_SET = "SIGTERM handler is not set because current thread is not the main thread."


def _drop_sigterm_warning(record: logging.LogRecord) -> bool:
    return record.getMessage() != SIGTERM_NOT_SET


def _quiet_sigterm_warning() -> None:
    """Keep Ray's :data:`SIGTERM_NOT_SET` warning out of the logs (once per process): every
    worker's start printed it, and it read as if SIGTERM would not stop the worker."""
    ray_worker_log = logging.getLogger("ray._private.worker")
    if _drop_sigterm_warning not in ray_worker_log.filters:
        ray_worker_log.addFilter(_drop_sigterm_warning)


#: What Ray logs as a WARNING when ``ray.init`` starts a local Ray with ``RAY_AUTH_MODE`` unset:
#: it turned token authentication on for it. Nothing the user can act on (it is the Ray the worker
#: started for itself): the worker says what it did at INFO instead.
TOKEN_AUTH_ON = "Token authentication is enabled for this Ray cluster."
TOKEN_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


def _drop_token_auth_warning(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(TOKEN_AUTH_ON)


def _quiet_token_auth_warning() -> None:
    """Keep Ray's :data:`TOKEN_AUTH_ON` warning out of the logs (the filter added once)."""
    ray_auth_log = logging.getLogger(TOKEN_AUTH_LOGGER)
    if _drop_token_auth_warning not in ray_auth_log.filters:
        ray_auth_log.addFilter(_drop_token_auth_warning)


def _token_auth_state() -> str:
    """``on`` or ``off``: what ``ray.init`` chose (it sets ``RAY_AUTH_MODE`` in this process)."""
    return "on" if os.environ.get("RAY_AUTH_MODE", "").lower() == "token" else "off"


class _RayThread:
    """One daemon thread for the blocking Ray calls of an executor (``ray.init``, then
    ``ray.shutdown``): a daemon, so a ``ray.init`` that never returns cannot keep the process
    from exiting; one thread, because ``ray.shutdown`` from another thread than ``ray.init``'s
    can hang joining Ray's own threads."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], None], Callable[[BaseException | None], None]]]
        self._calls = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def call(self, fn: Callable[[], None]) -> asyncio.Future[None]:
        """Run ``fn`` on the thread; a future of its outcome on the running loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def settle(exc: BaseException | None) -> None:
            if not future.done():
                future.set_result(None) if exc is None else future.set_exception(exc)

        def done(exc: BaseException | None) -> None:  # on the Ray thread
            loop.call_soon_threadsafe(settle, exc)

        self._calls.put((fn, done))
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="streamtasks-ray", daemon=True)
            self._thread.start()
        return future

    def _serve(self) -> None:
        while True:
            fn, done = self._calls.get()
            try:
                fn()
            except BaseException as exc:
                done(exc)
            else:
                done(None)


def _token_auth_if_token_available() -> None:
    """Joining a cluster: turn on token authentication when a token is at hand and
    ``RAY_AUTH_MODE`` is not set (Ray does this itself only for a cluster it found by itself,
    not for an explicit address), as Ray's own ``maybe_enable_token_auth_if_token_available``."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # another Ray version: look for the token ourselves
        path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
        if os.environ.get("RAY_AUTH_TOKEN") or os.path.isfile(path):
            os.environ["RAY_AUTH_MODE"] = "token"
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


#: Milliseconds the token probe of :func:`_refused_by` waits for the cluster.
PROBE_TIMEOUT_MS = 5000


def _refused_by(address: str) -> None:
    """Ask the cluster at ``address`` (``host:port``) whether it accepts our token, and raise
    at once if it does not: ``ray.init`` would retry a refusal for ~20 s before failing. Any
    other outcome (no answer, a Ray without this client) is left to ``ray.init``."""
    if address in ("auto", "local") or "://" in address:
        return
    from ray import _raylet
    from ray.exceptions import AuthenticationError

    client = getattr(_raylet, "InnerGcsClient", None)  # Ray 2.60's GCS client, not public API
    if client is None:
        return
    try:
        client.standalone(address, None, PROBE_TIMEOUT_MS)
    except AuthenticationError as exc:
        raise ConnectionError(f"the cluster refused to authenticate us: {exc}") from None
    except Exception:  # unreachable, timed out: ray.init reports it
        return


class RayResources:
    """Ray's total and available resources, for a heartbeat: asked of Ray at most every
    :data:`RESOURCES_EVERY_S` once known; None until Ray is up or when it does not answer.
    Works in a driver and inside an actor alike."""

    def __init__(self) -> None:
        self._value: dict[str, Any] | None = None
        self._at = -RESOURCES_EVERY_S

    async def __call__(self) -> dict[str, Any] | None:
        now = time.monotonic()
        if self._value is None or now - self._at >= RESOURCES_EVERY_S:
            self._value = await asyncio.to_thread(_ray_resources)
            self._at = now
        return self._value


def _ray_resources() -> dict[str, Any] | None:
    import ray

    try:
        if not ray.is_initialized():
            return None
        total = ray.cluster_resources()  # type: ignore[no-untyped-call]
        free = ray.available_resources()  # type: ignore[no-untyped-call]
    except Exception:  # Ray going down: the heartbeat goes on without it
        return None
    shown = ("CPU", "GPU", "memory")
    return {
        "total": {k: total[k] for k in shown if k in total},
        "available": {k: free.get(k, 0.0) for k in shown if k in total},
    }


class _RayPending:
    """An awaitable Ray result that remembers its ObjectRef (so it can be cancelled)."""

    def __init__(self, ref: Any) -> None:
        self.ref = ref

    def __await__(self) -> Any:
        return self.ref.__await__()
