"""The stale marker in a real headless Chromium: ``streamtasks dashboard`` reads a real
redis-server through a TCP proxy; the proxy holds Redis' connections, and the page loaded
before (no reload) shows "STALE: this sample is N s old", its age growing; when Redis
answers again the marker goes away."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.browser import close_chromium, open_chromium, wait_for
from support.dashboard import start_dashboard
from support.proxy import TcpProxy

pytestmark = pytest.mark.integration


class ProxyThread:
    """A :class:`TcpProxy` on an event loop of its own thread (the test is synchronous)."""

    def __init__(self, port: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.proxy = TcpProxy("127.0.0.1", port)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self.proxy.start(), self.loop).result(10)

    def call(self, fn: Any, *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def proxy(redis_server: Any) -> Iterator[ProxyThread]:
    held = ProxyThread(redis_server.port)
    yield held
    held.close()


@pytest.fixture
def chrome(tmp_path: Path) -> Iterator[Any]:
    profile = tmp_path / "chromium-profile"
    driver = open_chromium(profile)
    yield driver
    close_chromium(driver, profile)


def stale_text(chrome: Any) -> str | None:
    marker = chrome.find_element("id", "stale")
    return str(marker.text) if marker.is_displayed() else None


def test_the_page_marks_its_sample_stale_while_redis_does_not_answer(
    redis: Any, proxy: ProxyThread, spawn: Any, chrome: Any
) -> None:
    url = start_dashboard(spawn, f"redis://127.0.0.1:{proxy.port}/0")
    chrome.get(url + "/")
    wait_for(lambda: chrome.find_element("id", "checked-at").text.startswith("sampled"), 20, "a sample")
    assert stale_text(chrome) is None
    chrome.execute_script("window.__notReloaded = true")
    proxy.call(proxy.proxy.pause)
    proxy.call(proxy.proxy.drop_all)
    first = wait_for(lambda: stale_text(chrome), 15, "the stale marker")
    assert re.fullmatch(r"STALE: this sample is \d+\.\ds old.*", first), first
    wait_for(lambda: age_of(stale_text(chrome)) > age_of(first) + 1, 10, "its age growing")
    proxy.call(proxy.proxy.resume)
    wait_for(lambda: stale_text(chrome) is None, 20, "the marker gone")
    assert chrome.execute_script("return window.__notReloaded === true")


def age_of(marker: str | None) -> float:
    """The age the marker shows (``STALE: this sample is 4.2s old ...``); 0 when hidden."""
    found = re.search(r"(\d+\.\d)s old", marker or "")
    return float(found.group(1)) if found else 0.0
