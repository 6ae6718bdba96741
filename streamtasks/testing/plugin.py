"""The pytest plugin (entry point ``pytest11``): the ``streamtasks_app`` fixture.

``streamtasks_app(registry, **options)`` returns an :class:`~streamtasks.testing.InMemoryApp`
serving ``registry``, activated for the test (``await handler.send(...)`` adds to it, not to
Redis), and closed after the test. Nothing here connects to anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ..registry import Registry
    from .app import InMemoryApp


@pytest.fixture
def streamtasks_app() -> Iterator[Callable[..., InMemoryApp]]:
    """A factory of in-memory apps: ``app = streamtasks_app(registry)``."""
    from .app import InMemoryApp

    apps: list[InMemoryApp] = []

    def make(registry: Registry, **options: Any) -> InMemoryApp:
        app = InMemoryApp(registry, **options).activate()
        apps.append(app)
        return app

    yield make
    for app in reversed(apps):
        app.deactivate()
    if apps:
        _close(apps[0])


def _close(app: InMemoryApp) -> None:
    """Close the handlers' per-process resources (from sync teardown code)."""
    from ..resources import _resources, process_loop

    if _resources.closers:
        asyncio.run_coroutine_threadsafe(_resources.close(), process_loop().loop).result()
