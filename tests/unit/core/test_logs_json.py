"""JSON logs: RFC 3339 UTC timestamps with milliseconds, and the ``extra=`` fields a line is
about (``stream``, ``handler``, ``entry_id`` / batch ids, ``consumer``), redacted like the rest."""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamtasks import logs

RFC3339_MS_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def last_json(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    return result


def test_ts_is_rfc3339_utc_with_milliseconds(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", "json")
    before = datetime.now(timezone.utc)
    logging.getLogger("streamtasks.worker").info("hello")
    after = datetime.now(timezone.utc)
    ts = last_json(capsys)["ts"]
    assert RFC3339_MS_UTC.match(ts), ts
    parsed = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= parsed <= after


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_rfc3339_utc_agrees_with_datetime(created: float) -> None:
    text = logs.rfc3339_utc(created)
    assert RFC3339_MS_UTC.match(text)
    exact = datetime.fromtimestamp(created, tz=timezone.utc)
    assert text[:19] == exact.strftime("%Y-%m-%dT%H:%M:%S")
    assert int(text[20:23]) == exact.microsecond // 1000


def test_extra_fields_are_emitted_and_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", "json")
    logging.getLogger("streamtasks.worker").warning(
        "dead-lettered %s", "orders/1-0",
        extra={"stream": "orders", "handler": "app.on_order", "entry_id": "1-0",
               "entry_ids": ["1-0", "2-0"], "consumer": "host-1-abc",
               "error": "redis://u:hunter2pw@h:6379/0", "when": datetime(2026, 1, 1)},
    )  # fmt: skip
    record = last_json(capsys)
    assert record["msg"] == "dead-lettered orders/1-0"
    assert (record["stream"], record["handler"], record["entry_id"], record["consumer"]) == (
        "orders", "app.on_order", "1-0", "host-1-abc",
    )  # fmt: skip
    assert record["entry_ids"] == ["1-0", "2-0"]
    assert record["error"] == "redis://u:***@h:6379/0" and record["when"] == "2026-01-01 00:00:00"
    assert not {"args", "msecs", "pathname", "levelno"} & set(record)
