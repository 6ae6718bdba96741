"""What ``status`` calls a problem: a stream no worker reads, every group when none is named,
and a worker still starting (Ray) counted as alive, its state shown."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from rich.console import Console
from support.entries import xadd_many
from support.waiting import wait_until

from streamtasks.cli.common import EXIT_OK, EXIT_UNHEALTHY
from streamtasks.cli.status import render
from streamtasks.keys import heartbeat_key
from streamtasks.observe.inspect import gather_status

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "streamtasks"]
GROUP = "obs-tests"
pytestmark = pytest.mark.integration


def status_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "status", *args], capture_output=True, text=True, timeout=60, cwd=HERE,
        env={**os.environ, "COLUMNS": "250"},
    )  # fmt: skip


def text_of(status: dict[str, Any]) -> str:
    out = io.StringIO()
    Console(file=out, width=250).print(render(status))
    return out.getvalue()


async def test_a_named_stream_no_worker_reads_is_unhealthy(redis: Redis, redis_url: str) -> None:
    """``--streams`` naming a stream that does not exist, or one whose entries no group reads,
    or one with a backlog and no live consumer: exit 3, each named in the output."""
    await redis.xadd("unread", {"n": "1"})
    await redis.xgroup_create("backlog", "somegroup", id="0", mkstream=True)
    await xadd_many(redis, "backlog", 5)

    typo = await asyncio.to_thread(status_cli, "--streams", "no_such_stream", "--redis-url", redis_url)
    assert typo.returncode == EXIT_UNHEALTHY, typo.stdout
    assert "no_such_stream: no entries and no consumer group" in typo.stdout

    both = await asyncio.to_thread(
        status_cli, "--streams", "unread,backlog", "--redis-url", redis_url, "--json"
    )
    assert both.returncode == EXIT_UNHEALTHY
    problems = "\n".join(json.loads(both.stdout)["problems"])
    assert "unread: 1 entries and no consumer group" in problems
    assert "backlog: no live worker, but 0 pending and 5 undelivered entries" in problems


async def test_bare_status_lists_every_group_in_redis(redis: Redis, redis_url: str) -> None:
    """No APP, no --streams, no --group: every (stream, group) pair, not just ``streamtasks``."""
    await redis.xgroup_create("orders", "orders-app", id="$", mkstream=True)
    await redis.xgroup_create("clicks", "clicks-app", id="$", mkstream=True)
    await redis.xgroup_create("clicks", "audit", id="$", mkstream=True)

    out = await asyncio.to_thread(status_cli, "--redis-url", redis_url, "--json")
    assert out.returncode == EXIT_OK, out.stdout
    report = json.loads(out.stdout)
    pairs = sorted((s["stream"], s["group"]) for s in report["streams"])
    assert pairs == [("clicks", "audit"), ("clicks", "clicks-app"), ("orders", "orders-app")]

    table = await asyncio.to_thread(status_cli, "--redis-url", redis_url)
    assert "every consumer group" in table.stdout
    for name in ("orders-app", "clicks-app", "audit"):
        assert name in table.stdout


async def test_no_groups_at_all_says_so(redis: Redis, redis_url: str) -> None:
    out = await asyncio.to_thread(status_cli, "--redis-url", redis_url)
    assert out.returncode == EXIT_OK
    assert "no consumer groups in this Redis" in out.stdout


@pytest.fixture
def ray_tmpdir() -> Iterator[str]:
    """A Ray temp dir of this test's own (short: Ray's socket paths have a length limit)."""
    path = tempfile.mkdtemp(prefix="st-ray-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("mode", ["tasks", "actors"])
async def test_a_worker_starting_ray_is_alive_and_shown_starting(
    redis: Redis, redis_url: str, spawn: Any, ray_tmpdir: str, mode: str
) -> None:
    """A real worker, while its local Ray starts, heartbeats state ``starting``: status lists
    it with that state, calls it alive (a backlog waiting for it is not a problem), and shows
    ``reading`` once Ray is up (in actor mode: its actors, each its own consumer)."""
    await redis.xgroup_create("obs_work", GROUP, id="0", mkstream=True)
    await xadd_many(redis, "obs_work", 5)
    worker = spawn(
        [*CLI, "worker", "obs_app:registry", "--redis-url", redis_url, "--streams", "obs_work",
         "--consumer", "obs-starter", "--num-cpus", "1", "--mode", mode],
        env={"RAY_TMPDIR": ray_tmpdir, "TEST_REDIS_URL": redis_url}, cwd=HERE,
    )  # fmt: skip
    reader = "obs-starter" if mode == "tasks" else "obs-starter-a0"

    async def state_is(state: str, consumer: str = "obs-starter") -> bool:
        value = await redis.get(heartbeat_key(GROUP, consumer))
        return value is not None and json.loads(value).get("state") == state

    await wait_until(lambda: state_is("starting"), timeout=60, interval=0.02)
    status = await gather_status(redis, ["obs_work"], GROUP, named=["obs_work"])
    [seen] = status["workers"]
    assert seen["state"] == "starting", "Ray came up before status looked: nothing was tested"
    assert status["ok"] is True, status["problems"]
    text = text_of(status)
    assert "starting" in text and "no live workers" not in text

    await wait_until(lambda: state_is("reading", reader), timeout=90, interval=0.1)
    assert "reading" in text_of(await gather_status(redis, ["obs_work"], GROUP))
    worker.terminate()
    assert worker.wait(timeout=60) == 0, worker.output_tail()
