"""Properties of the flow-control scripts against a real redis-server.

* :data:`lua.GCRA` grants exactly what :func:`streamtasks.limits.gcra` computes (so the
  in-memory app behaves like production), and whatever several clients ask in whatever order,
  no window of W seconds ever gets more than W / T + burst calls -- with explicit clocks, and
  with Redis' own clock under concurrent clients.
* :data:`lua.SEM_ACQUIRE` never has more than ``limit`` slots held; a holder that stops
  renewing loses its slots after the TTL; a renewal keeps them and never brings back one that
  expired.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamtasks import lua
from streamtasks.limits import RateLimit, Shape, gcra

pytestmark = pytest.mark.integration
_keys = itertools.count()


@pytest.fixture(scope="module")
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _new_key(kind: str) -> str:
    return f"flowprop:{kind}:{next(_keys)}"


# (client, microseconds since the previous request, calls wanted, chunk)
requests = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 40_000), st.integers(0, 30), st.integers(1, 30)),
    min_size=1,
    max_size=40,
)


shapes = st.builds(
    lambda interval, burst, more, faster: Shape(interval, burst + more, max(1, interval - faster), burst),
    st.integers(1, 50_000), st.integers(1, 12), st.integers(0, 40), st.integers(0, 5_000),
)  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shapes, requests)
def test_any_interleaving_of_clients_stays_within_the_rate_plus_the_burst(
    sync_redis: redis.Redis, shape: Shape, asks: list[tuple[int, int, int, int]]
) -> None:
    key = _new_key("gcra")
    clients = [redis.Redis(connection_pool=sync_redis.connection_pool) for _ in range(3)]
    scripts = [c.register_script(lua.GCRA) for c in clients]
    cells = [shape.interval_us, shape.bank, shape.peak_interval_us, shape.burst]
    tats, now, grants = (0, 0), 1_700_000_000_000_000, []
    try:
        for client, gap, want, chunk in asks:
            now += gap
            granted, wait, at = scripts[client](keys=[key], args=[*cells, want, chunk, now])
            mirror = gcra(tats, now, shape, want, chunk)
            assert (granted, wait, at) == (mirror.granted, mirror.wait_us, now)
            tats = mirror.tats
            grants.append((now, granted))
    finally:
        sync_redis.delete(key)
    for i, (start, _) in enumerate(grants):
        for end, _ in grants[i:]:
            assert sum(n for t, n in grants if start <= t <= end) <= shape.most_in(end - start)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.none(), st.binary(max_size=30), st.from_regex(rb"\A[0-9]{1,20} [0-9]{1,20}\Z")))
def test_a_state_written_by_someone_else_is_never_an_error_or_more_than_a_burst(
    sync_redis: redis.Redis, state: bytes | None
) -> None:
    """Whatever the key holds (nothing, garbage, huge numbers): the script answers, and
    grants at most one burst at one instant."""
    key = _new_key("gcra-foreign")
    shape = RateLimit.parse("200/s").shape
    if state is not None:
        sync_redis.set(key, state)
    script = sync_redis.register_script(lua.GCRA)
    cells = [shape.interval_us, shape.bank, shape.peak_interval_us, shape.burst]
    try:
        granted, wait, _ = script(keys=[key], args=[*cells, 100, 2, 1_700_000_000_000_000])
        assert 0 <= granted <= shape.burst and wait >= 0
    finally:
        sync_redis.delete(key)


async def test_concurrent_clients_on_redis_time_never_exceed_a_window(redis_url: str) -> None:
    """Six clients ask a 200/s limit for 1..5 calls at a time, as fast as they can, for 1.5 s
    (Redis' TIME is the clock): in every window the calls granted stay within the rate plus
    the burst, and the limit is used (not starved)."""
    limit = RateLimit.parse("200/s")
    shape = limit.shape
    key = _new_key("gcra-time")
    grants: list[tuple[int, int]] = []
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(6)]

    async def ask(client: aioredis.Redis, seed: int) -> None:
        script = client.register_script(lua.GCRA)
        loop = asyncio.get_running_loop()
        end = loop.time() + 1.5
        for n in itertools.count(seed):
            if loop.time() >= end:
                return
            want = 1 + n % 5
            args = [shape.interval_us, shape.bank, shape.peak_interval_us, shape.burst, want, 2, ""]
            granted, wait, at = await script(keys=[key], args=args)
            grants.append((int(at), int(granted)))
            await asyncio.sleep(min(int(wait), 20_000) / 1_000_000)

    try:
        await asyncio.gather(*(ask(c, i) for i, c in enumerate(clients)))
    finally:
        await clients[0].delete(key)
        for c in clients:
            await c.aclose()
    grants.sort()
    times = [t for t, n in grants if n]
    total = sum(n for _, n in grants)
    span = (times[-1] - times[0]) / 1_000_000
    assert total <= shape.most_in(times[-1] - times[0])
    assert total >= 0.5 * span * 200  # six clients keep it busy (loosely: a loaded machine)
    for i, (start, _) in enumerate(grants):
        inside = sum(n for t, n in grants[i:] if t < start + 1_000_000)
        assert inside <= shape.most_in(1_000_000)


def test_the_semaphore_never_holds_more_than_its_limit_and_expired_slots_come_back(
    sync_redis: redis.Redis,
) -> None:
    key = _new_key("sem")
    acquire = sync_redis.register_script(lua.SEM_ACQUIRE)
    renew = sync_redis.register_script(lua.SEM_RENEW)
    t0 = 1_700_000_000_000
    try:
        assert acquire(keys=[key], args=[3, 2, "a", 1000, t0]) == [2, 2, 1000]
        assert acquire(keys=[key], args=[3, 5, "b", 1000, t0 + 10]) == [1, 3, 990]
        assert acquire(keys=[key], args=[3, 1, "c", 1000, t0 + 20])[0] == 0
        assert renew(keys=[key], args=[1000, t0 + 900, "a:1", "a:2"]) == 2  # a still runs
        # b crashed: its slot expired at t0 + 1010; a's now expire at t0 + 1900
        assert acquire(keys=[key], args=[3, 3, "c", 1000, t0 + 1011]) == [1, 3, 889]
        assert sync_redis.zrange(key, 0, -1) == [b"a:1", b"a:2", b"c:1"]
        assert renew(keys=[key], args=[1000, t0 + 3000, "a:1"]) == 0  # expired: not taken back
        assert sync_redis.zscore(key, "a:1") == t0 + 1900
    finally:
        sync_redis.delete(key)


slot_ops = st.lists(
    st.tuples(
        st.sampled_from(["take", "release", "renew"]),
        st.integers(0, 3),
        st.integers(1, 4),
        st.integers(0, 400),
    ),
    min_size=1,
    max_size=50,
)  # (operation, holder, slots wanted, ms since the previous operation)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(1, 5), slot_ops)
def test_no_interleaving_of_holders_ever_holds_more_than_the_limit(
    sync_redis: redis.Redis, limit: int, ops: list[tuple[str, int, int, int]]
) -> None:
    key = _new_key("semprop")
    acquire = sync_redis.register_script(lua.SEM_ACQUIRE)
    renew = sync_redis.register_script(lua.SEM_RENEW)
    ttl, now = 1000, 1_700_000_000_000
    held: dict[str, tuple[list[str], int]] = {}  # holder -> (members, expiry)
    tokens = itertools.count()
    try:
        for op, who, want, gap in ops:
            now += gap
            holder = f"h{who}"
            if op == "take" and holder not in held:
                token = f"{holder}.{next(tokens)}"
                granted, total, _ = acquire(keys=[key], args=[limit, want, token, ttl, now])
                assert 0 <= granted <= want and total <= limit
                if granted:
                    held[holder] = ([f"{token}:{i}" for i in range(1, granted + 1)], now + ttl)
            elif op == "release" and holder in held:
                sync_redis.zrem(key, *held.pop(holder)[0])
            elif op == "renew" and holder in held:
                members, expiry = held[holder]
                renewed = renew(keys=[key], args=[ttl, now, *members])
                assert renewed == (len(members) if expiry > now else 0)
                if expiry > now:
                    held[holder] = (members, now + ttl)
            unexpired = [h for h, (_, expiry) in held.items() if expiry > now]
            assert sum(len(held[h][0]) for h in unexpired) <= limit
    finally:
        sync_redis.delete(key)
