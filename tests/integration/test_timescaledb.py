"""TimescaleDB, against the real extension: setup, policies, idempotency, aggregates, status.

The tests that need TimescaleDB loaded use ``timescale_database_url`` (a second throwaway
PostgreSQL that preloads it); they skip, with one line, only where TimescaleDB is not
installed. The first test uses the ordinary ``pg_server``, where the extension files are
installed (the bootstrap installs them machine-wide) but not preloaded.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import pytest

from streamtasks.db import setup_database

pytestmark = pytest.mark.integration


async def _skip_unless_installed(conn: Any) -> None:
    if not await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')"
    ):
        pytest.skip("TimescaleDB is not installed for this PostgreSQL (scripts/services.py ensure-binaries)")


async def test_installed_but_not_preloaded_falls_back_to_plain_schema(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Extension files present, not in shared_preload_libraries: plain schema, one log line."""
    conn = await asyncpg.connect(database_url)
    try:
        await _skip_unless_installed(conn)
        with caplog.at_level(logging.INFO, logger="streamtasks.db"):
            result = await setup_database(conn)
        assert result == {"timescaledb": False, "files": ["001_adserving.sql"]}
        assert await conn.fetchval("SELECT to_regclass('inference_results') IS NOT NULL")
        assert not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')"
        )
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, warnings
        assert "not preloaded" in warnings[0] and "shared_preload_libraries" in warnings[0]
        with pytest.raises(RuntimeError, match="not preloaded"):
            await setup_database(conn, timescaledb=True)
        assert not conn.is_closed()
    finally:
        await conn.close()
