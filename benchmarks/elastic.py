#!/usr/bin/env python3
"""Elastic on Ray, measured (issue 28's acceptance runs): ``python benchmarks/elastic.py --help``.

* ``step``: the built-ins under ``--actors auto`` on a local Ray (``--cluster``: a two-node
  ``ray start`` cluster this script starts and stops), with a slow database (a statement
  trigger sleeps ``--pg-sleep`` per batch, so one actor's rate is small and known): one
  actor's rate is measured first (``--actors 1``), then entries arrive at twice that rate for
  ``--seconds``; the run records the backlog and the actors desired and running every half
  second, checks every entry stored once, and writes an SVG plot beside this file.
* ``kill``: kill -9 of an actor mid-batch with ``--visibility-timeout 30``: seconds until its
  entry runs in another actor (median of ``--runs``).
* ``restarts``: ``--restarts`` worker restarts (SIGTERM and kill -9 mixed) beside a live
  worker: consumers in the group during and after, nothing lost.
* ``sentinel``: a master, a replica and 3 sentinels; kill -9 of the master under load: the
  outage, entries lost (must be 0) and run twice.

Each starts its own throwaway Redis (and PostgreSQL for ``step``): do not run it beside the
test suite on a small machine, the numbers would say more about the sharing than about this.
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

import asyncpg
import click
import elastic_faults
import harness
from elastic_plot import Point, svg
from redis.asyncio import Redis

from streamtasks import keys
from streamtasks.adserving.schema import setup_database
from streamtasks.backlog import backlog
from streamtasks.builtins import DEFAULT_GROUP

BENCH_DIR = Path(__file__).resolve().parent
SAMPLE_S = 0.5
TAIL_S = 5.0
CALIBRATION_N = 4000


def _slow_database(pg_sleep: float) -> harness.SchemaSetup:
    async def setup(conn: asyncpg.Connection) -> None:
        await setup_database(conn, timescaledb=False)
        await conn.execute(
            f"CREATE FUNCTION slow_down() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN PERFORM pg_sleep({pg_sleep}); RETURN NULL; END $$"
        )
        await conn.execute(
            "CREATE TRIGGER slow AFTER INSERT ON training_data "
            "FOR EACH STATEMENT EXECUTE FUNCTION slow_down()"
        )

    return setup


def _worker(tgt: harness.Target, train: str, args: list[str], ray_address: str | None, name: str) -> Any:
    env = {
        "REDIS_URL": tgt.redis_url,
        "DATABASE_URL": tgt.database_url,
        "TRAINING_DATA_STREAM": train,
        "INFERENCE_RESULTS_STREAM": train + ":infer",
        "STREAMTASKS_LOG_LEVEL": "INFO",
    }
    argv = [sys.executable, "-m", "streamtasks", "worker", "streamtasks.builtins:registry", *args]
    if ray_address:
        argv += ["--ray-address", ray_address]
    return harness.spawn(name, DEFAULT_GROUP, argv, env, tgt.workdir / f"{name}.log")


READY = re.compile(r"reading .* on \d+ actors")


async def _ready(worker: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not READY.search(worker.log.read_text(errors="replace")):
        worker.check_alive()
        if time.monotonic() > deadline:
            raise click.ClickException(f"the worker did not start:\n{worker.log_tail()}")
        await asyncio.sleep(0.2)


async def _produce(redis: Redis, stream: str, rate: float, seconds: float, tag: str) -> int:
    """``rate`` entries/s for ``seconds``, in ten chunks a second; returns how many."""
    sent, start = 0, time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(rate * elapsed) - sent
        if due > 0:
            pipe = redis.pipeline(transaction=False)
            now = int(time.time() * 1000)
            for i in range(sent, sent + due):
                pipe.xadd(stream, harness.training_entry(f"{tag}-{i}", now))  # type: ignore[arg-type]
            await pipe.execute()
            sent += due
        await asyncio.sleep(0.1)
    return sent


async def _actors(redis: Redis) -> tuple[int, int]:
    """(desired, running) of the worker's one group of handlers."""
    async for key in redis.scan_iter(match=keys.actors_pattern(DEFAULT_GROUP)):
        raw = await redis.get(key)
        if raw:
            [group] = json.loads(raw)["groups"]
            return int(group["desired"]), int(group["running"])
    return 0, 0


async def calibrate(tgt: harness.Target, redis: Redis, ray_address: str | None, batch: int) -> float:
    """One actor's rate (entries/s) on this database: a backlog drained by ``--actors 1``."""
    train = tgt.streams("calibrate")[0]
    worker = _worker(tgt, train, ["--actors", "1", "--batch-size", str(batch)], ray_address, "calibrate")
    try:
        await _ready(worker)
        click.echo("calibrating: one actor drains a backlog", err=True)
        await harness.fill(redis, train, CALIBRATION_N, tag="cal", on_chunk=lambda _: None)
        start = time.monotonic()
        while (await harness.acked(redis, train, DEFAULT_GROUP))[0] < CALIBRATION_N:
            worker.check_alive()
            await asyncio.sleep(0.05)
        return CALIBRATION_N / (time.monotonic() - start)
    finally:
        worker.stop()


async def step_load(
    tgt: harness.Target, redis: Redis, opts: dict[str, Any], rate: float, ray_address: str | None
) -> dict[str, Any]:
    """The step: ``rate`` entries/s for ``opts["seconds"]``, then nothing until the minimum;
    on a cluster, where the actors ran when they were most."""
    train = tgt.streams("step")[0]
    args = [
        "--actors",
        "auto",
        "--min-actors",
        str(opts["min_actors"]),
        "--max-actors",
        str(opts["max_actors"]),
        "--scale-down-after",
        str(opts["idle"]),
        "--batch-size",
        str(opts["batch"]),
    ]
    worker = _worker(tgt, train, args, ray_address, "step")
    points: list[Point] = []
    try:
        await _ready(worker)
        start = time.monotonic()
        producer = asyncio.create_task(_produce(redis, train, rate, opts["seconds"], "step"))
        stopped_at: float | None = None
        back_at: float | None = None
        spread: dict[str, Any] = {}
        while True:
            t = time.monotonic() - start
            b = await backlog(redis, train, DEFAULT_GROUP)
            desired, running = await _actors(redis)
            if desired:  # the pool told its actors (from its first second on)
                points.append(Point(t, b.undelivered + b.pending, desired, running))
            if ray_address and running == opts["max_actors"] and "nodes" not in spread:
                spread["nodes"] = await asyncio.to_thread(elastic_faults.nodes_of_actors, ray_address)
            if producer.done() and stopped_at is None:
                stopped_at = t
            low = running == desired == opts["min_actors"] and bool(points) and not points[-1].backlog
            scaled = max(p.running for p in points) > opts["min_actors"]
            if stopped_at is not None and low and (scaled or t - stopped_at > opts["idle"] + 10):
                back_at = back_at or t
                if t - back_at > TAIL_S:  # a few seconds more on the plot
                    break
            if t > opts["seconds"] + opts["idle"] + 180:
                raise click.ClickException(f"not back to the minimum in time:\n{worker.log_tail()}")
            worker.check_alive()
            await asyncio.sleep(SAMPLE_S)
        sent = await producer
        rows = await harness.sql(tgt, "SELECT count(*) FROM training_data WHERE request_id LIKE 'step-%'")
        distinct = await harness.sql(
            tgt, "SELECT count(DISTINCT request_id) FROM training_data WHERE request_id LIKE 'step-%'"
        )
        decisions = [line for line in worker.log.read_text().splitlines() if "actors of" in line]
    finally:
        worker.stop()
    top = next((p.t for p in points if p.running == opts["max_actors"]), None)
    back = next(
        (
            p.t
            for p in points
            if stopped_at is not None
            and p.t > stopped_at
            and p.running == opts["min_actors"]
            and p.desired == opts["min_actors"]
        ),
        None,
    )
    return {
        "rate": round(rate),
        "sent": sent,
        "rows": rows,
        "distinct_rows": distinct,
        "lost": sent - distinct,
        "stored_twice": rows - distinct,
        "max_running_after_s": None if top is None else round(top, 1),
        "producer_stopped_at_s": None if stopped_at is None else round(stopped_at, 1),
        "back_to_min_after_stop_s": None
        if back is None or stopped_at is None
        else round(back - stopped_at, 1),
        "peak_backlog": max(p.backlog for p in points),
        "decisions": decisions,
        "points": points,
        "actors_per_node_at_the_peak": spread.get("nodes"),
    }


async def run_step(opts: dict[str, Any]) -> dict[str, Any]:
    cluster = elastic_faults.two_node_cluster() if opts["cluster"] else None
    address = None if cluster is None else str(cluster.address)
    try:
        async with harness.target(None, None, _slow_database(opts["pg_sleep"])) as tgt:
            redis = Redis.from_url(tgt.redis_url)
            try:
                one = await calibrate(tgt, redis, address, opts["batch"])
                click.echo(f"one actor: {one:,.0f} entries/s", err=True)
                result = await step_load(tgt, redis, opts, 2 * one, address)
                result["one_actor_rate"] = round(one)
            finally:
                await redis.aclose()
    finally:
        if cluster is not None:
            elastic_faults.stop_cluster(cluster)
    where = "a two-node Ray cluster" if opts["cluster"] else "a local Ray"
    name = "elastic-step-cluster.svg" if opts["cluster"] else "elastic-step.svg"
    points = result.pop("points")
    marks = {"load starts": 0.0, "load stops": result["producer_stopped_at_s"] or 0.0}
    title = (
        f"--actors auto on {where}: {result['rate']:,}/s arriving (twice one actor's "
        f"{result['one_actor_rate']:,}/s) for {opts['seconds']:.0f}s"
    )
    svg(points, title, marks, BENCH_DIR / name)
    result["plot"] = name
    return result


@click.group()
def cli() -> None:
    """Elastic on Ray: autoscaling, recovery on death, consumer hygiene, Sentinel."""


@cli.command()
@click.option("--cluster", is_flag=True, help="On a two-node Ray cluster started by this script.")
@click.option("--seconds", type=float, default=40.0, show_default=True, help="How long the load lasts.")
@click.option("--min-actors", type=int, default=1, show_default=True)
@click.option("--max-actors", type=int, default=3, show_default=True)
@click.option("--idle", type=float, default=20.0, show_default=True, help="--scale-down-after.")
@click.option("--batch", type=int, default=50, show_default=True, help="--batch-size of the built-ins.")
@click.option(
    "--pg-sleep", type=float, default=0.1, show_default=True, help="Seconds each batch's INSERT sleeps."
)
def step(**opts: Any) -> None:
    """A step load on --actors auto: up to --max-actors, back to --min-actors; a plot."""
    result = asyncio.run(run_step(opts))
    click.echo(json.dumps(result, indent=2))


@cli.command()
@click.option("--runs", type=int, default=5, show_default=True)
def kill(runs: int) -> None:
    """kill -9 of an actor mid-batch (--visibility-timeout 30): seconds to another actor."""
    took = asyncio.run(elastic_faults.kill_runs(runs))
    click.echo(
        json.dumps({"seconds": [round(t, 2) for t in took], "median": round(sorted(took)[len(took) // 2], 2)})
    )


@cli.command()
@click.option("--restarts", type=int, default=50, show_default=True)
@click.option("--grace", type=float, default=5.0, show_default=True, help="--consumer-grace.")
def restarts(restarts: int, grace: float) -> None:
    """Worker restarts (SIGTERM and kill -9 mixed): consumers in the group, nothing lost."""
    click.echo(json.dumps(asyncio.run(elastic_faults.restart_runs(restarts, grace)), indent=2))


@cli.command()
@click.option("--seconds", type=float, default=20.0, show_default=True)
@click.option("--rate", type=float, default=500.0, show_default=True)
def sentinel(seconds: float, rate: float) -> None:
    """kill -9 of the Sentinel-watched master under load: the outage, nothing lost."""
    click.echo(json.dumps(asyncio.run(elastic_faults.sentinel_run(seconds, rate)), indent=2))


if __name__ == "__main__":
    faulthandler.register(signal.SIGUSR1)  # kill -USR1 <pid>: where is it?
    cli()
