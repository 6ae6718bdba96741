"""``streamtasks status`` fitted to the terminal: at 80 columns no header is cut and no row
wraps (short headers and numbers, consumers and trimming folded below); from 120 columns the
full table, one row per stream with every column; values from Redis are never rich markup."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from rich.console import Console

from streamtasks.cli.status import render
from streamtasks.cli.status_view import short


def stream(name: str, **values: Any) -> dict[str, Any]:
    sample = {
        "stream": name,
        "group": "adserving",
        "exists": True,
        "group_exists": True,
        "length": 1_234_567,
        "lag": 40_321,
        "undelivered": 40_321,
        "entries_read": 1_194_246,
        "last_delivered_id": "1-0",
        "pending": 1_000,
        "oldest_pending_id": "1-0",
        "oldest_pending_age": 312.5,
        "oldest_pending_idle": 2.0,
        "oldest_pending_deliveries": 1,
        "undeliverable": 0,
        "dead_letter_stream": f"{name}:dead",
        "dead_letters": 12_345,
        "added_1m": 10_000,
        "added_1m_capped": True,
        "trim": {"removed": 98_765, "held_by": "adserving", "minid": "1-0"},
        "consumers": [
            {"name": "worker-7f9c2d-a0", "pending": 500, "idle": 1.5, "live": True},
            {"name": "worker-1b2e3f-a1", "pending": 500, "idle": 900.0, "live": False},
        ],
    }
    return {**sample, **values}


def status(**values: Any) -> dict[str, Any]:
    worker = {
        "consumer": "worker-7f9c2d-a0",
        "group": "adserving",
        "state": "reading",
        "host": "ip-10-0-12-34.eu-west-1.compute.internal",
        "pid": 1234567,
        "streams": ["training_data_stream", "inference_results_stream"],
        "in_flight": 4,
        "failing_loops": [],
        "ray": None,
        "heartbeat_age": 1.2,
    }
    out = {
        "ok": False,
        "problems": [
            "training_data_stream: dead consumer worker-1b2e3f-a1 holds 500 "
            "pending entries (no heartbeat; idle 900s)"
        ],
        "checked_at": 0.0,
        "group": "adserving",
        "groups": ["adserving"],
        "stuck_after": 300.0,
        "redis": {"ok": True, "error": None, "version": "7.2.4", "refused": False},
        "streams": [stream("training_data_stream"), stream("inference_results_stream", group_exists=False)],
        "shards": {},
        "workers": [worker],
        "workers_known": True,
        "dead_consumers": [],
        "bad_keys": {"count": 0, "keys": []},
        "not_checked": [],
    }
    return {**out, **values}


def drawn(value: dict[str, Any], width: int) -> list[str]:
    out = io.StringIO()
    Console(file=out, width=width, force_terminal=False, color_system=None).print(render(value))
    return [line.rstrip() for line in out.getvalue().splitlines()]


def row_of(lines: list[str], name: str, after: str = "") -> str:
    """The one line that starts with ``name`` (after the line starting with ``after``)."""
    start = next(i for i, line in enumerate(lines) if line.startswith(after)) if after else 0
    found = [line for line in lines[start:] if re.match(rf"^[\W]*{re.escape(name)}(\s|$)", line)]
    return found[0]


@pytest.mark.parametrize("every_group", [False, True])
def test_at_80_columns_no_header_is_cut_and_each_stream_is_one_row(every_group: bool) -> None:
    value = status(group=None) if every_group else status()
    lines = drawn(value, 80)
    text = "\n".join(lines)
    assert "…" not in text, text
    assert all(len(line) <= 80 for line in lines), text
    header = next(line for line in lines if " length " in line)
    for col in ("stream", "length", "lag", "pending", "oldest", "dead", "in/1m"):
        assert re.search(rf"(^|\s){re.escape(col)}(\s|$)", header), (col, header)
    # one line per stream, with all its numbers: nothing wrapped onto the next line
    numbers = r"\s+1\.2M\s+40,321\s+1,000\s+5\.2m\s+12,345\s+10,000\+$"
    assert re.fullmatch(r"\s*training_data_stream" + numbers, row_of(lines, "training_data_stream"))
    assert re.fullmatch(
        r"\s*inference_results_stream \*" + numbers, row_of(lines, "inference_results_stream")
    )
    assert "* no consumer group" in text
    # folded below: the consumers (one row each) and what was trimmed
    dead = [line for line in lines if "worker-1b2e3f-a1" in line and line.lstrip().startswith("training")]
    assert re.fullmatch(r"\s*training_data_stream\s+worker-1b2e3f-a1\s+500\s+15\.0m\s+DEAD", dead[0]), dead
    assert "training_data_stream: 98,765 trimmed (held by adserving)" in text
    worker = row_of(lines, "worker-7f9c2d-a0", after="live workers")
    assert re.fullmatch(r"\s*worker-7f9c2d-a0\s+reading\s+ip-10-0-12-34\s+1234567\s+1\.2s ago\s+4", worker)
    assert "UNHEALTHY" in text and "dead consumer worker-1b2e3f-a1" in text


@pytest.mark.parametrize("width", [120, 200])
def test_from_120_columns_the_full_table_one_row_per_stream(width: int) -> None:
    """Every column of the full table, each number whole on its stream's line (names and the
    consumers may wrap inside their cells, never be cut)."""
    work = stream("obs_work", consumers=[{"name": "w-a0", "pending": 3, "idle": 1.5, "live": True}])
    lines = drawn(status(streams=[work]), width)
    text = "\n".join(lines)
    assert "…" not in text
    assert all(len(line) <= width for line in lines)
    headers = (
        "stream",
        "length",
        "lag",
        "pending",
        "oldest pending",
        "dead letters",
        "added/1m",
        "trimmed (held by)",
        "consumers",
    )
    header = next(line for line in lines if "length" in line)
    for name in headers:
        assert name in header, (name, header)
    row = row_of(lines, "obs_work")
    for value in ("1,234,567", "40,321", "1,000", "5.2m", "12,345", "10,000+", "98,765", "w-a0"):
        assert value in row, (value, row)
    workers = next(line for line in lines if "last heartbeat" in line)
    for name in ("consumer", "group", "state", "host", "pid", "in flight", "streams"):
        assert name in workers, (name, workers)


def test_values_from_redis_are_shown_as_they_are_never_as_markup() -> None:
    odd = stream("[bold]orders[/]", consumers=[{"name": "[/]", "pending": 1, "idle": 1.0, "live": False}])
    for width in (80, 200):
        text = "\n".join(drawn(status(streams=[odd], problems=["[red]x[/red]"]), width))
        assert "[bold]orders[/]" in text and "[/]" in text and "[red]x[/red]" in text


def test_what_the_user_may_not_read_is_named_and_unknown_numbers_are_dashes() -> None:
    unknown = stream("orders", length=None, pending=None, dead_letters=None, lag=None, undelivered=None)
    value = status(
        streams=[unknown],
        workers=[],
        workers_known=False,
        ok=True,
        problems=[],
        not_checked=["INFO: no permission (NOPERM)", "XLEN (orders, orders:dead): no permission (NOPERM)"],
    )
    for width in (80, 200):
        text = "\n".join(drawn(value, width))
        assert "live workers: not known" in text and "no live workers" not in text
        assert "  - INFO: no permission (NOPERM)" in text
        assert "  - XLEN (orders, orders:dead): no permission (NOPERM)" in text


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "-"),
        (0, "0"),
        (99_999, "99,999"),
        (100_000, "100k"),
        (1_234_567, "1.2M"),
        (99_000_000, "99.0M"),
        (123_456_789, "123M"),
        (5 * 10**12, "5000G"),
    ],
)
def test_short_numbers_fit_six_characters(value: int | None, shown: str) -> None:
    assert short(value) == shown


@pytest.mark.parametrize("width", [80, 120, 132, 200])
def test_delayed_entries_and_periodic_handlers_are_shown_without_cutting_a_header(width: int) -> None:
    """A stream with delayed entries: the full table gains a ``scheduled`` column where it fits
    (from 132 columns; its count whole on the stream's line, the due time folding in its cell),
    else the narrow layout names them below; periodic handlers get a table."""
    tick = {"schedule": "every 60s", "last_tick": 1_800_000_000.0, "next_tick": 1_800_000_060.0}
    work = stream("obs_work", scheduled=1_500, next_due_in=4.2, periodic={**tick, "next_tick_in": 12.0})
    lines = drawn(status(streams=[work]), width)
    text = "\n".join(lines)
    assert "…" not in text and all(len(line) <= width for line in lines)
    if width >= 132:
        header = next(line for line in lines if "length" in line)
        assert "scheduled" in header and "consumers" in header, header
        assert "1,500 (in" in row_of(lines, "obs_work") and "4.2s)" in text  # the due time may fold
    else:
        assert any(line.startswith("obs_work: 1,500 (in 4.2s) scheduled") for line in lines), text
    periodic = next(line for line in lines if "every 60s" in line)
    assert "2027-01-15 08:00:00 UTC" in periodic and "in 12.0s" in periodic, periodic
