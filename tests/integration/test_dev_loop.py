"""The dev loop: ``--executor inline`` (no Ray) starts fast; ``--reload`` restarts on an edit
through the graceful path, so every entry is handled exactly once."""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

pytestmark = pytest.mark.integration

APPS = Path(__file__).resolve().parents[1] / "apps"
#: Generous bounds on a loaded 2-core machine; the figures measured are in the test output.
FIRST_ENTRY_BOUND_S = 3.0
RELOAD_BOUND_S = 2.0


def worker_argv(app: str, *extra: str) -> list[str]:
    return [sys.executable, *extra, "-m", "streamtasks", "worker", app, "--executor", "inline"]


async def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout}s")


async def test_inline_worker_handles_its_first_entry_fast_without_importing_ray(
    redis: Redis, redis_url: str, spawn: Any
) -> None:
    """Spawn -> first handled entry well under Ray's start-up; `import ray` never happens."""
    await redis.xadd("dev", {"n": "1"})
    started = time.time()
    worker = spawn(worker_argv("dev_app:registry", "-X", "importtime"), env={"REDIS_URL": redis_url})
    await wait_for(lambda: redis.exists("dev:first"))
    took = float(await redis.get("dev:first")) - started
    print(f"spawn -> first handled entry (with -X importtime): {took:.3f}s")
    assert took < FIRST_ENTRY_BOUND_S
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    imported = [
        line.rsplit("|", 1)[-1].strip() for line in worker.stderr().splitlines() if "import time:" in line
    ]
    assert "streamtasks.worker.executors" in imported
    assert "streamtasks.ray" not in imported
    assert not [m for m in imported if m == "ray" or m.startswith("ray.")]


async def test_reload_restarts_on_an_edit_and_handles_every_entry_once(
    redis: Redis, redis_url: str, spawn: Any, tmp_path: Path
) -> None:
    """Edit the handler's file under load: restarted within 2 s, each entry handled once."""
    app = tmp_path / "reload_app.py"
    shutil.copy(APPS / "dev_app.py", app)
    worker = spawn(
        [*worker_argv("reload_app:registry"), "--reload", "--visibility-timeout", "5"],
        env={"REDIS_URL": redis_url}, cwd=tmp_path,
    )  # fmt: skip
    total = 2000
    sent: list[str] = []

    async def produce() -> None:
        for chunk in range(total // 50):
            pipe = redis.pipeline(transaction=False)
            for i in range(50):
                pipe.xadd("dev", {"n": str(chunk * 50 + i), "sleep": "0.01"})
            sent.extend(i.decode() for i in await pipe.execute())
            await asyncio.sleep(0.02)

    producer = asyncio.create_task(produce())
    await wait_for(lambda: _count(redis, "dev:handled", 100))
    edited = time.time()
    app.write_text(app.read_text().replace('VERSION = "1"', 'VERSION = "2"'))
    await wait_for(lambda: _has_version(redis, "2"), timeout=30)
    await producer
    await wait_for(lambda: _count(redis, "dev:handled", total), timeout=60)
    versions = {k.decode(): v.decode() for k, v in (await redis.hgetall("dev:version")).items()}
    handled_at = {k.decode(): float(v) for k, v in (await redis.hgetall("dev:handled_at")).items()}
    restart = min(t for i, t in handled_at.items() if versions[i] == "2") - edited
    counts = [int(v) for v in (await redis.hgetall("dev:handled")).values()]
    by_version = {v: list(versions.values()).count(v) for v in ("1", "2")}
    print(f"edit -> first entry handled by the new code: {restart:.3f}s; handled per version {by_version}")
    assert restart < RELOAD_BOUND_S
    assert len(counts) == total == len(sent) and set(counts) == {1}
    assert int((await redis.xpending("dev", "dev-loop"))["pending"]) == 0
    assert "restarting (graceful stop, then re-exec)" in worker.stderr()
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0


async def _count(redis: Redis, key: str, n: int) -> bool:
    return int(await redis.hlen(key)) >= n


async def _has_version(redis: Redis, version: str) -> bool:
    return version.encode() in await redis.hvals("dev:version")


async def test_reload_waits_out_an_edit_that_does_not_import(
    redis: Redis, redis_url: str, spawn: Any, tmp_path: Path
) -> None:
    """A syntax error mid-edit: one error line, the loop waits, and the fix brings it back."""
    app = tmp_path / "broken_app.py"
    good = (APPS / "dev_app.py").read_text()
    app.write_text(good + "\ndef oops(:\n")
    worker = spawn(
        [*worker_argv("broken_app:registry"), "--reload"], env={"REDIS_URL": redis_url}, cwd=tmp_path
    )
    await worker.await_log("waiting for a change to restart", timeout=30)
    assert worker.running
    await redis.xadd("dev", {"n": "1"})
    app.write_text(good)
    await wait_for(lambda: redis.exists("dev:first"), timeout=30)
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert worker.stderr().count("importing 'broken_app' failed: SyntaxError") == 1
