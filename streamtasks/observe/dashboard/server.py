"""The dashboard's web application (aiohttp) and how to serve it.

aiohttp, because one well-kept library gives the server, streaming responses for the
server-sent events and the client the tests use, and it runs on an existing event loop
without taking over signals -- so the same app serves ``streamtasks dashboard`` and a
worker's ``--dashboard-port`` on the worker's own loop. Pages are Jinja2 templates
(autoescaped); charts are SVG drawn on the server (:mod:`.svg`); everything is in the
package, nothing comes from a CDN.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from redis import exceptions as rx

from ...logs import redact
from ...redisutil import REDIS_DOWN
from . import api, pages
from .board import DASHBOARD, HERE, SECURITY_HEADERS, Dashboard
from .config import DEFAULT_HOST, Access
from .queries import BadInput

log = logging.getLogger("streamtasks.dashboard")
#: Request bodies (replay/purge selections) larger than this are refused.
MAX_BODY_BYTES = 64 * 1024
#: Seconds open requests get on close: event streams never end by themselves, and a worker
#: stopping on SIGTERM must not wait for a browser tab.
SHUTDOWN_GRACE_S = 0.5


@web.middleware
async def guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Basic auth for reading (when configured), 4xx for bad input, and the security headers."""
    board = request.app[DASHBOARD]
    is_api = request.path.startswith("/api/")
    try:
        if board.allowed_hosts is not None and _host_name(request.host) not in board.allowed_hosts:
            raise BadInput("unexpected Host header", 403)
        if not board.access.may_read(request.headers):
            raise web.HTTPUnauthorized(
                text="credentials required\n", headers={"WWW-Authenticate": 'Basic realm="streamtasks"'}
            )
        response = await handler(request)
    except BadInput as exc:
        response = _error(exc.status, str(exc), is_api)
    except REDIS_DOWN as exc:
        response = _error(503, f"Redis is unreachable: {redact(f'{type(exc).__name__}: {exc}')}", is_api)
    except rx.NoPermissionError as exc:
        response = _error(403, f"the Redis user may not read this: no permission (NOPERM): {exc}", is_api)
    except rx.ResponseError as exc:  # e.g. a key of another type than this page reads
        response = _error(500, f"Redis answered: {redact(str(exc))}", is_api)
    except web.HTTPException as exc:
        if exc.status < 400 or not is_api:
            raise
        response = _error(exc.status, exc.reason, True)
    if not response.prepared:
        response.headers.update(SECURITY_HEADERS)
    return response


LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


def _host_name(host: str) -> str:
    """``127.0.0.1:8555`` -> ``127.0.0.1``; ``[::1]:8555`` -> ``::1``."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _error(status: int, message: str, is_api: bool) -> web.Response:
    if is_api:
        return web.json_response({"error": message}, status=status, headers=SECURITY_HEADERS)
    return web.Response(status=status, text=f"{status}: {message}\n", headers=SECURITY_HEADERS)


def create_app(board: Dashboard) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY_BYTES)
    app[DASHBOARD] = board
    api.add_routes(app.router)
    pages.add_routes(app.router)
    app.router.add_static("/static/", HERE / "static", append_version=False)

    async def start(_: web.Application) -> None:
        board.sampler.start()

    async def stop(_: web.Application) -> None:
        await board.sampler.stop()
        for panel in board.panels.values():
            if panel.close is not None:
                await panel.close()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app


class DashboardServer:
    """A dashboard served on ``host:port`` from the running event loop (``port`` 0: any free)."""

    def __init__(self, board: Dashboard, port: int, host: str = DEFAULT_HOST) -> None:
        self.board, self.host, self.port = board, host, port
        self._runner: web.AppRunner | None = None

    async def start(self) -> DashboardServer:
        if self.host in LOOPBACK_NAMES:
            self.board.allowed_hosts = LOOPBACK_NAMES
        self._runner = web.AppRunner(
            create_app(self.board), access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE_S
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        log.info("dashboard on http://%s:%d/ (%s)", self.host, self.port, _mode(self.board.access))
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def close(self) -> None:
        self.board.closing = True  # open event streams end now, not after aiohttp's grace
        await self.board.sampler.wake()
        for _ in range(int(SHUTDOWN_GRACE_S / 0.05)):
            if not self.board.live:
                break
            await asyncio.sleep(0.05)
        for request in list(self.board.live.values()):  # a stream still writing: cut it
            if request.transport is not None:
                request.transport.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def _mode(access: Access) -> str:
    if access.read_only:
        return "read-only"
    return "actions need the token or credentials" if access.writable else "read-only: no token configured"
