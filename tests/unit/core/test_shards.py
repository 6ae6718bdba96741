"""Sharded streams and slot checks: names, shard choice, the registry's expansion (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamtasks import Message, Producer, Registry, keys
from streamtasks.adserving.config import ConsumerConfig
from streamtasks.adserving.handlers import make_registry


def test_a_sharded_handler_serves_one_stream_per_shard_each_with_its_own_dead_letters() -> None:
    registry = Registry(group="g")

    @registry.stream_handler("orders", shards=3, batch_size=7)
    def handle(msg: Message) -> None: ...

    assert registry.streams == ["orders:{0}", "orders:{1}", "orders:{2}"]
    spec = registry.handlers["orders:{1}"]
    assert (spec.shard_of, spec.shards, spec.batch_size) == ("orders", 3, 7)
    assert spec.dead_letter_stream == "orders:{1}:dead"
    assert handle.spec.stream == "orders" and handle.spec.shards == 3
    assert registry.only(["orders"]).streams == registry.streams
    with pytest.raises(ValueError, match="shards"):
        registry.stream_handler("x", shards=0)


def test_every_shard_keeps_its_script_keys_in_one_slot_and_untagged_names_do_not() -> None:
    for name in keys.shard_streams("orders", 16):
        assert (
            keys.same_slot_problem(name, [keys.dead_letter_stream(name), keys.failures_key(name, "g")])
            is None
        )
    problem = keys.same_slot_problem("orders", ["orders:dead"])
    assert problem is not None and "'{orders}'" in problem and "shards=N" in problem
    assert keys.shard_base("orders:{12}") == "orders" and keys.shard_base("{orders}") is None


@given(st.text(min_size=1, max_size=30), st.integers(1, 64))
def test_a_key_always_picks_the_same_shard_in_range(key: str, shards: int) -> None:
    shard = keys.pick_shard(key, shards)
    assert 0 <= shard < shards and shard == keys.pick_shard(key.encode(), shards)


def test_the_producer_spreads_keyless_sends_and_keeps_keys_on_one_shard() -> None:
    producer = Producer(shards={"orders": 4})
    assert [producer.target("orders") for _ in range(5)] == [
        "orders:{0}", "orders:{1}", "orders:{2}", "orders:{3}", "orders:{0}",
    ]  # fmt: skip
    assert len({producer.target("orders", key="k1") for _ in range(10)}) == 1
    assert producer.target("plain", key="k1") == "plain"
    assert producer.target("other", key="k1", shards=2) in ("other:{0}", "other:{1}")


def test_the_builtins_take_their_shard_counts_from_the_environment() -> None:
    config = ConsumerConfig.from_env({"TRAINING_DATA_SHARDS": "4"})
    assert config.shards == (4, 0)
    registry = make_registry(shards=config.shards)
    assert len(registry.streams) == 5 and "training_data_stream:{3}" in registry.streams
