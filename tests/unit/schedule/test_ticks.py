"""The tick arithmetic of periodic handlers (streamtasks.schedule), with no services: every=
on the epoch grid, cron= against a brute-force minute scan (UTC, and across the DST changes of
Europe/Berlin and America/New_York), and the catch-up policies' counts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamtasks.periodic import Periodic
from streamtasks.schedule import (
    MAX_CATCH_UP,
    ON_TIME_MS,
    plan_ticks,
    tick_after,
    tick_at_or_before,
    tick_message_id,
    ticks_between,
)

MINUTE = 60_000
HOUR = 60 * MINUTE
ZONES = ("Europe/Berlin", "America/New_York")
#: 2024's DST changes: (zone, local midnight of the change day) for both directions.
DST_DAYS = {
    "Europe/Berlin": (datetime(2024, 3, 31), datetime(2024, 10, 27)),
    "America/New_York": (datetime(2024, 3, 10), datetime(2024, 11, 3)),
}


def ms(dt: datetime) -> int:
    return round(dt.timestamp() * 1000)


def utc(*args: int) -> int:
    return ms(datetime(*args, tzinfo=timezone.utc))  # type: ignore[misc]


# -- cron expressions and a brute-force reading of them ---------------------------------------


def field(values: list[int]) -> st.SearchStrategy[tuple[str, set[int]]]:
    """A cron field over ``values`` and the set it stands for: *, */k, a, a-b, a,b."""
    lo, hi = values[0], values[-1]
    star = st.just(("*", set(values)))
    step = st.integers(2, max(2, (hi - lo) // 2)).map(
        lambda k: (f"*/{k}", {v for v in values if (v - lo) % k == 0})
    )
    one = st.sampled_from(values).map(lambda a: (str(a), {a}))
    span = st.tuples(st.sampled_from(values), st.sampled_from(values)).map(
        lambda ab: (f"{min(ab)}-{max(ab)}", set(range(min(ab), max(ab) + 1)))
    )
    pair = st.tuples(st.sampled_from(values), st.sampled_from(values)).map(
        lambda ab: (f"{ab[0]},{ab[1]}", {ab[0], ab[1]})
    )
    return st.one_of(star, step, one, span, pair)


@st.composite
def crons(draw: st.DrawFn, hours: bool = True) -> tuple[str, set[int], set[int], set[int]]:
    """``(expression, minutes, hours, weekdays)``; day of month and month are ``*`` (cron ORs
    day-of-month with day-of-week when both are restricted: kept out of the brute force)."""
    minute, minutes = draw(field(list(range(60))))
    hour, hour_set = draw(field(list(range(24)))) if hours else ("*", set(range(24)))
    dow, dows = draw(st.one_of(st.just(("*", set(range(7)))), field(list(range(7)))))
    return f"{minute} {hour} * * {dow}", minutes, hour_set, dows


def brute_force(expr: tuple[str, set[int], set[int], set[int]], zone: str, start: int, end: int) -> list[int]:
    """Every UTC minute in (start, end] whose wall-clock time in ``zone`` matches."""
    _, minutes, hours, dows = expr
    tz = ZoneInfo(zone)
    out = []
    for t in range(start - start % MINUTE + MINUTE, end + 1, MINUTE):
        local = datetime.fromtimestamp(t / 1000, tz)
        if local.minute in minutes and local.hour in hours and (local.isoweekday() % 7) in dows:
            out.append(t)
    return out


def all_ticks(p: Periodic, start: int, end: int) -> list[int]:
    """The ticks in (start, end] by stepping with tick_after."""
    out, t = [], tick_after(p, start)
    while t is not None and t <= end:
        out.append(t)
        t = tick_after(p, t)
    return out


starts = st.integers(utc(2020, 1, 1), utc(2030, 1, 1))


@settings(max_examples=60, deadline=None)
@given(expr=crons(), start=starts)
def test_cron_in_utc_matches_a_minute_by_minute_scan(
    expr: tuple[str, set[int], set[int], set[int]], start: int
) -> None:
    p = Periodic.of(None, expr[0])
    end = start + 3 * 24 * HOUR
    assert all_ticks(p, start, end) == brute_force(expr, "UTC", start, end)


@settings(max_examples=40, deadline=None)
@given(
    expr=crons(hours=False),
    zone=st.sampled_from(ZONES),
    change=st.integers(0, 1),
    offset=st.integers(-36, 12),
)
def test_hourly_or_finer_cron_keeps_its_minutes_across_dst(
    expr: tuple[str, set[int], set[int], set[int]], zone: str, change: int, offset: int
) -> None:
    """A job that runs at least hourly runs at the matching wall-clock minutes, through both
    DST changes (Debian cron's rule): exactly what the minute scan finds, repeated hour included."""
    p = Periodic.of(None, expr[0], tz=zone)
    day = DST_DAYS[zone][change].replace(tzinfo=ZoneInfo(zone))
    start = ms(day) + offset * HOUR
    end = start + 48 * HOUR
    assert all_ticks(p, start, end) == brute_force(expr, zone, start, end)


@settings(max_examples=60, deadline=None)
@given(
    zone=st.sampled_from(ZONES), minute=st.integers(0, 59), hour=st.integers(0, 23), change=st.integers(0, 1)
)
def test_a_daily_job_runs_once_every_day_across_dst(zone: str, minute: int, hour: int, change: int) -> None:
    """``M H * * *`` in a DST zone: one tick per local day, on the days the clock skips or
    repeats its time too; each at its wall-clock time, or, in the skipped hour, at the first
    minute after it."""
    tz = ZoneInfo(zone)
    p = Periodic.of(None, f"{minute} {hour} * * *", tz=zone)
    day = DST_DAYS[zone][change]
    start = ms((day - timedelta(days=2)).replace(tzinfo=tz))
    end = ms((day + timedelta(days=3)).replace(tzinfo=tz))  # five local days, one of them 23 or 25 h
    ticks = all_ticks(p, start - 1, end - 1)
    local = [datetime.fromtimestamp(t / 1000, tz) for t in ticks]
    assert [d.date() for d in local] == [(day + timedelta(days=i - 2)).date() for i in range(5)]
    for d in local:
        skipped = d.date() == day.date() and (d.hour, d.minute) != (hour, minute)
        assert (d.hour, d.minute) == (hour, minute) or (skipped and d.minute == 0)


def test_a_time_in_the_skipped_hour_runs_right_after_the_change() -> None:
    p = Periodic.of(None, "30 2 * * *", tz="Europe/Berlin")
    start = ms(datetime(2024, 3, 30, 12, tzinfo=ZoneInfo("Europe/Berlin")))
    assert tick_after(p, start) == utc(2024, 3, 31, 1, 0)  # 03:00 CEST, the first minute after


def test_a_time_in_the_repeated_hour_runs_once() -> None:
    p = Periodic.of(None, "30 2 * * *", tz="Europe/Berlin")
    start = ms(datetime(2024, 10, 26, 12, tzinfo=ZoneInfo("Europe/Berlin")))
    assert all_ticks(p, start, start + 24 * HOUR) == [utc(2024, 10, 27, 0, 30)]


@settings(max_examples=100, deadline=None)
@given(expr=crons(), zone=st.sampled_from(("UTC", *ZONES)), t=starts)
def test_at_or_before_and_after_bracket_any_time(
    expr: tuple[str, set[int], set[int], set[int]], zone: str, t: int
) -> None:
    p = Periodic.of(None, expr[0], tz=zone)
    before, after = tick_at_or_before(p, t), tick_after(p, t)
    assert before is not None and after is not None
    assert before <= t < after
    assert tick_after(p, before) == after  # nothing between them
    assert tick_at_or_before(p, before) == before


@given(every=st.integers(1, 10 * HOUR), t=st.integers(0, 2**45))
def test_every_ticks_on_the_epoch_grid(every: int, t: int) -> None:
    p = Periodic.of(timedelta(milliseconds=every), None)
    before, after = tick_at_or_before(p, t), tick_after(p, t)
    assert before is not None and after is not None
    assert before % every == 0 and before <= t < after == before + every


@given(
    every=st.integers(1000, HOUR),
    last=st.integers(0, 2**42),
    gap=st.integers(0, 5000),
    limit=st.integers(1, 50),
)
def test_ticks_between_are_the_newest_in_the_window(every: int, last: int, gap: int, limit: int) -> None:
    p = Periodic.of(every / 1000, None)
    upto = last + gap * every // 7
    ticks = ticks_between(p, last, upto, limit)
    grid = [t for t in range(last - last % every + every, upto + 1, every)]
    assert ticks == grid[-limit:] if grid else ticks == []


# -- catch-up ---------------------------------------------------------------------------------


@settings(max_examples=200)
@given(
    policy=st.sampled_from(("latest", "none", "all")),
    every=st.integers(1, 600),
    missed=st.integers(0, 3 * MAX_CATCH_UP),
    late=st.integers(0, 10_000),
)
def test_catch_up_counts(policy: str, every: int, missed: int, late: int) -> None:
    """After ``missed`` ticks went by with no ticker: all -> every one of them (at most
    MAX_CATCH_UP, the newest), latest -> one, none -> none (or the latest, when it is not
    late); the rest are skipped, and `upto` records the latest so none comes again. Ticks
    within ON_TIME_MS of the last claimed one were only late (a slow ticker): all of them run."""
    p = Periodic.of(every, None, catch_up=policy)
    step = every * 1000
    last = utc(2025, 1, 1) // step * step  # a tick (on the epoch grid)
    now = last + missed * step + min(late, step - 1)
    plan = plan_ticks(p, last, now)
    due = [last + i * step for i in range(1, missed + 1)]
    if not due:
        assert plan.ticks == () and plan.skipped == 0 and plan.upto == last
        return
    expected = {
        "all": due[-MAX_CATCH_UP:],
        "latest": due[-1:],
        "none": due[-1:] if now - due[-1] <= ON_TIME_MS else [],
    }[policy]
    if due[-1] - last <= ON_TIME_MS:  # a ticker that woke late, not an outage: every tick runs
        expected = due[-MAX_CATCH_UP:]
    assert list(plan.ticks) == expected
    assert plan.skipped == len(due) - len(expected)
    assert plan.upto == due[-1] and plan.next == due[-1] + step
    assert plan_ticks(p, plan.upto, now).ticks == ()  # claimed: nothing comes twice


def test_the_first_plan_starts_the_schedule_without_running_anything() -> None:
    p = Periodic.of(300, None)
    now = utc(2025, 1, 1, 12, 3)
    plan = plan_ticks(p, None, now)
    assert plan.ticks == () and plan.upto == utc(2025, 1, 1, 12, 0) and plan.next == utc(2025, 1, 1, 12, 5)


def test_cron_catch_up_all_takes_the_newest_ticks() -> None:
    p = Periodic.of(None, "*/5 * * * *", catch_up="all")
    last = utc(2025, 1, 1)
    plan = plan_ticks(p, last, last + 10 * 24 * HOUR)  # 2880 ticks missed
    assert len(plan.ticks) == MAX_CATCH_UP and plan.skipped == 2880 - MAX_CATCH_UP
    assert (
        plan.ticks[-1] == last + 10 * 24 * HOUR
        and plan.ticks[0] == plan.ticks[-1] - (MAX_CATCH_UP - 1) * 5 * MINUTE
    )


def test_tick_message_ids_derive_from_stream_and_tick() -> None:
    assert tick_message_id("reports", 1000) == tick_message_id("reports", 1000)
    assert (
        len({tick_message_id("reports", 1000), tick_message_id("reports", 2000), tick_message_id("r", 1000)})
        == 3
    )
    assert len(tick_message_id("reports", 1000)) == 32


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give every="),
        ({"every": 1, "cron": "* * * * *"}, "one of them"),
        ({"every": 0}, "whole number of milliseconds >= 1"),
        ({"every": float("nan")}, "whole number of milliseconds"),
        ({"every": 0.0005}, "whole number of milliseconds"),
        ({"every": "5"}, "seconds or a timedelta"),
        ({"every": 5, "tz": "Europe/Berlin"}, "tz= applies to cron="),
        ({"cron": "61 * * * *"}, "invalid cron expression '61 * * * *'"),
        ({"cron": "* * *"}, "invalid cron expression"),
        ({"cron": ""}, "cron must be a cron expression"),
        ({"cron": "* * * * *", "tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"cron": "* * * * *", "tz": "../../etc/passwd"}, "unknown time zone"),
        ({"every": 5, "catch_up": "some"}, "catch_up must be one of latest, none, all"),
    ],
)
def test_bad_declarations_are_one_line_errors(kwargs: dict[str, object], message: str) -> None:
    args = {"every": None, "cron": None, **kwargs}
    with pytest.raises(ValueError, match=None) as caught:
        Periodic.of(args.pop("every"), args.pop("cron"), **args)  # type: ignore[arg-type]
    assert message in str(caught.value) and "\n" not in str(caught.value)


@given(st.text(max_size=40))
def test_any_cron_text_is_accepted_or_refused_in_one_line(text: str) -> None:
    try:
        p = Periodic.of(None, text)
    except ValueError as exc:
        assert "\n" not in str(exc)
    else:
        assert tick_after(p, utc(2025, 1, 1)) is not None or p.cron is not None


def test_describe() -> None:
    assert Periodic.of(timedelta(minutes=5), None).describe() == "every 5m"
    assert Periodic.of(1.5, None).describe() == "every 1500ms"
    assert Periodic.of(None, "0 9 * * *", tz="Europe/Berlin").describe() == "cron '0 9 * * *' (Europe/Berlin)"
