"""TimescaleDB: chunk interval, compression, retention (and the key-table cleanup it needs),
continuous-aggregate refresh, from :class:`TimescaleSettings`; and ``timescale_status``, the
hypertables, chunks, compression ratio and jobs an operator checks."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from ..errors import ConfigError
from .config import load_env
from .db import connection

log = logging.getLogger("streamtasks.db")


#: The hypertables of the TimescaleDB path (schema/002_timescaledb.sql).
HYPERTABLES = ("training_data", "inference_results")
#: Their hourly continuous aggregates (schema/003_timescaledb_aggregates.sql).
HOURLY_AGGREGATES = ("training_data_hourly", "inference_results_hourly")
#: How often the key-table cleanup job (streamtasks_prune_keys) runs.
PRUNE_KEYS_EVERY = "1 day"
#: The jobs ``db init`` schedules, by their procedure, as ``db status`` names them.
JOB_NAMES = {
    "policy_compression": "compression",
    "policy_retention": "retention",
    "policy_refresh_continuous_aggregate": "refresh",
    "streamtasks_prune_keys": "prune keys",
}
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
    """``TIMESCALEDB_CHUNK_INTERVAL``: the time span of new chunks."""
    compress_after: str | None = "7 days"
    """``TIMESCALEDB_COMPRESS_AFTER``: compress chunks older than this (``None``: never)."""
    retention: str | None = None
    """``TIMESCALEDB_RETENTION``: drop chunks older than this (``None``: keep everything)."""
    aggregate_refresh: str = "30 minutes"
    """``TIMESCALEDB_AGGREGATE_REFRESH``: how often the hourly aggregates are refreshed."""

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


async def check_intervals(conn: Any, settings: TimescaleSettings) -> None:
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


async def apply_policies(conn: Any, settings: TimescaleSettings) -> None:
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
            conn,
            table,
            "policy_compression",
            "compress_after",
            settings.compress_after,
            "SELECT add_compression_policy($1::text::regclass, $2::text::interval)",
            "SELECT remove_compression_policy($1::text::regclass, if_exists => true)",
        )
        await _policy(
            conn,
            table,
            "policy_retention",
            "drop_after",
            settings.retention,
            "SELECT add_retention_policy($1::text::regclass, $2::text::interval)",
            "SELECT remove_retention_policy($1::text::regclass, if_exists => true)",
        )
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
                view,
                settings.aggregate_refresh,
            )
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
    ``total_failures`` and ``last_error`` (times None where TimescaleDB says ±infinity);
    ``warnings``: one line per job whose last run failed (:func:`job_warnings`).
    Without the extension everything but ``timescaledb`` is empty.
    """
    async with connection(pool) as conn:
        version = await conn.fetchval(_TSDB_VERSION)
        if version is None:
            return {"timescaledb": None, "hypertables": [], "aggregates": [], "jobs": [], "warnings": []}
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
    warnings = job_warnings(jobs)
    return {
        "timescaledb": version,
        "hypertables": hypertables,
        "aggregates": aggregates,
        "jobs": jobs,
        "warnings": warnings,
    }


def job_warnings(jobs: list[dict[str, Any]]) -> list[str]:
    """One line per job whose last run failed: which job, on what, when, and its error."""
    out = []
    for job in jobs:
        if str(job.get("last_run_status") or "").lower() != "failed":
            continue
        kind = str(job.get("kind") or "job")
        started = job.get("last_run_started_at")
        when = f" (started {started.isoformat(timespec='seconds')})" if isinstance(started, datetime) else ""
        error = " ".join(str(job.get("last_error") or "no error recorded").split())
        what = f"job {job.get('job_id')} ({JOB_NAMES.get(kind, kind)} on {job.get('target') or '-'})"
        out.append(f"{what} failed its last run{when}: {error}")
    return out
