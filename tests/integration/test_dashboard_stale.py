"""The dashboard says when its numbers are old (issue 25, item 2): Redis stops answering (a
real redis-server behind a TCP proxy that holds the connections), the sampler's samples time
out; the overview API, its event stream and the page mark the last sample stale with its age
and the sampler's error, logged once; when Redis answers again, fresh samples, no marker. And
an idle event stream sends one event per sample, not a flood of keep-alives."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import pytest
from redis.asyncio import Redis
from support.dashboard import served
from support.proxy import TcpProxy

from streamtasks.observe.dashboard import sampler as sampler_module

pytestmark = pytest.mark.integration
T = TypeVar("T")


async def wait_for(check: Callable[[], Awaitable[T | None]], timeout: float) -> T:
    """Poll ``check`` until it returns something, else fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (found := await check()) is None:
        assert time.monotonic() < deadline, f"not within {timeout}s"
        await asyncio.sleep(0.1)
    return found


async def overview(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(f"{url}/api/overview") as r:
        assert r.status == 200
        return dict(await r.json())


async def test_a_sample_that_hangs_marks_the_last_one_stale_with_its_age_and_error(
    redis_server: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sampler_module, "SAMPLE_TIMEOUT_S", 1.0)
    caplog.set_level(logging.INFO, "streamtasks.dashboard")
    async with TcpProxy("127.0.0.1", redis_server.port) as proxy:
        redis = Redis.from_url(f"redis://127.0.0.1:{proxy.port}/0")
        try:
            async with served(redis, interval=0.2) as server, aiohttp.ClientSession() as http:
                first = await overview(http, server.url)
                assert first["sample"]["stale"] is False and first["sample"]["error"] is None
                proxy.pause()  # Redis "stops answering": new connections are held
                proxy.drop_all()
                cut = time.monotonic()
                stale_after = server.board.sampler.stale_after

                async def stale() -> dict[str, Any] | None:
                    got = await overview(http, server.url)
                    return got if got["sample"]["stale"] and got["sample"]["error"] else None

                marked = await wait_for(stale, 10)
                assert marked["sample"]["error"] == "sampling took longer than 1s"
                assert marked["checked_at"] <= first["checked_at"] + 1  # the last good sample, kept
                await asyncio.sleep(max(0.0, stale_after + 0.5 - (time.monotonic() - cut)))
                aged = await overview(http, server.url)
                assert aged["sample"]["age"] > stale_after
                async with http.get(f"{server.url}/") as r:
                    page = await r.text()
                assert '<div id="stale"' in page and "STALE: this sample is" in page
                assert "sampling fails: sampling took longer than 1s" in page
                assert "hidden>STALE" not in page
                event = await first_event(http, server.url)
                assert event["sample"]["stale"] is True

                proxy.resume()
                fresh = await wait_for(lambda: _fresh(http, server.url), 15)
                assert fresh["sample"]["error"] is None
                async with http.get(f"{server.url}/") as r:
                    assert "hidden>STALE" in await r.text()
        finally:
            await redis.aclose()
    failed = [r for r in caplog.records if "dashboard sample failed" in r.getMessage()]
    assert len(failed) == 1, [r.getMessage() for r in failed]  # once per incident, not per second
    assert any("dashboard sampling recovered after" in r.getMessage() for r in caplog.records)


async def _fresh(http: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
    got = await overview(http, url)
    return got if not got["sample"]["stale"] else None


async def first_event(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(f"{url}/api/events") as r:
        async for line in r.content:
            if line.startswith(b"data: "):
                return dict(json.loads(line[6:]))
    raise AssertionError("no event")


async def test_an_idle_event_stream_sends_one_event_per_sample_not_a_flood(redis: Redis) -> None:
    """Before: after the first sample every wait returned at once, and an idle stream wrote
    ~5,000 keep-alive comments a second."""
    async with (
        served(redis, interval=1.0) as server,
        aiohttp.ClientSession() as http,
        http.get(f"{server.url}/api/events") as r,
    ):
        lines: list[bytes] = []
        deadline = time.monotonic() + 2.5
        while (left := deadline - time.monotonic()) > 0:
            try:
                lines.append(await asyncio.wait_for(r.content.readline(), left))
            except asyncio.TimeoutError:
                break
    events = [line for line in lines if line.startswith(b"event: overview")]
    assert 2 <= len(events) <= 5, len(events)
    assert not [line for line in lines if line.startswith(b": keep-alive")]
