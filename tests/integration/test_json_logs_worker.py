"""A real worker's JSON log lines carry the fields they are about: ``consumer`` on its start
line, ``stream`` / ``handler`` / ``entry_id`` / ``entry_ids`` on a dead-letter line."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from redis.asyncio import Redis
from test_worker import wait_until

from streamtasks import Message, Registry, Reject, logs
from streamtasks.worker import InlineExecutor, Worker, WorkerSettings

pytestmark = pytest.mark.integration


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
