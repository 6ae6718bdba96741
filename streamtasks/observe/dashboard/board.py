"""What every handler shares: :class:`Dashboard` (the Redis client, targets, access rules,
sampler, panels and templates), the key it is stored under, and the security headers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web
from redis.asyncio import Redis

from ...registry import Registry
from ...worker.executors import Cluster
from .config import Access, Targets
from .panels import Panel, PanelContext
from .sampler import Sampler

HERE = Path(__file__).resolve().parent
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Dashboard:
    """Everything the handlers share: the Redis client, targets, access rules, the sampler,
    the panels and the templates."""

    def __init__(
        self,
        redis: Redis,
        targets: Targets,
        access: Access,
        *,
        registry: Registry | None = None,
        panels: Sequence[Panel] = (),
        interval: float = 1.0,
        cluster: Cluster | None = None,
    ) -> None:
        self.redis, self.targets, self.access = redis, targets, access
        #: Host header names accepted (None: any); a loopback-bound server accepts only
        #: loopback names, so a page that rebinds its DNS name to 127.0.0.1 cannot read it.
        self.allowed_hosts: frozenset[str] | None = None
        #: Requests of open event streams, and whether the server is closing: closing ends
        #: them at once (they would otherwise hold a worker's SIGTERM stop for a browser tab).
        self.live: dict[int, Any] = {}
        self.closing = False
        self.panels = {p.name: p for p in panels}
        self.context = PanelContext(redis, targets, registry)
        probes = [_probe(p, self.context) for p in panels if p.health is not None]
        self.sampler = Sampler(redis, targets, interval=interval, probes=probes, cluster=cluster)
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
        )

    def render(self, name: str, **values: Any) -> web.Response:
        page = self.templates.get_template(name).render(
            targets=self.targets,
            panels=list(self.panels.values()),
            csrf=self.access.csrf_token,
            writable=self.access.writable,
            read_only=self.access.read_only,
            **values,
        )
        return web.Response(text=page, content_type="text/html")


def _probe(panel: Panel, ctx: PanelContext) -> Callable[[], Awaitable[tuple[str, dict[str, Any]]]]:
    assert panel.health is not None
    health = panel.health

    async def probe() -> tuple[str, dict[str, Any]]:
        return await health(ctx)

    return probe


DASHBOARD: web.AppKey[Dashboard] = web.AppKey("dashboard", Dashboard)
