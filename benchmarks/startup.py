"""Spawn -> first committed row of the job's streamtasks worker (issue 10, target 4).

The job of :mod:`peers` (five fields -> ``COPY``), a backlog of ``--n`` entries, the worker
(``streamtasks worker job_streamtasks:registry``, in ``--mode``: the default mode unless told)
spawned four ways, each ``--repeat`` times,
alternating: starting a local Ray or joining a running one (``ray start --head`` on a free port,
started here and stopped at the end), each without and with ``--inline-start``. Reported per
way: spawn -> first entry acked (every consumer acks after its ``COPY`` commits) and spawn ->
the whole backlog acked.

    python benchmarks/startup.py [--repeat 3] [--n 5000] [--mode actors|tasks]

Throwaway Redis and PostgreSQL as in ``run.py``. ``ray stop`` at the end stops every Ray on
this machine: do not run it beside a test session.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import click
import peers
from harness import SERVICES_PATH, Target, acked, fill, job_entry, load_script, sql, target
from redis.asyncio import Redis

from streamtasks.config import DEFAULT_MODE, MODES

RAY = str(Path(sys.executable).with_name("ray"))
WAYS = {
    "local Ray": [],
    "local Ray, --inline-start": ["--inline-start"],
    "joining Ray": ["--ray-address", "{address}"],
    "joining Ray, --inline-start": ["--ray-address", "{address}", "--inline-start"],
}
POLL_S = 0.02
TIMEOUT_S = 120.0


def _ray(*args: str) -> None:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([RAY, *args], check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _setup(conn: asyncpg.Connection) -> None:
    await conn.execute(peers.JOB_TABLE_DDL)


def _kind(mode: str) -> str:
    """The peer of :mod:`peers` that runs the job's worker in ``mode``."""
    return "streamtasks-actors" if mode == "actors" else "streamtasks"


async def _once(tgt: Target, redis: Redis, n: int, kind: str, extra: list[str]) -> tuple[float, float]:
    await sql(tgt, f"TRUNCATE {peers.TABLE}")
    stream, _ = tgt.streams("startup")
    await fill(redis, stream, n, on_chunk=lambda _: None, entry=job_entry)
    consumer = peers.start(kind, tgt, stream, n, extra=extra)
    first = None
    try:
        while True:
            done, _ = await acked(redis, stream, peers.GROUPS[kind])
            elapsed = time.perf_counter() - consumer.started
            if done and first is None:
                first = elapsed
            if done >= n:
                break
            if elapsed > TIMEOUT_S:
                raise click.ClickException(f"no drain within {TIMEOUT_S:.0f}s:\n{consumer.log_tail()}")
            consumer.check_alive()
            await asyncio.sleep(POLL_S)
    finally:
        consumer.stop()
    rows = await sql(tgt, f"SELECT count(*) FROM {peers.TABLE}")
    if rows != n:  # acked counts dead letters too: a run that failed its entries is no figure
        raise click.ClickException(f"{rows} rows for {n} entries:\n{consumer.log_tail()}")
    return first or elapsed, elapsed


async def _main(n: int, repeat: int, mode: str) -> dict[str, list[tuple[float, float]]]:
    port = load_script(SERVICES_PATH, "streamtasks_bench_services").free_port()
    _ray("start", "--head", "--port", str(port), "--num-cpus", "2", "--include-dashboard=false")
    address = f"127.0.0.1:{port}"
    results: dict[str, list[tuple[float, float]]] = {way: [] for way in WAYS}
    try:
        async with target(None, None, _setup) as tgt:
            redis = Redis.from_url(tgt.redis_url)
            try:
                for _ in range(repeat):
                    for way, args in WAYS.items():
                        extra = [a.format(address=address) for a in args]
                        results[way].append(await _once(tgt, redis, n, _kind(mode), extra))
                        click.echo(f"{way}: first row {results[way][-1][0]:.2f} s", err=True)
            finally:
                await redis.aclose()
    finally:
        _ray("stop", "--force")
    return results


@click.command()
@click.option("--n", type=click.IntRange(min=1), default=5000, show_default=True, help="Backlog per run.")
@click.option("--repeat", type=click.IntRange(min=1), default=3, show_default=True)
@click.option(
    "--mode", type=click.Choice(MODES), default=DEFAULT_MODE, show_default=True, help="The worker's mode."
)
def main(n: int, repeat: int, mode: str) -> None:
    """Spawn -> first committed row, local Ray vs joining, without and with --inline-start."""
    results = asyncio.run(_main(n, repeat, mode))
    click.echo(
        f"| way ({n:,} entries, {mode} mode) | spawn -> first row, runs | median "
        f"| spawn -> all {n:,} acked, median |"
    )
    click.echo("|---|---|---:|---:|")
    for way, runs in results.items():
        firsts = " / ".join(f"{f:.2f}" for f, _ in runs)
        median_first = statistics.median(f for f, _ in runs)
        median_all = statistics.median(a for _, a in runs)
        click.echo(f"| {way} | {firsts} s | {median_first:.2f} s | {median_all:.2f} s |")


if __name__ == "__main__":
    main()
