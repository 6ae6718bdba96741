"""The ``streamtasks`` command line against real Redis and Ray, as subprocesses."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from support.cli import cli
from support.entries import handled, pending
from support.waiting import wait_until

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "streamtasks"]


def redis_cli_xadd(url: str, stream: str, n: int) -> None:
    """Write entries the way a foreign producer would: plain redis-cli XADD."""
    port = url.rsplit(":", 1)[1].split("/")[0]
    script = "".join(f"XADD {stream} * n {i} payload hello\n" for i in range(n))
    out = subprocess.run(
        ["redis-cli", "-p", port], input=script, capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.count("\n") == n


async def test_worker_handles_a_redis_cli_backlog_then_drains_on_sigterm(
    redis: Redis, redis_url: str, ray_address: str, spawn: Any
) -> None:
    """2,000 entries on a per-entry and on a batch stream, written by redis-cli, are all handled;
    SIGTERM then exits 0 within 15 s with nothing pending."""
    redis_cli_xadd(redis_url, "sync_each", 2000)
    redis_cli_xadd(redis_url, "sync_batch", 2000)
    worker = spawn(
        [*CLI, "worker", "core_app:registry", "--redis-url", redis_url, "--ray-address", ray_address,
         "--streams", "sync_each,sync_batch"],
        cwd=HERE,
    )  # fmt: skip
    for stream in ("sync_each", "sync_batch"):
        await wait_until(lambda s=stream: _all_handled(redis, s, 2000), timeout=60)
    started = time.monotonic()
    worker.terminate()
    assert worker.wait(timeout=15) == 0, worker.output_tail()
    assert time.monotonic() - started < 15
    for stream in ("sync_each", "sync_batch"):
        counts = await handled(redis, stream)
        assert len(counts) == 2000 and set(counts.values()) == {1}
        assert await pending(redis, stream, "core-tests") == 0


async def _all_handled(redis: Redis, stream: str, n: int) -> bool:
    return len(await handled(redis, stream)) == n


@pytest.mark.parametrize("mode", ["tasks", "actors"])
async def test_sigterm_finishes_in_flight_batches_before_exiting(
    redis: Redis, redis_url: str, ray_address: str, spawn: Any, mode: str
) -> None:
    """A batch that is running when SIGTERM arrives is finished and acked; exit status 0. In
    actor mode the SIGTERM lands while the worker process still waits for its actors to report
    (Ray's own SIGTERM handler used to abort it then), or while an actor still connects (it
    used to go on serving, and the worker to wait for it forever)."""
    ids = [(await redis.xadd("sync_each", {"sleep": "0.02"})).decode() for _ in range(100)]
    worker = spawn(
        [*CLI, "worker", "core_app:registry", "--redis-url", redis_url, "--ray-address", ray_address,
         "--streams", "sync_each", "--mode", mode],
        cwd=HERE,
    )  # fmt: skip
    await wait_until(lambda: _some_handled(redis, "sync_each"), timeout=30, interval=0.01)
    worker.terminate()
    assert worker.wait(timeout=30) == 0, worker.output_tail()
    counts = await handled(redis, "sync_each")
    assert set(counts.values()) == {1}
    pending_after = await pending(redis, "sync_each", "core-tests")
    assert len(counts) + pending_after == len(ids)  # unstarted ones were handed back, not lost
    assert "handed back" in worker.output() or pending_after == 0


async def _some_handled(redis: Redis, stream: str) -> bool:
    return len(await handled(redis, stream)) > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["worker", "no_such_module:registry"], "cannot import module 'no_such_module'"),
        (["worker", "core_app:nope"], "has no attribute 'nope'"),
        (["worker", "core_app:record"], "is a function, not a streamtasks Registry"),
        (["worker", "core_app:registry", "--streams", "unknown"], "no handler for stream(s): unknown"),
        (["worker", "core_app:registry", "--batch-size", "0"], "Invalid value for '--batch-size'"),
        (["worker", "core_app:registry", "--redis-url", "redis://127.0.0.1:1/0"], "cannot reach Redis"),
        (["send", "s"], "give at least one key=value field"),
        (["send", "s", "novalue"], "is not key=value"),
        (["send", "s", "a:={bad", "--redis-url", "redis://127.0.0.1:1/0"], "invalid JSON"),
    ],
)
def test_bad_cli_input_is_one_line_and_a_nonzero_exit(args: list[str], message: str) -> None:
    """Bad input: a clear message on stderr, exit status != 0, no traceback."""
    out = cli(*args)
    assert out.returncode != 0
    assert message in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_unreachable_redis_error_does_not_print_the_password() -> None:
    out = cli("worker", "core_app:registry", "--redis-url", "redis://user:s3cretpw@127.0.0.1:1/0")
    assert out.returncode == 1
    assert "s3cretpw" not in out.stderr and "cannot reach Redis" in out.stderr


async def test_send_prints_the_entry_id_and_encodes_json_values(redis: Redis, redis_url: str) -> None:
    out = cli("send", "orders", "order_id=42", "amount:=19.5", "tags:=[1,2]", "--redis-url", redis_url)
    assert out.returncode == 0, out.stderr
    entry_id = out.stdout.strip()
    [(got_id, fields)] = await redis.xrange("orders")
    assert got_id.decode() == entry_id
    assert fields[b"order_id"] == b"42" and fields[b"amount"] == b"19.5" and fields[b"tags"] == b"[1,2]"
    assert len(fields[b"_st_mid"]) == 32
