"""The streams one handler serves -- its priority levels and shards -- and its flow options.

``stream_handler("orders", priorities=3, shards=4)`` serves, level 0 (the highest) first,
``orders:{0..3}``, ``orders:p1:{0..3}`` and ``orders:p2:{0..3}`` (names:
:func:`streamtasks.keys.level_stream`, :func:`streamtasks.keys.shard_stream`): one spec, one
lane, one dead-letter stream per stream. ``rate_limit`` and ``max_concurrency`` hold for the
handler as a whole (:func:`declared_stream`): every level and shard, on every worker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from attrs import evolve

from . import keys
from .keys import validate_name
from .limits import RateLimit
from .spec import shard_specs

if TYPE_CHECKING:
    from .spec import HandlerSpec

#: ``priorities=`` at most: every level is a stream every worker reads.
MAX_PRIORITIES = 10


def flow_options(
    shards: int | None, rate_limit: object, max_concurrency: int | None, priorities: int | None
) -> dict[str, Any]:
    """Check ``stream_handler``'s fan-out and flow options (a bad one raises at decoration
    time); returns the :class:`HandlerSpec` fields they set."""
    if shards is not None and shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards!r}")
    if priorities is not None and (
        isinstance(priorities, bool)
        or not isinstance(priorities, int)
        or not 1 <= priorities <= MAX_PRIORITIES
    ):
        raise ValueError(f"priorities must be an int from 1 to {MAX_PRIORITIES}, got {priorities!r}")
    if max_concurrency is not None and (
        isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int)
    ):
        raise ValueError(f"max_concurrency must be an int >= 1, got {max_concurrency!r}")
    limit = (
        rate_limit if rate_limit is None or isinstance(rate_limit, RateLimit) else RateLimit.parse(rate_limit)
    )
    return {"rate_limit": limit, "max_concurrency": max_concurrency, "priorities": priorities or 0}


def declared_stream(spec: HandlerSpec) -> str:
    """The stream the handler was declared on (``orders`` for ``orders:p1:{3}``): the one
    rate limit and concurrency limit of all its levels and shards are named after it."""
    return spec.priority_of or spec.shard_of or spec.stream


def level_target(spec: HandlerSpec, priority: int | None) -> str:
    """The stream an entry of ``priority`` goes to, before sharding: ``spec.stream`` at level
    0 (the default), ``<stream>:p<k>`` at level k; a level the handler lacks is a ValueError."""
    if priority is None or priority == 0:
        return spec.stream
    levels = spec.priorities or 1
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority < levels:
        raise ValueError(
            f"priority must be an int from 0 to {levels - 1} for {spec.stream!r}, got {priority!r}"
        )
    return keys.level_stream(spec.stream, priority)


def stream_specs(spec: HandlerSpec, dead_letter_stream: str | None) -> list[HandlerSpec]:
    """One spec per stream a sharded and/or prioritized ``spec`` serves, level 0 first. A given
    ``dead_letter_stream`` gets the same level and shard suffixes (each level and shard keeps
    its dead letters in its own Redis Cluster slot); else each stream's is ``<stream>:dead``."""
    out = []
    for level, name in enumerate(keys.level_streams(spec.stream, spec.priorities or 1)):
        given = keys.level_stream(dead_letter_stream, level) if dead_letter_stream else None
        dead = validate_name("dead-letter stream", given or keys.dead_letter_stream(name))
        prioritized = spec.stream if spec.priorities else ""
        one = evolve(spec, stream=name, level=level, priority_of=prioritized, dead_letter_stream=dead)
        out += shard_specs(one, given) if spec.shards else [one]
    return out
