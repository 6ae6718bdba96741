"""PostgreSQL connections: pools and health. No I/O at import time.

Schema setup is in :mod:`.schema`, the TimescaleDB policies and their status in
:mod:`.timescale`, per-model statistics in :mod:`.modelstats`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from ..logs import redact

log = logging.getLogger("streamtasks.db")

HAS_TIMESCALEDB = "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')"

TIMESCALEDB_MARKER = "timescaledb"
DEFAULT_POOL_MIN_SIZE = 1
#: A worker process runs a few batches at once (``max_in_flight``); more connections idle.
DEFAULT_POOL_MAX_SIZE = 4
DEFAULT_COMMAND_TIMEOUT = 60.0
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Idle pooled connections are closed after this many seconds.
DEFAULT_MAX_INACTIVE_LIFETIME = 300.0


@asynccontextmanager
async def connection(conn_or_pool: Any) -> AsyncIterator[Any]:
    if isinstance(conn_or_pool, asyncpg.Pool):
        async with conn_or_pool.acquire() as conn:
            yield conn
    else:
        yield conn_or_pool


async def _reset_if_in_transaction(conn: Any) -> None:
    """A connection going back to the pool: asyncpg's full reset (rollback, ``CLOSE ALL``,
    ``UNLISTEN *``, ``RESET ALL``: one round trip per batch) only when a transaction was left
    open (a cancelled handler). Nothing here sets session state outside a transaction."""
    if conn.is_in_transaction():
        await conn.reset()


async def create_pool(dsn: str, **kwargs: Any) -> Any:
    """An asyncpg pool with defaults fit for one worker process; ``kwargs`` override them."""
    options: dict[str, Any] = {
        "min_size": DEFAULT_POOL_MIN_SIZE,
        "max_size": DEFAULT_POOL_MAX_SIZE,
        "command_timeout": DEFAULT_COMMAND_TIMEOUT,
        "timeout": DEFAULT_CONNECT_TIMEOUT,
        "max_inactive_connection_lifetime": DEFAULT_MAX_INACTIVE_LIFETIME,
        "server_settings": {"application_name": "streamtasks"},
        "reset": _reset_if_in_transaction,
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
            async with connection(pool_or_dsn) as conn:
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
        f"SELECT current_setting('server_version') AS v, ({HAS_TIMESCALEDB}) AS tsdb",
        timeout=timeout,
    )
    return {"server_version": row["v"], "timescaledb": row["tsdb"]}
