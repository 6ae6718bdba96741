"""The built-ins' pool skips asyncpg's reset round trip on release, except for a connection
left in a transaction: that one is rolled back before anyone gets it again."""

from __future__ import annotations

import pytest

from streamtasks.adserving.db import create_pool

pytestmark = pytest.mark.integration


async def test_a_connection_released_in_a_transaction_is_rolled_back(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            await conn.execute("CREATE TEMP TABLE IF NOT EXISTS pool_release (v int)")
            await conn.execute("TRUNCATE pool_release")
        conn = await pool.acquire()
        await conn.transaction().start()
        await conn.execute("INSERT INTO pool_release VALUES (1)")
        await pool.release(conn)  # as a cancelled handler leaves it
        async with pool.acquire() as again:  # max_size=1: the same connection
            assert not again.is_in_transaction()
            assert await again.fetchval("SELECT count(*) FROM pool_release") == 0
    finally:
        await pool.close()


async def test_an_idle_connection_goes_back_without_the_reset_round_trip(database_url: str) -> None:
    """No ``RESET ALL`` for a connection that left no transaction open: a session setting
    survives its release (which is why nothing in the built-ins sets one)."""
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            await conn.execute("SET application_name = 'kept'")
        async with pool.acquire() as again:
            assert await again.fetchval("SHOW application_name") == "kept"
    finally:
        await pool.close()
