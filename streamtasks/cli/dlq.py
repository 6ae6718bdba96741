"""``streamtasks dlq``: list, show, replay and purge dead letters (:mod:`streamtasks.deadletter`)."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import click

from ..keys import dead_letter_stream
from .common import connected, redis_url_option, run


def _app_dead_names(stream: str, app: str) -> list[str]:
    """STREAM's ``dead_letter_stream`` in APP (every shard's and level's, for a sharded or
    prioritized stream)."""
    from ..app import load_registry
    from ..errors import ConfigError

    specs = load_registry(app).handlers
    names = [
        spec.dead_letter_stream
        for name, spec in specs.items()
        if stream in (name, spec.shard_of, spec.priority_of)
    ]
    if not names:
        raise ConfigError(f"{app} has no handler for stream {stream!r}")
    return names


def dead_option(command: Any) -> Any:
    """``--app`` and ``--dead-stream``: where STREAM's dead letters are."""
    command = click.option(
        "--dead-stream", help="Dead-letter stream name (default: from --app, else STREAM:dead)."
    )(command)
    return click.option(
        "--app",
        envvar="STREAMTASKS_APP",
        show_envvar=True,
        metavar="MODULE:ATTR",
        help="The Registry serving STREAM: its dead_letter_stream= is used.",
    )(command)


async def _dead_names(
    redis: Any, stream: str, dead_stream: str | None, app: str | None = None, findings: Any = None
) -> list[str]:
    """Where STREAM's dead letters are: ``--dead-stream``, else STREAM's ``dead_letter_stream``
    in APP, else ``STREAM:dead``; for a sharded stream, one per shard (a user who may not run
    ``EXISTS``: STREAM's own, noted in ``findings``)."""
    from ..observe.inspect import shards_of
    from ..observe.readings import Findings

    if dead_stream:
        return [dead_stream]
    if app:
        return _app_dead_names(stream, app)
    if stream.endswith(":dead"):
        return [stream]
    f = Findings() if findings is None else findings
    return [
        dead_letter_stream(s) for s in await f.read("EXISTS", shards_of(redis, stream), [stream], key=stream)
    ]


async def _by_stream(redis: Any, names: list[str], ids: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """The ``ids`` grouped by the dead-letter stream holding each (ids are per stream, so on a
    sharded stream one may be in several: that is an error naming them). Ids found nowhere
    stay with every stream (a purge or replay of them does nothing there)."""
    from ..deadletter import get_dead

    if len(names) == 1 or not ids:
        return dict.fromkeys(names, ids)
    found: dict[str, list[str]] = {name: [] for name in names}
    for dead_id in ids:
        holders = [name for name in names if await get_dead(redis, name, dead_id) is not None]
        if len(holders) > 1:
            raise click.ClickException(
                f"dead letter {dead_id} is in {len(holders)} shards ({', '.join(holders)}): "
                "name one with --dead-stream"
            )
        for name in holders or names:
            found[name].append(dead_id)
    return {name: tuple(chosen) for name, chosen in found.items() if chosen}


def _where(names: list[str], stream: str) -> str:
    return names[0] if len(names) == 1 else f"{stream}'s {len(names)} shards"


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
    from ..observe.readings import Findings

    found = Findings()

    async def go() -> tuple[dict[str, int | None], list[Any]]:
        async with connected(redis_url) as redis:
            by_stream: dict[str, int | None] = {}
            letters: list[Any] = []
            for dead in await _dead_names(redis, stream, dead_stream, app, found):
                by_stream[dead] = await found.read("XLEN", redis.xlen(dead), None, key=dead)
                if len(letters) < count:
                    letters += await found.read(
                        "XRANGE", list_dead(redis, dead, count - len(letters)), [], key=dead
                    )
            return by_stream, letters

    by_stream, letters = run(go())
    known = [n for n in by_stream.values() if n is not None]
    total = sum(known) if len(known) == len(by_stream) else None
    name = next(iter(by_stream)) if len(by_stream) == 1 else f"{stream} ({len(by_stream)} shards)"
    if as_json:
        doc: dict[str, Any] = {"dead_stream": name, "total": total, "entries": [d.as_dict() for d in letters]}
        if len(by_stream) > 1:
            doc["shards"] = by_stream
        doc["not_checked"] = found.not_checked()
        click.echo(json.dumps(doc, indent=2))
        return
    _print_letters(name, total, letters, found.not_checked())


def _print_letters(name: str, total: int | None, letters: list[Any], not_checked: list[str]) -> None:
    """The dead letters as a table (every value plain text, never rich markup), and what the
    Redis user may not read."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(f"{name}: {'-' if total is None else total} dead letter(s)"))
    for col in ("dead id", "entry id", "reason", "error", "attempts", "last failure"):
        table.add_column(col)
    for d in letters:
        cells = [
            d.dead_id,
            d.id,
            d.reason,
            f"{d.error_type}: {d.error}"[:80],
            str(d.attempts),
            _ms_text(d.last_failure_ms),
        ]
        table.add_row(*map(Text, cells))
    console = Console()
    console.print(table)
    for line in not_checked:
        console.print(Text(f"not read: {line}", style="yellow"))


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

    async def go() -> tuple[Any, list[str]]:
        async with connected(redis_url) as redis:
            names = await _dead_names(redis, stream, dead_stream, app)
            for name in await _by_stream(redis, names, (dead_id,)):
                letter = await get_dead(redis, name, dead_id)
                if letter is not None:
                    return letter, names
            return None, names

    letter, names = run(go())
    if letter is None:
        raise click.ClickException(f"no dead letter {dead_id} in {_where(names, stream)}")
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

    async def go() -> tuple[list[tuple[str, str]], list[str]]:
        async with connected(redis_url) as redis:
            names = await _dead_names(redis, stream, dead_stream, app)
            moved: list[tuple[str, str]] = []
            for name, some in (await _by_stream(redis, names, ids)).items():
                letters = await select_dead(
                    redis, name, ids=some, error_type=error_type, everything=everything
                )
                moved += await replay(redis, name, letters)
            return moved, names

    moved, names = run(go())
    for dead_id, new_id in moved:
        click.echo(f"{dead_id} -> {new_id}")
    click.echo(f"replayed {len(moved)} dead letter(s) from {_where(names, stream)}")


@dlq.command("purge")
@click.argument("stream")
@redis_url_option
@dead_option
@click.option("--id", "ids", multiple=True, help="Dead-letter id to delete (repeatable).")
@click.option("--all", "everything", is_flag=True, help="Delete the whole dead-letter stream.")
@click.option("--yes", is_flag=True, help="Do not ask (needed for --all when not on a terminal).")
@click.option("--dry-run", is_flag=True, help="Print what would be deleted; delete nothing.")
def dlq_purge(
    stream: str,
    redis_url: str | None,
    app: str | None,
    dead_stream: str | None,
    ids: tuple[str, ...],
    everything: bool,
    yes: bool,
    dry_run: bool,
) -> None:
    """Delete dead letters for good.

    --all asks first on a terminal; elsewhere (a script, cron) it needs --yes. --dry-run
    prints what would go.
    """
    from ..deadletter import purge

    if bool(ids) == everything:
        raise click.UsageError("give --id ... or --all")
    if not dry_run and everything and not yes and not _interactive():
        raise click.UsageError(f"--all deletes every dead letter of {stream}: add --yes (or --dry-run)")

    async def go() -> tuple[int, str]:
        async with connected(redis_url) as redis:
            names = await _dead_names(redis, stream, dead_stream, app)
            where = _where(names, stream)
            doomed = await _by_stream(redis, names, ids)
            total, shown = 0, list[Any]()
            for name, some_ids in doomed.items():
                count, some = await _doomed(redis, name, some_ids, everything)
                total, shown = total + count, shown + some
            if dry_run:
                _print_doomed(where, total, shown[:DRY_RUN_SHOWN])
                return 0, where
            if everything and not yes and total:
                prompt = f"Delete all {total} dead letter(s) in {where} for good?"
                await asyncio.to_thread(click.confirm, prompt, abort=True)
            return sum([await purge(redis, name, some, everything) for name, some in doomed.items()]), where

    purged, where = run(go())
    if not dry_run:
        click.echo(f"purged {purged} dead letter(s) from {where}")


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
