"""A Redis user with a restricted ACL: the worker says at start which commands it lacks and
exits 1; a permission taken away mid-run shows in ``/readyz`` and ``status`` at once."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from support.invariants import FAULT_DIR, Invariants, Workers, poll
from support.procs import free_port

from streamtasks import keys
from streamtasks.worker.preflight import MissingPermissions, check_permissions

pytestmark = [pytest.mark.fault, pytest.mark.integration]

USER = "st-limited"
PASSWORD = "acl-test-pw"
STREAMS = [("jobs", "jobs:dead")]


def user_url(redis_url: str, user: str = USER) -> str:
    return redis_url.replace("redis://", f"redis://{user}:{PASSWORD}@")


@pytest.fixture
async def acl(redis: aioredis.Redis) -> AsyncIterator[Any]:
    """``acl(*rules)``: (re)define the test user; every test user is deleted afterwards."""
    made: set[str] = set()

    async def setuser(*rules: str, user: str = USER) -> None:
        made.add(user)
        await redis.execute_command("ACL", "SETUSER", user, "reset", "on", f">{PASSWORD}", *rules)

    yield setuser
    for user in made:
        await redis.execute_command("ACL", "DELUSER", user)


async def test_the_check_names_every_missing_command_via_acl_dryrun(
    acl: Any, redis: aioredis.Redis, redis_url: str
) -> None:
    """A user allowed everything but XAUTOCLAIM and EVALSHA (it may run ACL DRYRUN): both named."""
    await acl("~*", "&*", "+@all", "-xautoclaim", "-evalsha")
    client = aioredis.Redis.from_url(user_url(redis_url))
    try:
        with pytest.raises(MissingPermissions) as err:
            await check_permissions(client, STREAMS, "fault", "c1")
    finally:
        await client.aclose()
    assert str(err.value) == f"Redis user {USER!r} lacks permissions the worker needs: EVALSHA, XAUTOCLAIM"


async def test_without_acl_dryrun_each_command_is_probed_and_nothing_changes(
    acl: Any, redis: aioredis.Redis, redis_url: str
) -> None:
    """A user without @admin (no ACL DRYRUN) and without XAUTOCLAIM, EVALSHA and XGROUP SETID:
    the probes name them; and the probes of a user allowed everything change no key."""
    await redis.xadd("jobs", {"k": "v"})
    await redis.xgroup_create("jobs", "fault", id="0")
    await redis.hset(keys.failures_key("jobs", "fault"), "1-0", "5")
    before = {k: await redis.type(k) for k in await redis.keys("*")}
    await acl("~*", "&*", "+@all", "-@admin", "-xautoclaim", "-evalsha", "-xgroup|setid")
    client = aioredis.Redis.from_url(user_url(redis_url))
    try:
        with pytest.raises(MissingPermissions) as err:
            await check_permissions(client, STREAMS, "fault", "c1")
        assert str(err.value).endswith("EVALSHA, XGROUP SETID, XAUTOCLAIM"), err.value
        await acl("~*", "&*", "+@all", "-@admin")
        await check_permissions(client, STREAMS, "fault", "c1")  # nothing missing: no error
    finally:
        await client.aclose()
    assert {k: await redis.type(k) for k in await redis.keys("*")} == before
    assert await redis.hgetall(keys.failures_key("jobs", "fault")) == {b"1-0": b"5"}
    assert await redis.xinfo_consumers("jobs", "fault") == []
    assert await redis.xlen("jobs") == 1


async def test_a_key_the_user_may_not_touch_is_named_with_its_command(
    acl: Any, redis: aioredis.Redis, redis_url: str
) -> None:
    """Commands allowed, but the dead-letter stream outside the user's key patterns."""
    await acl("~jobs", "~jobs:failures:*", "~jobs:delayed*", "~streamtasks:*", "&*", "+@all", "-@admin")
    client = aioredis.Redis.from_url(user_url(redis_url))
    try:
        with pytest.raises(MissingPermissions, match=r"needs: XADD on key jobs:dead$"):
            await check_permissions(client, STREAMS, "fault", "c1")
    finally:
        await client.aclose()


@pytest.mark.parametrize("mode", ["tasks", "actors"])
async def test_a_worker_under_a_restricted_acl_exits_1_at_start_naming_the_commands(
    acl: Any, redis_url: str, spawn: Any, mode: str
) -> None:
    """``streamtasks worker`` with a user lacking XAUTOCLAIM and EVALSHA: exit 1 before Ray
    starts, one line naming both. In actor mode too (its actors would only fail to start over
    and over)."""
    await acl("~*", "&*", "+@all", "-@admin", "-xautoclaim", "-evalsha")
    started = time.monotonic()
    proc = spawn(
        [sys.executable, "-m", "streamtasks", "worker", "faultapp:registry", "--streams", "jobs",
         "--redis-url", user_url(redis_url), "--mode", mode],
        cwd=FAULT_DIR, env={"FAULT_LEDGER_URL": redis_url}, name="limited",
    )  # fmt: skip
    assert await asyncio.to_thread(proc.wait, 60) == 1, proc.output_tail()
    took = time.monotonic() - started
    lines = [line for line in proc.stderr().splitlines() if "permissions" in line]
    assert lines == [f"Error: Redis user {USER!r} lacks permissions the worker needs: EVALSHA, XAUTOCLAIM"], (
        proc.output_tail()
    )
    assert "Traceback" not in proc.output() and PASSWORD not in proc.output()
    print(f"restricted ACL: worker exited 1 after {took:.1f}s: {lines[0]}")


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


async def test_a_permission_revoked_mid_run_shows_in_readyz_and_status_within_5s(
    acl: Any, inv: Invariants, workers: Workers, redis_url: str, spawn: Any
) -> None:
    """ACL SETUSER -xautoclaim while the worker runs: the reclaim loop fails; ``/readyz`` says
    503 naming it within 5 s, ``status`` exits 3 naming the worker's failing loop; given back,
    the loop recovers and ``/readyz`` is 200 again."""
    await acl("~*", "&*", "+@all", "-@admin")
    port = free_port()
    w = workers.start(name="w", redis_url=user_url(redis_url), args=["--metrics-port", str(port)])
    await poll(lambda: _get(port, "/readyz")[0] == 200, 30, "ready", workers.logs)
    await inv.send(10)
    await inv.check(30, logs=workers.logs)

    await acl("~*", "&*", "+@all", "-@admin", "-xautoclaim")
    revoked = time.monotonic()
    await poll(lambda: _get(port, "/readyz")[0] == 503, 5, "/readyz 503 within 5 s", workers.logs)
    took = time.monotonic() - revoked
    _, body = _get(port, "/readyz")
    assert re.search(rf"background loop '{workers.loop('reclaim')}' is failing", body), body
    # logged at once (an actor's line reaches the worker's stderr through Ray's log forwarding)
    await poll(lambda: "background loop 'reclaim' failed" in w.output(), 5, "failure logged", workers.logs)

    async def status() -> tuple[int, dict[str, Any]]:
        proc = spawn(
            [sys.executable, "-m", "streamtasks", "status", "--redis-url", redis_url, "--group", "fault",
             "--streams", "jobs", "--json"],
            name="status",
        )  # fmt: skip
        rc = await asyncio.to_thread(proc.wait, 60)
        return rc, json.loads(proc.stdout())

    await poll(lambda: _heartbeat_failing(redis_url), 10, "heartbeat names the failing loop", workers.logs)
    rc, out = await status()
    assert rc not in (0, 1) and not out["ok"], out  # unhealthy
    assert any("background loop" in p and "reclaim" in p for p in out["problems"]), out["problems"]

    await acl("~*", "&*", "+@all", "-@admin")  # given back: the loop recovers
    await poll(lambda: _get(port, "/readyz")[0] == 200, 60, "ready again", workers.logs)
    recovered = "background loop 'reclaim' recovered"
    await poll(lambda: recovered in w.output(), 5, "recovery logged", workers.logs)
    print(f"revoked XAUTOCLAIM: /readyz 503 after {took:.2f}s ({body.strip()})")


def _heartbeat_failing(redis_url: str) -> bool:
    import redis as syncredis

    client = syncredis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(match=keys.heartbeat_pattern("fault")):
            value = client.get(key)
            if value and "reclaim" in json.loads(value).get("failing_loops", []):
                return True
        return False
    finally:
        client.close()


async def test_a_settle_step_that_loses_its_permission_shows_and_lets_go_of_the_entries(
    acl: Any, inv: Invariants, workers: Workers, redis_url: str
) -> None:
    """XACK revoked while entries arrive: they are handled but cannot be acked. ``/readyz``
    says 503 naming ``settle`` once their batch tries to settle, and the entries are not
    leased forever: once XACK is back they are reclaimed, run again and acked; pending and lag
    end at 0. (Before, they stayed held, leases renewed forever, and ``/readyz`` said 200.)"""
    await acl("~*", "&*", "+@all", "-@admin")
    port = free_port()
    # one consumer (actor mode: one actor) re-runs its own entries, and so sees settle recover
    one = workers.one_consumer("w")[0]
    workers.start(name="w", redis_url=user_url(redis_url), args=[*one, "--metrics-port", str(port)])
    await poll(lambda: _get(port, "/readyz")[0] == 200, 30, "ready", workers.logs)
    await acl("~*", "&*", "+@all", "-@admin", "-xack")
    sent_at = time.monotonic()
    keys = await inv.send(20)
    # as soon as the batch, run on Ray, tries to settle (a few seconds on a busy machine)
    await poll(lambda: _get(port, "/readyz")[0] == 503, 20, "/readyz 503", workers.logs)
    took = time.monotonic() - sent_at
    assert re.search(rf"'{workers.loop('settle')}' is failing", _get(port, "/readyz")[1])
    await acl("~*", "&*", "+@all", "-@admin")
    out, settled = await inv.check(30, may_repeat=keys, logs=workers.logs)
    assert set(keys) <= set(out.handled)
    await poll(lambda: _get(port, "/readyz")[0] == 200, 10, "ready again", workers.logs)
    print(f"revoked XACK: /readyz 503 {took:.2f}s after the entries arrived; settled {settled:.1f}s after")


async def test_entries_a_failed_settle_let_go_of_are_taken_over_and_the_worker_is_ready_again(
    acl: Any, inv: Invariants, workers: Workers, redis_url: str
) -> None:
    """XACK revoked for one worker, whose settle fails: the entries it let go of are reclaimed
    by a second worker (another user, with XACK) and acked there. The first worker, idle and
    still without XACK, says ``/readyz`` 200 again once none of them is pending on it, and
    logs why. Its visibility timeout is 30 s, so only the second worker reclaims them."""
    await acl("~*", "&*", "+@all", "-@admin")
    port = free_port()
    one = workers.one_consumer("w")[0]
    args = [*one, "--metrics-port", str(port), "--visibility-timeout", "30"]
    first = workers.start(name="w", redis_url=user_url(redis_url), args=args)
    await poll(lambda: _get(port, "/readyz")[0] == 200, 30, "ready", workers.logs)
    await acl("~*", "&*", "+@all", "-@admin", "-xack")
    keys = await inv.send(20)
    await poll(lambda: _get(port, "/readyz")[0] == 503, 20, "/readyz 503", workers.logs)
    assert re.search(rf"'{workers.loop('settle')}' is failing", _get(port, "/readyz")[1])
    workers.start(name="x", args=workers.one_consumer("x")[0])
    out, settled = await inv.check(30, may_repeat=keys, logs=workers.logs)
    assert set(keys) <= set(out.handled)
    await poll(lambda: _get(port, "/readyz")[0] == 200, 15, "first worker ready again", workers.logs)
    # (an actor's line reaches the worker's stderr through Ray's log forwarding, a moment later)
    taken_over = "failed to settle were taken over by other consumers"
    await poll(lambda: taken_over in first.output(), 5, "take-over logged", workers.logs)
    print(f"settle taken over: all acked {settled:.1f}s after the second worker was reading")
