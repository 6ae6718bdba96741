"""Polling helpers shared by the integration and fault tests."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable
from typing import Any


async def wait_until(predicate: Any, timeout: float = 30.0, interval: float = 0.05) -> None:
    """Poll ``predicate()`` (a bool, or an awaitable of one) until it holds, else fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        held = predicate()
        if await held if inspect.isawaitable(held) else held:
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


async def equals(value: Awaitable[Any], expected: Any) -> bool:
    """For :func:`wait_until`: ``value``, once awaited, equals ``expected``."""
    return await value == expected
