"""asyncio helpers the whole package shares: cancelling tasks for sure, waiting on an event
with a time limit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

#: Seconds :func:`cancel_and_wait` gives a cancelled task to end before cancelling it again.
RECANCEL_AFTER_S = 0.5


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until every one has ended; their errors are not raised.

    A task still running :data:`RECANCEL_AFTER_S` after its cancellation is cancelled again:
    before Python 3.12 ``asyncio.wait_for`` loses a cancellation that lands just as what it
    awaits completes, and the task runs on as if never cancelled."""
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_AFTER_S)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: not reported as "never retrieved"


async def wait_set(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds passed; True if it was set (a loop's
    sleep that a stop, or new work, ends at once)."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)
    return event.is_set()
