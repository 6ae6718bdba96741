"""PostgreSQL: schema setup, connection pools, health, and per-model performance stats.

Every function takes an asyncpg pool or connection and does no I/O at import time.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg

from .logs import redact

log = logging.getLogger("streamtasks.db")

#: Key of the transaction-level advisory lock that serialises concurrent schema setups.
SCHEMA_LOCK_KEY = 0x5354_5343_4845_4D41  # "STSCHEMA"
#: Schema files with this in their name are applied only when TimescaleDB is enabled.
TIMESCALEDB_MARKER = "timescaledb"
DEFAULT_POOL_MIN_SIZE = 1
#: A worker process runs a few batches at once (``max_in_flight``); more connections idle.
DEFAULT_POOL_MAX_SIZE = 4
DEFAULT_COMMAND_TIMEOUT = 60.0
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Idle pooled connections are closed after this many seconds.
DEFAULT_MAX_INACTIVE_LIFETIME = 300.0

_HAS_TIMESCALEDB = "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')"


def schema_dir() -> Path:
    """The directory of the bundled schema files: installed package first, then the repo."""
    try:
        bundled = resources.files("streamtasks").joinpath("_schema")
        if bundled.is_dir():
            return Path(str(bundled))
    except (ModuleNotFoundError, NotADirectoryError):  # pragma: no cover - exotic loaders
        pass
    return Path(__file__).resolve().parent.parent / "schema"


def schema_files(schema_path: str | Path | None = None) -> list[Path]:
    """The ``.sql`` files to apply, in name order; ``schema_path`` may be a file or a dir."""
    path = Path(schema_path) if schema_path is not None else schema_dir()
    if path.is_file():
        return [path]
    files = sorted(path.glob("*.sql"))
    if not files:
        raise FileNotFoundError(f"no .sql schema files in {path}")
    return files


@asynccontextmanager
async def _connection(conn_or_pool: Any) -> AsyncIterator[Any]:
    if isinstance(conn_or_pool, asyncpg.Pool):
        async with conn_or_pool.acquire() as conn:
            yield conn
    else:
        yield conn_or_pool


async def setup_database(
    conn_or_pool: Any,
    schema_path: str | Path | None = None,
    *,
    timescaledb: bool | None = None,
) -> dict[str, Any]:
    """Apply the schema files in order, in one transaction, under an advisory lock.

    Safe to run concurrently and repeatedly (every statement is ``IF NOT EXISTS``). Files
    whose name contains ``timescaledb`` are applied only when TimescaleDB is enabled:
    ``timescaledb=None`` enables it when the extension is available and can be created,
    ``True`` requires it, ``False`` never uses it. Returns
    ``{"timescaledb": bool, "files": [applied file names]}``.
    """
    files = schema_files(schema_path)
    async with _connection(conn_or_pool) as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_KEY)
        use_tsdb = await _enable_timescaledb(conn, timescaledb)
        applied = []
        for path in files:
            if TIMESCALEDB_MARKER in path.name and not use_tsdb:
                continue
            await conn.execute(path.read_text(encoding="utf-8"))
            applied.append(path.name)
    log.info("schema applied: %s (timescaledb=%s)", ", ".join(applied), use_tsdb)
    return {"timescaledb": use_tsdb, "files": applied}


async def _enable_timescaledb(conn: Any, wanted: bool | None) -> bool:
    if wanted is False:
        return False
    available = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')"
    )
    if not available:
        if wanted:
            raise RuntimeError("timescaledb was required but is not available on the server")
        return False
    try:
        # A savepoint: without shared_preload_libraries the CREATE fails, and the schema
        # setup goes on without TimescaleDB instead of aborting.
        async with conn.transaction():
            await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except asyncpg.PostgresError as exc:
        if wanted:
            raise
        log.warning("timescaledb is available but could not be enabled: %s", exc)
        return False
    return True


async def create_pool(dsn: str, **kwargs: Any) -> Any:
    """An asyncpg pool with defaults fit for one worker process; ``kwargs`` override them."""
    options: dict[str, Any] = {
        "min_size": DEFAULT_POOL_MIN_SIZE,
        "max_size": DEFAULT_POOL_MAX_SIZE,
        "command_timeout": DEFAULT_COMMAND_TIMEOUT,
        "timeout": DEFAULT_CONNECT_TIMEOUT,
        "max_inactive_connection_lifetime": DEFAULT_MAX_INACTIVE_LIFETIME,
        "server_settings": {"application_name": "streamtasks"},
    }
    options.update(kwargs)
    return await asyncpg.create_pool(dsn, **options)


async def database_health(pool_or_dsn: Any, *, timeout: float = 5.0) -> dict[str, Any]:
    """``{"health": "healthy"|"unhealthy", "latency_ms", "server_version", ...}``; never raises.

    Errors are reported with credentials redacted.
    """
    started = time.perf_counter()
    try:
        if isinstance(pool_or_dsn, str):
            conn = await asyncpg.connect(pool_or_dsn, timeout=timeout)
            try:
                info = await _probe(conn, timeout)
            finally:
                await conn.close()
        else:
            async with _connection(pool_or_dsn) as conn:
                info = await _probe(conn, timeout)
            if isinstance(pool_or_dsn, asyncpg.Pool):
                info["pool"] = {
                    "size": pool_or_dsn.get_size(),
                    "idle": pool_or_dsn.get_idle_size(),
                    "max_size": pool_or_dsn.get_max_size(),
                }
    except Exception as exc:  # health reports failures instead of raising them
        return {
            "health": "unhealthy",
            "error": redact(f"{type(exc).__name__}: {exc}"),
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        }
    info["health"] = "healthy"
    info["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
    return info


async def _probe(conn: Any, timeout: float) -> dict[str, Any]:
    row = await conn.fetchrow(
        f"SELECT current_setting('server_version') AS v, ({_HAS_TIMESCALEDB}) AS tsdb",
        timeout=timeout,
    )
    return {"server_version": row["v"], "timescaledb": row["tsdb"]}


_TOTALS = """
SELECT count(*) AS requests,
       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY processing_time_ms) AS pct,
       avg(confidence) AS mean_confidence,
       avg(is_anomaly::int)::float8 AS anomaly_rate,
       count(*) FILTER (WHERE is_anomaly) AS anomalies
FROM inference_results
WHERE model_name = $1 AND created_at >= $2 AND created_at < $3
"""
_TRAINING_COUNT = """
SELECT count(*) FROM training_data
WHERE model_name = $1 AND created_at >= $2 AND created_at < $3
"""
_BUCKETS = """
SELECT {bucket} AS bucket,
       count(*) AS requests,
       avg(confidence) AS mean_confidence,
       avg(is_anomaly::int)::float8 AS anomaly_rate,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY processing_time_ms) AS p95_ms
FROM inference_results
WHERE model_name = $1 AND created_at >= $2 AND created_at < $3
GROUP BY 1 ORDER BY 1
"""
_BUCKET_TSDB = "time_bucket(INTERVAL '1 hour', created_at)"
_BUCKET_PLAIN = "date_trunc('hour', created_at, 'UTC')"


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def stats_window(hours: float, now: datetime) -> float:
    """``hours`` as a stats window ending at ``now``: a number > 0 (``ValueError`` for
    anything else: 0, negative, NaN, not a number), clamped so that the window does not
    begin before 1970 (``inf`` means "since 1970": stream ids, and so dead-letter ids, start
    there, and ``XREVRANGE`` refuses a negative one)."""
    try:
        value = float(hours)
    except (TypeError, ValueError):
        raise ValueError(f"hours must be a number > 0, not {hours!r}") from None
    if math.isnan(value) or value <= 0:
        raise ValueError(f"hours must be a number > 0, not {hours!r}")
    return min(value, max((now - _EPOCH).total_seconds(), 1.0) / 3600.0)


async def model_performance_stats(
    pool: Any, model_name: str, hours: float, *, now: datetime | None = None
) -> dict[str, Any]:
    """Performance of ``model_name`` over the window ``[now - hours, now)``.

    Returns ``requests`` (inference rows), ``throughput_rps`` (requests / window seconds),
    ``p50_ms``/``p95_ms``/``p99_ms`` (continuous percentiles of ``processing_time_ms``),
    ``mean_confidence``, ``anomaly_rate`` (fraction of requests flagged), ``anomalies``,
    ``training_rows`` and ``buckets``: one dict per UTC hour that has requests, oldest
    first, with ``bucket``, ``requests``, ``mean_confidence``, ``anomaly_rate``, ``p95_ms``.
    Aggregates of an empty window are ``None``. ``hours`` goes through :func:`stats_window`
    (the returned ``hours`` is the window used).
    """
    until = now or datetime.now(timezone.utc)
    hours = stats_window(hours, until)
    since = until - timedelta(hours=hours)
    async with _connection(pool) as conn:
        tsdb = await conn.fetchval(_HAS_TIMESCALEDB)
        totals = await conn.fetchrow(_TOTALS, model_name, since, until)
        training = await conn.fetchval(_TRAINING_COUNT, model_name, since, until)
        bucket_sql = _BUCKETS.format(bucket=_BUCKET_TSDB if tsdb else _BUCKET_PLAIN)
        buckets = await conn.fetch(bucket_sql, model_name, since, until)
    p50, p95, p99 = totals["pct"] or (None, None, None)
    return {
        "model_name": model_name,
        "hours": hours,
        "since": since,
        "until": until,
        "requests": totals["requests"],
        "throughput_rps": totals["requests"] / (hours * 3600.0),
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "mean_confidence": totals["mean_confidence"],
        "anomaly_rate": totals["anomaly_rate"],
        "anomalies": totals["anomalies"],
        "training_rows": training,
        "timescaledb": tsdb,
        "buckets": [dict(row) for row in buckets],
    }
