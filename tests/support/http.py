"""HTTP against a worker's or the dashboard's server: ``/metrics``, ``/readyz``."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

from support.waiting import wait_until


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=15) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def get(port: int, path: str) -> tuple[int, str]:
    return await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}{path}")


async def wait_ready(port: int, timeout: float = 60) -> None:
    async def ready() -> bool:
        return (await get(port, "/readyz"))[0] == 200

    await wait_until(ready, timeout=timeout, interval=0.2)
