"""A real worker's JSON log lines carry the fields they are about: ``consumer`` on its start
line, ``stream`` / ``handler`` / ``entry_id`` / ``entry_ids`` on a dead-letter line."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from support.waiting import wait_until

from streamtasks import Message, Registry, Reject, logs
from streamtasks.worker import InlineExecutor, Worker, WorkerSettings

pytestmark = pytest.mark.integration
APPS = Path(__file__).resolve().parents[1] / "apps"


async def test_worker_json_lines_name_consumer_stream_and_entries(
    redis: Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = Registry(group="logs-tests")

    @registry.stream_handler("logged", max_retries=0)
    def reject(msg: Message) -> None:
        raise Reject("no")

    ids = [(await redis.xadd("logged", {"n": str(i)})).decode() for i in range(3)]
    logs.configure("INFO", "json")
    worker = Worker(registry, redis, InlineExecutor(), WorkerSettings(consumer="log-consumer", block=0.1))
    task = asyncio.create_task(worker.run())
    try:
        await wait_until(lambda: _dead(redis, 3), timeout=30)
    finally:
        worker.stop()
        await task
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    start = next(r for r in lines if r["msg"].startswith("worker log-consumer reading"))
    assert start["consumer"] == "log-consumer" and start["group"] == "logs-tests"
    dead = [r for r in lines if r["msg"].startswith("dead-lettered")]
    assert dead and all(r["stream"] == "logged" for r in dead)
    assert {i for r in dead for i in r["entry_ids"]} == set(ids)
    assert all(r["entry_id"] == r["entry_ids"][0] for r in dead)
    assert all(r["handler"] for r in dead)


async def _dead(redis: Redis, n: int) -> Any:
    return await redis.xlen("logged:dead") >= n


async def test_actor_mode_logs_json_lines_from_its_actors_each_line_as_it_was_written(
    redis: Redis, redis_url: str, ray_address: str, spawn: Any
) -> None:
    """``--mode actors --log-format json``: what the actors log reaches the worker's stderr as
    JSON lines (Ray adds no ``(WorkerActor pid=...)`` prefix), and the same line from two
    actors is not folded into one."""
    worker = spawn(
        [sys.executable, "-m", "streamtasks", "worker", "obs_app:registry", "--mode", "actors",
         "--actors", "2", "--consumer", "obs", "--streams", "obs_work", "--log-format", "json",
         "--redis-url", redis_url,
         "--ray-address", ray_address],
        cwd=APPS,
    )  # fmt: skip
    worker.wait_for_log(r"worker obs reading obs_work as group obs-tests on 2 actors", timeout=90)
    ids = {(await redis.xadd("obs_work", {"bad": "1"})).decode() for _ in range(40)}
    await wait_until(lambda: _dead_in(redis, "obs_work:dead", len(ids)), timeout=60)
    worker.wait_for_log(r"dead-lettered", timeout=10)
    worker.terminate()
    assert worker.wait(60) == 0, worker.output_tail()
    err = worker.stderr()
    assert "(WorkerActor" not in err and "repeated" not in err, err[-2000:]
    ours = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    dead = [r for r in ours if r["msg"].startswith("dead-lettered")]
    assert {i for r in dead for i in r["entry_ids"]} == ids  # every actor's lines, none folded
    assert {r["consumer"] for r in dead} <= {"obs-a0", "obs-a1"} and dead, dead
    assert all(r["stream"] == "obs_work" for r in dead)


async def _dead_in(redis: Redis, stream: str, n: int) -> bool:
    return int(await redis.xlen(stream)) >= n
