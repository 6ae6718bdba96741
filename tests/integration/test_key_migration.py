"""The key migration SQL in docs/guides/schema.md (issue 12, item 3) turns keys stored before
the change into the keys :attr:`Message.idempotency_key` gives now."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg
import pytest

from streamtasks import Message
from streamtasks.adserving import schema

pytestmark = pytest.mark.integration
SCHEMA_PAGE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "schema.md"
STREAM = "inference_results_stream"


def migration_sql() -> str:
    text = SCHEMA_PAGE.read_text(encoding="utf-8")
    section = text[text.index("**Upgrading from the unprefixed keys.**") :]
    match = re.search(r"```sql\n(.*?)```", section, re.S)
    assert match, "no SQL block in the upgrade section"
    return match.group(1)


async def test_the_documented_migration_gives_todays_keys(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await schema.setup_database(conn, timescaledb=False)
        messages = [
            Message(STREAM, "1700000000000-0", {}),  # no message id
            Message(STREAM, "1700000000000-1", {"_st_mid": "8f2c"}),  # an ordinary message id
            Message(STREAM, "1700000000000-2", {"_st_mid": "e:x"}),  # one that looks reserved
            Message(STREAM, "1700000000000-3", {"_st_mid": "m:y"}),
        ]
        old_keys = [f"{STREAM}/1700000000000-0", "8f2c", "e:x", "m:y"]  # as stored before
        for msg, key in zip(messages, old_keys, strict=True):
            await conn.execute(
                "INSERT INTO inference_results (model_name, request_id, prediction, confidence,"
                " anomaly_score, processing_time_ms, created_at, idempotency_key, stream, entry_id)"
                " VALUES ('m', 'r', '{}', 0.5, 0.5, 1, now(), $1, $2, $3)",
                key, msg.stream, msg.id,
            )  # fmt: skip
        sql = migration_sql().replace("-- the same for inference_results", "")
        await conn.execute(sql.replace("training_data", "inference_results"))
        keys = await conn.fetch("SELECT entry_id, idempotency_key FROM inference_results ORDER BY entry_id")
        assert [r["idempotency_key"] for r in keys] == [m.idempotency_key for m in messages]
    finally:
        await conn.close()
