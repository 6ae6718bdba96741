"""``streamtasks status``: the :func:`~streamtasks.observe.inspect.gather_status` picture as a
table or JSON, once or ``--watch``ed, with an exit status a cron job can act on."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

from ..connect import connect
from ..observe.inspect import DEFAULT_STUCK_AFTER, gather_status
from ..redisutil import REDIS_DOWN
from ..tlshint import tls_hint
from .common import EXIT_ERROR, EXIT_UNHEALTHY, redis_client, redis_url_option, split_streams

# -- rendering ---------------------------------------------------------------------------------


def render(status: Mapping[str, Any]) -> Any:
    """A rich renderable of a :func:`gather_status` dict (streams and workers tables, what could
    not be checked, the verdict), fitted to the width it is drawn at (:mod:`.status_view`)."""
    from .status_view import StatusView

    return StatusView(status)


# -- the command -----------------------------------------------------------------------------


def _targets(
    app: str | None, streams: str | None, group: str | None
) -> tuple[list[str] | None, str | None, dict[str, str]]:
    """Streams, group and dead-letter stream names from ``APP`` and/or ``--streams``."""
    from ..app import load_registry

    names = split_streams(streams)
    if app is None:
        return names, group, {}  # no group: every group (of the named streams, or of all)
    registry = load_registry(app)
    if names:
        registry = registry.only(names)
    dead = {s: spec.dead_letter_stream for s, spec in registry.handlers.items()}
    return list(registry.handlers), group or registry.group, dead


async def _status_once(url: str, **kw: Any) -> dict[str, Any]:
    opts: dict[str, Any] = {"socket_connect_timeout": 5, "socket_timeout": 10}
    hint = ""
    try:
        redis = await connect(url, **opts)
    except REDIS_DOWN as exc:  # unreachable: gather_status reports it as a problem
        hint = tls_hint(url, exc)  # the same advice as every other command's
        redis = redis_client(url, **opts)
    try:
        status = await gather_status(redis, **kw)
    finally:
        await redis.aclose()
    if hint and not status["redis"]["ok"] and not status["redis"]["refused"]:
        status["problems"][0] += hint
    return status


def _watch(url: str, interval: float, as_json: bool, kw: dict[str, Any]) -> dict[str, Any]:
    import click
    from rich.live import Live

    status = asyncio.run(_status_once(url, **kw))
    try:
        if as_json:
            while True:
                click.echo(json.dumps(status))
                time.sleep(interval)
                status = asyncio.run(_status_once(url, **kw))
        with Live(render(status), auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                status = asyncio.run(_status_once(url, **kw))
                live.update(render(status), refresh=True)
    except KeyboardInterrupt:
        return status


def _make_command() -> Any:
    import click

    @click.command("status")
    @click.argument("app", required=False)
    @click.option(
        "--streams",
        envvar="STREAMTASKS_STREAMS",
        show_envvar=True,
        help="Comma-separated streams (default: APP's streams, else every stream with a group).",
    )
    @click.option(
        "--group",
        envvar="STREAMTASKS_GROUP",
        show_envvar=True,
        help="Consumer group (default: APP's group, else every group of the streams).",
    )
    @redis_url_option
    @click.option(
        "--json", "as_json", is_flag=True, help="Print JSON (one document per refresh with --watch)."
    )
    @click.option("--watch", is_flag=True, help="Refresh until Ctrl-C; exits with the last verdict.")
    @click.option(
        "--interval",
        type=click.FloatRange(min=0.2),
        default=2.0,
        show_default=True,
        help="Seconds between refreshes with --watch.",
    )
    @click.option(
        "--stuck-after",
        type=click.FloatRange(min=0),
        default=DEFAULT_STUCK_AFTER,
        envvar="STREAMTASKS_STUCK_AFTER",
        show_envvar=True,
        show_default=True,
        help="A pending entry older than this many seconds (since XADD) is stuck.",
    )
    def status(
        app: str | None,
        streams: str | None,
        group: str | None,
        redis_url: str | None,
        as_json: bool,
        watch: bool,
        interval: float,
        stuck_after: float,
    ) -> None:
        """Lag, pending, stuck entries, dead letters, delayed entries, periodic handlers and live
        workers of APP (MODULE:ATTR).

        Without APP or --streams: every consumer group in this Redis. Unhealthy (exit 3; the
        output says why): a named stream no worker reads (no group), entries waiting with no
        live worker, a dead consumer holding entries, a pending entry older than
        --stuck-after, Redis unreachable. A worker still starting (Ray) counts as live.
        """
        from ..config import RedisConfig
        from ..errors import StreamtasksError
        from ..logs import redact

        try:
            names, grp, dead = _targets(app, streams, group)
            url = redis_url or RedisConfig.from_env().url
        except StreamtasksError as exc:
            raise click.ClickException(redact(str(exc))) from None
        kw: dict[str, Any] = {
            "streams": names,
            "group": grp,
            "dead_letter_streams": dead,
            "stuck_after": stuck_after,
            "named": split_streams(streams) or (),
        }
        redis_client(url)  # a URL that cannot be parsed: one line, exit 1
        if watch:
            result = _watch(url, interval, as_json, kw)
        else:
            result = asyncio.run(_status_once(url, **kw))
            if as_json:
                click.echo(json.dumps(result, indent=2))
            elif not result["redis"]["ok"]:
                click.echo(f"UNHEALTHY: {result['problems'][0]}")  # one line, not a table
            else:
                from rich.console import Console

                Console().print(render(result))
        if result["redis"]["refused"]:
            raise SystemExit(EXIT_ERROR)  # a configuration error, not an outage
        if not result["ok"]:
            raise SystemExit(EXIT_UNHEALTHY)

    return status


#: ``streamtasks status`` (registered on the CLI group in :mod:`streamtasks.cli`).
status_command = _make_command()
