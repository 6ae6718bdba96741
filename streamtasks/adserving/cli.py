"""``streamtasks db init`` and ``streamtasks stats``: the database side of the CLI."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click

from ..cli.common import one_line
from ..errors import StreamtasksError
from . import db, modelstats, schema, timescale
from .config import DatabaseConfig

database_url_option = click.option(
    "--database-url",
    envvar="DATABASE_URL",
    show_envvar=True,
    help="PostgreSQL DSN; default from DATABASE_URL, else DATABASE_HOST/PORT/NAME/USER/PASSWORD.",
)


def _dsn(value: str | None) -> str:
    return value or DatabaseConfig.from_env().dsn


def _run_db(coro: Any) -> Any:
    """Run ``coro``; any error is one line and exit 1 (``streamtasks.cli.common``'s codes)."""
    import asyncpg

    try:
        return asyncio.run(coro)
    except click.ClickException:
        raise
    except StreamtasksError as exc:
        raise click.ClickException(one_line(exc)) from None
    except ValueError as exc:  # asyncpg's DSN parsing (ClientConfigurationError is one too)
        raise click.ClickException(f"bad PostgreSQL URL: {one_line(exc)}") from None
    except asyncpg.InvalidAuthorizationSpecificationError as exc:
        raise click.ClickException(f"PostgreSQL refused the credentials: {one_line(exc)}") from None
    except (OSError, asyncio.TimeoutError) as exc:
        raise click.ClickException(f"cannot reach PostgreSQL: {one_line(exc)}") from None
    except Exception as exc:  # asyncpg.PostgresError and friends: one line, no traceback
        raise click.ClickException(f"PostgreSQL error: {type(exc).__name__}: {one_line(exc)}") from None


@click.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("init")
@database_url_option
@click.option(
    "--schema",
    "schema_path",
    type=click.Path(exists=True, path_type=Path),
    help="Schema file or folder (default: the packaged schema).",
)
def db_init(database_url: str | None, schema_path: Path | None) -> None:
    """Create the tables and indexes (idempotent: running it twice changes nothing)."""

    async def go() -> dict[str, Any]:
        pool = await db.create_pool(_dsn(database_url), min_size=1, max_size=1)
        try:
            return await schema.setup_database(pool, schema_path)
        finally:
            await pool.close()

    result = _run_db(go())
    click.echo(f"schema applied: {', '.join(result['files'])} (timescaledb: {result['timescaledb']})")


@db_group.command("status")
@database_url_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def db_status(database_url: str | None, as_json: bool) -> None:
    """TimescaleDB: hypertables, chunks, compression ratio, aggregates, jobs and their last run."""

    async def go() -> dict[str, Any]:
        pool = await db.create_pool(_dsn(database_url), min_size=1, max_size=1)
        try:
            return await timescale.timescale_status(pool)
        finally:
            await pool.close()

    status = _run_db(go())
    if as_json:
        click.echo(json.dumps(status, indent=2, default=str))
    else:
        print_timescale_status(status)


def _interval(value: Any) -> str:
    if not isinstance(value, timedelta):
        return "-" if value is None else str(value)
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _when(value: Any) -> str:
    return value.strftime("%m-%d %H:%M") if isinstance(value, datetime) else "-"


def print_timescale_status(status: dict[str, Any]) -> None:
    """Print :func:`.timescale.timescale_status` as tables."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if status["timescaledb"] is None:
        console.print("TimescaleDB is not enabled in this database (plain PostgreSQL schema).")
        return
    console.print(f"TimescaleDB {status['timescaledb']}")
    tables = Table(title="hypertables")
    for col in ("hypertable", "chunk", "chunks", "compressed", "ratio", "MB"):
        tables.add_column(col)
    for h in status["hypertables"]:
        ratio = h["compression_ratio"]
        tables.add_row(
            h["name"],
            _interval(h["chunk_interval"]),
            _fmt(h["chunks"]),
            _fmt(h["compressed_chunks"]),
            f"{ratio:.1f}x" if ratio else "-",
            f"{(h['total_bytes'] or 0) / 1e6:,.1f}",
        )
    console.print(tables)
    aggs = Table(title="continuous aggregates")
    for col in ("view", "materialized until", "real-time"):
        aggs.add_column(col)
    for a in status["aggregates"]:
        aggs.add_row(a["name"], _when(a["materialized_until"]), str(not a["materialized_only"]).lower())
    console.print(aggs)
    jobs = Table(title="jobs (UTC)")
    for col in ("id", "job", "target", "every", "last run", "status", "runs", "fails", "next"):
        jobs.add_column(col)
    for j in status["jobs"]:
        jobs.add_row(
            str(j["job_id"]),
            timescale.JOB_NAMES.get(j["kind"], j["kind"]),
            j["target"] or "-",
            _interval(j["schedule_interval"]),
            _when(j["last_run_started_at"]),
            j["last_run_status"] or "-",
            str(j["total_runs"] or 0),
            str(j["total_failures"] or 0),
            _when(j["next_start"]),
        )
    console.print(jobs)
    for warning in status["warnings"]:
        console.print(f"WARNING: {warning}", style="bold yellow", markup=False, soft_wrap=True)


@click.command("stats")
@click.argument("model")
@click.option(
    "--hours",
    type=click.FloatRange(min=0, min_open=True),
    default=24.0,
    show_default=True,
    help="Window length; 'inf' or more than since 1970 means since 1970.",
)
@database_url_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def stats_command(model: str, hours: float, database_url: str | None, as_json: bool) -> None:
    """Performance of MODEL over the last --hours: requests, latency, confidence, anomalies."""

    async def go() -> dict[str, Any]:
        pool = await db.create_pool(_dsn(database_url), min_size=1, max_size=1)
        try:
            return await modelstats.model_performance_stats(pool, model, hours)
        finally:
            await pool.close()

    stats = _run_db(go())
    if as_json:
        click.echo(json.dumps(stats, indent=2, default=str))
    else:
        print_stats(model, stats, stats["hours"])


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}{unit}"
    return f"{value:,}{unit}"


def _throughput_line(stats: dict[str, Any]) -> str:
    first, last = stats.get("first_at"), stats.get("last_at")
    rate = _fmt(stats.get("throughput_rps"), " req/s")
    if first is None or last is None:
        return rate
    return f"{rate} (from {str(first)[:19]} to {str(last)[:19]})"


def print_stats(model: str, stats: dict[str, Any], hours: float) -> None:
    """Print the stats of :func:`.modelstats.model_performance_stats` as tables."""
    from rich.console import Console
    from rich.table import Table

    summary = Table(title=f"{model}: last {hours:g} h", show_header=False)
    rows = [
        ("requests", _fmt(stats.get("requests"))),
        ("throughput", _throughput_line(stats)),
        ("peak hour", _fmt(stats.get("peak_hourly_rps"), " req/s")),
        (
            "latency p50 / p95 / p99",
            " / ".join(_fmt(stats.get(k), " ms") for k in ("p50_ms", "p95_ms", "p99_ms")),
        ),
        ("mean confidence", _fmt(stats.get("mean_confidence"))),
        ("anomaly rate", _fmt(stats.get("anomaly_rate"))),
        ("training rows", _fmt(stats.get("training_rows"))),
    ]
    if stats.get("source") == "aggregates":
        rows.append(("source", "TimescaleDB hourly aggregates (percentiles within 4.1 % of 1 + exact)"))
    if "dead_letters" in stats:
        rows.append(("dead letters", _fmt(stats["dead_letters"])))
    for name, value in rows:
        summary.add_row(name, value)
    console = Console()
    console.print(summary)
    buckets = stats.get("buckets") or []
    if buckets:
        hourly = Table(title="hourly")
        for col in ("hour (UTC)", "requests", "mean confidence", "anomaly rate", "p95 ms"):
            hourly.add_column(col)
        for b in buckets:
            hourly.add_row(
                str(b["bucket"])[:16],
                _fmt(b["requests"]),
                _fmt(b["mean_confidence"]),
                _fmt(b["anomaly_rate"]),
                _fmt(b["p95_ms"]),
            )
        console.print(hourly)
