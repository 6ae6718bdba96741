"""Settled batches and lost entries as tallies (pure logic): the histogram state against
prometheus_client's own ``Histogram``, actor mode's growth between two polls of an actor,
restarts included, and the lost-entries counter of both modes."""

from __future__ import annotations

import copy
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from streamtasks.observe.metrics import SettledObserver
from streamtasks.worker.events import Lost
from streamtasks.worker.tally import DURATION_BUCKETS, Buckets, LaneTally, Tally, growth

observations = st.lists(
    st.one_of(st.floats(0, 400, allow_nan=False), st.sampled_from(DURATION_BUCKETS)), max_size=50
)


class _Exposed(Collector):
    def __init__(self, buckets: Buckets) -> None:
        self.buckets = buckets

    def collect(self):  # type: ignore[no-untyped-def]
        family = HistogramMetricFamily("h", "h", labels=[])
        family.add_metric([], self.buckets.cumulative(), self.buckets.total)
        yield family


def _samples(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if line.startswith(("h_bucket", "h_count", "h_sum"))]


@given(observations)
def test_buckets_expose_what_prometheus_clients_histogram_exposes(values: list[float]) -> None:
    """Bucket bounds included (``le`` means at most): the same ``_bucket``, ``_count`` and
    ``_sum`` lines as prometheus_client's ``Histogram`` fed the same values."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    buckets = Buckets.empty(DURATION_BUCKETS)
    reference = Histogram("h", "h", buckets=DURATION_BUCKETS, registry=theirs)
    for v in values:
        buckets.observe(v)
        reference.observe(v)
    ours.register(_Exposed(buckets))
    assert _samples(ours) == _samples(theirs)


def lane(batches: int, handled: int = 0, latencies: tuple[float, ...] = ()) -> LaneTally:
    tally = LaneTally("s", "h", handled=handled, batches=batches)
    for v in latencies:
        tally.latency.observe(v)
    return tally


def tally(incarnation: str, *lanes: LaneTally) -> Tally:
    return Tally(incarnation, {lane.stream: lane for lane in lanes})


def test_an_actor_seen_for_the_first_time_counts_everything_it_did() -> None:
    [grown] = growth(None, tally("x", lane(3, 120, (0.1, 0.2)))).lanes
    assert (grown.batches, grown.handled, grown.latency.count) == (3, 120, 2)  # the first poll's work


def test_growth_between_two_polls() -> None:
    [grown] = growth(tally("x", lane(3, 100, (0.1,))), tally("x", lane(5, 150, (0.1, 7.0)))).lanes
    assert (grown.batches, grown.handled, grown.latency.count) == (2, 50, 1)
    assert grown.latency.total == 7.0


def test_nothing_new_reports_nothing() -> None:
    assert growth(tally("x", lane(3, 100)), tally("x", lane(3, 100))).empty


def test_an_actor_restarted_by_ray_counts_from_zero_again() -> None:
    """A new incarnation: all it did, even when it already did more than the old one."""
    [grown] = growth(tally("old", lane(50, 5000)), tally("new", lane(60, 6000))).lanes
    assert (grown.batches, grown.handled) == (60, 6000)


steps = st.tuples(st.integers(0, 20), st.integers(0, 500), st.integers(0, 3), st.booleans())


@given(st.lists(steps, min_size=1, max_size=30))
def test_reported_growth_adds_up_to_the_work_done_across_restarts(
    polls: list[tuple[int, int, int, bool]],
) -> None:
    """Between two polls an actor settles some batches and finds some entries lost, sometimes
    after Ray restarted it (a new incarnation, from 0). What the poller adds up is exactly the
    work done and the entries lost: no counter ever goes down."""
    actor, seen, total, done = Tally("0"), None, Tally("metrics"), [0, 0, 0]
    for restarts, (batches, handled, lost, restarted) in enumerate(polls):
        if restarted:
            actor = Tally(str(restarts + 1))
        for i in range(batches):
            actor.lane("s", "h").record(1, 0.01, 0, 0, [f"{i}-0"] * (handled // max(1, batches)))
        if lost:
            actor(Lost("s", "h", lost, "trimmed or deleted before delivery"))
        done = [done[0] + batches, done[1] + batches * (handled // max(1, batches)), done[2] + lost]
        grown = growth(seen, actor)
        for lane_grown in grown.lanes:
            assert not lane_grown.empty
            assert (
                min(lane_grown.batches, lane_grown.handled, lane_grown.lost, *lane_grown.latency.counts) >= 0
            )
        total.add(grown)
        seen = copy.deepcopy(actor)  # what a poll through Ray receives: a copy
    got = total.lanes.get("s", LaneTally("s", "h"))
    assert [got.batches, got.handled, got.lost] == done


def _lost_metric(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("streamtasks_entries_lost_total", {"stream": "s"})


def test_lost_entries_are_counted_from_the_workers_own_events_in_task_mode() -> None:
    registry = CollectorRegistry()
    worker = Tally("w")  # the worker's own tally, a listener of its events
    SettledObserver(registry, worker)
    worker(Lost("s", "h", 3, "pending entries trimmed or deleted"))
    worker(Lost("s", "h", 2, "trimmed or deleted before delivery"))
    assert _lost_metric(registry) == 5


def test_an_actor_restarted_after_finding_entries_lost_does_not_take_the_lost_count_back() -> None:
    """Actor mode: the worker process adds what each actor's tally grew by. An actor that lost
    4 entries, then was restarted by Ray and lost 1 more: the counter reads 5, not 1."""
    registry = CollectorRegistry()
    pool = Tally("pool")  # the worker process' tally: what its actors' tallies grew by
    SettledObserver(registry, pool)
    before = Tally("old")
    before(Lost("s", "h", 4, "trimmed or deleted before delivery"))
    pool.add(growth(None, before))
    after = Tally("new")
    after(Lost("s", "h", 1, "pending entries trimmed or deleted"))
    pool.add(growth(before, after))
    assert _lost_metric(registry) == 5


@given(st.lists(st.tuples(st.integers(0, 120_000), st.integers(0, 3)), max_size=60))
def test_a_batchs_latencies_are_observed_as_if_one_entry_at_a_time(ages: list[tuple[int, int]]) -> None:
    """Entries of one millisecond are observed together: the latency histogram ends as if each
    entry had been observed alone (ages in ms before the settle, sequence numbers within one ms)."""
    now_ms = 1_764_440_000_000
    ids = [f"{now_ms - age}-{seq}" for age, seq in ages]
    tally = LaneTally("s", "h")
    alone = Buckets.empty(tally.latency.bounds)
    with mock.patch("streamtasks.worker.tally.time.time", return_value=now_ms / 1000):
        tally.record(len(ids), 0.01, 0, 0, ids)
    for age, _ in ages:
        alone.observe(max(0.0, now_ms / 1000 - (now_ms - age) / 1000))
    assert tally.handled == len(ids)
    assert tally.latency.counts == alone.counts
    assert tally.latency.total == pytest.approx(alone.total)
