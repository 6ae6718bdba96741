"""The adserving built-ins end to end: real Redis, PostgreSQL and Ray."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from attrs import evolve
from redis.asyncio import Redis
from support.builtins import GROUP, rows, training_fields
from support.waiting import equals, wait_until

from streamtasks.adserving import AsyncProcessingSystem
from streamtasks.adserving.config import AsyncProcessingConfig
from streamtasks.worker import WorkerSettings

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.integration


def config(redis_url: str, database_url: str) -> AsyncProcessingConfig:
    return AsyncProcessingConfig.from_env(
        {"REDIS_URL": redis_url, "DATABASE_URL": database_url}, env_file=None
    )


@pytest.mark.parametrize("mode", ["actors", "tasks"])
async def test_the_readme_snippet_stores_two_rows_of_each_kind_with_correct_stats(
    redis: Redis, redis_url: str, database_url: str, ray_address: str, mode: str
) -> None:
    """The issue's facade snippet, as written: 2 training and 2 inference rows for req_123,
    by start_workers' consumers: a Ray actor (``<consumer>-a0``) in actor mode, the default,
    or a worker in this process in task mode."""
    settings = WorkerSettings(visibility_timeout=5, reclaim_interval=0.2)
    cfg = config(redis_url, database_url)
    cfg = evolve(cfg, consumer=evolve(cfg.consumer, mode=mode))
    async with AsyncProcessingSystem(cfg, worker_settings=settings) as system:
        await system.setup_database()
        await system.setup_database()  # idempotent
        mid = await system.send_training_data(
            model_name="fraud_detection", request_id="req_123",
            input_data={"user_id": 1234, "transaction_amount": 100.50, "features": [0.1, 0.2, 0.3]},
            metadata={"api_version": "v1"}, source_ip="192.168.1.100",
        )  # fmt: skip
        mid2 = await system.send_inference_result(
            model_name="fraud_detection", request_id="req_123",
            prediction={"prediction": 0, "probability": 0.85}, confidence=0.85, anomaly_score=0.15,
            is_anomaly=False, processing_time_ms=120,
        )  # fmt: skip
        ids = await system.send_api_request_data(
            model_name="fraud_detection", request_id="req_123",
            input_data={"user_id": 1234, "amount": 100.50}, prediction={"prediction": 0, "probability": 0.85},
            confidence=0.85, anomaly_score=0.15, processing_time_ms=120,
        )  # fmt: skip
        assert mid and mid2 and ids["training_data"] and ids["inference_result"]
        await system.start_workers()
        count = "SELECT count(*) FROM {} WHERE request_id = 'req_123'"
        await wait_until(lambda: equals(rows(database_url, count.format("inference_results")), 2), timeout=60)
        await wait_until(lambda: equals(rows(database_url, count.format("training_data")), 2), timeout=60)
        stats = await system.get_model_performance_stats("fraud_detection", hours=24)
        assert stats["requests"] == 2
        assert stats["p50_ms"] == stats["p99_ms"] == 120
        assert stats["mean_confidence"] == pytest.approx(0.85)
        assert stats["anomaly_rate"] == 0
        assert stats["training_rows"] == 2
        assert stats["dead_letters"] == 0
        status = await system.get_system_status()
        assert status["producer"]["health"] == "healthy"
        assert status["database"]["health"] == "healthy"
        assert status["workers"]["local"] == 1
        assert "training_data_stream" in status["streams"]
        consumers = [c["name"].decode() for c in await redis.xinfo_consumers("training_data_stream", GROUP)]
        assert len(consumers) == 1
        assert consumers[0].endswith("-a0") == (mode == "actors"), consumers
        stored = await rows(
            database_url, f"SELECT input_data::text FROM training_data WHERE idempotency_key = '{mid}'"
        )
        assert json.loads(stored)["features"] == [0.1, 0.2, 0.3]
        await system.stop_workers()


def resp(*parts: str | bytes) -> bytes:
    """One command in the Redis protocol, for `redis-cli --pipe` (a foreign producer)."""
    out = [f"*{len(parts)}\r\n".encode()]
    for p in parts:
        b = p.encode() if isinstance(p, str) else p
        out += [f"${len(b)}\r\n".encode(), b, b"\r\n"]
    return b"".join(out)


def inference_fields(i: int) -> list[str]:
    return ["model_name", "m1", "request_id", f"r{i}", "prediction", '{"p": 1}', "confidence", "0.9",
            "anomaly_score", "0.1", "is_anomaly", "false", "processing_time_ms", str(i % 200),
            "_st_mid", f"i-{i}"]  # fmt: skip


MALFORMED: list[list[str | bytes]] = [
    ["model_name", "m1", "input_data", "{}"],  # missing request_id
    ["model_name", "m1", "request_id", "x", "input_data", "{not json"],
    ["model_name", "m1", "request_id", "x", "input_data", '{"a": "nul\\u0000"}'],
    ["model_name", "m1", "request_id", "x", "input_data", '"\\ud800"'],
    ["model_name", b"\xff\xfe", "request_id", "x", "input_data", "{}"],
    ["model_name", "m1", "request_id", "x", "input_data", "[" * 100_000 + "]" * 100_000],
    ["model_name", "m1", "request_id", "x", "input_data", "{}", "source_ip", "not-an-ip"],
    ["model_name", "m1", "request_id", "x", "input_data", "1" * 5000],
]
MALFORMED_INFERENCE: list[list[str | bytes]] = [
    ["model_name", "m1", "request_id", "x", "prediction", "{}", "confidence", "high", "anomaly_score", "0",
     "processing_time_ms", "1"],
    ["model_name", "m1", "request_id", "x", "prediction", "{}", "confidence", "0.5", "anomaly_score", "NaN",
     "processing_time_ms", "1"],
    ["model_name", "m1", "request_id", "x", "prediction", "{}", "confidence", "0.5", "anomaly_score", "0",
     "processing_time_ms", "-5"],
    ["model_name", "m1", "request_id", "x", "prediction", "{}", "confidence", "0.5", "anomaly_score", "0",
     "processing_time_ms", "1", "is_anomaly", "maybe"],
]  # fmt: skip


async def test_foreign_backlog_with_malformed_and_resent_entries_lands_exactly_once(
    redis: Redis, redis_url: str, database_url: str, ray_address: str, spawn: Any
) -> None:
    """20,000 entries via redis-cli, 50 malformed, then 1,000 good ones re-XADDed under the
    same message id: exactly 19,950 rows, 50 dead letters with reasons, 0 duplicates,
    nothing pending."""
    await _setup(database_url)
    script = bytearray()
    bad_t = [MALFORMED[i % len(MALFORMED)] for i in range(25)]
    bad_i = [MALFORMED_INFERENCE[i % len(MALFORMED_INFERENCE)] for i in range(25)]
    for i in range(9975):
        script += resp("XADD", "training_data_stream", "*", *training_fields(i))
        script += resp("XADD", "inference_results_stream", "*", *inference_fields(i))
    for fields in bad_t:
        script += resp("XADD", "training_data_stream", "*", *fields)
    for fields in bad_i:
        script += resp("XADD", "inference_results_stream", "*", *fields)
    for i in range(500):  # a producer-side retry of 1,000 sends
        script += resp("XADD", "training_data_stream", "*", *training_fields(i))
        script += resp("XADD", "inference_results_stream", "*", *inference_fields(i))
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    await asyncio.to_thread(
        subprocess.run, ["redis-cli", "-p", port, "--pipe"], input=bytes(script), check=True,
        capture_output=True, timeout=120,
    )  # fmt: skip
    assert int(await redis.xlen("training_data_stream")) == 9975 + 25 + 500

    spawn(_worker_argv(redis_url, ray_address), env={"DATABASE_URL": database_url})
    total = "SELECT (SELECT count(*) FROM training_data) + (SELECT count(*) FROM inference_results)"
    await wait_until(lambda: equals(rows(database_url, total), 19_950), timeout=120, interval=0.2)
    await wait_until(lambda: _dead_letters(redis, 50), timeout=60)
    await wait_until(lambda: _nothing_pending(redis), timeout=30)
    await asyncio.sleep(1.0)  # a late duplicate would show up now
    assert await rows(database_url, total) == 19_950
    dupes = "SELECT count(*) - count(DISTINCT idempotency_key) FROM {}"
    assert await rows(database_url, dupes.format("training_data")) == 0
    assert await rows(database_url, dupes.format("inference_results")) == 0
    reasons = set()
    for stream in ("training_data_stream:dead", "inference_results_stream:dead"):
        for _, fields in await redis.xrange(stream):
            assert fields[b"attempts"] == b"1"  # dead-lettered on first delivery
            reasons.add(fields[b"reason"].decode())
    assert reasons >= {"missing_field", "invalid_json", "nul_byte", "lone_surrogate", "too_deep",
                       "invalid_value", "wrong_type"}  # fmt: skip


async def _dead_letters(redis: Redis, n: int) -> bool:
    got = int(await redis.xlen("training_data_stream:dead")) + int(
        await redis.xlen("inference_results_stream:dead")
    )
    return got == n


async def _nothing_pending(redis: Redis) -> bool:
    for stream in ("training_data_stream", "inference_results_stream"):
        if int((await redis.xpending(stream, GROUP))["pending"]):
            return False
        [group] = await redis.xinfo_groups(stream)
        if group["lag"]:
            return False
    return True


def _worker_argv(redis_url: str, ray_address: str, app: str = "streamtasks.builtins:registry") -> list[str]:
    return [sys.executable, "-m", "streamtasks", "worker", app, "--redis-url", redis_url,
            "--ray-address", ray_address, "--visibility-timeout", "3"]  # fmt: skip


async def _setup(database_url: str) -> None:
    from streamtasks.adserving import schema

    conn = await asyncpg.connect(database_url)
    try:
        await schema.setup_database(conn)
    finally:
        await conn.close()


async def test_a_crash_after_commit_before_ack_makes_no_duplicate_row(
    redis: Redis, redis_url: str, database_url: str, ray_address: str, spawn: Any
) -> None:
    """kill -9 of the worker after its batch committed but before XACK; a restarted worker
    redelivers the batch and ON CONFLICT keeps one row per entry."""
    await _setup(database_url)
    pipe = redis.pipeline(transaction=False)
    for i in range(500):
        pipe.xadd("training_data_stream", dict(zip(*[iter(training_fields(i))] * 2, strict=True)))
    await pipe.execute()
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url}
    first = spawn(_worker_argv(redis_url, ray_address, "crash_app:registry"), env=env, cwd=HERE)
    await wait_until(lambda: _committed(redis), timeout=60)
    assert await rows(database_url, "SELECT count(*) FROM training_data") == 500
    assert int((await redis.xpending("training_data_stream", GROUP))["pending"]) == 500
    first.kill9()
    first.wait(timeout=10)
    spawn(
        _worker_argv(redis_url, ray_address),
        env={"DATABASE_URL": database_url},
        name=f"second-{uuid.uuid4().hex[:4]}",
    )
    await wait_until(lambda: _pending_zero(redis), timeout=60)
    assert await rows(database_url, "SELECT count(*) FROM training_data") == 500
    assert await rows(database_url, "SELECT count(DISTINCT idempotency_key) FROM training_data") == 500


async def _committed(redis: Redis) -> bool:
    """Every entry's batch committed (the app counts them), none acked yet."""
    return int(await redis.get("crash_app:committed") or 0) == 500


async def _pending_zero(redis: Redis) -> bool:
    return int((await redis.xpending("training_data_stream", GROUP))["pending"]) == 0


FACADE_SCRIPT = """
import asyncio, json
from streamtasks.adserving import AsyncProcessingSystem

async def main():
    async with AsyncProcessingSystem() as system:          # config from the seed's variables
        await system.setup_database()
        await system.send_training_data(model_name="fraud_detection", request_id="req_123",
            input_data={"user_id": 1234, "transaction_amount": 100.50}, metadata={"api_version": "v1"},
            source_ip="192.168.1.100")
        await system.send_inference_result(model_name="fraud_detection", request_id="req_123",
            prediction={"prediction": 0, "probability": 0.85}, confidence=0.85, anomaly_score=0.15,
            is_anomaly=False, processing_time_ms=120)
        await system.send_api_request_data(model_name="fraud_detection", request_id="req_124",
            input_data={"user_id": 1}, prediction={"prediction": 1}, confidence=0.5,
            anomaly_score=0.5, processing_time_ms=80)
        await system.start_workers()
        for _ in range(600):
            stats = await system.get_model_performance_stats("fraud_detection", hours=24)
            if stats["requests"] == 2 and stats["training_rows"] == 2:
                break
            await asyncio.sleep(0.1)
        status = await system.get_system_status()
        print(json.dumps({"stats": stats, "local": status["workers"]["local"]}, default=str))
        await system.stop_workers()

asyncio.run(main())
"""


def test_the_readme_facade_with_the_seeds_three_workers_runs_to_completion(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    """A new user's run: the facade snippet of docs/guides/adserving.md in a fresh process (its
    own local Ray), configured by the seed's variables with ASYNC_PROCESSING_NUM_WORKERS=3. It
    used to hang in start_workers (the workers raced to start Ray); now it stores every row and
    prints stats."""
    from urllib.parse import urlsplit

    redis_parts, db_parts = urlsplit(redis_url), urlsplit(database_url)
    ray_tmp = Path(tempfile.mkdtemp(prefix="st-ray-", dir="/tmp"))  # short: Ray's socket paths
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "DATABASE_", "RAY_ADDRESS"))}
    env.update(
        ASYNC_PROCESSING_NUM_WORKERS="3", RAY_TMPDIR=str(ray_tmp),
        REDIS_HOST=redis_parts.hostname or "", REDIS_PORT=str(redis_parts.port),
        REDIS_DB=redis_parts.path.lstrip("/") or "0",
        DATABASE_HOST=db_parts.hostname or "", DATABASE_PORT=str(db_parts.port),
        DATABASE_NAME=db_parts.path.lstrip("/"), DATABASE_USER=db_parts.username or "",
        DATABASE_PASSWORD=db_parts.password or "",
    )  # fmt: skip
    try:
        out = subprocess.run(
            [sys.executable, "-c", FACADE_SCRIPT], capture_output=True, text=True, timeout=180,
            cwd=tmp_path, env=env,
        )  # fmt: skip
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-3000:]
    # the actors' lines, forwarded by Ray into a log that is not a terminal: plain, as the
    # worker command prints them (no "(WorkerActor pid=...)" prefix, no colour codes)
    actor_lines = [line for line in out.stderr.splitlines() if re.search(r"worker \S+-a\d+ reading", line)]
    assert len(actor_lines) == 3, out.stderr[-3000:]
    assert "(WorkerActor pid=" not in out.stderr and "\x1b[" not in out.stderr, out.stderr[-3000:]
    printed = json.loads(out.stdout.strip().splitlines()[-1])
    print("stats printed by the facade:", printed["stats"])
    assert printed["local"] == 3
    assert printed["stats"]["requests"] == 2 and printed["stats"]["training_rows"] == 2
    assert 80 <= printed["stats"]["p50_ms"] <= printed["stats"]["p99_ms"] <= 120
    assert printed["stats"]["mean_confidence"] == pytest.approx(0.675)
