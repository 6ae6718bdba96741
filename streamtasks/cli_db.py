"""``streamtasks db init`` and ``streamtasks stats``: the database side of the CLI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click

from . import db
from .config import DatabaseConfig
from .errors import StreamtasksError
from .logs import redact

database_url_option = click.option(
    "--database-url", envvar="DATABASE_URL", show_envvar=True,
    help="PostgreSQL DSN; default from DATABASE_URL, else DATABASE_HOST/PORT/NAME/USER/PASSWORD.",
)  # fmt: skip


def _dsn(value: str | None) -> str:
    return value or DatabaseConfig.from_env().dsn


def _run_db(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except (StreamtasksError, ValueError) as exc:
        raise click.ClickException(redact(str(exc))) from None
    except (OSError, asyncio.TimeoutError) as exc:
        raise click.ClickException(
            f"cannot reach PostgreSQL: {redact(str(exc)) or type(exc).__name__}"
        ) from None
    except Exception as exc:  # asyncpg.PostgresError and friends: one line, no traceback
        raise click.ClickException(f"PostgreSQL error: {type(exc).__name__}: {redact(str(exc))}") from None


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
            return await db.setup_database(pool, schema_path)
        finally:
            await pool.close()

    result = _run_db(go())
    click.echo(f"schema applied: {', '.join(result['files'])} (timescaledb: {result['timescaledb']})")


@click.command("stats")
@click.argument("model")
@click.option(
    "--hours", type=click.FloatRange(min=0, min_open=True), default=24.0, show_default=True,
    help="Window length; 'inf' or more than since 1970 means since 1970.",
)  # fmt: skip
@database_url_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def stats_command(model: str, hours: float, database_url: str | None, as_json: bool) -> None:
    """Performance of MODEL over the last --hours: requests, latency, confidence, anomalies."""

    async def go() -> dict[str, Any]:
        pool = await db.create_pool(_dsn(database_url), min_size=1, max_size=1)
        try:
            return await db.model_performance_stats(pool, model, hours)
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


def print_stats(model: str, stats: dict[str, Any], hours: float) -> None:
    """Print the stats of :func:`streamtasks.db.model_performance_stats` as tables."""
    from rich.console import Console
    from rich.table import Table

    summary = Table(title=f"{model}: last {hours:g} h", show_header=False)
    rows = [
        ("requests", _fmt(stats.get("requests"))),
        ("throughput", _fmt(stats.get("throughput_rps"), " req/s")),
        (
            "latency p50 / p95 / p99",
            " / ".join(_fmt(stats.get(k), " ms") for k in ("p50_ms", "p95_ms", "p99_ms")),
        ),
        ("mean confidence", _fmt(stats.get("mean_confidence"))),
        ("anomaly rate", _fmt(stats.get("anomaly_rate"))),
        ("training rows", _fmt(stats.get("training_rows"))),
    ]
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
                str(b["bucket"])[:16], _fmt(b["requests"]), _fmt(b["mean_confidence"]),
                _fmt(b["anomaly_rate"]), _fmt(b["p95_ms"]),
            )  # fmt: skip
        console.print(hourly)
