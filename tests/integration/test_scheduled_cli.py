"""What the user sees of delayed entries and periodic handlers, against a real redis-server:
``streamtasks send --delay/--eta``, ``scheduled list|cancel`` (hypothesis over their values),
``status --json`` and ``/metrics`` numbers, and keys written by someone else reported as
problems naming the key, never an exception."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from streamtasks import Producer
from streamtasks.cli import main
from streamtasks.keys import delayed_fields_key, delayed_key, tick_key
from streamtasks.observe.inspect import gather_status
from streamtasks.observe.scheduled import read_schedule

pytestmark = pytest.mark.integration
_examples = itertools.count()


def cli(redis_url: str, *args: str) -> Any:
    return CliRunner().invoke(main, [*args, "--redis-url", redis_url], catch_exceptions=False)


async def test_send_with_a_delay_and_list_and_cancel(redis: Redis, redis_url: str) -> None:
    sent = await asyncio.to_thread(cli, redis_url, "send", "orders", "n=1", "--delay", "60")
    assert sent.exit_code == 0, sent.output
    mid = sent.output.strip()
    eta = await asyncio.to_thread(
        cli, redis_url, "send", "orders", "n=2", "--eta", "2099-01-01T09:00:00+01:00"
    )
    assert eta.exit_code == 0, eta.output
    listed = await asyncio.to_thread(cli, redis_url, "scheduled", "list", "orders", "--json")
    doc = json.loads(listed.output)
    assert doc["total"] == 2 and [e["message_id"] for e in doc["entries"]] == [mid, eta.output.strip()]
    assert doc["entries"][0]["fields"]["n"] == "1" and doc["entries"][1]["due"].startswith(
        "2099-01-01T08:00:00"
    )
    table = await asyncio.to_thread(cli, redis_url, "scheduled", "list", "orders")
    assert "orders: 2 delayed entries" in table.output and mid in table.output
    gone = await asyncio.to_thread(
        cli, redis_url, "scheduled", "cancel", "orders", "--id", mid, "--id", "nope"
    )
    assert gone.exit_code == 0 and "cancelled 1 delayed entry of orders" in gone.output
    refused = await asyncio.to_thread(cli, redis_url, "scheduled", "cancel", "orders", "--all")
    assert refused.exit_code == 2 and "--yes" in refused.output  # not on a terminal
    everything = await asyncio.to_thread(cli, redis_url, "scheduled", "cancel", "orders", "--all", "--yes")
    assert "cancelled 1 delayed entry" in everything.output and not await redis.exists(delayed_key("orders"))


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--delay", "-1"], "finite number of seconds >= 0"),
        (["--delay", "nan"], "finite number of seconds >= 0"),
        (["--delay", "soon"], "is not a number of seconds"),
        (["--eta", "2030-01-01T09:00:00"], "has no time zone"),
        (["--eta", "tomorrow"], "is not an ISO-8601 time"),
        (["--delay", "1", "--eta", "2030-01-01T09:00:00Z"], "not both"),
    ],
)
def test_bad_delays_are_usage_errors(redis_url: str, args: list[str], said: str) -> None:
    result = cli(redis_url, "send", "orders", "n=1", *args)
    assert result.exit_code == 2 and said in result.output and "Traceback" not in result.output


async def _cancel_scenario(redis_url: str, present: list[str], asked: list[str]) -> None:
    stream = f"cancelprop{next(_examples)}"
    redis = Redis.from_url(redis_url)
    try:
        for mid in present:
            await Producer(redis).send(stream, {"k": "v"}, message_id=mid, delay=3600)
        args = [arg for mid in asked for arg in ("--id", mid)]
        result = await asyncio.to_thread(cli, redis_url, "scheduled", "cancel", stream, *args)
        if not asked or any(not m or len(m) > 512 for m in asked):
            assert result.exit_code == 2 and "Traceback" not in result.output
            assert await redis.zcard(delayed_key(stream)) == len(set(present))
            return
        assert result.exit_code == 0, result.output
        hit = set(present) & set(asked)
        assert f"cancelled {len(hit)} delayed entr" in result.output
        left = {m.decode() for m in await redis.zrange(delayed_key(stream), 0, -1)}
        assert left == set(present) - set(asked)
        assert {k.decode() for k in await redis.hkeys(delayed_fields_key(stream))} == left
    finally:
        await redis.delete(delayed_key(stream), delayed_fields_key(stream))
        await redis.aclose()


ids = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(present=st.lists(ids.filter(bool), max_size=5), asked=st.lists(ids, max_size=4), extra=st.booleans())
def test_cancel_removes_exactly_the_named_ids(
    redis_url: str, present: list[str], asked: list[str], extra: bool
) -> None:
    """Any message ids given to --id: the present ones are cancelled, the others change
    nothing; an empty one is a usage error (exit 2) that cancels nothing."""
    asked = asked + present[:1] if extra else asked
    asyncio.run(_cancel_scenario(redis_url, present, asked))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(count=st.one_of(st.integers(-5, 20_000), st.text(max_size=6)))
def test_list_count_is_checked(redis_url: str, count: Any) -> None:
    """Any --count: a whole number from 1 to 10,000 (as click reads it: Python's int(), so
    " 7", "+7" and "1_0" too) lists; anything else is a usage error, never a traceback."""
    result = cli(redis_url, "scheduled", "list", "nothing-here", "--count", str(count), "--json")
    number = _as_int(str(count))
    if number is not None and 1 <= number <= 10_000:
        assert result.exit_code == 0 and json.loads(result.output)["total"] == 0
    else:
        assert result.exit_code == 2 and "Traceback" not in result.output


def _as_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


# -- status and metrics -------------------------------------------------------------------------


async def test_status_shows_scheduled_entries_and_periodic_ticks(redis: Redis) -> None:
    await redis.xgroup_create("reports", "g", id="0", mkstream=True)
    await Producer(redis).send_many("reports", [{"n": "1"}, {"n": "2"}], delay=[30, 60])
    now_ms = int(time.time() * 1000)
    await redis.hset(
        tick_key("reports"),
        mapping={
            "last": now_ms - 1000,
            "next": now_ms + 299_000,
            "schedule": "every 5m",
            "claimed_at": now_ms,
        },
    )
    status = await gather_status(redis, ["reports"], "g")
    [s] = status["streams"]
    assert s["scheduled"] == 2 and 29 < s["next_due_in"] <= 30
    assert s["periodic"]["schedule"] == "every 5m" and 298 < s["periodic"]["next_tick_in"] <= 299
    assert status["problems"] == []


hostile = st.one_of(
    st.binary(max_size=30), st.sampled_from([b"", b"-1", b"1e3", b"99999999999999999999", b"\xff"])
)


async def _hostile_scenario(redis_url: str, last: bytes, nxt: bytes, score: float, wrong_type: bool) -> None:
    stream = f"hostile{next(_examples)}"
    redis = Redis.from_url(redis_url)
    try:
        await redis.hset(tick_key(stream), mapping={b"last": last, b"next": nxt, b"schedule": b"\xff\xfe"})
        if wrong_type:
            await redis.set(delayed_key(stream), b"not a sorted set")
        else:
            await redis.zadd(delayed_key(stream), {b"m": score})
        found = await read_schedule(redis, stream, time.time())  # never raises
        problems = found["schedule_problems"]
        assert all(stream in p and "\n" not in p for p in problems)
        if wrong_type:
            assert any(delayed_key(stream) in p for p in problems)
        good = lambda v: v.isdigit() and len(v) <= 15 and int(v) <= 253_402_300_799_999  # noqa: E731
        assert any("last" in p for p in problems) == (not good(last))
        assert found["periodic"]["last_tick"] == (int(last) / 1000 if good(last) else None)
        json.dumps(found)  # status --json can print it
    finally:
        await redis.delete(tick_key(stream), delayed_key(stream))
        await redis.aclose()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(last=hostile, nxt=hostile, score=st.floats(allow_nan=False), wrong_type=st.booleans())
def test_keys_written_by_others_are_problems_naming_the_key(
    redis_url: str, last: bytes, nxt: bytes, score: float, wrong_type: bool
) -> None:
    asyncio.run(_hostile_scenario(redis_url, last, nxt, score, wrong_type))


async def test_metrics_show_scheduled_entries_moves_and_ticks(redis: Redis) -> None:
    from streamtasks import Message, Registry
    from streamtasks.observe.metrics import WorkerMetrics
    from streamtasks.worker import InlineExecutor, Worker
    from streamtasks.worker.events import Moved, Ticked

    registry = Registry(group="g")

    @registry.periodic("reports", every=300)
    def reports(msg: Message) -> None: ...

    worker = Worker(registry, redis, InlineExecutor())
    await Producer(redis).send_many("reports", [{"n": "1"}, {"n": "2"}], delay=[30, 60])
    await redis.hset(
        tick_key("reports"), mapping={"last": "1750000000000", "next": "", "schedule": "every 5m"}
    )
    worker.events.emit(Moved("reports", reports.spec.name, 7))
    worker.events.emit(Ticked("reports", reports.spec.name, 2, 3))
    text = (await WorkerMetrics(worker).exposition()).decode()
    assert 'streamtasks_scheduled_entries{stream="reports"} 2.0' in text
    assert 'streamtasks_scheduled_next_due_seconds{stream="reports"} 2' in text  # 29.x s
    assert 'streamtasks_periodic_last_tick_timestamp_seconds{stream="reports"} 1.75e+09' in text
    assert 'streamtasks_delayed_moved_total{stream="reports"} 7.0' in text
    assert 'streamtasks_periodic_ticks_total{stream="reports"} 2.0' in text
    assert 'streamtasks_periodic_ticks_skipped_total{stream="reports"} 3.0' in text
