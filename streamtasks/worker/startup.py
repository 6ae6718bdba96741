"""Start-up: the consumer groups and the executor (Ray) start side by side, since Ray takes
seconds; a stop (SIGTERM) meanwhile ends the start-up at once, without the executor. Once
started, a process of our own freezes what start-up allocated (:func:`freeze_after_start`)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Coroutine
from typing import Any

from ..aio import cancel_and_wait
from .events import Event, ExecutorStarted

#: Net allocations of container objects between two young collections, once started (Python's
#: default: 700). A batch keeps thousands of such objects alive until it is settled (each
#: entry's fields, message and row), so at 700 the collector ran several times per batch,
#: found nothing to free, and promoted the batch into older generations to walk it again
#: there: 0.44-0.65 s of collections per 300,000 entries, 1.5-2 us an entry. At 50,000 a
#: settled batch is freed by its reference counts before a collection comes due, and the
#: collector runs on what does grow: cycles, still freed within 50,000 allocations.
YOUNG_GC_THRESHOLD = 50_000


def freeze_after_start(event: Event) -> None:
    """A listener for processes that own their interpreter (the worker command, an actor): on
    :class:`ExecutorStarted`, collect start-up's garbage once and move every object left
    (modules, Ray's and the handlers' imports: ~10^5) out of the collector's reach
    (``gc.freeze``). Otherwise each full collection, which the entries' own allocations
    trigger every few batches, walks them all again: about a fifth of the decode's CPU (see
    benchmarks/README.md). Then the young generation's threshold goes up to
    :data:`YOUNG_GC_THRESHOLD`. Not for a host process (``start_workers`` in an API's): its
    own objects would never be collected, and its collector is its own to tune."""
    if isinstance(event, ExecutorStarted):
        gc.collect()
        gc.freeze()
        young, older, oldest = gc.get_threshold()
        gc.set_threshold(max(YOUNG_GC_THRESHOLD, young), older, oldest)  # a higher one stays


async def start_unless_stopped(
    executor_start: Coroutine[Any, Any, None], groups: Awaitable[None], stopping: asyncio.Event
) -> bool:
    """Run ``groups`` and ``executor_start`` side by side; True once the executor started,
    False when ``stopping`` was set first (the executor's start is then abandoned). Raises
    the error of either."""
    executor = asyncio.create_task(executor_start)
    stopped = asyncio.create_task(stopping.wait())
    started = False
    try:
        await groups
        await asyncio.wait({executor, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if executor.done():
            await executor  # raises its error, if it failed
            started = True
    finally:  # both tasks end here, whatever happened
        stopped.cancel()
        if not started:
            await cancel_and_wait([executor])
    return started
