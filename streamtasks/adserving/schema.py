"""The schema: files, ``setup_database`` (idempotent, serialised by an advisory lock), and
whether TimescaleDB can be used (installed, preloaded, wanted)."""

from __future__ import annotations

import asyncio
import logging
import random
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg

from .db import connection
from .timescale import TimescaleSettings, apply_policies, check_intervals

log = logging.getLogger("streamtasks.db")

#: Key of the transaction-level advisory lock that serialises concurrent schema setups.
SCHEMA_LOCK_KEY = 0x5354_5343_4845_4D41  # "STSCHEMA"
#: Schema files with this in their name are applied only when TimescaleDB is enabled.
TIMESCALEDB_MARKER = "timescaledb"


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
    for attempt in range(1, DEADLOCK_ATTEMPTS):
        try:
            return await _setup_once(conn_or_pool, files, settings, timescaledb)
        except asyncpg.DeadlockDetectedError as exc:
            delay = random.uniform(0, DEADLOCK_BACKOFF_S * 2**attempt)
            log.warning(
                "schema setup was chosen to break a deadlock (%s); nothing was applied, trying "
                "again in %.1fs (attempt %d of %d)",
                str(exc).splitlines()[0],
                delay,
                attempt + 1,
                DEADLOCK_ATTEMPTS,
            )
            await asyncio.sleep(delay)
    return await _setup_once(conn_or_pool, files, settings, timescaledb)  # the last: its error is raised


#: Attempts of a schema setup PostgreSQL aborts to break a deadlock: the DDL of a re-run can
#: meet TimescaleDB's background jobs (compression, retention, aggregate refresh) taking the
#: same tables' locks in the other order. The whole transaction rolls back, so it is retried.
DEADLOCK_ATTEMPTS = 5
DEADLOCK_BACKOFF_S = 0.25


async def _setup_once(
    conn_or_pool: Any, files: list[Path], settings: TimescaleSettings, timescaledb: bool | None
) -> dict[str, Any]:
    async with connection(conn_or_pool) as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_KEY)
        use_tsdb = await _enable_timescaledb(conn, timescaledb)
        if use_tsdb:
            await check_intervals(conn, settings)
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
            await apply_policies(conn, settings)
    log.info("schema applied: %s (timescaledb=%s)", ", ".join(applied), use_tsdb)
    return {"timescaledb": use_tsdb, "files": applied}


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
