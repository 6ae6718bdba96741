"""``streamtasks status``: the :func:`~streamtasks.observe.inspect.gather_status` picture as a
table or JSON, once or ``--watch``ed, with an exit status a cron job can act on."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

from ..connect import connect
from ..observe.inspect import DEFAULT_STUCK_AFTER, NO_GROUP, gather_status, secs
from ..redisutil import REDIS_DOWN
from .common import EXIT_ERROR, EXIT_UNHEALTHY, redis_client, redis_url_option, split_streams

# -- rendering ---------------------------------------------------------------------------------


def _num(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _consumer_text(c: Mapping[str, Any]) -> str:
    if c.get("live") and not c["pending"]:
        return f"{c['name']} (idle {secs(c['idle'])})"
    dead = "" if c.get("live") else ", DEAD"
    return f"{c['name']} ({c['pending']} pending, idle {secs(c['idle'])}{dead})"


def render(status: Mapping[str, Any]) -> Any:
    """A rich renderable (streams table, workers table, verdict) of a :func:`gather_status` dict."""
    from rich.console import Group
    from rich.text import Text

    if not status["redis"]["ok"]:  # nothing else to show: one line
        return Text(f"UNHEALTHY: {status['problems'][0]}", style="bold red")
    parts: list[Any] = [_streams_table(status)]
    if status["group"] is None and not status["streams"]:
        parts.append(Text("no consumer groups in this Redis (no worker has started on it)"))
    parts.append(_workers_table(status) if status["workers"] else Text("no live workers", style="yellow"))
    if status.get("actors"):
        parts.append(_actors_table(status))
    parts.extend(Text(f"warning: {line}", style="yellow") for line in status.get("malformed") or ())
    if status["ok"]:
        parts.append(Text("healthy", style="bold green"))
    else:
        parts.append(Text("UNHEALTHY", style="bold red"))
        parts.extend(Text(f"  - {p}", style="red") for p in status["problems"])
    return Group(*parts)


def _streams_table(status: Mapping[str, Any]) -> Any:
    from rich.table import Table

    every_group = status["group"] is None
    title = f"streams (group {status['group']})" if not every_group else "streams (every consumer group)"
    table = Table(title=title, title_justify="left")
    columns = ["stream", "length", "lag", "pending", "oldest pending", "dead letters", "added/1m"]
    columns += ["trimmed (held by)", "consumers"]
    if every_group:
        columns.insert(1, "group")
    for col in columns:
        table.add_column(col, justify="left" if col in ("stream", "group", "consumers") else "right")
    for s in status["streams"]:
        row = _stream_row(s)
        if every_group:
            row.insert(1, s["group"] if s["group"] != NO_GROUP else "-")
        table.add_row(*row)
    for base, t in (status.get("shards") or {}).items():
        row = [
            f"{base} (all {t['shards']} shards)", _num(t["length"]), _num(t["lag"]), _num(t["pending"]),
            "", _num(t["dead_letters"]), "", "", "",
        ]  # fmt: skip
        if every_group:
            row.insert(1, "")
        table.add_row(*row)
    return table


def _stream_row(s: Mapping[str, Any]) -> list[str]:
    consumers = ", ".join(_consumer_text(c) for c in s["consumers"])
    added = _num(s.get("added_1m")) + ("+" if s.get("added_1m_capped") else "")
    group = "" if s["group_exists"] else " (no group)"
    trim = s.get("trim") or {}
    trimmed = f"{_num(trim.get('removed'))} ({trim.get('held_by') or '-'})"
    return [
        s["stream"] + group, _num(s["length"]), _num(s["lag"]), _num(s["pending"]),
        secs(s["oldest_pending_age"]), _num(s["dead_letters"]), added, trimmed, consumers or "-",
    ]  # fmt: skip


def _workers_table(status: Mapping[str, Any]) -> Any:
    from rich.table import Table

    workers = Table(title="live workers", title_justify="left")
    for col in ("consumer", "group", "state", "host", "pid", "last heartbeat", "in flight", "streams"):
        workers.add_column(col)
    for w in status["workers"]:
        workers.add_row(
            str(w["consumer"]), str(w.get("group") or "-"), str(w.get("state") or "-"),
            str(w["host"] or "-"), str(w["pid"] or "-"), secs(w["heartbeat_age"]) + " ago",
            _num(w["in_flight"]), ", ".join(w["streams"]),
        )  # fmt: skip
    return workers


def _actors_table(status: Mapping[str, Any]) -> Any:
    """Actor-mode workers' actors, per group of handlers: running of desired, what is still
    starting (Ray has not placed it), the bounds of ``--actors auto``, the last decision."""
    from rich.table import Table

    table = Table(title="actors", title_justify="left")
    for col in ("worker", "handlers", "running / desired", "starting", "min-max", "last decision"):
        table.add_column(col)
    for pool in status["actors"]:
        for g in pool["groups"]:
            bounds = "fixed" if g["min"] is None else f"{g['min']}-{g['max']}"
            table.add_row(
                str(pool["consumer"]),
                ", ".join(g["handlers"]),
                f"{g['running']} / {g['desired']}",
                str(g["starting"]),
                bounds,
                g["reason"] or "-",
            )
    return table


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
    try:
        redis = await connect(url, **opts)
    except REDIS_DOWN:  # unreachable: gather_status reports it as a problem
        redis = redis_client(url, **opts)
    try:
        return await gather_status(redis, **kw)
    finally:
        await redis.aclose()


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
        app: str | None, streams: str | None, group: str | None, redis_url: str | None,
        as_json: bool, watch: bool, interval: float, stuck_after: float,
    ) -> None:  # fmt: skip
        """Lag, pending, stuck entries, dead letters and live workers of APP (MODULE:ATTR).

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
            "streams": names, "group": grp, "dead_letter_streams": dead, "stuck_after": stuck_after,
            "named": split_streams(streams) or (),
        }  # fmt: skip
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
