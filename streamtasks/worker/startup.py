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


def freeze_after_start(event: Event) -> None:
    """A listener for processes that own their interpreter (the worker command, an actor): on
    :class:`ExecutorStarted`, collect start-up's garbage once and move every object left
    (modules, Ray's and the handlers' imports: ~10^5) out of the collector's reach
    (``gc.freeze``). Otherwise each full collection, which the entries' own allocations
    trigger every few batches, walks them all again: about a fifth of the decode's CPU (see
    benchmarks/README.md). Not for a host process (``start_workers`` in an API's): its own
    objects would never be collected."""
    if isinstance(event, ExecutorStarted):
        gc.collect()
        gc.freeze()


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
