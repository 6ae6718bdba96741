"""PostgreSQL: schema setup, connection pools, health, and per-model performance stats.

Every function takes an asyncpg pool or connection and does no I/O at import time.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg

from ..config import load_env
from ..errors import ConfigError
from ..logs import redact

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

#: The hypertables of the TimescaleDB path (schema/002_timescaledb.sql).
HYPERTABLES = ("training_data", "inference_results")
#: Their hourly continuous aggregates (schema/003_timescaledb_aggregates.sql).
HOURLY_AGGREGATES = ("training_data_hourly", "inference_results_hourly")
#: How often the key-table cleanup job (streamtasks_prune_keys) runs.
PRUNE_KEYS_EVERY = "1 day"
_OFF = frozenset({"", "off", "none", "never", "0"})


def _env_interval(env: Mapping[str, str], name: str, default: str | None) -> str | None:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip()
    return None if value.lower() in _OFF else value


@dataclass(frozen=True)
class TimescaleSettings:
    """How ``db init`` sets up TimescaleDB; PostgreSQL interval strings (``"7 days"``).

    ``None`` disables a policy (the environment says ``off``). Defaults (environment):

    - ``chunk_interval`` ``1 day`` (``TIMESCALEDB_CHUNK_INTERVAL``): new chunks' time span.
    - ``compress_after`` ``7 days`` (``TIMESCALEDB_COMPRESS_AFTER``): compress chunks older.
    - ``retention`` ``None`` (``TIMESCALEDB_RETENTION``): drop chunks older, and delete
      the idempotency keys of the dropped rows; off by default (keep everything).
    - ``aggregate_refresh`` ``30 minutes`` (``TIMESCALEDB_AGGREGATE_REFRESH``): how often
      the hourly aggregates are refreshed.
    """

    chunk_interval: str = "1 day"
    compress_after: str | None = "7 days"
    retention: str | None = None
    aggregate_refresh: str = "30 minutes"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TimescaleSettings:
        """The settings from ``TIMESCALEDB_*`` variables (default: the environment over ``.env``)."""
        env = load_env() if environ is None else environ
        d = cls()
        return cls(
            chunk_interval=_env_interval(env, "TIMESCALEDB_CHUNK_INTERVAL", d.chunk_interval)
            or d.chunk_interval,
            compress_after=_env_interval(env, "TIMESCALEDB_COMPRESS_AFTER", d.compress_after),
            retention=_env_interval(env, "TIMESCALEDB_RETENTION", d.retention),
            aggregate_refresh=(
                _env_interval(env, "TIMESCALEDB_AGGREGATE_REFRESH", d.aggregate_refresh)
                or d.aggregate_refresh
            ),
        )

    def named(self) -> dict[str, str | None]:
        """The values by environment variable name (for error messages)."""
        return {
            "TIMESCALEDB_CHUNK_INTERVAL": self.chunk_interval,
            "TIMESCALEDB_COMPRESS_AFTER": self.compress_after,
            "TIMESCALEDB_RETENTION": self.retention,
            "TIMESCALEDB_AGGREGATE_REFRESH": self.aggregate_refresh,
        }


def schema_dir() -> Path:
    """The directory of the bundled schema files: installed package first, then the repo."""
    try:
        bundled = resources.files("streamtasks").joinpath("_schema")
        if bundled.is_dir():
            return Path(str(bundled))
    except (ModuleNotFoundError, NotADirectoryError):  # pragma: no cover - exotic loaders
        pass
    return Path(__file__).resolve().parents[2] / "schema"


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
    timescale: TimescaleSettings | None = None,
) -> dict[str, Any]:
    """Apply the schema files in order, in one transaction, under an advisory lock.

    Safe to run concurrently and repeatedly (every statement is ``IF NOT EXISTS``). Files
    whose name contains ``timescaledb`` are applied only when TimescaleDB is enabled:
    ``timescaledb=None`` enables it when the extension is available, preloaded and can be
    created, ``True`` requires it, ``False`` never uses it. With TimescaleDB the policies of
    ``timescale`` (default: :meth:`TimescaleSettings.from_env`) are set too, changed only
    where they differ. Returns ``{"timescaledb": bool, "files": [applied file names]}``.
    """
    files = schema_files(schema_path)
    settings = timescale if timescale is not None else TimescaleSettings.from_env()
    async with _connection(conn_or_pool) as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_KEY)
        use_tsdb = await _enable_timescaledb(conn, timescaledb)
        if use_tsdb:
            await _check_intervals(conn, settings)
            await conn.execute(
                "SELECT set_config('streamtasks.chunk_interval', $1, true)", settings.chunk_interval
            )
        applied = []
        for path in files:
            if TIMESCALEDB_MARKER in path.name and not use_tsdb:
                continue
            await conn.execute(path.read_text(encoding="utf-8"))
            applied.append(path.name)
        if use_tsdb and await conn.fetchval("SELECT to_regclass('training_data_keys') IS NOT NULL"):
            await _apply_timescale_policies(conn, settings)
    log.info("schema applied: %s (timescaledb=%s)", ", ".join(applied), use_tsdb)
    return {"timescaledb": use_tsdb, "files": applied}


async def _check_intervals(conn: Any, settings: TimescaleSettings) -> None:
    """ConfigError naming the variable whose value is not a positive PostgreSQL interval."""
    for name, value in settings.named().items():
        if value is None:
            continue
        try:
            async with conn.transaction():
                positive = await conn.fetchval("SELECT $1::text::interval > INTERVAL '0'", value)
        except asyncpg.PostgresError:
            positive = None
        if not positive:
            raise ConfigError(f"{name}={value!r} is not a positive interval (e.g. '7 days', '12 hours')")


_JOB = """
SELECT j.job_id, j.config, j.schedule_interval
FROM timescaledb_information.jobs j
WHERE j.proc_name = $1
  AND format('%I.%I', j.hypertable_schema, j.hypertable_name)::regclass = $2::text::regclass
"""
_CAGG_JOB = """
SELECT j.job_id, j.schedule_interval::text AS schedule_interval
FROM timescaledb_information.jobs j
WHERE j.proc_name = 'policy_refresh_continuous_aggregate'
  AND ((j.hypertable_schema, j.hypertable_name) IN (
          SELECT c.view_schema, c.view_name FROM timescaledb_information.continuous_aggregates c
          WHERE format('%I.%I', c.view_schema, c.view_name)::regclass = $1::text::regclass)
       OR (j.hypertable_schema, j.hypertable_name) IN (
          SELECT c.materialization_hypertable_schema, c.materialization_hypertable_name
          FROM timescaledb_information.continuous_aggregates c
          WHERE format('%I.%I', c.view_schema, c.view_name)::regclass = $1::text::regclass))
"""
_PRUNE_JOB = """
SELECT job_id, config FROM timescaledb_information.jobs
WHERE proc_name = 'streamtasks_prune_keys' AND to_regclass(config->>'hypertable') = $1::text::regclass
"""
# Jobs run with the default search_path: their config names tables with their schema.
_QUALIFIED = """
SELECT format('%I.%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = $1::text::regclass
"""


async def _same_interval(conn: Any, a: str | None, b: str) -> bool:
    if a is None:
        return False
    return bool(await conn.fetchval("SELECT $1::text::interval = $2::text::interval", a, b))


async def _apply_timescale_policies(conn: Any, settings: TimescaleSettings) -> None:
    """Chunk interval, compression, retention, key cleanup and refresh policies; unchanged
    ones are left alone."""
    for table in HYPERTABLES:
        current = await conn.fetchval(
            "SELECT d.time_interval::text FROM timescaledb_information.dimensions d"
            " WHERE format('%I.%I', d.hypertable_schema, d.hypertable_name)::regclass = $1::text::regclass"
            " ORDER BY d.dimension_number LIMIT 1",
            table,
        )
        if not await _same_interval(conn, current, settings.chunk_interval):  # new chunks only
            await conn.execute(
                "SELECT set_chunk_time_interval($1::text::regclass, $2::text::interval)",
                table,
                settings.chunk_interval,
            )
        await _policy(
            conn, table, "policy_compression", "compress_after", settings.compress_after,
            "SELECT add_compression_policy($1::text::regclass, $2::text::interval)",
            "SELECT remove_compression_policy($1::text::regclass, if_exists => true)",
        )  # fmt: skip
        await _policy(
            conn, table, "policy_retention", "drop_after", settings.retention,
            "SELECT add_retention_policy($1::text::regclass, $2::text::interval)",
            "SELECT remove_retention_policy($1::text::regclass, if_exists => true)",
        )  # fmt: skip
        await _prune_keys_job(conn, table, settings.retention)
    for view in HOURLY_AGGREGATES:
        if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", view):
            continue
        row = await conn.fetchrow(_CAGG_JOB, view)
        if row is None:
            # From the first hour on (start_offset NULL: late rows anywhere are re-aggregated),
            # up to the current, still filling hour (served in real time).
            await conn.execute(
                "SELECT add_continuous_aggregate_policy($1::text::regclass, start_offset => NULL, "
                "end_offset => INTERVAL '1 hour', schedule_interval => $2::text::interval)",
                view, settings.aggregate_refresh,
            )  # fmt: skip
        elif not await _same_interval(conn, row["schedule_interval"], settings.aggregate_refresh):
            await conn.execute(
                "SELECT alter_job($1, schedule_interval => $2::text::interval)",
                row["job_id"],
                settings.aggregate_refresh,
            )


async def _policy(
    conn: Any, table: str, proc: str, key: str, want: str | None, add_sql: str, remove_sql: str
) -> None:
    row = await conn.fetchrow(_JOB, proc, table)
    if row is not None and want is not None:
        current = json.loads(row["config"]) if isinstance(row["config"], str) else row["config"]
        if await _same_interval(conn, current.get(key), want):
            return
    if row is not None:
        await conn.execute(remove_sql, table)
    if want is not None:
        await conn.execute(add_sql, table, want)


async def _prune_keys_job(conn: Any, table: str, retention: str | None) -> None:
    row = await conn.fetchrow(_PRUNE_JOB, table)
    if retention is None:
        if row is not None:
            await conn.execute("SELECT delete_job($1)", row["job_id"])
        return
    qualified = [await conn.fetchval(_QUALIFIED, name) for name in (table, f"{table}_keys")]
    config = json.dumps({"hypertable": qualified[0], "keys": qualified[1], "drop_after": retention})
    if row is None:
        await conn.execute(
            "SELECT add_job('streamtasks_prune_keys', $1::text::interval, config => $2::text::jsonb)",
            PRUNE_KEYS_EVERY,
            config,
        )
    elif json.loads(row["config"]) != json.loads(config):
        await conn.execute("SELECT alter_job($1, config => $2::text::jsonb)", row["job_id"], config)


#: How to enable TimescaleDB when its files are installed but the server does not load them.
PRELOAD_HINT = (
    "add timescaledb to shared_preload_libraries in postgresql.conf "
    "(shared_preload_libraries = 'timescaledb') and restart PostgreSQL"
)


def _preloads_timescaledb(setting: str) -> bool:
    """True if a ``shared_preload_libraries`` value names the TimescaleDB loader."""
    for item in setting.split(","):
        name = item.strip().strip('"').rsplit("/", 1)[-1]
        if name == "timescaledb" or name.startswith("timescaledb-"):
            return True
    return False


async def timescaledb_preloaded(conn: Any) -> bool:
    """True if the server preloads TimescaleDB (``shared_preload_libraries``).

    ``CREATE EXTENSION timescaledb`` on a server that does not preload it is a FATAL error
    that drops the connection, so this must be asked first. A role that may not read
    ``shared_preload_libraries`` (not superuser, no ``pg_read_all_settings``) falls back to
    whether the loader defined its settings in this session.
    """
    try:
        async with conn.transaction():
            setting = await conn.fetchval("SELECT current_setting('shared_preload_libraries')")
    except asyncpg.InsufficientPrivilegeError:
        return bool(await conn.fetchval("SELECT current_setting('timescaledb.license', true) IS NOT NULL"))
    return _preloads_timescaledb(setting or "")


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
    if not await timescaledb_preloaded(conn):
        if wanted:
            raise RuntimeError(f"timescaledb is installed but not preloaded: {PRELOAD_HINT}")
        log.warning(
            "timescaledb is available but not preloaded; using plain PostgreSQL. To enable it, %s, "
            "then run 'streamtasks db init' again",
            PRELOAD_HINT,
        )
        return False
    try:
        # A savepoint: should the CREATE still fail (e.g. no privilege), the schema setup
        # goes on without TimescaleDB instead of aborting.
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
       min(created_at) AS first_at,
       max(created_at) AS last_at,
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


async def model_performance_stats(
    pool: Any, model_name: str, hours: float, *, now: datetime | None = None
) -> dict[str, Any]:
    """Performance of ``model_name`` over the window ``[now - hours, now)``.

    Returns ``requests`` (inference rows), ``throughput_rps`` (requests per second over
    the span that has data: first to last request in the window, at least 1 s),
    ``window_rps`` (requests / window seconds), ``first_at``/``last_at``,
    ``peak_hourly_rps`` and ``peak_hour`` (the busiest UTC hour's requests / 3600),
    ``p50_ms``/``p95_ms``/``p99_ms`` (continuous percentiles of ``processing_time_ms``),
    ``mean_confidence``, ``anomaly_rate`` (fraction of requests flagged), ``anomalies``,
    ``training_rows`` and ``buckets``: one dict per UTC hour that has requests, oldest
    first, with ``bucket``, ``requests``, ``mean_confidence``, ``anomaly_rate``, ``p95_ms``.
    Aggregates of an empty window are ``None``.
    """
    if hours <= 0:
        raise ValueError("hours must be > 0")
    until = now or datetime.now(timezone.utc)
    since = until - timedelta(hours=hours)
    async with _connection(pool) as conn:
        if await conn.fetchval(_HAS_AGGREGATES):  # TimescaleDB's hourly aggregates (schema/003)
            return await _stats_from_aggregates(conn, model_name, hours, since, until)
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
        **_throughput(totals["requests"], totals["first_at"], totals["last_at"], hours, buckets),
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "mean_confidence": totals["mean_confidence"],
        "anomaly_rate": totals["anomaly_rate"],
        "anomalies": totals["anomalies"],
        "training_rows": training,
        "timescaledb": tsdb,
        "source": "rows",
        "buckets": [dict(row) for row in buckets],
    }


#: The shortest span a throughput is computed over (one request is 1 req/s, not infinite).
MIN_THROUGHPUT_SPAN_S = 1.0


def _throughput(
    requests: int, first_at: datetime | None, last_at: datetime | None, hours: float, buckets: Any
) -> dict[str, Any]:
    """Throughput over the span that has data, over the window, and the busiest hour's."""
    span = (last_at - first_at).total_seconds() if first_at and last_at else 0.0
    peak = max(buckets, key=lambda b: b["requests"], default=None)
    return {
        "throughput_rps": requests / max(span, MIN_THROUGHPUT_SPAN_S) if requests else 0.0,
        "window_rps": requests / (hours * 3600.0),
        "first_at": first_at,
        "last_at": last_at,
        "peak_hourly_rps": peak["requests"] / 3600.0 if peak else None,
        "peak_hour": peak["bucket"] if peak else None,
    }


# --------------------------------------------------------------------------- TimescaleDB status

_TSDB_VERSION = "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
_HYPERTABLES = """
SELECT h.hypertable_schema AS schema, h.hypertable_name AS name, h.num_chunks AS chunks,
       h.compression_enabled,
       (SELECT d.time_interval FROM timescaledb_information.dimensions d
         WHERE (d.hypertable_schema, d.hypertable_name) = (h.hypertable_schema, h.hypertable_name)
         ORDER BY d.dimension_number LIMIT 1) AS chunk_interval,
       hypertable_size(format('%I.%I', h.hypertable_schema, h.hypertable_name)::regclass) AS total_bytes
FROM timescaledb_information.hypertables h
ORDER BY 1, 2
"""
_COMPRESSION = """
SELECT number_compressed_chunks, before_compression_total_bytes, after_compression_total_bytes
FROM hypertable_compression_stats(format('%I.%I', $1::text, $2::text)::regclass)
"""
_AGGREGATES = """
SELECT c.view_schema AS schema, c.view_name AS name, c.materialized_only,
       -- nothing materialised yet: the watermark is the lowest time there is
       CASE WHEN _timescaledb_functions.to_timestamp(w.watermark) >= '1970-01-01'
            THEN _timescaledb_functions.to_timestamp(w.watermark) END AS materialized_until
FROM timescaledb_information.continuous_aggregates c
LEFT JOIN _timescaledb_catalog.hypertable m
       ON (m.schema_name, m.table_name)
        = (c.materialization_hypertable_schema, c.materialization_hypertable_name)
LEFT JOIN _timescaledb_catalog.continuous_aggs_watermark w ON w.mat_hypertable_id = m.id
ORDER BY 1, 2
"""
_JOBS = """
SELECT j.job_id, j.proc_name AS kind,
       coalesce(j.hypertable_name::text, j.config->>'hypertable') AS target,
       j.schedule_interval, j.scheduled, j.config::text AS config,
       CASE WHEN isfinite(s.last_run_started_at) THEN s.last_run_started_at END
           AS last_run_started_at,
       CASE WHEN isfinite(s.last_successful_finish) THEN s.last_successful_finish END
           AS last_successful_finish,
       s.last_run_status, s.last_run_duration,
       CASE WHEN isfinite(s.next_start) THEN s.next_start END AS next_start,
       s.total_runs, s.total_failures,
       (SELECT e.err_message FROM timescaledb_information.job_errors e
         WHERE e.job_id = j.job_id ORDER BY e.finish_time DESC NULLS LAST LIMIT 1) AS last_error
FROM timescaledb_information.jobs j
LEFT JOIN timescaledb_information.job_stats s USING (job_id)
WHERE j.job_id >= 1000
ORDER BY j.job_id
"""


async def timescale_status(pool: Any) -> dict[str, Any]:
    """What an operator needs to see that TimescaleDB's policies are alive; plain data.

    ``{"timescaledb": version or None, "hypertables": [...], "aggregates": [...], "jobs": [...]}``:
    per hypertable ``name``, ``chunks``, ``compressed_chunks``, ``chunk_interval``,
    ``total_bytes``, ``compression_ratio`` (bytes before / after, over the compressed chunks;
    None before any); per continuous aggregate ``name`` and ``materialized_until``; per job
    (``job_id`` >= 1000: the policies and the key cleanup) ``kind``, ``target``,
    ``schedule_interval``, ``scheduled``, ``last_run_started_at``, ``last_run_status``,
    ``last_successful_finish``, ``last_run_duration``, ``next_start``, ``total_runs``,
    ``total_failures`` and ``last_error`` (times None where TimescaleDB says ±infinity).
    Without the extension everything but ``timescaledb`` is empty.
    """
    async with _connection(pool) as conn:
        version = await conn.fetchval(_TSDB_VERSION)
        if version is None:
            return {"timescaledb": None, "hypertables": [], "aggregates": [], "jobs": []}
        hypertables = []
        for row in await conn.fetch(_HYPERTABLES):
            info = dict(row)
            comp = (
                await conn.fetchrow(_COMPRESSION, row["schema"], row["name"])
                if row["compression_enabled"]
                else None
            )
            before = comp["before_compression_total_bytes"] if comp else None
            after = comp["after_compression_total_bytes"] if comp else None
            info["compressed_chunks"] = (comp["number_compressed_chunks"] or 0) if comp else 0
            info["compression_ratio"] = before / after if before and after else None
            info["bytes_before_compression"] = before
            info["bytes_after_compression"] = after
            hypertables.append(info)
        try:
            async with conn.transaction():
                aggregates = [dict(r) for r in await conn.fetch(_AGGREGATES)]
        except asyncpg.PostgresError:  # internal catalog names differ between releases
            aggregates = [
                dict(r)
                for r in await conn.fetch(
                    "SELECT view_schema AS schema, view_name AS name, materialized_only,"
                    " NULL::timestamptz AS materialized_until"
                    " FROM timescaledb_information.continuous_aggregates"
                )
            ]
        jobs = []
        for row in await conn.fetch(_JOBS):
            job = dict(row)
            job["config"] = json.loads(job["config"]) if job["config"] else None
            jobs.append(job)
    return {"timescaledb": version, "hypertables": hypertables, "aggregates": aggregates, "jobs": jobs}


# --------------------------------------------------------------------------- stats from aggregates

#: The latency histogram of ``inference_results_hourly`` (schema/003_timescaledb_aggregates.sql):
#: ``histogram(ln(1 + processing_time_ms), LOW, HIGH, BUCKETS)``.
LATENCY_HISTOGRAM = (0.0, 12.0, 300)
#: A percentile read from that histogram is within this factor of (1 + the exact one, in ms).
LATENCY_PRECISION_FACTOR = math.exp((LATENCY_HISTOGRAM[1] - LATENCY_HISTOGRAM[0]) / LATENCY_HISTOGRAM[2])

_HAS_AGGREGATES = (
    "SELECT to_regclass('inference_results_hourly') IS NOT NULL"
    " AND to_regclass('training_data_hourly') IS NOT NULL"
)
_LATENCY_HIST_SQL = "histogram(ln(1 + processing_time_ms), {}, {}, {})".format(*LATENCY_HISTOGRAM)
# The window's whole hours [$3, $4) from the aggregate; its partial hours [$2, $3) and
# [$4, $5) from the raw rows, aggregated the same way.
_AGG_HOURS = f"""
SELECT time_bucket(INTERVAL '1 hour', created_at) AS bucket,
       count(*) AS requests,
       sum(confidence) AS confidence_sum,
       count(*) FILTER (WHERE is_anomaly) AS anomalies,
       min(created_at) AS first_at,
       max(created_at) AS last_at,
       {_LATENCY_HIST_SQL} AS latency_log_hist
FROM inference_results
WHERE model_name = $1 AND ((created_at >= $2 AND created_at < $3) OR (created_at >= $4 AND created_at < $5))
GROUP BY 1
UNION ALL
SELECT bucket, requests, confidence_sum, anomalies, first_at, last_at, latency_log_hist
FROM inference_results_hourly
WHERE model_name = $1 AND bucket >= $3 AND bucket < $4
ORDER BY 1
"""
_AGG_TRAINING = """
SELECT (SELECT count(*) FROM training_data
        WHERE model_name = $1
          AND ((created_at >= $2 AND created_at < $3) OR (created_at >= $4 AND created_at < $5)))
     + (SELECT coalesce(sum(rows), 0)::bigint FROM training_data_hourly
        WHERE model_name = $1 AND bucket >= $3 AND bucket < $4)
"""


def _hour_floor(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


async def _stats_from_aggregates(
    conn: Any, model_name: str, hours: float, since: datetime, until: datetime
) -> dict[str, Any]:
    """:func:`model_performance_stats` from the hourly continuous aggregates.

    Counts, sums, means and times equal the raw-row answer; percentiles come from the
    latency histogram (within :data:`LATENCY_PRECISION_FACTOR` of ``1 + exact``).
    """
    first_full = _hour_floor(since) + (timedelta(hours=1) if since != _hour_floor(since) else timedelta())
    last_full = _hour_floor(until)
    if first_full >= last_full:  # no whole hour inside: all from the raw rows
        first_full = last_full = until
    args = (model_name, since, first_full, last_full, until)
    rows = await conn.fetch(_AGG_HOURS, *args)
    training = await conn.fetchval(_AGG_TRAINING, *args)
    total_hist = [0] * (LATENCY_HISTOGRAM[2] + 2)
    buckets = []
    requests = anomalies = 0
    confidence_sum = 0.0
    first_at: datetime | None = None
    last_at: datetime | None = None
    for row in rows:
        hist = row["latency_log_hist"]
        for i, n in enumerate(hist):
            total_hist[i] += n
        requests += row["requests"]
        anomalies += row["anomalies"]
        confidence_sum += row["confidence_sum"]
        first_at = row["first_at"] if first_at is None else min(first_at, row["first_at"])
        last_at = row["last_at"] if last_at is None else max(last_at, row["last_at"])
        buckets.append(
            {
                "bucket": row["bucket"],
                "requests": row["requests"],
                "mean_confidence": row["confidence_sum"] / row["requests"],
                "anomaly_rate": row["anomalies"] / row["requests"],
                "p95_ms": histogram_percentile(hist, 0.95),
            }
        )
    return {
        "model_name": model_name,
        "hours": hours,
        "since": since,
        "until": until,
        "requests": requests,
        **_throughput(requests, first_at, last_at, hours, buckets),
        "p50_ms": histogram_percentile(total_hist, 0.5),
        "p95_ms": histogram_percentile(total_hist, 0.95),
        "p99_ms": histogram_percentile(total_hist, 0.99),
        "mean_confidence": confidence_sum / requests if requests else None,
        "anomaly_rate": anomalies / requests if requests else None,
        "anomalies": anomalies,
        "training_rows": training,
        "timescaledb": True,
        "source": "aggregates",
        "buckets": buckets,
    }


def histogram_percentile(hist: Sequence[int], q: float) -> float | None:
    """``percentile_cont(q)`` of the latencies counted in a :data:`LATENCY_HISTOGRAM`.

    ``hist`` is TimescaleDB's ``histogram()``: ``[below LOW, BUCKETS buckets…, >= HIGH]`` of
    ``ln(1 + ms)``. Each order statistic is placed inside its bucket by rank (evenly spread),
    then interpolated like ``percentile_cont``; the result is within
    :data:`LATENCY_PRECISION_FACTOR` of ``1 + exact``. None for an empty histogram.
    """
    total = sum(hist)
    if total == 0:
        return None
    pos = q * (total - 1)
    lo = math.floor(pos)
    a = _histogram_value(hist, lo)
    if pos == lo:
        return a
    return a + (_histogram_value(hist, lo + 1) - a) * (pos - lo)


def _histogram_value(hist: Sequence[int], k: int) -> float:
    """The estimated k-th smallest latency (0-based), in ms."""
    low, high, n = LATENCY_HISTOGRAM
    width = (high - low) / n
    seen = 0
    for i, count in enumerate(hist):
        if k < seen + count:
            if i == 0:
                return math.expm1(low)
            if i == n + 1:
                return math.expm1(high)
            x = low + (i - 1) * width + (k - seen + 0.5) / count * width
            return math.expm1(x)
        seen += count
    return math.expm1(high)  # pragma: no cover - k < total by construction
