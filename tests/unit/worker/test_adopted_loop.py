"""The inline executor on an adopted loop (a Ray actor's): async batches run as tasks on the
loop that reads, with their resources made there; sync batches still run in the pool; a
process that already has its loop keeps it; a timed-out async batch is cancelled."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from streamtasks import Message, Registry
from streamtasks import resources as res
from streamtasks.worker import InlineExecutor

registry = Registry(group="adopted")
seen: dict[str, Any] = {}


@registry.resource
async def loop_of_resource() -> AsyncIterator[asyncio.AbstractEventLoop]:
    yield asyncio.get_running_loop()


@registry.stream_handler("async", batch=True)
async def on_async(msgs: list[Message]) -> None:
    seen["async"] = (threading.get_ident(), asyncio.get_running_loop(), await loop_of_resource.get())


@registry.stream_handler("sync", batch=True)
def on_sync(msgs: list[Message]) -> None:
    seen["sync"] = threading.get_ident()


@registry.stream_handler("slow", batch=True)
async def on_slow(msgs: list[Message]) -> None:
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        seen["cancelled"] = True
        raise


ENTRY = [("1-0", [b"k", b"v"], 1)]


@pytest.fixture(autouse=True)
def fresh_process() -> Iterator[None]:
    """A process with no loop and no resources yet (restored after: other tests keep theirs)."""
    saved = res._process_loop, res._resources
    res._process_loop, res._resources = None, res.ResourceCache()
    seen.clear()
    try:
        yield
    finally:
        res._process_loop, res._resources = saved


async def test_async_batches_run_on_the_adopted_loop_and_sync_ones_in_the_pool() -> None:
    executor = InlineExecutor(adopt_loop=True)
    await executor.start()
    loop = asyncio.get_running_loop()
    try:
        done = await executor.submit(registry.handlers["async"], ENTRY)
        assert done.failed == {}
        assert seen["async"] == (threading.get_ident(), loop, loop)  # no other thread, one loop
        assert res.process_loop().loop is loop and res.process_loop().thread is None
        assert (await executor.submit(registry.handlers["sync"], ENTRY)).failed == {}
        assert seen["sync"] != threading.get_ident()  # a blocking handler never blocks the loop
    finally:
        await executor.close()


async def test_a_process_with_a_loop_already_keeps_it() -> None:
    own = res.process_loop()  # a resource was used before the executor started
    executor = InlineExecutor(adopt_loop=True)
    await executor.start()
    try:
        assert (await executor.submit(registry.handlers["async"], ENTRY)).failed == {}
        assert seen["async"][1] is own.loop is not asyncio.get_running_loop()
        assert seen["async"][2] is own.loop
    finally:
        await executor.close()
        own.loop.call_soon_threadsafe(own.loop.stop)


async def test_a_cancelled_async_batch_stops_at_its_await() -> None:
    executor = InlineExecutor(adopt_loop=True)
    await executor.start()
    try:
        pending = executor.submit(registry.handlers["slow"], ENTRY)
        await asyncio.sleep(0.05)
        executor.cancel(pending)
        with pytest.raises(asyncio.CancelledError):
            await pending
        assert seen["cancelled"] is True
    finally:
        await executor.close()


async def test_waiting_on_the_process_loop_from_its_own_thread_raises_instead_of_hanging() -> None:
    assert res.adopt_process_loop(asyncio.get_running_loop())
    coro = asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="await the coroutine"):
        res.process_loop().run(coro)
