"""``PendingEntries.mine``: which of some ids are still pending on this consumer, against a
real Redis: acked and claimed-away ids are not; ids past a full page are taken as still ours."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from streamtasks.worker import pending
from streamtasks.worker.pending import PendingEntries

pytestmark = pytest.mark.integration


async def _delivered(redis: Redis, n: int) -> list[str]:
    ids = [(await redis.xadd("mine", {"n": str(i)})).decode() for i in range(n)]
    await redis.xgroup_create("mine", "g", id="0")
    await redis.xreadgroup("g", "c", {"mine": ">"}, count=n)
    return ids


async def test_acked_and_claimed_away_ids_are_no_longer_mine(redis: Redis) -> None:
    ids = await _delivered(redis, 10)
    entries = PendingEntries(redis, "g", "c")
    assert await entries.mine("mine", {ids[0], ids[4], ids[9]}) == {ids[0], ids[4], ids[9]}
    await redis.xack("mine", "g", ids[0])
    await redis.xclaim("mine", "g", "other", 0, [ids[9]])
    assert await entries.mine("mine", {ids[0], ids[4], ids[9]}) == {ids[4]}
    await redis.xack("mine", "g", ids[4])
    assert await entries.mine("mine", {ids[0], ids[4], ids[9]}) == set()
    assert await entries.mine("mine", set()) == set()


async def test_ids_past_a_full_page_count_as_still_mine(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two ids asked about with eight more of this consumer's entries between them and no slack:
    the page ends before the last id, which is not known to be gone, so it is kept."""
    ids = await _delivered(redis, 10)
    monkeypatch.setattr(pending, "MINE_SLACK", 0)
    entries = PendingEntries(redis, "g", "c")
    await redis.xclaim("mine", "g", "other", 0, [ids[9]])
    assert await entries.mine("mine", {ids[0], ids[9]}) == {ids[0], ids[9]}
    monkeypatch.setattr(pending, "MINE_SLACK", 1000)
    assert await entries.mine("mine", {ids[0], ids[9]}) == {ids[0]}
