"""Property, against a real redis-server: ``dlq show|replay|purge --id`` on a sharded stream
send each named dead letter to the shard's dead-letter stream that holds it. Dead-letter ids
are per stream, so an id may be in none, one or several shards: one shard gets it alone, none
leaves it with every shard (where replay and purge find nothing), several is a one-line error
naming them."""

from __future__ import annotations

import asyncio
import itertools

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from streamtasks.cli.dlq import _by_stream

pytestmark = pytest.mark.integration
SHARDS = 3
_examples = itertools.count()

# For each named id: the shards whose dead-letter stream holds it.
placements = st.lists(st.frozensets(st.integers(0, SHARDS - 1), max_size=SHARDS), min_size=1, max_size=8)


async def _scenario(redis_url: str, placement: list[frozenset[int]]) -> None:
    redis = Redis.from_url(redis_url)
    n = next(_examples)
    names = [f"dlqprop{n}:{{{shard}}}:dead" for shard in range(SHARDS)]
    ids = tuple(f"{k + 1}-0" for k in range(len(placement)))
    try:
        for dead_id, holders in zip(ids, placement, strict=True):
            for shard in holders:
                await redis.xadd(names[shard], {"_st_dl_reason": "handler_error", "f": "v"}, id=dead_id)
        several = [i for i, holders in zip(ids, placement, strict=True) if len(holders) > 1]
        if several:
            with pytest.raises(click.ClickException) as raised:
                await _by_stream(redis, names, ids)
            assert raised.value.message.startswith(f"dead letter {several[0]} is in ")
            assert "--dead-stream" in raised.value.message
            return
        got = await _by_stream(redis, names, ids)
        for dead_id, holders in zip(ids, placement, strict=True):
            expected = {names[s] for s in holders} or set(names)  # found nowhere: every stream
            assert {name for name, chosen in got.items() if dead_id in chosen} == expected
        assert all(chosen for chosen in got.values())  # no stream with nothing to do
    finally:
        await redis.delete(*names)
        await redis.aclose()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(placements)
def test_each_id_goes_to_the_shards_that_hold_it(redis_url: str, placement: list[frozenset[int]]) -> None:
    asyncio.run(_scenario(redis_url, placement))
