"""``streamtasks trim STREAM``: ack-aware trimming, once (:mod:`streamtasks.worker.trim`)."""

from __future__ import annotations

import json
from typing import Any

import click

from .common import connected, redis_url_option, run


@click.command("trim")
@click.argument("stream")
@redis_url_option
@click.option(
    "--keep-acked-seconds",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Keep entries added in the last S seconds even when every group acked them.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def trim(stream: str, redis_url: str | None, keep_acked_seconds: float, as_json: bool) -> None:
    """Delete the entries of STREAM that EVERY consumer group has delivered and acked.

    Below the lowest, over the stream's groups, of (oldest pending id, last-delivered id);
    a stream without groups is left alone. A sharded stream's name trims every shard. Prints
    what was removed and what holds the rest back (a group, or the retention).
    """
    from ..observe.inspect import shards_of
    from ..worker.trim import trim_once

    async def go() -> list[dict[str, Any]]:
        async with connected(redis_url) as redis:
            out = []
            for name in await shards_of(redis, stream):
                result = await trim_once(redis, name, keep_acked_seconds)
                length = int(await redis.xlen(name))
                out.append(
                    {
                        "stream": name,
                        "removed": result.removed,
                        "length": length,
                        "minid": result.minid,
                        "held_by": result.held_by,
                    }
                )
            return out

    results = run(go())
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    for r in results:
        click.echo(
            f"{r['stream']}: removed {r['removed']:,}, {r['length']:,} left; "
            f"held back by {_held(r['held_by'])}" + (f" at {r['minid']}" if r["minid"] else "")
        )


def _held(held_by: str) -> str:
    from ..streams import NO_GROUP, RETENTION

    if held_by in (RETENTION, NO_GROUP):
        return held_by
    return f"group {held_by!r}"
