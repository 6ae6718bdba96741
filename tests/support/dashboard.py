"""Helpers of the dashboard tests: a dashboard served in this process, and dead letters
written the way the worker writes them."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sys
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from streamtasks.app import load_registry
from streamtasks.deadletter import dead_letter_fields
from streamtasks.observe.dashboard import Access, Dashboard, DashboardServer, Panel, Targets
from streamtasks.retry import ErrorInfo
from support.procs import free_port

TOKEN = "test-dashboard-token-5d1f"
INTEGRATION = Path(__file__).resolve().parents[1] / "integration"
CLI = [sys.executable, "-m", "streamtasks"]
APP = "obs_app:registry"


@contextlib.asynccontextmanager
async def served(
    redis: Redis, *, access: Access | None = None, panels: Sequence[Panel] = (), interval: float = 0.5
) -> AsyncIterator[DashboardServer]:
    registry = load_registry(APP)
    board = Dashboard(
        redis, Targets.of(registry), access or Access(token=TOKEN), registry=registry,
        panels=panels, interval=interval,
    )  # fmt: skip
    server = await DashboardServer(board, 0).start()
    try:
        yield server
    finally:
        await server.close()


async def add_dead(
    redis: Redis, stream: str, n: int, *, handler: str = "obs_app.work", reason: str = "handler_error",
    error_type: str = "ValueError", fields: dict[str, Any] | None = None,
) -> list[str]:  # fmt: skip
    """``n`` dead letters of ``stream`` as the worker writes them; their dead ids."""
    ids = []
    for i in range(n):
        error = ErrorInfo(error_type, f"boom {i}", reason, "Traceback (most recent call last): ...")
        raw = {"n": str(i), **(fields or {})}
        flat = dead_letter_fields(
            stream=stream, entry_id=f"{1000 + i}-0", group="obs-tests", handler=handler, error=error,
            attempts=3, raw=raw,
        )  # fmt: skip
        flat += ["first_failure_ms", "1000"]
        pairs = dict(zip(flat[::2], flat[1::2], strict=True))
        ids.append((await redis.xadd(f"{stream}:dead", pairs)).decode())  # type: ignore[arg-type]
    return ids


def write_headers(server: DashboardServer, token: str | None = TOKEN) -> dict[str, str]:
    headers = {"X-CSRF-Token": server.board.access.csrf_token, "Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


@contextlib.contextmanager
def served_in_thread(
    redis_url: str, panels: Sequence[Panel] = (), access: Access | None = None
) -> Iterator[str]:
    """A dashboard served from a thread with its own event loop (for sync tests); its URL."""
    ready: queue.Queue[tuple[str, asyncio.AbstractEventLoop, asyncio.Event] | BaseException] = queue.Queue()

    async def serve() -> None:
        redis = Redis.from_url(redis_url)
        stop = asyncio.Event()
        try:
            async with served(redis, panels=panels, access=access) as server:
                ready.put((server.url, asyncio.get_running_loop(), stop))
                await stop.wait()
        except BaseException as exc:
            ready.put(exc)
            raise
        finally:
            await redis.aclose()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    got = ready.get(timeout=30)
    if isinstance(got, BaseException):
        raise got
    url, loop, stop = got
    try:
        yield url
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)


def start_dashboard(spawn: Any, redis_url: str, **env: str) -> str:
    port = free_port()
    proc = spawn(
        [*CLI, "dashboard", "obs_app:registry", "--redis-url", redis_url, "--port", str(port),
         "--interval", "0.5"],
        cwd=INTEGRATION, env={"STREAMTASKS_DASHBOARD_TOKEN": TOKEN, **env}, name="dashboard",
    )  # fmt: skip
    proc.wait_for_log(r"dashboard on http://127\.0\.0\.1:\d+/", timeout=30)
    return f"http://127.0.0.1:{port}"
