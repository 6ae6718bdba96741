"""An actor (re)started by Ray while Redis is down waits for Redis with the worker's backoff and
reports the outage to its worker process, instead of failing its start (each failure an
ERROR with a traceback in the worker's log, and a restart)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from support.waiting import wait_until

from streamtasks import Message, Registry, logs
from streamtasks.ray.actor import WorkerActor
from streamtasks.worker import WorkerSettings
from streamtasks.worker.events import RedisDown, RedisUp

pytestmark = pytest.mark.integration

registry = Registry(group="connect-tests")


@registry.stream_handler("connect_work")
def handle(msg: Message) -> None:
    pass


@pytest.fixture
def keep_logging() -> Any:
    """``WorkerActor`` configures the ``streamtasks`` loggers as an actor process would."""
    saved = {n: logging.getLogger(n).handlers[:] for n in ("streamtasks", "async_processing")}
    level = logs.configured()
    yield
    logs.configure(*level)
    for name, handlers in saved.items():
        logging.getLogger(name).handlers[:] = handlers


async def test_an_actor_started_while_redis_is_down_waits_and_reports_the_outage(
    redis_server: Any, keep_logging: None, caplog: pytest.LogCaptureFixture
) -> None:
    actor = WorkerActor(registry, redis_server.url, WorkerSettings(consumer="connect-a0"), 1)
    redis_server.stop()
    try:
        connecting = asyncio.create_task(actor._connect())
        await wait_until(lambda: _outages(actor), timeout=15)
        assert not connecting.done()
        down = actor.tally.outages[0][1]
        assert isinstance(down, RedisDown) and down.doing == "connecting"
    finally:
        redis_server.start()
    client = await asyncio.wait_for(connecting, 30)
    assert client is not None
    try:
        assert await client.ping()
        assert isinstance(actor.tally.outages[-1][1], RedisUp)
    finally:
        await client.aclose()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_stop_while_redis_is_down_ends_the_wait(redis_server: Any, keep_logging: None) -> None:
    actor = WorkerActor(registry, redis_server.url, WorkerSettings(consumer="connect-a1"), 1)
    redis_server.stop()
    try:
        connecting = asyncio.create_task(actor._connect())
        await wait_until(lambda: _outages(actor), timeout=15)
        await actor.stop()
        assert await asyncio.wait_for(connecting, 10) is None
    finally:
        redis_server.start()


async def _outages(actor: WorkerActor) -> bool:
    return bool(actor.tally.outages)


async def test_a_stop_that_comes_while_the_actor_connects_ends_its_run(
    redis_server: Any, keep_logging: None
) -> None:
    """Ray runs an async actor's ``stop`` beside its ``run``: a SIGTERM while an actor was still
    connecting used to leave it serving, and its worker process waiting for it forever."""
    actor = WorkerActor(registry, redis_server.url, WorkerSettings(consumer="connect-a2", block=0.1), 1)
    running = asyncio.create_task(actor.run())
    await asyncio.sleep(0)  # run() is inside its connect now
    await actor.stop()
    await asyncio.wait_for(running, 30)
