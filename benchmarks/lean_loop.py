#!/usr/bin/env python3
"""The yardstick: the leanest single-process loop that persists a stream into PostgreSQL.

``XREADGROUP COUNT 1000`` -> asyncpg ``COPY`` (binary) into ``training_data`` -> ``XACK``, in
one process, one connection, one batch at a time. No validation, no dedup, no retries, no
dead letters: it is what a user would hand-write, and what streamtasks is measured against
(``benchmarks/run.py`` reports streamtasks as a ratio to it, in the same run).

Importable (:func:`lean_drain`) and runnable::

    python benchmarks/lean_loop.py --redis-url redis://127.0.0.1:6379/0 \\
        --database-url postgresql://postgres@127.0.0.1:5432/streamtasks \\
        --stream training_data_stream --n 200000

It stops after ``--n`` entries (or, without ``--n``, once the stream has been empty for
``--idle`` seconds) and prints ``{"rows": ..., "seconds": ..., "rows_per_s": ...}``.
Only redis-py and asyncpg are imported: nothing of streamtasks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from datetime import datetime, timezone
from typing import Any

import asyncpg
from redis.asyncio import Redis

GROUP = "lean-loop"
CONSUMER = "lean-1"
COUNT = 1000
BLOCK_MS = 100
COLUMNS = (
    "model_name", "request_id", "input_data", "metadata", "source_ip",
    "created_at", "idempotency_key", "stream", "entry_id",
)  # fmt: skip


JOB_COLUMNS = ("model_name", "request_id", "input_data", "metadata", "source_ip")


def job_row(stream: str, entry_id: bytes, f: dict[bytes, bytes]) -> tuple[Any, ...]:
    """``--job``: the five fields of the peers' job (``peers.py``) -> one row, bytes to text."""
    return (
        f[b"model_name"].decode(),
        f[b"request_id"].decode(),
        f[b"input_data"].decode(),
        f[b"metadata"].decode(),
        f[b"source_ip"].decode(),
    )


def to_row(stream: str, entry_id: bytes, f: dict[bytes, bytes]) -> tuple[Any, ...]:
    """One training entry -> one COPY row. Bytes to text and nothing else (no validation)."""
    eid = entry_id.decode()
    ts = f.get(b"_st_ts")
    ms = int(ts) if ts is not None else int(eid.partition("-")[0])
    ip = f.get(b"source_ip")
    return (
        f[b"model_name"].decode(),
        f[b"request_id"].decode(),
        f[b"input_data"].decode(),
        f.get(b"metadata", b"{}").decode(),
        ip.decode() if ip else None,
        datetime.fromtimestamp(ms / 1000, tz=timezone.utc),
        (f.get(b"_st_mid") or f"{stream}/{eid}".encode()).decode(),
        stream,
        eid,
    )


async def lean_drain(
    redis_url: str,
    database_url: str,
    stream: str,
    *,
    n: int | None = None,
    table: str = "training_data",
    idle: float = 2.0,
    stop: asyncio.Event | None = None,
    job: bool = False,
) -> dict[str, float]:
    """Read ``stream`` with a consumer group, COPY each batch into ``table``, XACK it.

    Returns after ``n`` entries, after ``idle`` seconds without entries (when ``n`` is None),
    or when ``stop`` is set. The timer starts at the first XREADGROUP. ``job``: the peers'
    five-field job (:func:`job_row`) instead of the training rows.
    """
    row, columns = (job_row, JOB_COLUMNS) if job else (to_row, COLUMNS)
    redis = Redis.from_url(redis_url)
    conn = await asyncpg.connect(database_url)
    try:
        try:
            await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except Exception as exc:  # BUSYGROUP: reuse it
            if "BUSYGROUP" not in str(exc):
                raise
        rows = 0
        started = time.perf_counter()
        last_seen = started
        while (n is None or rows < n) and not (stop is not None and stop.is_set()):
            resp = await redis.xreadgroup(GROUP, CONSUMER, {stream: ">"}, count=COUNT, block=BLOCK_MS)
            if not resp:
                if n is None and time.perf_counter() - last_seen > idle:
                    break
                continue
            _, entries = resp[0]
            batch = [row(stream, eid, f) for eid, f in entries]
            await conn.copy_records_to_table(table, records=batch, columns=columns)
            await redis.xack(stream, GROUP, *[eid for eid, _ in entries])
            rows += len(batch)
            last_seen = time.perf_counter()
        seconds = last_seen - started
        return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds if seconds > 0 else 0.0}
    finally:
        await conn.close()
        await redis.aclose()


async def _main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    result = await lean_drain(
        args.redis_url, args.database_url, args.stream,
        n=args.n, table=args.table, idle=args.idle, stop=stop, job=args.job,
    )  # fmt: skip
    print(json.dumps(result), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--redis-url", required=True)
    p.add_argument("--database-url", required=True)
    p.add_argument("--stream", default="training_data_stream")
    p.add_argument("--table", default="training_data")
    p.add_argument("--n", type=int, default=None, help="stop after this many entries")
    p.add_argument("--idle", type=float, default=2.0, help="without --n: stop after this many idle seconds")
    p.add_argument("--job", action="store_true", help="the peers' five-field job (--table job_rows)")
    asyncio.run(_main(p.parse_args()))


if __name__ == "__main__":
    main()
