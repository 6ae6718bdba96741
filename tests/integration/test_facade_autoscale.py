"""``AsyncProcessingSystem`` with ``STREAMTASKS_ACTORS=auto``: ``start_workers`` serves the
built-ins on an autoscaled pool (its bounds from the environment, as ``streamtasks worker
--actors auto``), which stores the rows and tells its actors in Redis."""

from __future__ import annotations

import json

import pytest
from redis.asyncio import Redis
from support.builtins import GROUP, rows
from support.waiting import equals, wait_until

from streamtasks import AsyncProcessingSystem, keys
from streamtasks.adserving.config import AsyncProcessingConfig
from streamtasks.scaling import Autoscale
from streamtasks.worker import WorkerSettings

pytestmark = pytest.mark.integration


async def test_start_workers_autoscales_from_the_environment(
    redis: Redis, redis_url: str, database_url: str, ray_address: str
) -> None:
    env = {
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "STREAMTASKS_ACTORS": "auto",
        "STREAMTASKS_MAX_ACTORS": "3",
        "STREAMTASKS_SCALE_DOWN_AFTER": "5",
    }
    cfg = AsyncProcessingConfig.from_env(env, env_file=None)
    assert cfg.consumer.autoscale == Autoscale(min=1, max=3, scale_down_after=5)
    async with AsyncProcessingSystem(cfg, worker_settings=WorkerSettings(visibility_timeout=5)) as system:
        await system.setup_database()
        await system.send_training_data(model_name="m", request_id="r1", input_data={"x": 1})
        await system.start_workers()
        count = "SELECT count(*) FROM training_data WHERE request_id = 'r1'"
        await wait_until(lambda: equals(rows(database_url, count), 1), timeout=60)
        [key] = [k async for k in redis.scan_iter(match=keys.actors_pattern(GROUP))]
        body = json.loads(await redis.get(key))
        assert body["auto"] is True
        assert [(g["min"], g["max"], g["desired"]) for g in body["groups"]] == [(1, 3, 1)]
        await system.stop_workers()
