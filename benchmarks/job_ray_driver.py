#!/usr/bin/env python3
"""Peer 1 of the job (issue 10): a hand-written Ray driver, what a user writes without us.

``XREADGROUP COUNT 500`` -> one Ray task per batch that ``COPY``s it with asyncpg (one
connection and event loop per Ray worker process, made on first use) -> ``XACK`` once the task
returned; at most 4 tasks in flight. Acks after success like streamtasks; no retries, no dead
letters, no reclaim. Runs until SIGTERM (or ``--n`` entries)::

    python benchmarks/job_ray_driver.py --redis-url URL --database-url URL --stream S [--n N]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from typing import Any

import ray
from redis import Redis

GROUP = "ray-driver"
CONSUMER = "driver-1"
BATCH = 500
IN_FLIGHT = 4
TABLE = "job_rows"
COLUMNS = ("model_name", "request_id", "input_data", "metadata", "source_ip")

_conn: dict[str, Any] = {}  # per Ray worker process: its event loop and connection


def _connection(dsn: str) -> tuple[asyncio.AbstractEventLoop, Any]:
    if "conn" not in _conn:
        import asyncpg

        loop = asyncio.new_event_loop()
        _conn["loop"], _conn["conn"] = loop, loop.run_until_complete(asyncpg.connect(dsn))
    return _conn["loop"], _conn["conn"]


@ray.remote
def copy_batch(dsn: str, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> int:
    """One batch -> one COPY into the job table; returns the row count."""
    rows = [
        (
            f[b"model_name"].decode(), f[b"request_id"].decode(), f[b"input_data"].decode(),
            f[b"metadata"].decode(), f[b"source_ip"].decode(),
        )
        for _, f in entries
    ]  # fmt: skip
    loop, conn = _connection(dsn)
    loop.run_until_complete(conn.copy_records_to_table(TABLE, records=rows, columns=COLUMNS))
    return len(rows)


def drive(redis: Redis, dsn: str, stream: str, n: int | None, stopping: list[bool]) -> int:
    """The driver loop; returns the entries acked."""
    try:
        redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    except Exception as exc:  # BUSYGROUP: reuse it
        if "BUSYGROUP" not in str(exc):
            raise
    in_flight: dict[Any, list[bytes]] = {}
    done = 0
    while not stopping or in_flight:
        if not stopping and len(in_flight) < IN_FLIGHT and (n is None or done < n):
            # Block only when nothing is in flight; otherwise look, then wait on Ray.
            block = None if in_flight else 100
            resp = redis.xreadgroup(GROUP, CONSUMER, {stream: ">"}, count=BATCH, block=block)
            for _, entries in resp or ():
                in_flight[copy_batch.remote(dsn, entries)] = [eid for eid, _ in entries]
            if resp:
                continue
        if in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.1)
            for ref in ready:
                ray.get(ref)
                ids = in_flight.pop(ref)
                redis.xack(stream, GROUP, *ids)
                done += len(ids)
        elif n is not None and done >= n:
            break
    return done


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--redis-url", required=True)
    p.add_argument("--database-url", required=True)
    p.add_argument("--stream", required=True)
    p.add_argument("--n", type=int, default=None, help="stop after this many entries")
    p.add_argument("--num-cpus", type=int, default=None)
    args = p.parse_args()
    stopping: list[bool] = []
    started = time.perf_counter()
    ray.init(num_cpus=args.num_cpus, include_dashboard=False)  # as streamtasks starts its local Ray
    print(f"ray.init took {time.perf_counter() - started:.2f}s", flush=True)
    # After ray.init, which installs its own SIGTERM handler (a stack dump, then death).
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    redis = Redis.from_url(args.redis_url)
    try:
        done = drive(redis, args.database_url, args.stream, args.n, stopping)
    finally:
        redis.close()
        ray.shutdown()
    print(f"acked {done} entries in {time.perf_counter() - started:.2f}s", flush=True)


if __name__ == "__main__":
    main()
