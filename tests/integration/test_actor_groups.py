"""Actor mode with handlers of two kinds of Ray options on the session's 2-CPU Ray: every group
of actors is placed (the CPUs are shared out), the worker is ready only once all of them read,
and every entry of both streams is handled once."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from support.http import get, wait_ready
from support.procs import free_port
from support.waiting import wait_until

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.integration


async def test_every_group_of_actors_is_placed_and_serves_its_stream(
    redis: Redis, redis_url: str, ray_address: str, spawn: Any
) -> None:
    port = free_port()
    worker = spawn(
        [sys.executable, "-m", "streamtasks", "worker", "groups_app:registry", "--mode", "actors",
         "--redis-url", redis_url, "--ray-address", ray_address, "--metrics-port", str(port)],
        cwd=HERE,
    )  # fmt: skip
    worker.wait_for_log(r"metrics on http://", timeout=30)
    await wait_ready(port, timeout=90)
    sent = {f"{stream}|{(await redis.xadd(stream, {'n': str(i)})).decode()}"
            for stream in ("plain", "half_cpu") for i in range(50)}  # fmt: skip

    async def all_handled() -> bool:
        return len(await redis.hgetall("groups:handled")) >= len(sent)

    await wait_until(all_handled, timeout=60)
    handled = {k.decode(): int(v) for k, v in (await redis.hgetall("groups:handled")).items()}
    assert set(handled) == sent and set(handled.values()) == {1}
    assert (await get(port, "/readyz"))[0] == 200
    worker.terminate()
    assert worker.wait(60) == 0, worker.output_tail()
