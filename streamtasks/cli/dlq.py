"""``streamtasks dlq``: list, show, replay and purge dead letters (:mod:`streamtasks.deadletter`)."""

from __future__ import annotations

import json
from typing import Any

import click

from ..keys import dead_letter_stream
from .common import connected, redis_url_option, run


def _dead_name(stream: str, dead_stream: str | None) -> str:
    if dead_stream:
        return dead_stream
    return stream if stream.endswith(":dead") else dead_letter_stream(stream)


async def _dead_names(redis: Any, stream: str, dead_stream: str | None) -> list[str]:
    """The dead-letter streams of STREAM: one, or one per shard of a sharded stream."""
    from ..observe.inspect import shards_of

    if dead_stream or stream.endswith(":dead"):
        return [_dead_name(stream, dead_stream)]
    return [dead_letter_stream(s) for s in await shards_of(redis, stream)]


dead_option = click.option("--dead-stream", help="Dead-letter stream name (default: STREAM:dead).")


@click.group()
def dlq() -> None:
    """Inspect, replay and purge dead-letter streams."""


@dlq.command("list")
@click.argument("stream")
@redis_url_option
@dead_option
@click.option("--count", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def dlq_list(stream: str, redis_url: str | None, dead_stream: str | None, count: int, as_json: bool) -> None:
    """List the dead letters of STREAM (oldest first; a sharded stream: every shard's)."""
    from ..deadletter import list_dead

    async def go() -> tuple[dict[str, int], list[Any]]:
        async with connected(redis_url) as redis:
            by_stream: dict[str, int] = {}
            letters: list[Any] = []
            for dead in await _dead_names(redis, stream, dead_stream):
                by_stream[dead] = int(await redis.xlen(dead))
                letters += await list_dead(redis, dead, count - len(letters)) if len(letters) < count else []
            return by_stream, letters

    by_stream, letters = run(go())
    total = sum(by_stream.values())
    name = next(iter(by_stream)) if len(by_stream) == 1 else f"{stream} ({len(by_stream)} shards)"
    if as_json:
        doc = {"dead_stream": name, "total": total, "entries": [_letter_dict(d) for d in letters]}
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
def dlq_show(stream: str, dead_id: str, redis_url: str | None, dead_stream: str | None) -> None:
    """Print one dead letter in full (JSON)."""
    from ..deadletter import get_dead

    name = _dead_name(stream, dead_stream)

    async def go() -> Any:
        async with connected(redis_url) as redis:
            return await get_dead(redis, name, dead_id)

    letter = run(go())
    if letter is None:
        raise click.ClickException(f"no dead letter {dead_id} in {name}")
    click.echo(json.dumps(_letter_dict(letter, full=True), indent=2, ensure_ascii=False))


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
    name = _dead_name(stream, dead_stream)

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
def dlq_purge(
    stream: str, redis_url: str | None, dead_stream: str | None, ids: tuple[str, ...], everything: bool
) -> None:
    """Delete dead letters for good."""
    from ..deadletter import purge

    if bool(ids) == everything:
        raise click.UsageError("give --id ... or --all")
    name = _dead_name(stream, dead_stream)

    async def go() -> int:
        async with connected(redis_url) as redis:
            return await purge(redis, name, ids, everything)

    click.echo(f"purged {run(go())} dead letter(s) from {name}")


def _letter_dict(d: Any, full: bool = False) -> dict[str, Any]:
    out = {
        "dead_id": d.dead_id, "stream": d.stream, "id": d.id, "group": d.group, "handler": d.handler,
        "reason": d.reason, "error_type": d.error_type, "error": d.error, "attempts": d.attempts,
        "first_failure_ms": d.first_failure_ms, "last_failure_ms": d.last_failure_ms,
    }  # fmt: skip
    if full:
        out["traceback"] = d.traceback
        out["fields"] = {k: v.decode("utf-8", "backslashreplace") for k, v in d.fields.items()}
    return out


def _ms_text(ms: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"
