"""Stats windows of any size (issue 12, item 11): the facade and ``streamtasks stats`` take
any window, clamp it to "since 1970", and refuse what is not a window with one clear line;
never ``Invalid stream ID`` from a negative ``XREVRANGE`` start."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys

import pytest
from redis.asyncio import Redis

from streamtasks.adserving import AsyncProcessingSystem
from streamtasks.adserving.config import AsyncProcessingConfig

pytestmark = pytest.mark.integration
SINCE_1970_HOURS = 400_000  # fewer hours than have passed since 1970 (~497,000 in 2026)


@pytest.mark.parametrize("hours", [24, 1e6, 1e12, 1e300, math.inf])
async def test_any_window_gives_stats_clamped_to_since_1970(
    redis: Redis, redis_url: str, schema: str, hours: float
) -> None:
    config = AsyncProcessingConfig.from_env({"REDIS_URL": redis_url, "DATABASE_URL": schema}, env_file=None)
    async with AsyncProcessingSystem(config) as system:
        await redis.xadd("inference_results_stream:dead", {"f:model_name": "m", "reason": "x"})
        stats = await system.get_model_performance_stats("m", hours=hours)
    assert stats["dead_letters"] == 1 and stats["requests"] == 0
    assert stats["hours"] == hours or SINCE_1970_HOURS < stats["hours"] < hours
    assert stats["since"].year >= 1970


@pytest.mark.parametrize("hours", [0, -1, -math.inf, math.nan, "24h"])
async def test_a_window_that_is_not_one_is_a_value_error(redis_url: str, schema: str, hours: float) -> None:
    config = AsyncProcessingConfig.from_env({"REDIS_URL": redis_url, "DATABASE_URL": schema}, env_file=None)
    async with AsyncProcessingSystem(config) as system:
        with pytest.raises(ValueError, match="hours must be a number > 0"):
            await system.get_model_performance_stats("m", hours=hours)


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamtasks", *args], capture_output=True, text=True, timeout=60,
        env={**os.environ, **env},
    )  # fmt: skip


async def test_the_cli_clamps_huge_windows_and_refuses_nan(schema: str) -> None:
    env = {"DATABASE_URL": schema}
    for hours in ("inf", "1e300"):
        out = await asyncio.to_thread(_cli, "stats", "m", "--hours", hours, "--json", env=env)
        assert out.returncode == 0, out.stderr
        assert SINCE_1970_HOURS < json.loads(out.stdout)["hours"] < 1e6
    table = await asyncio.to_thread(_cli, "stats", "m", "--hours", "inf", env=env)
    assert table.returncode == 0 and "requests" in table.stdout, table.stderr
    bad = await asyncio.to_thread(_cli, "stats", "m", "--hours", "nan", env=env)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "hours" in bad.stderr and len(bad.stderr.strip().splitlines()) <= 3, bad.stderr
