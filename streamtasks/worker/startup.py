"""Start-up: the consumer groups and the executor (Ray) start side by side, since Ray takes
seconds; a stop (SIGTERM) meanwhile ends the start-up at once, without the executor."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import Any

from .supervise import cancel_and_wait


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
