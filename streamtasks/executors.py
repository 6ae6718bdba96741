"""Run a batch of entries through a handler and return one outcome per entry.

:func:`run_batch` is the unit of work: it decodes the raw entries, calls the handler (per
entry or per batch, sync or async), and turns every exception into an outcome with the
handler's :class:`~streamtasks.retry.RetryPolicy`. It never raises for a handler error, so a
failing entry cannot fail or re-run its batch-mates.

:class:`RayExecutor` runs :func:`run_batch` as ONE Ray task per batch. Ray's own task retries
are only for a worker process that died (``retry_exceptions`` stays off); the handler's
retries are counted by streamtasks alone, from Redis' delivery counter.
:class:`InlineExecutor` runs it in a thread of the calling process (unit tests, debugging).

Async handlers run on a persistent event loop per process (a daemon thread), so the
:class:`~streamtasks.registry.Resource` values they use (connection pools) live across tasks.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import os
import pickle
import threading
import time
from collections.abc import Awaitable, Coroutine, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from attrs import define, field, frozen

from .errors import DecodeError, StreamtasksError
from .message import Message, RawFields, decode_entry
from .registry import HandlerSpec, Resource
from .retry import DONE, Dead, ErrorInfo, Outcome, RetryLater

log = logging.getLogger("streamtasks.executor")
T = TypeVar("T")

#: A raw entry as read from Redis: (entry id, fields as bytes, delivery attempt).
RawEntry = tuple[str, RawFields, int]


@frozen
class BatchResult:
    """Outcomes of a batch: every entry not listed in ``failed`` (by index) is done."""

    size: int
    failed: Mapping[int, RetryLater | Dead]
    duration: float = 0.0

    def outcome(self, index: int) -> Outcome:
        return self.failed.get(index, DONE)


class Executor(Protocol):
    async def start(self) -> None: ...
    def submit(self, spec: HandlerSpec, entries: Sequence[RawEntry]) -> Awaitable[BatchResult]: ...
    def cancel(self, pending: Awaitable[BatchResult]) -> None: ...
    async def close(self) -> None: ...


# --- the per-process event loop and resources ------------------------------------------


class _ProcessLoop:
    """An event loop on a daemon thread, one per process, started on first use."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="streamtasks-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


_process_loop: _ProcessLoop | None = None
_loop_lock = threading.Lock()


def process_loop() -> _ProcessLoop:
    global _process_loop
    with _loop_lock:
        if _process_loop is None:
            _process_loop = _ProcessLoop()
            atexit.register(_close_process_resources)
        return _process_loop


@define
class _Resources:
    """Values of :class:`Resource` factories, created once per process on its loop."""

    values: dict[str, Any] = field(factory=dict)
    closers: list[Any] = field(factory=list)
    lock: asyncio.Lock | None = None

    async def get(self, resource: Resource[T]) -> T:
        if resource.key in self.values:
            value: T = self.values[resource.key]
            return value
        if self.lock is None:
            self.lock = asyncio.Lock()
        async with self.lock:
            if resource.key not in self.values:
                gen = resource.factory()
                self.values[resource.key] = await gen.__anext__()
                self.closers.append(gen)
        value = self.values[resource.key]
        return value

    async def close(self) -> None:
        while self.closers:
            gen = self.closers.pop()
            try:
                await gen.__anext__()
            except StopAsyncIteration:
                pass
            except Exception:
                log.exception("closing a resource failed")
        self.values.clear()


_resources = _Resources()


def process_resources() -> _Resources:
    return _resources


def _close_process_resources() -> None:
    if _process_loop is not None and _resources.closers:
        with contextlib.suppress(Exception):  # interpreter shutting down: nowhere to report
            _process_loop.run(asyncio.wait_for(_resources.close(), timeout=10))


# --- running a batch ----------------------------------------------------------------------


def run_batch(spec: HandlerSpec, entries: Sequence[RawEntry]) -> BatchResult:
    """Decode ``entries``, run the handler, and return the outcome of each entry."""
    started = time.perf_counter()
    failed: dict[int, RetryLater | Dead] = {}
    messages: list[Message] = []
    positions: list[int] = []
    for index, (entry_id, raw, attempt) in enumerate(entries):
        try:
            messages.append(decode_entry(spec.stream, entry_id, raw, attempt, spec.max_entry_bytes))
            positions.append(index)
        except DecodeError as exc:
            failed[index] = Dead(ErrorInfo.from_exception(exc))
        except Exception as exc:  # a decoder bug: deterministic, so dead at once, and alone
            failed[index] = Dead(ErrorInfo.from_exception(exc, reason="invalid"))
    if messages:
        if spec.batch:
            errors = _call_batch(spec, messages)
        elif spec.is_async:
            errors = process_loop().run(_call_each_async(spec, messages))
        else:
            errors = _call_each_sync(spec, messages)
        for pos, error in errors.items():
            failed[positions[pos]] = spec.retry.decide(error, messages[pos].attempt)
    return BatchResult(len(entries), failed, time.perf_counter() - started)


def _call_each_sync(spec: HandlerSpec, messages: list[Message]) -> dict[int, BaseException]:
    errors: dict[int, BaseException] = {}
    for pos, msg in enumerate(messages):
        try:
            spec.fn(msg)
        except Exception as exc:
            errors[pos] = exc
    return errors


async def _call_each_async(spec: HandlerSpec, messages: list[Message]) -> dict[int, BaseException]:
    errors: dict[int, BaseException] = {}
    limit = asyncio.Semaphore(spec.concurrency)

    async def one(pos: int, msg: Message) -> None:
        async with limit:
            try:
                await asyncio.wait_for(spec.fn(msg), spec.timeout)
            except Exception as exc:
                errors[pos] = exc

    await asyncio.gather(*(one(pos, msg) for pos, msg in enumerate(messages)))
    return errors


def _call_batch(spec: HandlerSpec, messages: list[Message]) -> dict[int, BaseException]:
    """Run a batch handler; map its ``{entry_id: exception}`` result back to positions."""
    try:
        if spec.is_async:
            result = process_loop().run(asyncio.wait_for(spec.fn(messages), spec.timeout))
        else:
            result = spec.fn(messages)
    except Exception as exc:
        failure: BaseException = exc
        return dict.fromkeys(range(len(messages)), failure)
    if not result:
        return {}
    if not isinstance(result, Mapping):
        error = StreamtasksError(
            f"batch handler {spec.name} returned {type(result).__name__}; "
            "expected None or a mapping {entry_id: exception}"
        )
        return dict.fromkeys(range(len(messages)), error)
    index = {msg.id: pos for pos, msg in enumerate(messages)}
    return {index[entry_id]: exc for entry_id, exc in result.items() if entry_id in index}


def _run_packed_batch(spec: HandlerSpec, packed: bytes) -> BatchResult:
    """The Ray task: ``packed`` is the router's own pickle of the raw entries it read (ids,
    field bytes and attempt counts only), never bytes taken from Redis as they are."""
    return run_batch(spec, pickle.loads(packed))


# --- executors ----------------------------------------------------------------------------


class InlineExecutor:
    """Runs batches in a thread pool of this process: for unit tests and debugging."""

    def __init__(self, threads: int = 4) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="streamtasks-inline")

    async def start(self) -> None:
        return None

    def submit(self, spec: HandlerSpec, entries: Sequence[RawEntry]) -> Awaitable[BatchResult]:
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._pool, run_batch, spec, list(entries))

    def cancel(self, pending: Awaitable[BatchResult]) -> None:
        return None  # a thread cannot be stopped; the batch finishes and is settled

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


#: Environment variables a worker forwards to its Ray tasks (which may run on other nodes).
FORWARDED_ENV_PREFIXES = (
    "DATABASE_", "REDIS_", "STREAMTASKS_", "ASYNC_PROCESSING_", "CONSUMER_",
    "TRAINING_DATA_STREAM", "INFERENCE_RESULTS_STREAM", "DEBUG_ENABLED",
)  # fmt: skip


def forwarded_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of ``environ`` that handlers' configuration reads (see the README)."""
    return {k: v for k, v in environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}


class RayExecutor:
    """ONE Ray task per batch. Starts a local Ray unless ``address`` names a cluster.

    ``env`` is set in the tasks' processes (Ray ``runtime_env``): on a cluster, the nodes do
    not share the worker's environment, so the handlers' configuration travels this way.
    """

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        *,
        env: Mapping[str, str] | None = None,
        process_retries: int = 3,
    ) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.env = dict(env or {})
        self.process_retries = process_retries
        self._remote: dict[str, Any] = {}
        self._owns_ray = False  # True when start() called ray.init (a Ray already up is left alone)

    async def start(self) -> None:
        import ray

        if ray.is_initialized():
            return
        try:
            await asyncio.to_thread(self._init_ray)
        except Exception as exc:  # ConnectionError, RuntimeError, ValueError from ray.init
            where = f"join Ray at {self.address}" if self.address else "start a local Ray"
            hint = ""
            if self.address and "RAY_AUTH_MODE" not in os.environ:
                hint = " (a cluster with token auth needs RAY_AUTH_MODE=token and its token)"
            raise StreamtasksError(f"cannot {where}: {type(exc).__name__}: {exc}{hint}") from None

    def _init_ray(self) -> None:
        import ray

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if self.address:
            ray.init(address=self.address, log_to_driver=True, logging_level=logging.WARNING)
            self._owns_ray = True  # our driver connection: closed by close(); the cluster stays
        else:
            ray.init(
                num_cpus=self.num_cpus,
                include_dashboard=False,
                log_to_driver=True,
                logging_level=logging.WARNING,
            )
            self._owns_ray = True

    def _task(self, spec: HandlerSpec) -> Any:
        remote = self._remote.get(spec.stream)
        if remote is None:
            import ray

            options: dict[str, Any] = {"num_cpus": 1, "max_retries": self.process_retries}
            if self.env:
                options["runtime_env"] = {"env_vars": self.env}
            options.update(spec.ray_options)
            options["retry_exceptions"] = False  # handler errors are outcomes, not Ray retries
            remote = ray.remote(_run_packed_batch).options(name=f"streamtasks:{spec.stream}", **options)
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

        if self._owns_ray and ray.is_initialized():
            await asyncio.to_thread(ray.shutdown)


class _RayPending:
    """An awaitable Ray result that remembers its ObjectRef (so it can be cancelled)."""

    def __init__(self, ref: Any) -> None:
        self.ref = ref

    def __await__(self) -> Any:
        return self.ref.__await__()
