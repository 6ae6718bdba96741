#!/usr/bin/env python3
"""Framework overhead: a no-op batch handler through Worker + RayExecutor vs a lean loop.

In one run, over the same N entries (a fresh stream each):

* **lean**: one process, ``XREADGROUP COUNT 1000`` + ``XACK``, nothing else;
* **streamtasks**: ``Worker`` + ``RayExecutor`` (one Ray task per batch of 1000) running a
  batch handler that does nothing; every entry is decoded into a ``Message``, its outcome
  reported and acked, as for any handler.

Ray is started once before the timers (``ray.init`` takes seconds and is not per-entry
cost); the streamtasks timer starts when the worker starts, so the first batch pays for
starting Ray's worker processes. Prints entries/s of both and the ratio::

    python benchmarks/noop_ray.py [--n 200000] [--redis-url URL] [--repeat 2] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import SERVICES_PATH, fill, load_script
from redis.asyncio import Redis

from streamtasks import Message, Registry
from streamtasks.ray import RayExecutor
from streamtasks.worker import Worker, WorkerSettings

GROUP = "noop-bench"
BATCH = 1000


def noop(msgs: list[Message]) -> None:
    """The handler: nothing (sync, so no event-loop hop inside the Ray worker)."""


class Acked:
    """A worker observer: sets ``all_done`` once ``n`` entries were acked."""

    def __init__(self, n: int) -> None:
        self.n, self.done, self.all_done = n, 0, asyncio.Event()

    def settled(self, spec: object, entries: object, plan: Any, result: object) -> None:
        self.done += len(plan.done)
        if self.done >= self.n:
            self.all_done.set()


async def lean(redis: Redis, stream: str, n: int) -> float:
    """XREADGROUP COUNT 1000 + XACK until ``n`` entries; returns seconds."""
    await redis.xgroup_create(stream, "lean", id="0", mkstream=True)
    done, started = 0, time.perf_counter()
    while done < n:
        resp = await redis.xreadgroup("lean", "c1", {stream: ">"}, count=BATCH, block=100)
        for _, entries in resp or ():
            await redis.xack(stream, "lean", *[eid for eid, _ in entries])
            done += len(entries)
    return time.perf_counter() - started


async def framework(redis: Redis, stream: str, n: int, executor: RayExecutor) -> float:
    """Worker + RayExecutor with the no-op batch handler until ``n`` acked; returns seconds."""
    registry = Registry(group=GROUP)
    registry.stream_handler(stream, batch=True, batch_size=BATCH)(noop)
    counter = Acked(n)
    worker = Worker(registry, redis, executor, WorkerSettings(block=0.1), observers=[counter])
    started = time.perf_counter()
    task = asyncio.create_task(worker.run())
    await counter.all_done.wait()
    seconds = time.perf_counter() - started
    worker.stop()
    await task
    return seconds


async def main(args: argparse.Namespace) -> dict[str, object]:
    redis = Redis.from_url(args.redis_url)
    executor = RayExecutor(num_cpus=args.num_cpus)
    await executor.start()  # ray.init before any timer
    executor.close = _keep_ray  # type: ignore[method-assign] # one Ray for all runs
    runs: list[dict[str, float]] = []
    try:
        for r in range(args.repeat):
            row: dict[str, float] = {}
            for kind in ("lean", "streamtasks"):
                stream = f"noop-bench:{time.time_ns()}:{kind}"
                await fill(redis, stream, args.n, tag=f"r{r}", on_chunk=lambda c: None)
                if kind == "lean":
                    seconds = await lean(redis, stream, args.n)
                else:
                    seconds = await framework(redis, stream, args.n, executor)
                row[kind] = round(args.n / seconds)
                await redis.delete(stream)
            row["ratio"] = round(row["streamtasks"] / row["lean"], 3)
            runs.append(row)
            print(
                f"run {r + 1}: lean {row['lean']:,.0f} entries/s, streamtasks (Ray, no-op batch "
                f"handler) {row['streamtasks']:,.0f} entries/s, ratio {row['ratio']:.2f}",
                file=sys.stderr,
            )
    finally:
        await redis.aclose()
    return {"n": args.n, "batch_size": BATCH, "runs": runs}


async def _keep_ray() -> None:
    return None


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--num-cpus", type=int, default=None)
    p.add_argument("--redis-url", help="default: a throwaway redis-server")
    p.add_argument("--json", action="store_true")
    return p.parse_args()


if __name__ == "__main__":
    args = parse()
    server = None
    workdir = Path(tempfile.mkdtemp(prefix="streamtasks-noop-"))
    if args.redis_url is None:
        services = load_script(SERVICES_PATH, "streamtasks_bench_services")
        server = services.RedisServer(workdir / "redis").start()
        args.redis_url = server.url
    try:
        result = asyncio.run(main(args))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result, indent=2) if args.json else json.dumps(result))
