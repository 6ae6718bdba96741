"""The pytest plugin (entry point ``pytest11``): the ``streamtasks_app`` fixture.

``streamtasks_app(registry, **options)`` returns an :class:`~streamtasks.testing.InMemoryApp`
serving ``registry``, activated for the test (``await handler.send(...)`` adds to it, not to
Redis), and closed after the test. Nothing here connects to anything.

An ``async def`` test that uses the fixture runs with no configuration: with pytest-asyncio
installed, the plugin gives it the ``asyncio`` mark (pytest-asyncio's default strict mode runs
only marked tests, and its collection turns marked coroutines into its own test items, so the
mark is added as the items are made, before pytest-asyncio looks); without pytest-asyncio, the
plugin runs the test on a new event loop itself. A test marked ``asyncio`` or ``anyio`` by its
author is left to that plugin.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ..registry import Registry
    from .app import InMemoryApp


FIXTURE = "streamtasks_app"


def _async_test_of_ours(item: object) -> bool:
    """An ``async def`` test that uses the fixture and that no other async plugin was asked to run."""
    return (
        isinstance(item, pytest.Function)
        and FIXTURE in item.fixturenames
        and inspect.iscoroutinefunction(item.obj)
        and item.get_closest_marker("asyncio") is None
        and item.get_closest_marker("anyio") is None
    )


@pytest.hookimpl(wrapper=True, trylast=True)  # the innermost wrapper: before pytest-asyncio's looks
def pytest_pycollect_makeitem(
    collector: pytest.Collector, name: str, obj: object
) -> Generator[None, Any, Any]:
    """Mark our async tests ``asyncio`` when pytest-asyncio is installed."""
    made = yield
    if collector.config.pluginmanager.has_plugin("asyncio"):
        for item in made if isinstance(made, list) else [made]:
            if _async_test_of_ours(item):
                item.add_marker(pytest.mark.asyncio)
    return made


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Without pytest-asyncio: run our async tests on a new event loop."""
    if pyfuncitem.config.pluginmanager.has_plugin("asyncio") or not _async_test_of_ours(pyfuncitem):
        return None
    names = inspect.signature(pyfuncitem.obj).parameters
    asyncio.run(pyfuncitem.obj(**{n: v for n, v in pyfuncitem.funcargs.items() if n in names}))
    return True


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
