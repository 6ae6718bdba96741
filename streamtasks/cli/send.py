"""``streamtasks send STREAM key=value ...``: add one entry."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
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


def parse_delay(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    """``--delay``: seconds, a finite number >= 0."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise click.BadParameter(f"{value!r}: give a finite number of seconds >= 0")
    return seconds


def parse_eta(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    """``--eta``: an ISO-8601 time with its zone (``2030-01-01T09:00:00+01:00``, ``...Z``)."""
    if value is None:
        return None
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO-8601 time (2030-01-01T09:00:00+01:00)") from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise click.BadParameter(f"{value!r} has no time zone: add one (+01:00, Z)")
    if when.astimezone(timezone.utc).year > 9998:
        raise click.BadParameter(f"{value!r} is too far away")
    return when


@click.command()
@click.argument("stream")
@click.argument("fields", nargs=-1)
@redis_url_option
@click.option("--maxlen", type=click.IntRange(min=1), help="Trim the stream to about this many entries.")
@click.option("--delay", callback=parse_delay, metavar="SECONDS", help="Add it this many seconds from now.")
@click.option("--eta", callback=parse_eta, metavar="ISO-8601", help="Add it at this time (with its zone).")
@click.option(
    "--priority",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Priority level of a stream served with priorities=N (0 is the highest: STREAM itself).",
)
def send(
    stream: str,
    fields: tuple[str, ...],
    redis_url: str | None,
    maxlen: int | None,
    delay: float | None,
    eta: datetime | None,
    priority: int,
) -> None:
    """Add an entry to STREAM and print its id. FIELDS are key=value or key:=json.

    With --delay or --eta the entry waits in Redis until it is due (a worker serving STREAM
    adds it then), and its message id is printed: `streamtasks scheduled list|cancel` use it.
    """
    from ..producer import Producer

    if delay is not None and eta is not None:
        raise click.UsageError("give --delay or --eta, not both")
    payload = parse_field_args(fields)

    async def go() -> str:
        async with connected(redis_url) as redis:
            return await Producer(redis, maxlen=maxlen).send(
                stream, payload, delay=delay, eta=eta, priority=priority
            )

    click.echo(run(go()))
