"""How many actors actor mode starts, and what each asks Ray for (pure logic): every group of
handlers gets at least one actor, and by default they all fit the cluster's CPUs."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from streamtasks import Registry
from streamtasks.worker.actors import plan


def groups(*options: dict[str, Any]) -> list[tuple[Registry, dict[str, Any]]]:
    return [(Registry(), dict(o)) for o in options]


def test_one_group_gets_an_actor_per_cpu() -> None:
    [(_, options, count)] = plan(groups({}), None, 2.0)
    assert (count, options) == (2, {"num_cpus": 1.0})


def test_more_groups_than_cpus_share_them_so_every_actor_can_be_placed() -> None:
    out = plan(groups({}, {"max_retries": 1}, {"runtime_env": {}}), None, 2.0)
    assert [count for _, _, count in out] == [1, 1, 1]
    assert [o["num_cpus"] for _, o, _ in out] == [0.6666] * 3  # 3 x 0.6666 <= 2


def test_actors_asked_for_are_started_even_past_the_cpus_each_with_its_share() -> None:
    out = plan(groups({}, {"max_retries": 1}), 2, 2.0)
    assert [(count, o["num_cpus"]) for _, o, count in out] == [(2, 0.5), (2, 0.5)]


def test_a_handlers_own_num_cpus_is_kept() -> None:
    [(_, options, count)] = plan(groups({"num_cpus": 0.25, "num_gpus": 1}), 3, 8.0)
    assert (count, options) == (3, {"num_cpus": 0.25, "num_gpus": 1})


@given(st.integers(1, 6), st.floats(1, 64), st.one_of(st.none(), st.integers(1, 8)))
def test_every_group_is_served_and_the_default_share_fits(n: int, cpus: float, per_group: int | None) -> None:
    out = plan(groups(*({"max_retries": i} for i in range(n))), per_group, cpus)
    assert len(out) == n and all(count >= 1 for _, _, count in out)
    reserved = sum(o["num_cpus"] * count for _, o, count in out)
    assert reserved <= cpus + 1e-9  # every actor can be placed
    if per_group is not None:
        assert {count for _, _, count in out} == {per_group}
