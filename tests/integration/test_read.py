"""The read stage against a real redis-server: every lane is read at its own COUNT."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from streamtasks import Message, Registry
from streamtasks.worker.lanes import FIRST_READ_COUNT, Lane
from streamtasks.worker.read import Reader

pytestmark = pytest.mark.integration
ENTRY_BYTES = 512 * 1024
BUDGET = 2 * 1024 * 1024


def _lanes() -> dict[str, Lane]:
    registry = Registry(group="read-tests")

    def handle(msg: Message) -> None: ...

    registry.stream_handler("big")(handle)
    registry.stream_handler("idle")(handle)
    return {s: Lane(spec, prefetch=1, max_batch_bytes=BUDGET) for s, spec in registry.handlers.items()}


async def test_big_entries_are_read_at_their_lanes_count_beside_an_idle_stream(redis: Redis) -> None:
    """A lane of big entries is read a bytes budget at a time, not at the count of an idle
    lane that has not measured its entries yet (it would take FIRST_READ_COUNT of them)."""
    lanes = _lanes()
    reader = Reader(redis, "read-tests", "c1", lanes)
    await reader.ensure_groups()  # both empty: sizes unknown
    for i in range(FIRST_READ_COUNT + 10):
        await redis.xadd("big", {"n": str(i), "pad": b"x" * ENTRY_BYTES})
    big, idle = lanes["big"], lanes["idle"]
    first = await reader.read([big, idle], block=0.1)
    assert len(first[big]) == FIRST_READ_COUNT  # not measured yet
    big.sample_size(first[big])
    assert big.batch_size == BUDGET // big.entry_bytes == 3
    second = await reader.read([big, idle], block=0.1)
    assert set(second) == {big} and len(second[big]) == 3  # its own count, not the idle lane's 50


async def test_an_empty_round_blocks_once_over_every_lane(redis: Redis) -> None:
    """When every lane comes back empty the read blocks, and an entry added meanwhile on any
    stream ends it."""
    import asyncio

    lanes = _lanes()
    reader = Reader(redis, "read-tests", "c1", lanes)
    await reader.ensure_groups()

    async def add_later() -> None:
        await asyncio.sleep(0.2)
        await redis.xadd("idle", {"n": "1"})

    adder = asyncio.create_task(add_later())
    got = await reader.read(list(lanes.values()), block=5.0)
    await adder
    assert [len(v) for v in got.values()] == [1] and lanes["idle"] in got


async def test_fields_stay_flat_byte_lists_even_with_repeated_names(redis: Redis) -> None:
    """No reply parser turns an entry into a dict: a field name given twice keeps both values."""
    lanes = _lanes()
    reader = Reader(redis, "read-tests", "c1", lanes)
    await reader.ensure_groups()
    await redis.execute_command("XADD", "big", "*", "a", "1", "a", "2")
    got = await reader.read([lanes["big"]], block=0.1)
    assert got[lanes["big"]][0][1] == [b"a", b"1", b"a", b"2"]
    got = await reader.read(list(lanes.values()), block=0.1)  # the pipelined path
    await redis.execute_command("XADD", "idle", "*", "b", "1", "b", "2")
    got = await reader.read(list(lanes.values()), block=0.1)
    assert got[lanes["idle"]][0][1] == [b"b", b"1", b"b", b"2"]
