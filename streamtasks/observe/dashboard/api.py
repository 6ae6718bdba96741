"""The JSON endpoints and the server-sent event stream.

======================================  ============================================
``GET  /api/overview``                  the latest sample (:mod:`.sampler`)
``GET  /api/events``                    one ``overview`` event per sample (SSE)
``GET  /api/streams/<stream>``          numbers, pending entries, newest entries
``GET  /api/deadletters/<stream>``      dead letters, newest first, filtered
``GET  /api/deadletters/<stream>/<id>`` one dead letter with fields and traceback
``POST /api/deadletters/<stream>/replay``  ``{"ids": [...]}`` or ``{"match": {...}, "confirm": stream}``
``POST /api/deadletters/<stream>/purge``   the same, or ``{"all": true, "confirm": stream}``
``GET  /api/panels/<name>``             a panel's data
======================================  ============================================
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from ...logs import redact
from . import queries
from .board import DASHBOARD, SECURITY_HEADERS, Dashboard
from .panels import Panel
from .queries import BadInput, DeadFilter

#: Seconds between keep-alive comments on an idle event stream.
SSE_KEEPALIVE_S = 15.0
DEAD_PARAMS = ("handler", "reason", "since", "until", "limit", "before")


def _board(request: web.Request) -> Dashboard:
    return request.app[DASHBOARD]


def dumps(value: Any) -> str:
    return json.dumps(value, default=str, allow_nan=False)


def _json(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status, dumps=dumps)


async def overview(request: web.Request) -> web.Response:
    queries.only_params(request.query, ())
    board = _board(request)
    return _json(await board.sampler.view())


async def events(request: web.Request) -> web.StreamResponse:
    queries.only_params(request.query, ())
    board = _board(request)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    response.headers.update({k: v for k, v in SECURITY_HEADERS.items() if k != "Cache-Control"})
    await response.prepare(request)
    sampler = board.sampler
    board.live[id(request)] = request
    try:
        await _overview_event(response, await sampler.view())
        version, last = sampler.version, time.monotonic()
        while not board.closing:
            wait = max(0.05, min(SSE_KEEPALIVE_S - (time.monotonic() - last), sampler.stale_after))
            newer = await sampler.next_after(version, wait)
            current = sampler.current()
            if newer is not None:
                version = sampler.version
                await _overview_event(response, current)
            elif current is not None and current["sample"]["stale"]:
                await _overview_event(response, current)  # no new sample: how old the last one is
            elif time.monotonic() - last >= SSE_KEEPALIVE_S:
                await response.write(b": keep-alive\n\n")
            else:
                continue
            last = time.monotonic()
    except ConnectionResetError:  # the page went away (or the server closed it)
        pass
    finally:
        board.live.pop(id(request), None)
    return response


async def _overview_event(response: web.StreamResponse, sample: Any) -> None:
    await response.write(f"event: overview\ndata: {dumps(sample)}\n\n".encode())


async def stream(request: web.Request) -> web.Response:
    board = _board(request)
    queries.only_params(request.query, ("limit",))
    name = queries.known_stream(board.targets, request.match_info["stream"])
    limit = queries.page_size(request.query.get("limit"))
    return _json(await queries.stream_detail(board.redis, board.targets, name, limit))


async def dead_page(board: Dashboard, stream: str, query: Any) -> dict[str, Any]:
    """One filtered page of ``stream``'s dead letters (the API's and the page's data)."""
    queries.only_params(query, DEAD_PARAMS)
    name = queries.known_stream(board.targets, stream)
    flt = DeadFilter.parse(query)
    limit = queries.page_size(query.get("limit"))
    before = queries.entry_id(query["before"]) if query.get("before") else None
    dead = board.targets.dead_of(name)
    letters, cursor, capped = await queries.find_dead(board.redis, dead, flt, limit, before)
    return {
        "stream": name,
        "dead_letter_stream": dead,
        "total": int(await board.redis.xlen(dead)),
        "entries": [d.as_dict() for d in letters],
        "next": cursor,
        "scan_capped": capped,
        "filter": {"handler": flt.handler, "reason": flt.reason, "since": flt.since, "until": flt.until},
    }


async def dead_letters(request: web.Request) -> web.Response:
    return _json(await dead_page(_board(request), request.match_info["stream"], request.query))


async def dead_letter(request: web.Request) -> web.Response:
    board = _board(request)
    queries.only_params(request.query, ())
    name = queries.known_stream(board.targets, request.match_info["stream"])
    dead_id = queries.entry_id(request.match_info["dead_id"])
    from ...deadletter import get_dead

    letter = await get_dead(board.redis, board.targets.dead_of(name), dead_id)
    if letter is None:
        raise BadInput("no such dead letter", 404)
    return _json(letter.as_dict(full=True))


async def _action_body(request: web.Request) -> tuple[Any, str, dict[str, Any]]:
    board = _board(request)
    refused = board.access.refuse_write(request.headers, request.host)
    if refused is not None:
        raise BadInput(refused, 403)
    queries.only_params(request.query, ())
    name = queries.known_stream(board.targets, request.match_info["stream"])
    if request.content_type != "application/json":
        raise BadInput("send application/json", 415)
    try:
        body = json.loads(await request.text())
    except (ValueError, UnicodeDecodeError):
        raise BadInput("the body is not JSON") from None
    if not isinstance(body, dict):
        raise BadInput("the body must be a JSON object")
    return board, name, body


async def replay(request: web.Request) -> web.Response:
    board, name, body = await _action_body(request)
    return _json(await queries.replay(board.redis, board.targets, name, body))


async def purge(request: web.Request) -> web.Response:
    board, name, body = await _action_body(request)
    return _json(await queries.purge(board.redis, board.targets, name, body))


async def panel(request: web.Request) -> web.Response:
    board = _board(request)
    found = board.panels.get(request.match_info["name"])
    if found is None:
        raise BadInput("unknown panel", 404)
    return _json(await panel_data(found, board, request.query))


async def panel_data(found: Panel, board: Dashboard, query: Mapping[str, str]) -> dict[str, Any]:
    """A panel's data; its failure (a database down) is a 503 with the reason, redacted."""
    try:
        return await found.data(board.context, query)
    except BadInput:
        raise
    except Exception as exc:
        raise BadInput(
            f"{found.title} is unavailable: {redact(f'{type(exc).__name__}: {exc}')}", 503
        ) from None


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/overview", overview)
    router.add_get("/api/events", events)
    router.add_get("/api/streams/{stream}", stream)
    router.add_get("/api/deadletters/{stream}", dead_letters)
    router.add_get("/api/deadletters/{stream}/{dead_id}", dead_letter)
    router.add_post("/api/deadletters/{stream}/replay", replay)
    router.add_post("/api/deadletters/{stream}/purge", purge)
    router.add_get("/api/panels/{name}", panel)
