"""``streamtasks scheduled``: list and cancel delayed entries before they are due
(:mod:`streamtasks.delayed`). A sharded stream's name stands for all its shards."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime, timezone
from typing import Any

import click

from ..keys import RESERVED_PREFIX
from .common import connected, redis_url_option, run

#: A message id given to ``--id`` has at most this many characters.
MAX_ID_CHARS = 512


def check_ids(_ctx: click.Context, _param: click.Parameter, ids: tuple[str, ...]) -> tuple[str, ...]:
    """``--id`` values: 1 to :data:`MAX_ID_CHARS` characters each (a usage error otherwise)."""
    for mid in ids:
        if not mid or len(mid) > MAX_ID_CHARS:
            raise click.BadParameter(f"a message id has 1 to {MAX_ID_CHARS} characters, got {len(mid)}")
    return tuple(dict.fromkeys(ids))


def due_text(ms: int) -> str:
    """A due time as UTC ISO-8601 (milliseconds)."""
    try:
        return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds")
    except (OverflowError, OSError, ValueError):
        return str(ms)


async def _streams(redis: Any, stream: str) -> list[str]:
    from ..observe.inspect import shards_of

    return await shards_of(redis, stream)


@click.group()
def scheduled() -> None:
    """List and cancel delayed entries (sent with delay= or eta=) before they are due."""


@scheduled.command("list")
@click.argument("stream")
@redis_url_option
@click.option("--count", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def scheduled_list(stream: str, redis_url: str | None, count: int, as_json: bool) -> None:
    """List the delayed entries of STREAM, soonest due first: due time, message id, fields."""
    from ..delayed import list_scheduled

    async def go() -> tuple[int, list[tuple[str, Any]]]:
        async with connected(redis_url) as redis:
            total, found = 0, []
            for name in await _streams(redis, stream):
                n, entries = await list_scheduled(redis, name, count)
                total += n
                found += [(name, e) for e in entries]
            return total, sorted(found, key=lambda f: f[1].due_ms)[:count]

    total, found = run(go())
    if as_json:
        rows = [{"stream": name, **e.as_dict(), "due": due_text(e.due_ms)} for name, e in found]
        click.echo(
            json.dumps({"stream": stream, "total": total, "entries": rows}, indent=2, ensure_ascii=False)
        )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{stream}: {total} delayed entr{'y' if total == 1 else 'ies'}", title_justify="left")
    table.add_column("due (UTC)", no_wrap=True)
    table.add_column("message id", no_wrap=True)
    table.add_column("fields")
    for _, e in found:
        shown = e.as_dict()["fields"]
        own = {} if shown is None else {k: v for k, v in shown.items() if not k.startswith(RESERVED_PREFIX)}
        text = e.problem if shown is None else " ".join(f"{k}={v}" for k, v in own.items())
        table.add_row(due_text(e.due_ms), e.message_id, (text or "")[:120])
    Console().print(table)


@scheduled.command("cancel")
@click.argument("stream")
@redis_url_option
@click.option("--id", "ids", multiple=True, callback=check_ids, help="Message id to cancel (repeatable).")
@click.option("--all", "everything", is_flag=True, help="Cancel every delayed entry of STREAM.")
@click.option("--yes", is_flag=True, help="Do not ask (needed for --all when not on a terminal).")
def scheduled_cancel(
    stream: str, redis_url: str | None, ids: tuple[str, ...], everything: bool, yes: bool
) -> None:
    """Cancel delayed entries of STREAM by message id, or all of them.

    An entry already due and moved into the stream is not touched. --all asks first on a
    terminal; elsewhere it needs --yes.
    """
    from ..delayed import cancel

    if bool(ids) == everything:
        raise click.UsageError("give --id ... or --all")
    if everything and not yes and not sys.stdin.isatty():
        raise click.UsageError(f"--all cancels every delayed entry of {stream}: add --yes")

    async def go() -> int:
        async with connected(redis_url) as redis:
            names = await _streams(redis, stream)
            if everything and not yes:
                waiting = sum([int(await redis.zcard(_key(name))) for name in names])
                prompt = f"Cancel all {waiting} delayed entries of {stream}?"
                await asyncio.to_thread(click.confirm, prompt, abort=True)
            return sum([await cancel(redis, name, ids, everything) for name in names])

    cancelled = run(go())
    what = "every delayed entry" if everything else f"{len(ids)} message id(s)"
    click.echo(
        f"cancelled {cancelled} delayed entr{'y' if cancelled == 1 else 'ies'} of {stream} ({what} asked)"
    )


def _key(stream: str) -> str:
    from ..keys import delayed_key

    return delayed_key(stream)
