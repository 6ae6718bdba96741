"""Supervision of a worker's background loops: none of them dies silently.

A loop that raises is logged at once (with its traceback), shows in the worker's snapshot
(``failing_loops``: ``/readyz`` and ``status`` report it) and is restarted with backoff. A loop
that does its work again calls :meth:`Supervisor.healthy`, which clears the failure. Strong
references to every task are kept, and all of them are cancelled and awaited on :meth:`close`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from ..aio import cancel_and_wait
from .events import Event, LoopFailed

log = logging.getLogger("streamtasks.worker")

RESTART_FIRST_S = 0.5
RESTART_MAX_S = 30.0


class Supervisor:
    """Runs named loops; restarts a failed one with backoff until :meth:`close`."""

    def __init__(self, emit: Callable[[Event], None]) -> None:
        self.emit = emit
        self.failing: dict[str, str] = {}  # loop name -> its last error, while failing
        #: Set by :meth:`close`; loops that run through a drain check it, since a cancellation
        #: can be lost (``asyncio.wait_for`` before Python 3.12 may swallow one; :meth:`close`
        #: cancels again what runs on).
        self.closing = False
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        task = asyncio.create_task(self._keep_running(name, loop), name=f"streamtasks:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for every loop to return by itself."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    def failed(self, name: str, exc: BaseException) -> None:
        """Work outside a loop (settling a batch) failed: visible like a failed loop until
        :meth:`healthy` (the caller logs it, with its context)."""
        error = f"{type(exc).__name__}: {exc}"
        self.failing[name] = error
        self.emit(LoopFailed(name, error, 0.0))

    def healthy(self, name: str) -> None:
        """``name`` did its work again: it is no longer failing."""
        if self.failing.pop(name, None) is not None:
            log.warning("background loop %r recovered", name)

    async def _keep_running(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        delay = RESTART_FIRST_S
        while True:
            try:
                await loop()
                return  # a loop returns when the worker stops
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                self.failing[name] = error
                log.error("background loop %r failed; restarting in %.1fs", name, delay, exc_info=exc)
                self.emit(LoopFailed(name, error, delay))
            if self.closing:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_MAX_S)

    async def close(self) -> None:
        self.closing = True
        await cancel_and_wait(self._tasks)
