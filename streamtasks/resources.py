"""Per-process resources and the per-process event loop that async handlers run on.

A :class:`Resource` is declared in the user's module (``@registry.resource``) and created
lazily, once per process, on that process' persistent loop (:func:`process_loop`: a daemon
thread's, or in a Ray actor the actor's own loop, adopted): a Ray worker process keeps its
connection pool across the batches it runs. This
module imports nothing else of streamtasks, so the registry and the batch runner both use it
without an import cycle.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Generic, TypeVar

from attrs import define, field

log = logging.getLogger("streamtasks.resources")
T = TypeVar("T")
#: Seconds the interpreter's exit waits for resources to close.
CLOSE_TIMEOUT_S = 10.0


class ProcessLoop:
    """The event loop async handlers and resources use, one per process: by default a loop
    of its own on a daemon thread, started on first use; a loop that lives as long as the
    process (a Ray actor's) can be adopted instead (:func:`adopt_process_loop`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop or asyncio.new_event_loop()
        self.thread: threading.Thread | None = None
        if loop is None:
            self.thread = threading.Thread(target=self.loop.run_forever, name="streamtasks-loop", daemon=True)
            self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the process loop and wait for its result (from any other thread:
        on the loop's own thread this would wait forever, so it raises instead)."""
        if _running_loop() is self.loop:
            coro.close()
            raise RuntimeError("ProcessLoop.run called on the process loop itself: await the coroutine")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


_process_loop: ProcessLoop | None = None
_loop_lock = threading.Lock()


def process_loop() -> ProcessLoop:
    """This process' loop, started (and its resources' cleanup registered) on first use."""
    return _the_loop(None)


def adopt_process_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """Make ``loop`` this process' loop, unless the process already has one (a resource was
    used before): True when ``loop`` is the process loop afterwards.

    For a loop that runs as long as the process does (a Ray actor's): the worker reading on
    it then runs async handlers on it directly, without a thread between its read and the
    handler (:func:`streamtasks.worker.run.run_batch_async`)."""
    return _the_loop(loop).loop is loop


def _the_loop(loop: asyncio.AbstractEventLoop | None) -> ProcessLoop:
    """This process' loop; the first call makes it (``loop``, or a new one on its own thread)."""
    global _process_loop
    with _loop_lock:
        if _process_loop is None:
            _process_loop = ProcessLoop(loop)
            atexit.register(_close_process_resources)
        return _process_loop


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Resource(Generic[T]):
    """A per-process resource (a connection pool, a model) shared by handler runs.

    Made from an async generator: the code before ``yield`` runs once per worker process on
    first use, the yielded value is reused by every task in that process, and the code after
    ``yield`` runs when the process shuts down::

        @registry.resource
        async def db_pool():
            pool = await asyncpg.create_pool(DSN)
            yield pool
            await pool.close()

        @registry.stream_handler("orders", batch=True)
        async def store(msgs):
            pool = await db_pool.get()
    """

    def __init__(self, factory: Callable[[], AsyncIterator[T]]) -> None:
        self.factory = factory
        """The decorated async generator: what it yields is the value, what follows the yield its cleanup."""
        self.key = f"{factory.__module__}.{factory.__qualname__}"
        """The resource's name in this process' cache: ``module.function``."""
        self.__doc__ = factory.__doc__

    async def get(self) -> T:
        """The process-wide value, created on first use (must be awaited in a handler)."""
        value: T = await _resources.get(self)
        return value

    def __reduce__(self) -> tuple[Any, ...]:
        module, qualname = self.factory.__module__, self.factory.__qualname__
        if module != "__main__" and "<locals>" not in qualname:
            return (import_attr, (module, qualname))
        return (Resource, (self.factory,))


def import_attr(module: str, qualname: str) -> Any:
    """``module.qualname`` imported (how handlers and resources travel to Ray by reference)."""
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


@define
class ResourceCache:
    """Values of :class:`Resource` factories, created once per process on its loop."""

    values: dict[str, Any] = field(factory=dict)
    closers: list[Any] = field(factory=list)
    lock: asyncio.Lock | None = None

    async def get(self, resource: Resource[T]) -> T:
        if resource.key not in self.values:
            if self.lock is None:
                self.lock = asyncio.Lock()
            async with self.lock:
                if resource.key not in self.values:
                    gen = resource.factory()
                    self.values[resource.key] = await gen.__anext__()
                    self.closers.append(gen)
        value: T = self.values[resource.key]
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


_resources = ResourceCache()


def _close_process_resources() -> None:
    """At the interpreter's exit: close the resources on their loop, if it still runs (an
    adopted loop may have stopped already; then there is nothing to close them on)."""
    pl = _process_loop
    if pl is None or not _resources.closers or not pl.loop.is_running() or _running_loop() is pl.loop:
        return
    with contextlib.suppress(Exception):  # interpreter shutting down: nowhere to report
        done = asyncio.run_coroutine_threadsafe(_resources.close(), pl.loop)
        done.result(CLOSE_TIMEOUT_S)


async def close_process_resources() -> None:
    """Close this process' resources now, from a running loop (the worker process after its
    inline start: it runs no handler afterwards). A later use opens them again."""
    if _process_loop is None or not _resources.closers:
        return
    if _process_loop.loop is asyncio.get_running_loop():
        await asyncio.wait_for(_resources.close(), CLOSE_TIMEOUT_S)
        return
    done = asyncio.run_coroutine_threadsafe(_resources.close(), _process_loop.loop)
    await asyncio.wait_for(asyncio.wrap_future(done), CLOSE_TIMEOUT_S)
