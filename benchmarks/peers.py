"""One job for everyone (issue 10): N entries of five fields -> one row each in a plain logged
table through asyncpg ``COPY``, the consumer written the obvious way for each framework:

* ``lean``: the lean loop (``lean_loop.py --job``): XREADGROUP 1000 -> COPY -> XACK, one process;
* ``ray-driver``: a hand-written Ray driver (``job_ray_driver.py``): XREADGROUP 500 -> one Ray
  task per batch doing the COPY, 4 in flight -> XACK;
* ``faststream``: FastStream ``StreamSub(batch=True, max_records=500)``, 2 processes, COPY
  (``job_faststream.py``);
* ``streamtasks``: ``@registry.stream_handler(..., batch=True, batch_size=500)`` with a pool
  ``@registry.resource``, COPY (``job_streamtasks.py``), served by ``streamtasks worker``
  (``--mode tasks``); ``streamtasks-actors``: the same app with ``--mode actors``; the
  ``...-inline`` kinds add ``--inline-start`` (entries handled in the worker process while
  Ray starts).

Each drains the same backlog in a fresh stream, as a subprocess started after the fill, and is
watched like the built-ins' drain (:mod:`harness`): drain and steady rate, spawn -> first row,
peak RSS of its process tree, CPU seconds by process group.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from harness import BENCH_DIR, LEAN_GROUP, LEAN_LOOP_PATH, Consumer, Target, Ui, fill, job_entry, spawn, sql
from harness import watch_drain as _watch_drain
from redis.asyncio import Redis

KINDS = (
    "lean", "ray-driver", "faststream", "streamtasks", "streamtasks-actors", "streamtasks-inline",
    "streamtasks-actors-inline",
)  # fmt: skip
TABLE = "job_rows"
#: A plain logged table: no key, no index.
JOB_TABLE_DDL = f"""
CREATE TABLE {TABLE} (
    model_name text NOT NULL,
    request_id text NOT NULL,
    input_data jsonb NOT NULL,
    metadata   jsonb NOT NULL,
    source_ip  inet
)"""
#: The consumer group of each kind (as named in its script).
GROUPS = {"lean": LEAN_GROUP, "ray-driver": "ray-driver", "faststream": "faststream"}
GROUPS.update(dict.fromkeys([k for k in KINDS if k.startswith("streamtasks")], "job-streamtasks"))
FASTSTREAM_WORKERS = 2


def _argv(
    kind: str, tgt: Target, stream: str, n: int, num_cpus: int | None, extra: Sequence[str] = ()
) -> list[str]:
    py = sys.executable
    urls = ["--redis-url", tgt.redis_url, "--database-url", tgt.database_url, "--stream", stream]
    cpus = ["--num-cpus", str(num_cpus)] if num_cpus else []
    if kind == "lean":
        return [py, str(LEAN_LOOP_PATH), *urls, "--n", str(n), "--table", TABLE, "--job"]
    if kind == "ray-driver":
        return [py, str(BENCH_DIR / "job_ray_driver.py"), *urls, *cpus]
    if kind == "faststream":
        return [py, "-m", "faststream", "run", "job_faststream:app", "--workers", str(FASTSTREAM_WORKERS)]
    if kind.startswith("streamtasks"):
        mode = "actors" if "actors" in kind else "tasks"
        inline = ["--inline-start"] if kind.endswith("-inline") else []
        app = [py, "-m", "streamtasks", "worker", "job_streamtasks:registry"]
        return [*app, "--mode", mode, *inline, *cpus, *extra]
    raise ValueError(f"unknown peer {kind!r}; one of {', '.join(KINDS)}")


def start(
    kind: str, tgt: Target, stream: str, n: int, num_cpus: int | None = None, extra: Sequence[str] = ()
) -> Consumer:
    """Spawn ``kind`` on ``stream`` (from ``benchmarks/``, which is also on Ray's workers' path);
    ``extra``: more arguments for the streamtasks kinds (``--ray-address``)."""
    path = os.pathsep.join(p for p in (str(BENCH_DIR), os.environ.get("PYTHONPATH")) if p)
    env = {
        "REDIS_URL": tgt.redis_url, "JOB_REDIS_URL": tgt.redis_url, "JOB_DATABASE_URL": tgt.database_url,
        "JOB_STREAM": stream, "PYTHONPATH": path,
        "STREAMTASKS_LOG_FORMAT": "text", "STREAMTASKS_LOG_LEVEL": "INFO",
    }  # fmt: skip
    log = tgt.workdir / f"job-{kind}-{stream.replace(':', '_')}.log"
    return spawn(kind, GROUPS[kind], _argv(kind, tgt, stream, n, num_cpus, extra), env, log, cwd=BENCH_DIR)


async def drain(kind: str, tgt: Target, redis: Redis, n: int, ui: Ui, *, num_cpus: int | None = None) -> Any:
    """Backlog of ``n`` job entries in a fresh stream, then ``kind`` drains it; the measures."""
    await sql(tgt, f"TRUNCATE {TABLE}")
    stream, _ = tgt.streams(f"job-{kind}")
    task = ui.task(f"job {kind}: fill {n:,}", n)
    await fill(redis, stream, n, on_chunk=lambda c: ui.advance(task, c), entry=job_entry)
    ui.done(task)
    consumer = start(kind, tgt, stream, n, num_cpus)
    return await _watch_drain(consumer, tgt, redis, stream, n, ui, TABLE)
