"""Soak: the built-ins under a steady offered load for a long time; is memory flat?

``streamtasks worker soak_app:registry`` (the built-ins, acked entries trimmed after 10 s;
actor mode, its own local Ray) is offered ``--rate`` training entries/s for ``--minutes``.
Every ``--every`` seconds: RSS of the worker process and of each actor, and the group's lag.
At the end the backlog drains and every sent entry must be a row. Reported: the samples, and
the last sample's RSS against the first one after ``--warmup`` minutes (issue 29: ±10 %).

    python benchmarks/soak.py [--rate 10000] [--minutes 30] [--every 60] [--warmup 2]

Throwaway Redis and PostgreSQL as in ``run.py``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import click
import psutil
from harness import acked, spawn, sql, target, training_entry
from redis.asyncio import Redis
from suite import _setup_schema

from streamtasks.builtins import DEFAULT_GROUP

BENCH_DIR = Path(__file__).resolve().parent
TICK_S = 0.01
MB = 1024 * 1024


def _rss(proc: psutil.Process) -> tuple[float, list[float]]:
    """The worker process' RSS and each of its actors' (MB)."""
    actors = [p for p in proc.children(recursive=True) if "WorkerActor" in " ".join(p.cmdline())]
    return proc.memory_info().rss / MB, sorted(p.memory_info().rss / MB for p in actors)


async def _offer(redis: Redis, stream: str, rate: int, seconds: float, sent: list[int]) -> None:
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        due = int(rate * elapsed) - sent[0]
        if due > 0:
            now_ms = int(time.time() * 1000)
            pipe = redis.pipeline(transaction=False)
            for i in range(sent[0], sent[0] + due):
                pipe.xadd(stream, training_entry(f"soak-{i}", now_ms))  # type: ignore[arg-type]
            await pipe.execute()
            sent[0] += due
        await asyncio.sleep(TICK_S)


async def _main(rate: int, minutes: float, every: float, warmup: float) -> None:
    async with target(None, None, _setup_schema) as tgt:
        redis = Redis.from_url(tgt.redis_url)
        train, infer = tgt.streams("soak")
        env = {"REDIS_URL": tgt.redis_url, "DATABASE_URL": tgt.database_url}
        env |= {"TRAINING_DATA_STREAM": train, "INFERENCE_RESULTS_STREAM": infer}
        env |= {"PYTHONPATH": os.pathsep.join(filter(None, [str(BENCH_DIR), os.environ.get("PYTHONPATH")]))}
        argv = [sys.executable, "-m", "streamtasks", "worker", "soak_app:registry"]
        worker = spawn("streamtasks", DEFAULT_GROUP, argv, env, tgt.workdir / "soak.log", cwd=BENCH_DIR)
        sent = [0]
        try:
            offer = asyncio.create_task(_offer(redis, train, rate, minutes * 60, sent))
            started = time.perf_counter()
            click.echo("| minute | sent | lag | stream length | worker RSS MB | actors RSS MB |")
            click.echo("|---:|---:|---:|---:|---:|---|")
            samples = []
            while not offer.done():
                await asyncio.wait([offer], timeout=every)
                worker.check_alive()
                done, _ = await acked(redis, train, DEFAULT_GROUP)
                own, actors = _rss(worker.ps)
                minute = (time.perf_counter() - started) / 60
                samples.append((minute, own, actors))
                length = await redis.xlen(train)
                row = f"| {minute:.1f} | {sent[0]:,} | {sent[0] - done:,} | {length:,} | {own:.0f} |"
                click.echo(f"{row} {' / '.join(f'{a:.0f}' for a in actors)} |")
            await offer
            while (await acked(redis, train, DEFAULT_GROUP))[0] < sent[0]:
                worker.check_alive()
                await asyncio.sleep(0.5)
        finally:
            worker.stop()
            await redis.aclose()
        rows = await sql(tgt, "SELECT count(*) FROM training_data")
        click.echo(
            f"\nsent {sent[0]:,}, rows {rows:,} ({'every entry once' if rows == sent[0] else 'MISMATCH'})"
        )
        settled = [s for s in samples if s[0] >= warmup]
        if len(settled) >= 2:
            (m0, own0, act0), (m1, own1, act1) = settled[0], settled[-1]
            click.echo(
                f"worker RSS {own0:.0f} -> {own1:.0f} MB ({own1 / own0 - 1:+.1%}, "
                f"minute {m0:.1f} -> {m1:.1f})"
            )
            if act0 and len(act0) == len(act1):
                click.echo(
                    f"actors RSS {sum(act0):.0f} -> {sum(act1):.0f} MB ({sum(act1) / sum(act0) - 1:+.1%})"
                )


@click.command()
@click.option("--rate", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option("--minutes", type=click.FloatRange(min=0.1), default=30.0, show_default=True)
@click.option(
    "--every", type=click.FloatRange(min=1), default=60.0, show_default=True, help="Seconds a sample."
)
@click.option(
    "--warmup",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    help="Minutes before the baseline.",
)
def main(rate: int, minutes: float, every: float, warmup: float) -> None:
    """Offer RATE training entries/s to the built-ins for MINUTES; RSS and lag over time."""
    asyncio.run(_main(rate, minutes, every, warmup))


if __name__ == "__main__":
    main()
