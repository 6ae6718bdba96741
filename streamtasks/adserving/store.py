"""Idempotent batch writes of adserving records: COPY, and on a conflict INSERT ... ON CONFLICT.

Fast path: the batch is ``COPY``-ed straight into the target table. ``COPY`` is one
statement, so it stores all rows or none; if any key already exists (a redelivery) it fails
with a unique violation and stores nothing, and the batch takes the slow path below. The
unique constraint is what guarantees one row per key either way; the fast path only skips
the staging step in the common case (measured ~1.4x faster on this project's machine).

Slow path, one transaction: the records are ``COPY``-ed (binary) into a per-session
temporary staging table, then moved into the target table with ``INSERT ... SELECT ... ON
CONFLICT (idempotency_key) DO NOTHING``. A record whose key is already stored (a
redelivered entry, a producer's retry under the same message id) makes no second row, and
neither does a key that appears twice in one batch.

On TimescaleDB (``schema/002_timescaledb.sql``) the key lives in a side table
``<table>_keys``, because a hypertable cannot have a unique index without its time column.
Fast path there, one transaction: ``COPY`` the batch's keys into ``<table>_keys`` (its
primary key rejects the whole COPY if any key is stored already), then ``COPY`` the rows into
the hypertable. Slow path: staging, then one statement inserting the keys ``ON CONFLICT DO
NOTHING`` and the rows whose key was new. The store detects which schema it talks to once
per connection.

Connection errors are not caught: the batch fails as a whole and the worker retries it.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg

from ..errors import ConfigError
from ..otel import work_span
from .records import InferenceRecord, TrainingRecord

TRAINING_TABLE = "training_data"
INFERENCE_TABLE = "inference_results"
_STAGING_PREFIX = "st_stage_"
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


class _Plan:
    """What one connection knows about one target table: its staging table and INSERT."""

    __slots__ = ("columns", "direct", "insert", "keys", "staging", "table")

    def __init__(
        self,
        table: str,
        staging: str,
        columns: Sequence[str],
        insert: str,
        direct: bool,
        keys: str | None = None,
    ) -> None:
        self.table = table
        self.staging = staging
        self.columns = columns
        self.insert = insert
        self.direct = direct  # plain schema: COPY straight into the table is safe
        self.keys = keys  # TimescaleDB: the side key table; COPY keys, then rows, is safe


# Plans per raw connection (not per pool proxy): the staging table is a session object.
_plans: weakref.WeakKeyDictionary[Any, dict[str, _Plan]] = weakref.WeakKeyDictionary()


async def store_training(conn: Any, records: Iterable[TrainingRecord], *, table: str = TRAINING_TABLE) -> int:
    """Store training records in one transaction; returns the number of new rows."""
    return await store_training_rows(conn, (r.as_row() for r in records), table=table)


async def store_training_rows(
    conn: Any, rows: Iterable[tuple[Any, ...]], *, table: str = TRAINING_TABLE
) -> int:
    """:func:`store_training` of the records' rows (:func:`.records.training_row`)."""
    return await _store(conn, rows, table, TrainingRecord.COLUMNS)


async def store_inference(
    conn: Any, records: Iterable[InferenceRecord], *, table: str = INFERENCE_TABLE
) -> int:
    """Store inference records in one transaction; returns the number of new rows."""
    return await store_inference_rows(conn, (r.as_row() for r in records), table=table)


async def store_inference_rows(
    conn: Any, rows: Iterable[tuple[Any, ...]], *, table: str = INFERENCE_TABLE
) -> int:
    """:func:`store_inference` of the records' rows (:func:`.records.inference_row`)."""
    return await _store(conn, rows, table, InferenceRecord.COLUMNS)


async def _store(conn: Any, rows: Iterable[tuple[Any, ...]], table: str, columns: Sequence[str]) -> int:
    # The first row of each key wins; the database would do the same, but staging
    # duplicates would make the TimescaleDB statement insert both.
    key_at = columns.index("idempotency_key")
    unique: dict[str, tuple[Any, ...]] = {}
    for row in rows:
        unique.setdefault(row[key_at], row)
    if not unique:
        return 0
    rows = list(unique.values())
    raw = _raw_connection(conn)
    with work_span(f"COPY {table}", _span_attributes(table, len(rows))):  # traced: a span
        try:
            return await _copy_insert(conn, await _plan(conn, raw, table, columns), rows)
        except (
            asyncpg.UndefinedTableError,
            asyncpg.InvalidColumnReferenceError,
            asyncpg.NotNullViolationError,
        ):
            # The staging table was discarded (DISCARD TEMP), or the schema changed under this
            # connection (002 applied: its NOT NULL `keyed` column refuses a direct COPY): plan
            # again and retry once; a second failure is real.
            _plans.pop(raw, None)
            return await _copy_insert(conn, await _plan(conn, raw, table, columns), rows)


def _span_attributes(table: str, rows: int) -> dict[str, Any]:
    """OpenTelemetry's database conventions for the ``COPY <table>`` span."""
    return {
        "db.system.name": "postgresql",
        "db.operation.name": "COPY",
        "db.collection.name": table,
        "db.operation.batch.size": rows,
    }


async def _copy_insert(conn: Any, plan: _Plan, rows: list[tuple[Any, ...]]) -> int:
    columns = plan.columns
    if plan.direct:
        try:
            await conn.copy_records_to_table(plan.table, records=rows, columns=columns)
            return len(rows)
        except asyncpg.UniqueViolationError:
            pass  # some key is stored already: nothing was written; dedupe through staging
    elif plan.keys is not None:
        try:
            async with conn.transaction():
                key_at = columns.index("idempotency_key"), columns.index("created_at")
                keys = [(row[key_at[0]], row[key_at[1]]) for row in rows]
                await conn.copy_records_to_table(
                    plan.keys, records=keys, columns=("idempotency_key", "created_at")
                )
                # every key was new (the COPY above would have failed): all rows go in
                keyed = [(*row, True) for row in rows]
                await conn.copy_records_to_table(plan.table, records=keyed, columns=(*columns, "keyed"))
            return len(rows)
        except asyncpg.UniqueViolationError:
            pass  # rolled back, nothing written; dedupe through staging
    async with conn.transaction():
        await conn.copy_records_to_table(plan.staging, records=rows, columns=columns)
        status: str = await conn.execute(plan.insert)
    return int(status.rsplit(" ", 1)[-1])


def _raw_connection(conn: Any) -> Any:
    # A pool hands out proxies, a new one per acquire; the session is the connection below.
    return getattr(conn, "_con", None) or conn


async def _plan(conn: Any, raw: Any, table: str, columns: Sequence[str]) -> _Plan:
    per_table = _plans.setdefault(raw, {})
    plan = per_table.get(table)
    if plan is None:
        plan = await _make_plan(conn, table, columns)
        per_table[table] = plan
    return plan


async def _make_plan(conn: Any, table: str, columns: Sequence[str]) -> _Plan:
    if not _IDENTIFIER.match(table):
        raise ConfigError(f"invalid table name {table!r}")
    staging = _STAGING_PREFIX + table
    # Outside the batch transaction, so a rolled-back batch cannot take the table with it.
    # Made anew on every (re)plan, so it always has the target table's current columns.
    await conn.execute(f"DROP TABLE IF EXISTS pg_temp.{staging}")
    await conn.execute(f"CREATE TEMP TABLE {staging} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
    keys_table = await conn.fetchval("SELECT to_regclass($1)::text", f"{table}_keys")
    cols = ", ".join(columns)
    if keys_table is not None:
        # Staging rows do not carry `keyed` (the INSERT below sets it).
        await conn.execute(f"ALTER TABLE {staging} ALTER COLUMN keyed DROP NOT NULL")
    if keys_table is None:
        insert = (
            f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {staging} "
            f"ON CONFLICT (idempotency_key) DO NOTHING"
        )
    else:
        scols = ", ".join(f"s.{c}" for c in columns)
        insert = (
            f"WITH fresh AS (INSERT INTO {table}_keys (idempotency_key, created_at) "
            f"SELECT idempotency_key, created_at FROM {staging} "
            f"ON CONFLICT (idempotency_key) DO NOTHING RETURNING idempotency_key) "
            f"INSERT INTO {table} ({cols}, keyed) SELECT {scols}, TRUE FROM {staging} s "
            f"JOIN fresh USING (idempotency_key)"
        )
    return _Plan(
        table,
        staging,
        columns,
        insert,
        direct=keys_table is None,
        keys=None if keys_table is None else f"{table}_keys",
    )
