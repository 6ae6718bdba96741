"""A typed handler in a real worker: `streamtasks send` of a wrong type is dead-lettered with
reason `invalid` and the field in its error; a valid entry reaches the handler as its type."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from redis.asyncio import Redis

from streamtasks.deadletter import DeadLetter

pytestmark = pytest.mark.integration


def cli(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamtasks", *args, "--redis-url", redis_url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


async def test_a_wrong_type_sent_from_the_cli_is_dead_lettered_as_invalid(
    redis: Redis, redis_url: str, spawn: Any
) -> None:
    worker = spawn(
        [sys.executable, "-m", "streamtasks", "worker", "shop_app", "--executor", "inline"],
        env={"REDIS_URL": redis_url},
    )
    assert cli(redis_url, "send", "orders", 'amount:="x"').returncode == 0
    assert cli(redis_url, "send", "orders", "amount:=12.5", "note=gift").returncode == 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if await redis.xlen("orders:dead") and await redis.llen("shop:orders"):
            break
        await asyncio.sleep(0.05)
    [(dead_id, raw)] = await redis.xrange("orders:dead")
    dead = DeadLetter.from_entry(dead_id, raw)
    assert (dead.reason, dead.attempts, dead.error_type) == ("invalid", 1, "DecodeError")
    assert "`$.amount`" in dead.error and dead.fields["amount"] == b"x"
    assert [json.loads(o) for o in await redis.lrange("shop:orders", 0, -1)] == [
        {"amount": 12.5, "note": "gift"}
    ]
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
