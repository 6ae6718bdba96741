"""Priority levels and flow options as declared (pure): the streams a prioritized (and sharded)
handler serves, their names and Redis Cluster slots, where ``send(..., priority=k)`` writes,
and the admission plan of a limited batch."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from streamtasks import Message, Producer, Registry, keys
from streamtasks.fanout import declared_stream, level_target
from streamtasks.limits import RateLimit
from streamtasks.registry import HandlerSpec
from streamtasks.worker.flow import Admission, calls_wanted, permits_wanted, plan_admission, refill_chunk


def test_level_0_is_the_stream_itself_and_lower_levels_get_a_suffix() -> None:
    registry = Registry(group="g")

    @registry.stream_handler("orders", priorities=3, rate_limit="10/s", max_concurrency=2)
    def handle(msg: Message) -> None: ...

    assert registry.streams == ["orders", "orders:p1", "orders:p2"]
    p1 = registry.handlers["orders:p1"]
    assert (p1.level, p1.priorities, p1.priority_of, p1.dead_letter_stream) == (
        1,
        3,
        "orders",
        "orders:p1:dead",
    )
    assert p1.rate_limit == RateLimit(10, 1.0) and p1.max_concurrency == 2
    assert {declared_stream(s) for s in registry.handlers.values()} == {"orders"}
    assert registry.only(["orders"]).streams == registry.streams
    assert registry.only(["orders:p2"]).streams == ["orders:p2"]
    assert handle.spec.stream == "orders" and handle.spec.priorities == 3


def test_levels_and_shards_compose_and_each_shard_keeps_its_levels_in_its_slot() -> None:
    registry = Registry(group="g")

    @registry.stream_handler("orders", priorities=2, shards=3, dead_letter_stream="dlq")
    def handle(msg: Message) -> None: ...

    assert registry.streams == [
        "orders:{0}", "orders:{1}", "orders:{2}", "orders:p1:{0}", "orders:p1:{1}", "orders:p1:{2}",
    ]  # fmt: skip
    spec = registry.handlers["orders:p1:{2}"]
    assert (spec.shard_of, spec.priority_of, spec.level, spec.dead_letter_stream) == (
        "orders:p1", "orders", 1, "dlq:p1:{2}",
    )  # fmt: skip
    for name, one in registry.handlers.items():
        others = [one.dead_letter_stream, keys.failures_key(name, "g")]
        assert keys.same_slot_problem(name, others) is None
    assert key_slot(b"orders:p1:{2}") == key_slot(b"orders:{2}")
    assert keys.same_slot_problem("{orders}:p1", ["{orders}:p1:dead", "{orders}"]) is None
    assert declared_stream(spec) == "orders"


@pytest.mark.parametrize(
    ("stream", "base", "level"),
    [("orders", "orders", 0), ("orders:p1", "orders", 1), ("orders:p12:{3}", "orders", 12),
     ("orders:{3}", "orders", 0), ("orders:p0", "orders:p0", 0), ("a:pb", "a:pb", 0)],
)  # fmt: skip
def test_a_level_is_read_back_from_its_name(stream: str, base: str, level: int) -> None:
    assert keys.level_of(stream) == (base, level)


@given(st.from_regex(r"[a-z][a-z0-9_.\-]{0,20}", fullmatch=True), st.integers(0, 9), st.integers(0, 20))
def test_level_names_round_trip_with_and_without_shards(base: str, level: int, shard: int) -> None:
    name = keys.level_stream(base, level)
    assert keys.level_of(name) == (base, level)
    assert keys.level_of(keys.shard_stream(name, shard)) == (base, level)


async def test_send_writes_to_its_level_and_rejects_a_level_the_handler_lacks() -> None:
    registry = Registry(group="g")

    @registry.stream_handler("orders", priorities=3)
    def handle(msg: Message) -> None: ...

    @registry.stream_handler("plain")
    def plain(msg: Message) -> None: ...

    assert level_target(handle.spec, None) == "orders" and level_target(handle.spec, 2) == "orders:p2"
    for bad in (3, -1, True, 1.0, "1"):
        with pytest.raises(ValueError, match="priority must be an int from 0 to 2"):
            level_target(handle.spec, bad)  # type: ignore[arg-type]
    assert level_target(plain.spec, 0) == "plain"
    with pytest.raises(ValueError, match="from 0 to 0"):
        await plain.send({"a": 1}, priority=1, producer=Producer())


def test_the_producer_puts_a_level_before_its_shard() -> None:
    producer = Producer(shards={"orders": 2})
    assert producer.target("orders", key="k", priority=1) == keys.shard_stream(
        "orders:p1", keys.pick_shard("k", 2)
    )
    assert producer.target("plain", priority=2) == "plain:p2"
    assert producer.target("plain", priority=0) == "plain"
    with pytest.raises(ValueError, match="priority must be an int >= 0"):
        producer.target("plain", priority=-1)


def _spec(batch: bool = False, is_async: bool = True, concurrency: int = 4) -> HandlerSpec:
    registry = Registry(group="g")

    async def run_async(msg: Message) -> None: ...

    def run_sync(msg: Message) -> None: ...

    registry.stream_handler("s", batch=batch, concurrency=concurrency)(run_async if is_async else run_sync)
    return registry.handlers["s"]


def test_calls_are_entries_for_a_per_entry_handler_and_the_batch_for_a_batch_handler() -> None:
    per_entry, sync, batch = _spec(), _spec(is_async=False), _spec(batch=True)
    assert [calls_wanted(per_entry, n) for n in (1, 3, 10)] == [1, 3, 4]
    assert calls_wanted(sync, 10) == 1 and calls_wanted(batch, 10) == 1
    assert permits_wanted(per_entry, 10) == 10 and permits_wanted(batch, 10) == 1


def test_the_admission_plan_starts_one_entry_per_permit_and_a_batch_on_one() -> None:
    per_entry, batch = _spec(), _spec(batch=True)
    assert plan_admission(per_entry, 10, 3, 25_000) == Admission(3, 0.025)
    assert plan_admission(per_entry, 10, 10, 0) == Admission(10, 0.0)
    assert plan_admission(per_entry, 10, 0, 5_000) == Admission(0, 0.005)
    assert plan_admission(batch, 10, 1, 0) == Admission(10, 0.0)
    assert plan_admission(batch, 10, 0, 7_000) == Admission(0, 0.007)
    assert [refill_chunk(b) for b in (1, 2, 3, 10)] == [1, 1, 1, 5]


def test_the_start_up_check_covers_every_command_of_the_flow_scripts() -> None:
    """A limited handler's worker checks at start that its user may run what the flow scripts
    and the slots' release run, on the limits' own keys (a plain handler: nothing more)."""
    from streamtasks import lua
    from streamtasks.worker.preflight import flow_probes

    called = set(re.findall(r"redis\.call\('(\w+)'", lua.GCRA + lua.SEM_ACQUIRE + lua.SEM_RENEW))
    checked = flow_probes(["streamtasks:rate:g:s"], ["streamtasks:concurrency:g:s"])
    assert {c.upper() for c in called} | {"ZREM"} <= {p.command for p in checked}
    assert all(p.key in (None, "streamtasks:rate:g:s", "streamtasks:concurrency:g:s") for p in checked)
    assert flow_probes([], []) == []
