"""Peer 2 of the job (issue 10): FastStream, ``StreamSub(batch=True, max_records=500)``.

The handler written the obvious way: a batch subscriber on the job stream in a consumer group,
an asyncpg pool made at start-up, one ``COPY`` per batch; FastStream acks the batch after the
handler returns. Run with two worker processes (``benchmarks/peers.py`` does)::

    JOB_REDIS_URL=... JOB_DATABASE_URL=... JOB_STREAM=... \\
        faststream run job_faststream:app --workers 2      # from benchmarks/

Needs the ``bench`` extra (``faststream[redis]``), never a runtime dependency of streamtasks.
"""

from __future__ import annotations

import os
from typing import Any

import asyncpg
from faststream import FastStream
from faststream.redis import RedisBroker, StreamSub

GROUP = "faststream"
BATCH = 500
TABLE = "job_rows"
COLUMNS = ("model_name", "request_id", "input_data", "metadata", "source_ip")

broker = RedisBroker(os.environ.get("JOB_REDIS_URL", "redis://127.0.0.1:6379/0"))
app = FastStream(broker)
state: dict[str, Any] = {}


@app.on_startup
async def open_pool() -> None:
    state["pool"] = await asyncpg.create_pool(os.environ["JOB_DATABASE_URL"], min_size=1, max_size=2)


@app.after_shutdown
async def close_pool() -> None:
    await state["pool"].close()


@broker.subscriber(
    stream=StreamSub(
        os.environ.get("JOB_STREAM", "job"),
        group=GROUP,
        consumer=f"fs-{os.getpid()}",
        last_id="0",  # the group starts at the beginning: the backlog is the job
        batch=True,
        max_records=BATCH,
    )
)
async def store(entries: list[dict[str, Any]]) -> None:
    rows = [
        (e["model_name"], e["request_id"], e["input_data"], e["metadata"], e["source_ip"]) for e in entries
    ]
    async with state["pool"].acquire() as conn:
        await conn.copy_records_to_table(TABLE, records=rows, columns=COLUMNS)
