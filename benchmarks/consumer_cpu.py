#!/usr/bin/env python3
"""CPU per entry of one consumer process, without Ray: what an actor spends, measured alone.

Each run drains a fresh backlog with one consumer in a subprocess of its own and reads that
process' CPU time (user + system, all its threads) between 20 % and 80 % of the backlog
acknowledged, so neither its start nor its end counts. Kinds:

* ``lean``: the lean loop (``lean_loop.py``), the yardstick;
* ``actor``: the code a Ray actor runs (a :class:`~streamtasks.worker.Worker` with an
  :class:`~streamtasks.worker.InlineExecutor` that adopts the actor's loop), in a plain
  process;
* ``actor-thread``: the same with async batches sent through the pool thread to a loop of
  their own (how actors ran before the loop was adopted).

``--app job`` runs the peers' five-field job (``job_streamtasks.py``; the lean loop with
``--job``), ``--app builtins`` the built-in training handler (the lean loop's default rows).
Runs alternate between the kinds (``--repeat``), and the figures are ratios to the lean
loop's, so a noisy machine moves them less::

    python benchmarks/consumer_cpu.py --app job --n 200000 --repeat 3

Throwaway Redis and PostgreSQL unless ``--redis-url`` / ``--database-url`` are given.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import click
import psutil
from harness import (
    BENCH_DIR,
    LEAN_GROUP,
    LEAN_LOOP_PATH,
    Target,
    acked,
    fill,
    job_entry,
    sql,
    target,
    training_entry,
)
from job_streamtasks import GROUP as JOB_GROUP
from redis.asyncio import Redis
from suite import _setup_schema

from streamtasks.adserving.handlers import DEFAULT_GROUP as BUILTINS_GROUP

KINDS = ("lean", "actor", "actor-thread")
WINDOW = (0.2, 0.8)
POLL_S = 0.02
APP_GROUPS = {"job": JOB_GROUP, "builtins": BUILTINS_GROUP}


def _child_main(app: str, adopt: bool) -> None:
    """In the subprocess: serve the app the way an actor does until stopped (SIGTERM)."""
    sys.path.insert(0, str(BENCH_DIR))
    from streamtasks.connect import connect
    from streamtasks.worker import InlineExecutor, Worker, WorkerSettings
    from streamtasks.worker.startup import freeze_after_start

    if app == "job":
        import job_streamtasks

        registry = job_streamtasks.registry
    else:
        from streamtasks.builtins import registry

    if os.environ.get("CPU_GC"):  # an experiment: gc.set_threshold(*CPU_GC)
        import gc

        gc.set_threshold(*map(int, os.environ["CPU_GC"].split(",")))

    async def serve() -> None:
        redis = await connect(os.environ["CPU_REDIS_URL"])
        worker = Worker(
            registry,
            redis,
            InlineExecutor(4, adopt_loop=adopt),
            WorkerSettings(consumer="cpu-1", block=0.1),
            listeners=[freeze_after_start],  # as an actor does
        )
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, worker.stop)
        await worker.run()
        await redis.aclose()

    asyncio.run(serve())


def _command(kind: str, app: str, tgt: Target, stream: str) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    if kind == "lean":
        cmd = [sys.executable, str(LEAN_LOOP_PATH), "--redis-url", tgt.redis_url, "--stream", stream]
        cmd += ["--database-url", tgt.database_url, "--table", _table(app), "--idle", "600"]
        return cmd + (["--job"] if app == "job" else []), env
    env.update(CPU_REDIS_URL=tgt.redis_url, JOB_DATABASE_URL=tgt.database_url, JOB_STREAM=stream)
    env.update(DATABASE_URL=tgt.database_url, TRAINING_DATA_STREAM=stream)
    env.update(INFERENCE_RESULTS_STREAM=f"{stream}:unused", STREAMTASKS_LOG_LEVEL="WARNING")
    code = f"import consumer_cpu; consumer_cpu._child_main({app!r}, {kind == 'actor'!r})"
    return [sys.executable, "-c", code], {**env, "PYTHONPATH": str(BENCH_DIR)}


def _table(app: str) -> str:
    return "job_rows" if app == "job" else "training_data"


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


async def _one(kind: str, app: str, n: int, tgt: Target, redis: Redis) -> float:
    """CPU µs per entry of one drain of ``n`` entries by ``kind``."""
    stream, _ = tgt.streams(f"cpu-{kind}")
    entry: Callable[[str, int, int], dict[str, str]] = job_entry if app == "job" else training_entry
    await fill(redis, stream, n, on_chunk=lambda _: None, entry=entry)
    group = LEAN_GROUP if kind == "lean" else APP_GROUPS[app]
    cmd, env = _command(kind, app, tgt, stream)
    await sql(tgt, f"TRUNCATE {_table(app)}")  # every run starts from the same table and index
    child = await asyncio.create_subprocess_exec(
        *cmd, env=env, cwd=BENCH_DIR, stdout=asyncio.subprocess.DEVNULL
    )
    proc = psutil.Process(child.pid)
    marks: list[tuple[int, float]] = []
    low, high = int(n * WINDOW[0]), int(n * WINDOW[1])
    deadline = time.monotonic() + 300
    try:
        while len(marks) < 2:
            if child.returncode is not None or time.monotonic() > deadline:
                raise click.ClickException(f"{kind} ended or stalled (exit {child.returncode})")
            done = (await acked(redis, stream, group))[0]
            if (not marks and done >= low) or (marks and done >= high):
                marks.append((done, _cpu(proc)))
            await asyncio.sleep(POLL_S)
        while (await acked(redis, stream, group))[0] < n:  # every entry, before it is stopped
            if child.returncode is not None or time.monotonic() > deadline:
                raise click.ClickException(f"{kind} ended or stalled (exit {child.returncode})")
            await asyncio.sleep(POLL_S)
    finally:
        if child.returncode is None:
            child.terminate()
        await asyncio.wait_for(child.wait(), 60)
    rows = await sql(tgt, f"SELECT count(*) FROM {_table(app)}")
    if rows != n:
        raise click.ClickException(f"{kind}: {rows} rows for {n} entries")
    (n0, c0), (n1, c1) = marks
    return (c1 - c0) / (n1 - n0) * 1e6


async def _main(app: str, n: int, repeat: int, kinds: tuple[str, ...], urls: tuple[Any, Any]) -> None:
    figures: dict[str, list[float]] = {k: [] for k in kinds}
    async with target(*urls, _setup_schema) as tgt:
        redis = Redis.from_url(tgt.redis_url)
        try:
            for _ in range(repeat):
                for kind in kinds:
                    us = await _one(kind, app, n, tgt, redis)
                    figures[kind].append(us)
                    print(f"{kind:>13}: {us:6.2f} µs/entry", file=sys.stderr, flush=True)
        finally:
            await redis.aclose()
    base = statistics.median(figures["lean"]) if figures.get("lean") else None
    summary = {
        kind: {
            "runs_us": [round(v, 2) for v in vals],
            "median_us": round(statistics.median(vals), 2),
            "ratio_to_lean": round(statistics.median(vals) / base, 3) if base else None,
        }
        for kind, vals in figures.items()
    }
    print(json.dumps({"app": app, "n": n, "kinds": summary}, indent=2))


@click.command()
@click.option("--app", type=click.Choice(["job", "builtins"]), default="job", show_default=True)
@click.option("--n", type=click.IntRange(min=10_000), default=200_000, show_default=True)
@click.option("--repeat", type=click.IntRange(min=1), default=3, show_default=True)
@click.option(
    "--kinds", default=",".join(KINDS), show_default=True, help=f"Comma-separated, of {', '.join(KINDS)}"
)
@click.option("--redis-url", default=None)
@click.option("--database-url", default=None)
def main(app: str, n: int, repeat: int, kinds: str, redis_url: str | None, database_url: str | None) -> None:
    chosen = tuple(k.strip() for k in kinds.split(",") if k.strip())
    unknown = set(chosen) - set(KINDS)
    if unknown:
        raise click.BadParameter(f"unknown kind(s) {', '.join(sorted(unknown))}", param_hint="--kinds")
    asyncio.run(_main(app, n, repeat, chosen, (redis_url, database_url)))


if __name__ == "__main__":
    main()
