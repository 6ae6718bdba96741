"""Passwords never reach logs, status output, CLI errors or dead-letter entries (issue 6,
RELIABILITY scenario 13): a password-protected Redis, a database URL with a password that
cannot connect, Redis killed and restarted under the worker, entries dead-lettered."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from support.procs import free_port
from support.waiting import wait_until

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.integration
REDIS_PASSWORD = "r3dis-Secret-pw"
DB_PASSWORD = "pg-Secret-pw9"


def start_redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--requirepass", REDIS_PASSWORD,
         "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ping = ["redis-cli", "-p", str(port), "-a", REDIS_PASSWORD, "--no-auth-warning", "ping"]
        out = subprocess.run(ping, capture_output=True, text=True)
        if out.stdout.strip() == "PONG":
            return proc
        time.sleep(0.05)
    raise AssertionError("password-protected redis-server did not start")


async def test_no_password_appears_in_any_output(tmp_path: Path, ray_address: str, spawn: Any) -> None:
    port = free_port()
    redis_url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"
    database_url = f"postgresql://writer:{DB_PASSWORD}@127.0.0.1:{free_port()}/nowhere"
    env = {"REDIS_URL": redis_url, "DATABASE_URL": database_url}
    server = start_redis(port, tmp_path)
    redis = Redis.from_url(redis_url)
    try:
        for i in range(20):
            await redis.xadd(
                "training_data_stream", {"model_name": "m", "request_id": f"r{i}", "input_data": "{}"}
            )
        worker = spawn(
            [sys.executable, "-m", "streamtasks", "worker", "secrets_app:registry",
             "--ray-address", ray_address, "--visibility-timeout", "2", "--streams", "training_data_stream"],
            env=env, cwd=HERE,
        )  # fmt: skip
        await wait_until(lambda: _dead(redis, 20), timeout=90, interval=0.2)

        server.kill()  # Redis dies under the worker, comes back empty
        server.wait()
        await asyncio.sleep(1.5)
        server = start_redis(port, tmp_path)
        await redis.aclose()
        redis = Redis.from_url(redis_url)  # our old connection died with the server
        await worker.await_log(r"Redis is back", timeout=30)
        await redis.xadd(
            "training_data_stream", {"model_name": "m", "request_id": "late", "input_data": "{}"}
        )
        await wait_until(lambda: _dead(redis, 1), timeout=60, interval=0.2)

        outputs = [worker.output()]
        commands = [
            ["status", "secrets_app:registry"], ["status", "secrets_app:registry", "--json"],
            ["dlq", "list", "training_data_stream"], ["dlq", "list", "training_data_stream", "--json"],
            ["db", "init"], ["stats", "m"],
            ["worker", "secrets_app:registry", "--redis-url", f"redis://:{REDIS_PASSWORD}@127.0.0.1:1/0"],
        ]  # fmt: skip
        for args in commands:
            out = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "streamtasks", *args], capture_output=True, text=True,
                timeout=60, cwd=HERE, env={**os.environ, **env},
            )  # fmt: skip
            outputs += [out.stdout, out.stderr]
        for _, fields in await redis.xrange("training_data_stream:dead"):
            outputs.append(b" ".join(fields.values()).decode("utf-8", "replace"))
        worker.terminate()
        worker.wait(timeout=30)
        outputs.append(worker.output())

        everything = "\n".join(outputs)
        assert "PostgreSQL" in everything or "postgres" in everything.lower()  # the errors were reported
        assert "Redis" in everything
        assert REDIS_PASSWORD not in everything
        assert DB_PASSWORD not in everything
    finally:
        await redis.aclose()
        server.kill()
        server.wait()


async def _dead(redis: Redis, n: int) -> bool:
    return int(await redis.xlen("training_data_stream:dead")) >= n
