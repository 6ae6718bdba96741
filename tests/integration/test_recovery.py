"""Recovery paths not covered by the fault suite: delivery limits, PostgreSQL outages,
the database CLI, and the facade's disabled mode."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import core_app
import pytest
from redis.asyncio import Redis
from support.builtins import rows, training_fields
from support.entries import handled, pending
from support.waiting import wait_until

from streamtasks.adserving import AsyncProcessingSystem
from streamtasks.adserving.config import AsyncProcessingConfig
from streamtasks.ray import RayExecutor
from streamtasks.worker import Worker, WorkerSettings

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.integration


async def test_an_entry_whose_workers_keep_dying_is_dead_lettered_without_running(
    redis: Redis, ray_address: str
) -> None:
    """An entry already delivered more than max_retries + 1 times (its workers died each
    time: simulated with XCLAIM RETRYCOUNT) is dead-lettered by the reclaim step with reason
    delivery_limit, and its handler never runs."""
    await redis.xgroup_create("async_each", "core-tests", id="0", mkstream=True)
    entry_id = (await redis.xadd("async_each", {"n": "doomed"})).decode()
    await redis.xreadgroup("core-tests", "ghost", {"async_each": ">"}, count=1)
    await redis.xclaim(
        "async_each", "core-tests", "ghost", 0, [entry_id], idle=10**9, retrycount=7, justid=True
    )
    worker = Worker(
        core_app.registry.only(["async_each"]),
        redis,
        RayExecutor(),
        WorkerSettings(consumer="survivor", visibility_timeout=5, reclaim_interval=0.2),
    )
    task = asyncio.create_task(worker.run())
    try:
        await wait_until(lambda: _xlen_is(redis, "async_each:dead", 1), timeout=30)
        [(_, letter)] = await redis.xrange("async_each:dead")
        assert letter[b"id"].decode() == entry_id
        assert letter[b"reason"] == b"delivery_limit"
        assert int(letter[b"attempts"]) == 8  # the 7 recorded deliveries + this claim
        assert await handled(redis, "async_each") == {}
        assert await pending(redis, "async_each", "core-tests") == 0
    finally:
        worker.stop()
        await task


async def _xlen_is(redis: Redis, stream: str, n: int) -> bool:
    return int(await redis.xlen(stream)) == n


async def test_postgresql_down_under_load_loses_nothing_and_dead_letters_nothing(
    redis: Redis, redis_url: str, database_url: str, pg_server: Any, ray_address: str, spawn: Any
) -> None:
    """PostgreSQL stopped for ~8 s while entries keep arriving: batches are retried with
    backoff, nothing is dead-lettered, every entry lands exactly once after it is back."""
    from streamtasks.adserving import schema

    conn = await asyncpg.connect(database_url)
    await schema.setup_database(conn)
    await conn.close()
    spawn(
        [sys.executable, "-m", "streamtasks", "worker", "streamtasks.builtins:registry",
         "--redis-url", redis_url, "--ray-address", ray_address, "--visibility-timeout", "3",
         "--streams", "training_data_stream"],
        env={"DATABASE_URL": database_url},
    )  # fmt: skip

    async def send(start: int, n: int) -> None:
        pipe = redis.pipeline(transaction=False)
        for i in range(start, start + n):
            pipe.xadd("training_data_stream", dict(zip(*[iter(training_fields(i))] * 2, strict=True)))
        await pipe.execute()

    await send(0, 1000)
    await wait_until(
        lambda: _equals(rows(database_url, "SELECT count(*) FROM training_data"), 1000), timeout=60
    )
    await asyncio.to_thread(pg_server.stop)
    try:
        for k in range(1, 5):
            await send(k * 1000, 1000)
            await asyncio.sleep(2)
        assert int(await redis.xlen("training_data_stream:dead")) == 0
    finally:
        await asyncio.to_thread(pg_server.start)
    await wait_until(
        lambda: _equals(rows(database_url, "SELECT count(*) FROM training_data"), 5000), timeout=90
    )
    assert await rows(database_url, "SELECT count(DISTINCT idempotency_key) FROM training_data") == 5000
    assert int(await redis.xlen("training_data_stream:dead")) == 0
    await wait_until(lambda: _pending_zero(redis), timeout=30)


async def _equals(value: Any, expected: Any) -> bool:
    try:
        return await value == expected
    except (OSError, asyncpg.PostgresError):
        return False


async def _pending_zero(redis: Redis) -> bool:
    return int((await redis.xpending("training_data_stream", "streamtasks-adserving"))["pending"]) == 0


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamtasks", *args], capture_output=True, text=True, timeout=60,
        env={**os.environ, **env},
    )  # fmt: skip


async def test_db_init_is_idempotent_and_stats_reports_known_data(database_url: str) -> None:
    """`streamtasks db init` twice changes nothing; `streamtasks stats --json` gives the
    numbers of rows inserted by hand."""
    env = {"DATABASE_URL": database_url}
    first = await asyncio.to_thread(_cli, "db", "init", env=env)
    assert first.returncode == 0 and "001_adserving.sql" in first.stdout, first.stderr
    conn = await asyncpg.connect(database_url)
    try:
        schema = (
            "SELECT md5(string_agg(indexdef, ';' ORDER BY indexname)) FROM pg_indexes"
            " WHERE schemaname = 'public'"
        )
        before = await conn.fetchval(schema)
        second = await asyncio.to_thread(_cli, "db", "init", env=env)
        assert second.returncode == 0, second.stderr
        assert await conn.fetchval(schema) == before
        for i, (ms, conf, anomaly) in enumerate(
            [(10, 0.9, False), (20, 0.8, False), (30, 0.7, True), (40, 0.6, False)]
        ):
            await conn.execute(
                "INSERT INTO inference_results (model_name, request_id, prediction, confidence,"
                " anomaly_score, is_anomaly, processing_time_ms, metadata, created_at, idempotency_key,"
                " stream, entry_id)"
                " VALUES ('m', $1, '{}', $2, 0.5, $3, $4, '{}', now() - interval '1 minute', $1, 's', $1)",
                f"r{i}", conf, anomaly, float(ms),
            )  # fmt: skip
    finally:
        await conn.close()
    out = await asyncio.to_thread(_cli, "stats", "m", "--hours", "1", "--json", env=env)
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert stats["requests"] == 4
    assert stats["p50_ms"] == pytest.approx(25.0)  # percentile_cont of 10, 20, 30, 40
    assert stats["mean_confidence"] == pytest.approx(0.75)
    assert stats["anomaly_rate"] == pytest.approx(0.25)
    table = await asyncio.to_thread(_cli, "stats", "m", "--hours", "1", env=env)
    assert table.returncode == 0 and "requests" in table.stdout


async def test_disabled_processing_makes_sends_a_no_op(redis: Redis, redis_url: str) -> None:
    """ASYNC_PROCESSING_ENABLED=false: send_* return None and write nothing."""
    config = AsyncProcessingConfig.from_env(
        {"REDIS_URL": redis_url, "ASYNC_PROCESSING_ENABLED": "false"}, env_file=None
    )
    async with AsyncProcessingSystem(config) as system:
        assert await system.send_training_data(model_name="m", request_id="r", input_data={}) is None
        ids = await system.send_api_request_data(
            model_name="m", request_id="r", input_data={}, prediction={}, confidence=1, anomaly_score=0,
            processing_time_ms=1,
        )  # fmt: skip
        assert ids == {"training_data": None, "inference_result": None}
    assert await redis.exists("training_data_stream", "inference_results_stream") == 0


async def test_a_pending_entry_deleted_from_the_stream_is_counted_lost(
    redis: Redis, ray_address: str
) -> None:
    """An entry trimmed/deleted while pending on a dead consumer is reported as lost (counter
    and metric), and leaves the pending list; nothing runs for it."""
    from streamtasks.observe.metrics import WorkerMetrics

    await redis.xgroup_create("async_each", "core-tests", id="0", mkstream=True)
    entry_id = (await redis.xadd("async_each", {"n": "gone"})).decode()
    await redis.xreadgroup("core-tests", "ghost", {"async_each": ">"}, count=1)
    await redis.xclaim("async_each", "core-tests", "ghost", 0, [entry_id], idle=10**9, justid=True)
    await redis.xdel("async_each", entry_id)  # gone from the stream, still in the pending list
    assert await pending(redis, "async_each", "core-tests") == 1
    worker = Worker(
        core_app.registry.only(["async_each"]),
        redis,
        RayExecutor(),
        WorkerSettings(consumer="survivor", visibility_timeout=5, reclaim_interval=0.2),
    )
    metrics = WorkerMetrics(worker)  # subscribed before the worker runs: it sees every event
    task = asyncio.create_task(worker.run())
    try:
        await wait_until(lambda: _pending_is_zero(redis), timeout=30)
        assert worker.tally.lanes["async_each"].lost == 1
        lost = metrics.registry.get_sample_value("streamtasks_entries_lost_total", {"stream": "async_each"})
        assert lost == 1.0
        assert await handled(redis, "async_each") == {}
    finally:
        worker.stop()
        await task


async def _pending_is_zero(redis: Redis) -> bool:
    return await pending(redis, "async_each", "core-tests") == 0
