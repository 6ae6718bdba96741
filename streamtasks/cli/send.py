"""``streamtasks send STREAM key=value ...``: add one entry."""

from __future__ import annotations

import json
from typing import Any

import click

from .common import connected, redis_url_option, run


def parse_field_args(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``key=value`` (a string) or ``key:=json`` (a JSON value) -> fields."""
    fields: dict[str, Any] = {}
    for pair in pairs:
        if ":=" in pair and pair.index(":=") < pair.index("=") + 1:
            key, _, raw = pair.partition(":=")
            try:
                fields[key] = json.loads(raw)
            except ValueError as exc:
                raise click.BadParameter(f"{pair!r}: invalid JSON ({exc})") from None
        elif "=" in pair:
            key, _, value = pair.partition("=")
            fields[key] = value
        else:
            raise click.BadParameter(f"{pair!r} is not key=value or key:=json")
        if not key:
            raise click.BadParameter(f"{pair!r} has an empty field name")
    if not fields:
        raise click.BadParameter("give at least one key=value field")
    return fields


@click.command()
@click.argument("stream")
@click.argument("fields", nargs=-1)
@redis_url_option
@click.option("--maxlen", type=click.IntRange(min=1), help="Trim the stream to about this many entries.")
@click.option(
    "--priority",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Priority level of a stream served with priorities=N (0 is the highest: STREAM itself).",
)
def send(
    stream: str, fields: tuple[str, ...], redis_url: str | None, maxlen: int | None, priority: int
) -> None:
    """Add an entry to STREAM and print its id. FIELDS are key=value or key:=json."""
    from ..producer import Producer

    payload = parse_field_args(fields)

    async def go() -> str:
        async with connected(redis_url) as redis:
            return await Producer(redis, maxlen=maxlen).send(stream, payload, priority=priority)

    click.echo(run(go()))
