"""``streamtasks dlq``: list, show, replay and purge dead letters (:mod:`streamtasks.deadletter`)."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import click

from ..keys import dead_letter_stream
from .common import connected, redis_url_option, run


def _dead_name(stream: str, dead_stream: str | None, app: str | None = None) -> str:
    """``--dead-stream``, else STREAM's ``dead_letter_stream`` in APP, else ``STREAM:dead``."""
    if dead_stream:
        return dead_stream
    if app:
        from ..app import load_registry
        from ..errors import ConfigError

        spec = load_registry(app).handlers.get(stream)
        if spec is None:
            raise ConfigError(f"{app} has no handler for stream {stream!r}")
        return spec.dead_letter_stream
    return stream if stream.endswith(":dead") else dead_letter_stream(stream)


def dead_option(command: Any) -> Any:
    """``--app`` and ``--dead-stream``: where STREAM's dead letters are."""
    command = click.option(
        "--dead-stream", help="Dead-letter stream name (default: from --app, else STREAM:dead)."
    )(command)
    return click.option(
        "--app", envvar="STREAMTASKS_APP", show_envvar=True, metavar="MODULE:ATTR",
        help="The Registry serving STREAM: its dead_letter_stream= is used.",
    )(command)  # fmt: skip


async def _dead_names(redis: Any, stream: str, dead_stream: str | None, app: str | None = None) -> list[str]:
    """The dead-letter streams of STREAM: one, or one per shard of a sharded stream."""
    from ..observe.inspect import shards_of

    if dead_stream or app or stream.endswith(":dead"):
        return [_dead_name(stream, dead_stream, app)]
    return [dead_letter_stream(s) for s in await shards_of(redis, stream)]


@click.group()
def dlq() -> None:
    """Inspect, replay and purge dead-letter streams."""


@dlq.command("list")
@click.argument("stream")
@redis_url_option
@dead_option
@click.option("--count", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def dlq_list(
    stream: str, redis_url: str | None, app: str | None, dead_stream: str | None, count: int, as_json: bool
) -> None:
    """List the dead letters of STREAM (oldest first; a sharded stream: every shard's)."""
    from ..deadletter import list_dead

    async def go() -> tuple[dict[str, int], list[Any]]:
        async with connected(redis_url) as redis:
            by_stream: dict[str, int] = {}
            letters: list[Any] = []
            for dead in await _dead_names(redis, stream, dead_stream, app):
                by_stream[dead] = int(await redis.xlen(dead))
                letters += await list_dead(redis, dead, count - len(letters)) if len(letters) < count else []
            return by_stream, letters

    by_stream, letters = run(go())
    total = sum(by_stream.values())
    name = next(iter(by_stream)) if len(by_stream) == 1 else f"{stream} ({len(by_stream)} shards)"
    if as_json:
        doc = {"dead_stream": name, "total": total, "entries": [d.as_dict() for d in letters]}
        if len(by_stream) > 1:
            doc["shards"] = by_stream
        click.echo(json.dumps(doc, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{name}: {total} dead letter(s)")
    for col in ("dead id", "entry id", "reason", "error", "attempts", "last failure"):
        table.add_column(col)
    for d in letters:
        table.add_row(
            d.dead_id,
            d.id,
            d.reason,
            f"{d.error_type}: {d.error}"[:80],
            str(d.attempts),
            _ms_text(d.last_failure_ms),
        )
    Console().print(table)


@dlq.command("show")
@click.argument("stream")
@click.argument("dead_id")
@redis_url_option
@dead_option
def dlq_show(
    stream: str, dead_id: str, redis_url: str | None, app: str | None, dead_stream: str | None
) -> None:
    """Print one dead letter in full (JSON)."""
    from ..deadletter import get_dead

    name = _dead_name(stream, dead_stream, app)

    async def go() -> Any:
        async with connected(redis_url) as redis:
            return await get_dead(redis, name, dead_id)

    letter = run(go())
    if letter is None:
        raise click.ClickException(f"no dead letter {dead_id} in {name}")
    click.echo(json.dumps(letter.as_dict(full=True), indent=2, ensure_ascii=False))


@dlq.command("replay")
@click.argument("stream")
@redis_url_option
@dead_option
@click.option("--id", "ids", multiple=True, help="Dead-letter id to replay (repeatable).")
@click.option("--error-type", help="Replay the dead letters with this error type or reason code.")
@click.option("--all", "everything", is_flag=True, help="Replay every dead letter.")
def dlq_replay(
    stream: str,
    redis_url: str | None,
    app: str | None,
    dead_stream: str | None,
    ids: tuple[str, ...],
    error_type: str | None,
    everything: bool,
) -> None:
    """Move dead letters back onto their stream, with a fresh attempt count.

    Each dead letter is moved atomically (added to the stream, removed from the dead-letter
    stream), so replaying the same one twice adds it once.
    """
    from ..deadletter import replay, select_dead

    if sum(map(bool, (ids, error_type, everything))) != 1:
        raise click.UsageError("give exactly one of --id, --error-type, --all")
    name = _dead_name(stream, dead_stream, app)

    async def go() -> list[tuple[str, str]]:
        async with connected(redis_url) as redis:
            letters = await select_dead(redis, name, ids=ids, error_type=error_type, everything=everything)
            return await replay(redis, name, letters)

    moved = run(go())
    for dead_id, new_id in moved:
        click.echo(f"{dead_id} -> {new_id}")
    click.echo(f"replayed {len(moved)} dead letter(s) from {name}")


@dlq.command("purge")
@click.argument("stream")
@redis_url_option
@dead_option
@click.option("--id", "ids", multiple=True, help="Dead-letter id to delete (repeatable).")
@click.option("--all", "everything", is_flag=True, help="Delete the whole dead-letter stream.")
@click.option("--yes", is_flag=True, help="Do not ask (needed for --all when not on a terminal).")
@click.option("--dry-run", is_flag=True, help="Print what would be deleted; delete nothing.")
def dlq_purge(
    stream: str, redis_url: str | None, app: str | None, dead_stream: str | None, ids: tuple[str, ...],
    everything: bool, yes: bool, dry_run: bool,
) -> None:  # fmt: skip
    """Delete dead letters for good.

    --all asks first on a terminal; elsewhere (a script, cron) it needs --yes. --dry-run
    prints what would go.
    """
    from ..deadletter import purge

    if bool(ids) == everything:
        raise click.UsageError("give --id ... or --all")
    name = _dead_name(stream, dead_stream, app)
    if not dry_run and everything and not yes and not _interactive():
        raise click.UsageError(f"--all deletes every dead letter in {name}: add --yes (or --dry-run)")

    async def go() -> int:
        async with connected(redis_url) as redis:
            total, shown = await _doomed(redis, name, ids, everything)
            if dry_run:
                _print_doomed(name, total, shown)
                return 0
            if everything and not yes and total:
                prompt = f"Delete all {total} dead letter(s) in {name} for good?"
                await asyncio.to_thread(click.confirm, prompt, abort=True)
            return await purge(redis, name, ids, everything)

    purged = run(go())
    if not dry_run:
        click.echo(f"purged {purged} dead letter(s) from {name}")


#: ``purge --all --dry-run`` lists this many of the dead letters it would delete.
DRY_RUN_SHOWN = 20


def _interactive() -> bool:
    return sys.stdin.isatty()


async def _doomed(redis: Any, name: str, ids: tuple[str, ...], everything: bool) -> tuple[int, list[Any]]:
    """How many dead letters a purge would delete, and (some of) them."""
    from ..deadletter import list_dead, select_dead

    if everything:
        return int(await redis.xlen(name)), await list_dead(redis, name, DRY_RUN_SHOWN)
    found = await select_dead(redis, name, ids=ids)
    return len(found), found


def _print_doomed(name: str, total: int, shown: list[Any]) -> None:
    for d in shown:
        click.echo(f"{d.dead_id}  {d.stream} {d.id}  {d.reason}: {d.error_type}")
    if total > len(shown):
        click.echo(f"... and {total - len(shown)} more")
    click.echo(f"would purge {total} dead letter(s) from {name} (dry run: nothing deleted)")


def _ms_text(ms: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"
