"""``setup_database`` run again while another session takes the same tables' locks in the other
order (as TimescaleDB's background jobs do): PostgreSQL aborts the setup to break the deadlock,
and the setup tries again and applies (seen in CI: a second ``db init`` deadlocked with a job)."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest

from streamtasks.adserving.db import create_pool
from streamtasks.adserving.schema import setup_database

pytestmark = pytest.mark.integration


async def test_a_setup_chosen_to_break_a_deadlock_tries_again_and_applies(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=2)
    blocker = await asyncpg.connect(database_url)
    try:
        await setup_database(pool, timescaledb=False)
        await blocker.execute("SET deadlock_timeout = '10s'")  # the setup (1 s) detects it first
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE inference_results IN ACCESS EXCLUSIVE MODE")
        with caplog.at_level(logging.WARNING, logger="streamtasks.db"):
            setup = asyncio.create_task(setup_database(pool, timescaledb=False))
            for _ in range(200):  # until the setup waits for inference_results, holding training_data
                if await blocker.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted"):
                    break
                await asyncio.sleep(0.01)
            await blocker.execute("LOCK TABLE training_data IN ACCESS EXCLUSIVE MODE")  # the cycle
            await tx.rollback()
            result = await asyncio.wait_for(setup, 30)
        assert result == {"timescaledb": False, "files": ["001_adserving.sql"]}
        assert "schema setup was chosen to break a deadlock" in caplog.text
    finally:
        await blocker.close()
        await pool.close()
