"""Unit tests of the worker's pure stages: no Redis, no Ray, no sleeping.

Settlement plan, batch sizing and lane bookkeeping, read plan and restart point, batch
deadline, the retry decisions of every path, Redis health transitions, loop supervision,
shutdown grouping and the snapshot a heartbeat is made of.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from streamtasks import Message, Registry
from streamtasks.registry import HandlerSpec
from streamtasks.retry import Dead, ErrorInfo, RetryLater, RetryPolicy
from streamtasks.streams import restart_point
from streamtasks.worker.dispatch import DEADLINE_SLACK_S, batch_deadline
from streamtasks.worker.events import LoopFailed, RedisDown, RedisUp
from streamtasks.worker.health import CONFIRM_S, INCIDENT_WINDOW_S, RedisHealth
from streamtasks.worker.lanes import FIRST_READ_COUNT, Lane
from streamtasks.worker.read import BUSY_BLOCK, read_plan
from streamtasks.worker.recovery import split_exhausted
from streamtasks.worker.run import BatchResult
from streamtasks.worker.settle import Settlement
from streamtasks.worker.shutdown import by_attempt
from streamtasks.worker.supervise import Supervisor

ERROR = ErrorInfo("ValueError", "bad")


def _spec(stream: str = "s", **options: object) -> HandlerSpec:
    registry = Registry(group="unit")

    def handle(msg: Message) -> None: ...

    registry.stream_handler(stream, **options)(handle)  # type: ignore[arg-type]
    return registry.handlers[stream]


def _entries(n: int, size: int = 10, attempt: int = 1) -> list[tuple[str, list[bytes], int]]:
    return [(f"1-{i}", [b"k", b"v" * size], attempt) for i in range(n)]


# -- settlement -------------------------------------------------------------------------------


def test_settlement_plan_sorts_every_entry_into_done_retry_or_dead() -> None:
    entries = [("1-0", [], 1), ("1-1", [], 2), ("1-2", [], 1), ("1-3", [], 3), ("1-4", [], 1)]
    result = BatchResult(5, {2: RetryLater(2.0, ERROR), 3: Dead(ERROR), 4: RetryLater(2.0, ERROR)})
    plan = Settlement.of(entries, result, visibility_ms=30_000)
    assert plan.done == ["1-0", "1-1"]
    assert plan.retried_before == ["1-1"]  # done after a failure: its failure record goes
    assert plan.delays == {28_000: ["1-2", "1-4"]}  # claimable exactly 2 s from now
    assert plan.dead == [(entries[3], ERROR)]
    assert plan.retried == 2


def test_a_retry_longer_than_the_visibility_timeout_is_claimable_at_once() -> None:
    plan = Settlement.of([("1-0", [], 1)], BatchResult(1, {0: RetryLater(90.0, ERROR)}), 30_000)
    assert plan.delays == {0: ["1-0"]}


# -- lanes --------------------------------------------------------------------------------


def test_batch_size_shrinks_with_big_entries_and_starts_small_on_an_unmeasured_stream() -> None:
    lane = Lane(_spec(batch_size=500), prefetch=4, max_batch_bytes=1_000_000)
    assert lane.batch_size == FIRST_READ_COUNT  # nothing measured yet
    lane.sample_size(_entries(3, size=100_000))
    assert lane.batch_size == 1_000_000 // lane.entry_bytes < 500
    lane.sample_size(_entries(3, size=10))
    assert lane.entry_bytes < 100_000  # a running estimate, not the first sample forever
    assert Lane(_spec(batch_size=500), prefetch=4, max_batch_bytes=0).batch_size == 500


def test_a_lane_queues_batches_holds_their_ids_and_counts_free_room() -> None:
    lane = Lane(_spec(batch_size=4, max_in_flight=2), prefetch=1)
    assert lane.free_batches == 3
    lane.accept(_entries(10))
    assert [len(b.entries) for b in lane.queue] == [4, 4, 2]
    assert len(lane.held) == 10 and lane.free_batches == 0 and lane.can_start
    taken = lane.take_queued()
    assert len(taken) == 10 and not lane.queue and not lane.held


def test_lease_bookkeeping_renews_only_stale_entries() -> None:
    lane = Lane(_spec(), prefetch=1)
    lane.accept(_entries(3))
    now = max(lane.held.values())
    assert lane.stale(now + 5, period=10) == []
    stale = lane.stale(now + 10, period=10)
    assert sorted(stale) == ["1-0", "1-1", "1-2"]
    lane.renewed(["1-0"], now + 10)
    lane.release(["1-2"])
    assert lane.stale(now + 15, period=10) == ["1-1"]


# -- read --------------------------------------------------------------------------------


def test_restart_point_after_a_lost_group() -> None:
    assert restart_point(None, "5-0") == ("0", True)  # no stream: Redis lost it
    assert restart_point("9-0", None) == ("0", False)  # we read nothing: from the start
    assert restart_point("9-0", "5-3") == ("5-3", False)  # just after what we read
    assert restart_point("4-0", "5-3") == ("0", True)  # ids went backwards: a new stream


def test_read_plan_blocks_briefly_while_a_busy_lane_is_left_out() -> None:
    a = Lane(_spec("a", batch_size=100), prefetch=1)
    b = Lane(_spec("b", batch_size=300), prefetch=1)
    assert read_plan([a, b], all_lanes=2, block=1.0) == ({a: 100, b: 300}, 1.0)
    assert read_plan([a], all_lanes=2, block=1.0) == ({a: 100}, BUSY_BLOCK)


# -- dispatch and retry decisions ---------------------------------------------------------


def test_batch_deadline_counts_the_calls_a_batch_makes() -> None:
    assert batch_deadline(_spec(), 10) is None
    assert batch_deadline(_spec(timeout=2.0), 10) == 2.0 * 10 + DEADLINE_SLACK_S  # sync: one at a time
    assert batch_deadline(_spec(timeout=2.0, batch=True), 10) == 2.0 + DEADLINE_SLACK_S


def test_one_policy_decides_for_a_whole_failed_batch_and_for_the_delivery_limit() -> None:
    policy = RetryPolicy(max_retries=2, backoff_base=1.0, backoff_max=1.0)
    outcomes = policy.decide_all(TimeoutError("slow"), [1, 2, 3])
    assert isinstance(outcomes[0], RetryLater) and isinstance(outcomes[1], RetryLater)
    assert isinstance(outcomes[2], Dead)  # its last attempt
    assert policy.delivery_limit == 3
    assert not policy.over_delivery_limit(3) and policy.over_delivery_limit(4)
    assert policy.delivery_limit_error().reason == "delivery_limit"


def test_reclaimed_entries_past_the_delivery_limit_are_split_off() -> None:
    lane = Lane(_spec(max_retries=1), prefetch=1)
    fresh, exhausted = split_exhausted(lane, [("1-0", [], 1), ("1-1", [], 2), ("1-2", [], 3)])
    assert [e[0] for e in fresh] == ["1-0", "1-1"] and [e[0] for e in exhausted] == ["1-2"]


def test_hand_back_groups_entries_by_attempt() -> None:
    assert by_attempt([("1-0", [], 1), ("1-1", [], 2), ("1-2", [], 1)]) == {1: ["1-0", "1-2"], 2: ["1-1"]}


# -- Redis health ------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_every_outage_logs_its_start_and_end_once(caplog: pytest.LogCaptureFixture) -> None:
    clock, events = Clock(), []
    health = RedisHealth(events.append, clock)
    with caplog.at_level(logging.WARNING, "streamtasks.worker"):
        health.failure(ConnectionError("refused"), "reading")
        health.failure(ConnectionError("refused"), "settling")  # same outage: not again
        clock.now += 3
        health.ok()
    assert [type(e) for e in events] == [RedisDown, RedisUp]
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "Redis unavailable while reading",
        "Redis is back after 3.0s",
    ]


def test_a_second_outage_soon_after_a_recovery_is_reported_once_it_lasts() -> None:
    clock, events = Clock(), []
    health = RedisHealth(events.append, clock)
    health.failure(ConnectionError("x"), "reading")
    health.ok()
    clock.now += INCIDENT_WINDOW_S / 2  # a new failure 5 s after recovering
    health.failure(ConnectionError("x"), "reading")
    assert [type(e) for e in events] == [RedisDown, RedisUp]  # maybe a stale pooled connection
    clock.now += CONFIRM_S
    health.failure(ConnectionError("x"), "reading")
    clock.now += 14
    health.ok()
    assert [type(e) for e in events] == [RedisDown, RedisUp, RedisDown, RedisUp]


def test_a_stale_connection_blip_right_after_a_recovery_stays_quiet() -> None:
    clock, events = Clock(), []
    health = RedisHealth(events.append, clock)
    health.failure(ConnectionError("x"), "reading")
    health.ok()
    clock.now += 1
    health.failure(ConnectionError("stale"), "settling")
    health.ok()
    assert [type(e) for e in events] == [RedisDown, RedisUp]


# -- supervision -------------------------------------------------------------------------


async def test_a_failing_loop_is_reported_restarted_and_cleared_when_it_works_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("streamtasks.worker.supervise.RESTART_FIRST_S", 0.01)
    events: list[object] = []
    supervisor = Supervisor(events.append)
    runs = 0
    recovered = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise PermissionError("NOPERM this user has no permissions to run the 'xautoclaim' command")
        supervisor.healthy("reclaim")
        recovered.set()
        await asyncio.sleep(3600)

    supervisor.spawn("reclaim", flaky)
    await asyncio.wait_for(recovered.wait(), 5)
    assert runs == 3
    assert [e.loop for e in events if isinstance(e, LoopFailed)] == ["reclaim", "reclaim"]
    assert supervisor.failing == {}
    await supervisor.close()


async def test_a_loop_that_keeps_failing_stays_visible() -> None:
    supervisor = Supervisor(lambda _: None)

    async def broken() -> None:
        raise RuntimeError("no")

    supervisor.spawn("lease", broken)
    await asyncio.sleep(0.05)
    assert supervisor.failing == {"lease": "RuntimeError: no"}
    await supervisor.close()


async def test_close_stops_a_loop_even_when_its_cancellation_is_lost() -> None:
    """``asyncio.wait_for`` before Python 3.12 can swallow a cancellation; a loop that checks
    ``closing`` still ends, so a drain never hangs on it."""
    supervisor = Supervisor(lambda _: None)
    turns = 0

    async def swallows_cancellation() -> None:
        nonlocal turns
        while not supervisor.closing:
            turns += 1
            with contextlib.suppress(asyncio.CancelledError):  # a swallowed cancellation
                await asyncio.sleep(0.01)

    supervisor.spawn("heartbeat", swallows_cancellation)
    await asyncio.sleep(0.05)
    await asyncio.wait_for(supervisor.close(), 2)
    assert turns > 0
