"""When a delayed entry is due (streamtasks.delayed.due_ms), and the in-memory app's delayed
entries and periodic ticks on its fake clock: no services."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamtasks import Message, Registry
from streamtasks.delayed import MAX_DELAYED_FIELDS, due_ms, due_times, scheduled_fields
from streamtasks.testing import InMemoryApp

NOW = 1_750_000_000.0


@given(st.floats(min_value=0, max_value=10**9, allow_nan=False))
def test_a_delay_is_due_that_many_seconds_later(delay: float) -> None:
    due = due_ms(delay, None, NOW)
    if delay * 1000 < 1:  # due within the millisecond: added at once
        assert due is None or due == math.ceil(NOW * 1000 + delay * 1000)
    else:
        assert due == math.ceil(NOW * 1000 + delay * 1000)


@given(
    st.one_of(
        st.floats(max_value=-1e-9), st.just(float("nan")), st.just(float("inf")), st.booleans(), st.text()
    )
)
def test_bad_delays_are_one_line_errors(delay: Any) -> None:
    with pytest.raises(ValueError) as caught:
        due_ms(delay, None, NOW)
    assert "\n" not in str(caught.value)


def test_eta_must_be_aware_and_not_with_delay() -> None:
    with pytest.raises(ValueError, match="has no time zone"):
        due_ms(None, datetime(2030, 1, 1, 9), NOW)
    with pytest.raises(ValueError, match="not both"):
        due_ms(1, datetime(2030, 1, 1, tzinfo=timezone.utc), NOW)
    berlin = datetime(2030, 1, 1, 9, tzinfo=ZoneInfo("Europe/Berlin"))
    assert due_ms(None, berlin, NOW) == round(datetime(2030, 1, 1, 8, tzinfo=timezone.utc).timestamp() * 1000)
    assert due_ms(None, datetime(2000, 1, 1, tzinfo=timezone.utc), NOW) is None  # past: at once
    assert due_ms(timedelta(seconds=0), None, NOW) is None
    assert due_ms(timedelta(minutes=1), None, NOW) == NOW * 1000 + 60_000
    with pytest.raises(ValueError, match="year 9999"):
        due_ms(10**12, None, NOW)


def test_send_many_takes_one_delay_for_all_or_one_each() -> None:
    assert due_times(2, 5, None, NOW) == [NOW * 1000 + 5000] * 2
    assert due_times(2, [0, 5], None, NOW) == [None, NOW * 1000 + 5000]
    with pytest.raises(ValueError, match="delay has 1 values for 2 entries"):
        due_times(2, [5], None, NOW)


def test_a_delayed_entry_has_at_most_max_fields() -> None:
    fields: dict[str, str | bytes] = {f"f{i}": "v" for i in range(MAX_DELAYED_FIELDS)}
    with pytest.raises(ValueError, match="at most"):
        scheduled_fields(fields, 1)


# -- the in-memory app -------------------------------------------------------------------------

registry = Registry(group="timers-app")
seen: list[tuple[str, Any]] = []


@registry.stream_handler("jobs")
def job(msg: Message) -> None:
    seen.append(("job", msg["n"]))


@registry.periodic("reports", every=timedelta(minutes=5))
def report(msg: Message) -> None:
    seen.append(("report", msg.tick))


@registry.periodic("digest", every=60, catch_up="all")
def digest(msg: Message) -> None:
    seen.append(("digest", msg.tick))


@registry.periodic("nightly", cron="0 3 * * *", tz="Europe/Berlin", catch_up="none")
def nightly(msg: Message) -> None:
    seen.append(("nightly", msg.tick))


def kinds(kind: str) -> list[Any]:
    return [value for k, value in seen if k == kind]


@pytest.fixture
async def app(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # nothing may reach a Redis
    seen.clear()
    async with InMemoryApp(registry) as app:
        yield app


async def test_a_delayed_send_waits_for_the_fake_clock(app: InMemoryApp) -> None:
    mid = await job.send({"n": "1"}, delay=30)
    await app.run_until_idle()
    assert kinds("job") == [] and list(app.scheduled("jobs")) == [mid]
    app.advance(29.99)
    await app.run_until_idle()
    assert kinds("job") == []
    app.advance(0.01)
    await app.run_until_idle()
    assert kinds("job") == ["1"] and app.scheduled("jobs") == {}
    [(_, fields)] = app.entries("jobs")
    assert fields["_st_mid"] == mid.encode() and abs(int(fields["_st_due"]) - app.clock.now * 1000) < 1


async def test_drain_moves_the_clock_to_delayed_entries(app: InMemoryApp) -> None:
    eta = datetime.fromtimestamp(app.clock.now, timezone.utc) + timedelta(hours=2)
    await job.send({"n": "late"}, eta=eta)
    await job.send({"n": "soon"}, delay=timedelta(seconds=1))
    await app.drain()
    assert kinds("job") == ["soon", "late"]


async def test_periodic_ticks_come_on_time_while_workers_run(app: InMemoryApp) -> None:
    app.advance(3600)
    await app.run_until_idle()
    ticks = kinds("report")
    assert len(ticks) == 12 and all(t.minute % 5 == 0 and t.second == 0 for t in ticks)
    assert len(kinds("digest")) == 60


async def test_after_an_outage_the_catch_up_policy_decides(app: InMemoryApp) -> None:
    app.advance(3600, outage=True)
    await app.run_until_idle()
    assert len(kinds("report")) == 1  # latest: one run for the gap
    assert len(kinds("digest")) == 60  # all
    app.advance(2 * 86400, outage=True)
    await app.run_until_idle()
    assert kinds("nightly") == []  # none: the missed 03:00 runs are skipped


async def test_a_nightly_cron_in_berlin_runs_at_three_local_time(app: InMemoryApp) -> None:
    app.advance(3 * 86400)
    await app.run_until_idle()
    runs = kinds("nightly")
    assert len(runs) == 3
    assert {t.astimezone(ZoneInfo("Europe/Berlin")).hour for t in runs} == {3}
