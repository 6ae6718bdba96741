"""The clients streamtasks opens (``streamtasks.connect.connect``) against a real redis-server:
a cancelled command ends its task, a long blocking read is not a timeout, and the caller's or
the URL's socket options win over the defaults."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from redis.asyncio import Redis

from streamtasks.connect import connect

pytestmark = pytest.mark.integration


async def test_a_task_cancelled_during_a_command_ends_cancelled(redis: Redis, redis_url: str) -> None:
    """Cancel tasks at every point of a command's round trip: each one ends cancelled, none
    runs on with its result (redis-py 8's default socket timeout lost a third of them on
    Python 3.11, through ``asyncio.wait_for``)."""
    client = await connect(redis_url)
    rng = random.Random(7)
    try:
        await client.set("k", "v")
        ran_on = 0
        for _ in range(400):
            task = asyncio.create_task(client.get("k"))
            for _ in range(rng.randint(1, 6)):
                await asyncio.sleep(0)
            if task.cancel():
                try:
                    await task
                    ran_on += 1
                except asyncio.CancelledError:
                    pass
        assert ran_on == 0, f"{ran_on} of 400 cancelled commands returned their result"
        assert await client.get("k") == b"v"  # and the pool's connections still answer in order
    finally:
        await client.aclose()


async def test_a_blocking_read_of_more_than_five_seconds_is_no_timeout(redis: Redis, redis_url: str) -> None:
    client = await connect(redis_url)
    try:
        await client.xgroup_create("quiet", "g", id="0", mkstream=True)
        started = time.monotonic()
        reply = await client.xreadgroup("g", "c", {"quiet": ">"}, count=1, block=5500)
        assert not reply and time.monotonic() - started >= 5.4
    finally:
        await client.aclose()


async def test_the_callers_and_the_urls_socket_options_win(redis: Redis, redis_url: str) -> None:
    given = await connect(redis_url, socket_timeout=3)
    in_url = await connect(f"{redis_url}?socket_timeout=2")
    plain = await connect(redis_url)
    try:
        assert given.connection_pool.connection_kwargs["socket_timeout"] == 3
        assert in_url.connection_pool.connection_kwargs["socket_timeout"] == 2
        kwargs = plain.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] is None and kwargs["socket_keepalive"] is True
        assert kwargs["socket_connect_timeout"] == 5.0
    finally:
        for client in (given, in_url, plain):
            await client.aclose()
