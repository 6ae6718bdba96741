"""``streamtasks status`` and :func:`streamtasks.observe.inspect.gather_status` against real Redis, with a
real worker process that is then killed with SIGKILL."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from support.modes import one_consumer
from support.procs import free_port
from support.waiting import wait_until

from streamtasks.keys import heartbeat_key
from streamtasks.observe.inspect import gather_status

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "streamtasks"]
GROUP = "obs-tests"
HEARTBEAT_TTL_S = 10.0
pytestmark = pytest.mark.integration


def status_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "status", *args], capture_output=True, text=True, timeout=60, cwd=HERE,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


async def test_status_is_healthy_with_a_live_worker_and_names_the_dead_consumer_after_kill9(
    redis: Redis, redis_url: str, ray_address: str, spawn: Any
) -> None:
    """While a worker holds entries (a gated batch) ``status`` exits 0; after ``kill -9`` of the
    worker it exits 3 within the heartbeat TTL (10 s) plus a margin, and names the dead
    consumer and its pending entries, in the table and in ``--json``."""
    await redis.xgroup_create("obs_work", GROUP, id="0", mkstream=True)
    pipe = redis.pipeline(transaction=True)
    pipe.xadd("obs_work", {"gate": "1"})
    for i in range(12):
        pipe.xadd("obs_work", {"n": str(i)})
    await pipe.execute()
    one, victim = one_consumer("obs-victim")  # actor mode: one actor, obs-victim-a0
    worker = spawn(
        [*CLI, "worker", "obs_app:registry", "--redis-url", redis_url, "--ray-address", ray_address,
         "--streams", "obs_work", *one, "--metrics-port", str(free_port())],
        cwd=HERE,
    )  # fmt: skip

    async def holding() -> bool:
        beat = await redis.exists(heartbeat_key(GROUP, victim))
        return bool(beat) and int((await redis.xpending("obs_work", GROUP))["pending"]) == 10

    await wait_until(holding, timeout=60)
    healthy = await asyncio.to_thread(status_cli, "obs_app:registry", "--redis-url", redis_url)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "healthy" in healthy.stdout and victim in healthy.stdout

    worker.kill9()
    killed = time.monotonic()
    # In actor mode the worker process' own "starting" heartbeat may outlive its actor's by up
    # to a heartbeat interval: each is live until its TTL, so "no live worker" may come a
    # moment after the dead consumer; both within the TTL plus the margin.
    while True:
        result = await asyncio.to_thread(status_cli, "obs_app:registry", "--redis-url", redis_url, "--json")
        if result.returncode != 0 and "no live worker" in result.stdout:
            break
        assert time.monotonic() - killed < HEARTBEAT_TTL_S + 5, f"status after the TTL: {result.stdout}"
        await asyncio.sleep(0.2)
    elapsed = time.monotonic() - killed
    print(f"status exit {result.returncode} {elapsed:.1f}s after kill -9")
    assert result.returncode == 3, result.stderr
    assert elapsed <= HEARTBEAT_TTL_S + 3
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["dead_consumers"] == [
        {"stream": "obs_work", "consumer": victim, "pending": 10, "idle": pytest.approx(1, abs=15)}
    ]
    assert any(f"dead consumer {victim} holds 10 pending" in p for p in report["problems"])
    assert any("no live worker" in p for p in report["problems"])

    table = await asyncio.to_thread(status_cli, "obs_app:registry", "--redis-url", redis_url)
    assert table.returncode == 3
    assert "UNHEALTHY" in table.stdout and f"dead consumer {victim}" in table.stdout


async def test_gather_status_reports_lag_pending_dead_letters_and_throughput(redis: Redis) -> None:
    """Without any worker: numbers straight from Redis, a stuck entry past ``stuck_after`` and
    "no live worker" as problems; streams are discovered by group when none are given."""
    await redis.xgroup_create("s1", "g", id="0", mkstream=True)
    old_id = f"{int((time.time() - 120) * 1000)}-0"
    await redis.xadd("s1", {"n": "old"}, id=old_id)
    for i in range(4):
        await redis.xadd("s1", {"n": str(i)})
    await redis.xreadgroup("g", "c1", {"s1": ">"}, count=2)
    await redis.xadd("s1:dead", {"x": "1"})
    await redis.xadd("unrelated", {"x": "1"})

    status = await gather_status(redis, None, "g", stuck_after=60)
    [s] = status["streams"]
    assert (s["stream"], s["length"], s["lag"], s["pending"], s["dead_letters"]) == ("s1", 5, 3, 2, 1)
    assert s["oldest_pending_id"] == old_id and 119 <= s["oldest_pending_age"] <= 130
    assert s["added_1m"] == 4 and s["added_1m_capped"] is False
    assert [c["name"] for c in s["consumers"]] == ["c1"]
    assert status["ok"] is False and status["redis"]["ok"] is True
    problems = "\n".join(status["problems"])
    assert "dead consumer c1 holds 2 pending" in problems
    assert f"oldest pending entry {old_id}" in problems
    assert "no live worker" in problems
    json.dumps(status)  # JSON-able as is

    await redis.set(
        heartbeat_key("g", "c1"), json.dumps({"consumer": "c1", "ts": time.time(), "streams": ["s1"]})
    )
    calm = await gather_status(redis, ["s1"], "g", stuck_after=600)
    assert calm["ok"] is True, calm["problems"]
    assert [w["consumer"] for w in calm["workers"]] == ["c1"]


def test_status_exits_3_and_says_why_in_one_line_when_redis_is_down() -> None:
    """Nothing listens on the port: exit status 3 (unhealthy), "Redis is unreachable", no traceback."""
    url = f"redis://:hunter2secret@127.0.0.1:{free_port()}/0"
    result = status_cli("--streams", "a,b", "--redis-url", url)
    assert result.returncode == 3
    assert "Redis is unreachable" in result.stdout
    assert "Traceback" not in result.stderr
    assert "hunter2secret" not in result.stdout + result.stderr
