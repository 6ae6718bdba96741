"""``status`` counts no entry that does not exist (issue 25, item 5), against a real
redis-server: 2,000 entries sent to a group's stream (created the way a worker creates it, with
its read counter), a third party trims it to 500 before any was read. Redis says lag 2,000;
``status`` says 500 undelivered (what the stream holds) beside the 1,500 lost, in ``--json``,
the table and the problem line."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis

from streamtasks.cli.common import EXIT_UNHEALTHY
from streamtasks.worker.gaps import read_counter_at_start

pytestmark = pytest.mark.integration
HERE = Path(__file__).resolve().parent
GROUP = "obs-tests"
SENT, LEFT = 2000, 500


async def test_after_a_trim_of_unread_entries_undelivered_is_what_the_stream_holds(
    redis: Redis, redis_url: str
) -> None:
    read = await read_counter_at_start(redis, "obs_work")
    await redis.xgroup_create("obs_work", GROUP, "0", mkstream=True, entries_read=read)
    pipe = redis.pipeline(transaction=False)
    for i in range(SENT):
        pipe.xadd("obs_work", {"n": str(i)})
    await pipe.execute()
    assert await redis.xtrim("obs_work", maxlen=LEFT) == SENT - LEFT
    [info] = await redis.xinfo_groups("obs_work")
    assert info["lag"] == SENT, "Redis no longer overcounts the lag: the scenario is not reproduced"

    args = [
        sys.executable,
        "-m",
        "streamtasks",
        "status",
        "obs_app:registry",
        "--streams",
        "obs_work",
        "--redis-url",
        redis_url,
    ]
    env = {**os.environ, "COLUMNS": "200"}
    as_json, table = await asyncio.gather(
        asyncio.to_thread(
            subprocess.run, [*args, "--json"], capture_output=True, text=True, cwd=HERE, env=env
        ),
        asyncio.to_thread(subprocess.run, args, capture_output=True, text=True, cwd=HERE, env=env),
    )
    assert as_json.returncode == EXIT_UNHEALTHY, as_json.stderr
    status = json.loads(as_json.stdout)
    [work] = status["streams"]
    assert status["problems"] == [
        f"obs_work: lag {SENT} cannot drain: 1500 entries were trimmed or deleted before group {GROUP!r} "
        "read them (lost)",
        f"obs_work: no live worker, but 0 pending and {LEFT} undelivered entries",
    ]
    assert (work["length"], work["lag"], work["undeliverable"], work["undelivered"]) == (
        LEFT,
        SENT,
        1500,
        LEFT,
    )
    [row] = [line for line in table.stdout.splitlines() if line.startswith("│ obs_work ")]
    cells = [c.strip() for c in row.strip("│").split("│")]
    assert cells[:3] == ["obs_work", "500", "500"], row  # length, lag: never more than it holds
    assert f"{LEFT} undelivered" in table.stdout and f"{SENT} undelivered" not in table.stdout
