"""The adserving built-ins in tests: entries as producers write them, rows as they land."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import asyncpg

from streamtasks.message import Message

NOW = datetime(2024, 1, 1, 12, 0, tzinfo=timezone.utc)

_seq = iter(range(10**9))


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def training_msg(request_id: str, *, model: str = "fraud", at: datetime = NOW, mid: str | None = None,
                 input_data: str = '{"user_id": 1}', **extra: str) -> Message:  # fmt: skip
    fields = {"model_name": model, "request_id": request_id, "input_data": input_data,
              "_st_ts": str(ms(at)), **extra}  # fmt: skip
    if mid is not None:
        fields["_st_mid"] = mid
    return Message("training_data_stream", f"{ms(at)}-{next(_seq)}", fields)


def inference_msg(request_id: str, *, model: str = "fraud", at: datetime = NOW, ms_taken: float = 10.0,
                  confidence: float = 0.5, anomaly: bool = False, mid: str | None = None,
                  ) -> Message:  # fmt: skip
    fields = {
        "model_name": model, "request_id": request_id, "prediction": '{"p": 1}',
        "confidence": repr(confidence), "anomaly_score": "0.1",
        "is_anomaly": "true" if anomaly else "false", "processing_time_ms": repr(ms_taken),
        "_st_ts": str(ms(at)),
    }  # fmt: skip
    if mid is not None:
        fields["_st_mid"] = mid
    return Message("inference_results_stream", f"{ms(at)}-{next(_seq)}", fields)


async def schema_snapshot(conn: Any) -> list[Any]:
    return [
        tuple(r)
        for r in await conn.fetch(
            """
            SELECT 'col', table_name, column_name || ' ' || data_type || ' ' || is_nullable
              FROM information_schema.columns WHERE table_schema = 'public'
            UNION ALL SELECT 'idx', tablename, indexdef FROM pg_indexes WHERE schemaname = 'public'
            UNION ALL SELECT 'con', conrelid::regclass::text, pg_get_constraintdef(oid)
              FROM pg_constraint WHERE connamespace = 'public'::regnamespace
            ORDER BY 1, 2, 3
            """
        )
    ]


GROUP = "streamtasks-adserving"


async def rows(database_url: str, sql: str) -> Any:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def training_fields(i: int) -> list[str]:
    return ["model_name", "m1", "request_id", f"r{i}", "input_data", json.dumps({"i": i}),
            "source_ip", "10.0.0.1", "_st_mid", f"t-{i}"]  # fmt: skip
