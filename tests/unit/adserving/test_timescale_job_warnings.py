"""``db status`` warns about each TimescaleDB job whose last run failed (pure logic:
``streamtasks.adserving.timescale.job_warnings``)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streamtasks.adserving.timescale import job_warnings

STARTED = datetime(2026, 12, 6, 5, 10, 22, tzinfo=timezone.utc)


def job(status: str | None, **over: Any) -> dict[str, Any]:
    fields = {"job_id": 1002, "kind": "streamtasks_prune_keys", "target": "public.training_data"}
    return {**fields, "last_run_status": status, "last_run_started_at": STARTED, "last_error": None, **over}


def test_a_failed_last_run_names_the_job_its_table_when_and_the_error() -> None:
    failed = job("Failed", last_error='relation "public.no_such_keys"\n  does not exist')
    assert job_warnings([job("Success"), failed, job(None)]) == [
        "job 1002 (prune keys on public.training_data) failed its last run (started "
        '2026-12-06T05:10:22+00:00): relation "public.no_such_keys" does not exist'
    ]


def test_a_failure_with_no_error_or_time_recorded_still_warns() -> None:
    [line] = job_warnings([job("Failed", kind="some_proc", target=None, last_run_started_at=None)])
    assert line == "job 1002 (some_proc on -) failed its last run: no error recorded"


statuses = st.one_of(st.none(), st.sampled_from(["Success", "Failed", "failed", "Running"]), st.text())


@settings(deadline=None)  # pure and fast; a loaded machine must not fail it
@given(st.lists(st.tuples(statuses, st.one_of(st.none(), st.text()))))
def test_one_line_per_failed_job_whatever_the_texts(runs: list[tuple[str | None, str | None]]) -> None:
    lines = job_warnings([job(status, last_error=error) for status, error in runs])
    assert len(lines) == sum(1 for status, _ in runs if (status or "").lower() == "failed")
    assert all(len(line.splitlines()) == 1 and line.startswith("job 1002 (prune keys") for line in lines)
