"""The HTML pages: drawn on the server from the same data as the JSON endpoints, so they
work with scripts off; ``static/dashboard.js`` keeps the overview live (SSE) and sends the
replay and purge actions."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from ..inspect import secs
from ..scheduled import due_in
from . import api, queries
from .api import panel_data
from .board import DASHBOARD, Dashboard
from .panels import Chart, Figures, Table
from .svg import line_chart


def _board(request: web.Request) -> Dashboard:
    return request.app[DASHBOARD]


def when(ms_or_s: float | None, ms: bool = True) -> str:
    if not ms_or_s:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms_or_s / 1000 if ms else ms_or_s))


def ray_text(ray: dict[str, Any] | None) -> str:
    """``CPU 1/2 · GPU 0/1``: what is free of what the worker's Ray cluster has."""
    if not ray:
        return "-"
    total, free = ray.get("total", {}), ray.get("available", {})
    return " · ".join(f"{k} {free.get(k, 0):g}/{v:g}" for k, v in total.items() if k != "memory") or "-"


async def overview(request: web.Request) -> web.Response:
    board = _board(request)
    queries.only_params(request.query, ())
    status = await board.sampler.view()
    return board.render(
        "overview.html",
        status=status,
        secs=secs,
        ray_text=ray_text,
        page="overview",
        stale_after=board.sampler.stale_after,
        due_in=due_in,
    )


async def stream(request: web.Request) -> web.Response:
    board = _board(request)
    queries.only_params(request.query, ("limit",))
    name = queries.known_stream(board.targets, request.match_info["stream"])
    detail = await queries.stream_detail(
        board.redis, board.targets, name, queries.page_size(request.query.get("limit"))
    )
    return board.render("stream.html", s=detail, secs=secs, page="stream")


async def dead_letters(request: web.Request) -> web.Response:
    board = _board(request)
    stream = request.query.get("stream") or (board.targets.streams[0] if board.targets.streams else "")
    query = {k: _ms_of(k, v) for k, v in request.query.items() if k != "stream"}
    data = await api.dead_page(board, stream, query)
    return board.render("deadletters.html", d=data, when=when, local=local_time, page="deadletters")


def _ms_of(name: str, value: str) -> str:
    """The form's ``since``/``until`` (``2026-01-31T08:00``, UTC) as milliseconds; other
    values, and milliseconds, as they are (the API checks them)."""
    if name not in ("since", "until") or "T" not in value:
        return value
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise queries.BadInput(f"{name} is a time like 2026-01-31T08:00 (UTC) or milliseconds") from None
    return str(int(at.replace(tzinfo=at.tzinfo or timezone.utc).timestamp() * 1000))


def local_time(ms: int | None) -> str:
    """Milliseconds as the form's ``datetime-local`` value (UTC)."""
    return "" if ms is None else time.strftime("%Y-%m-%dT%H:%M", time.gmtime(ms / 1000))


async def dead_letter(request: web.Request) -> web.Response:
    board = _board(request)
    name = queries.known_stream(board.targets, request.match_info["stream"])
    dead_id = queries.entry_id(request.match_info["dead_id"])
    from ...deadletter import get_dead

    letter = await get_dead(board.redis, board.targets.dead_of(name), dead_id)
    if letter is None:
        raise queries.BadInput("no such dead letter", 404)
    return board.render(
        "deadletter.html", d=letter.as_dict(full=True), stream=name, when=when, page="deadletters"
    )


async def panel(request: web.Request) -> web.Response:
    board = _board(request)
    found = board.panels.get(request.match_info["name"])
    if found is None:
        raise queries.BadInput("unknown panel", 404)
    params = await found.params(board.context)
    data = await panel_data(found, board, request.query)
    sections: list[tuple[str, str, Any]] = []
    for section in found.view(data):
        if isinstance(section, Chart):
            sections.append(
                ("chart", section.title, line_chart(section.title, section.unit, section.x, section.series))
            )
        elif isinstance(section, Table):
            sections.append(("table", section.title, section))
        elif isinstance(section, Figures):
            sections.append(("figures", "", section))
    values = {p.name: request.query.get(p.name, p.default) for p in params}
    return board.render(
        "panel.html", panel=found, params=params, values=values, sections=sections, page=f"panel:{found.name}"
    )


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/", overview)
    router.add_get("/streams/{stream}", stream)
    router.add_get("/deadletters", dead_letters)
    router.add_get("/deadletters/{stream}/{dead_id}", dead_letter)
    router.add_get("/panels/{name}", panel)
