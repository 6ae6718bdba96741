"""How many actors actor mode starts, and what each asks Ray for (pure logic): every group of
handlers gets at least one actor, the CPUs are shared out among the groups, and an actor
reserves only what its handlers ask for."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from streamtasks import Registry
from streamtasks.ray.placement import plan


def groups(*options: dict[str, Any]) -> list[tuple[Registry, dict[str, Any]]]:
    return [(Registry(), dict(o)) for o in options]


def test_one_group_gets_an_actor_per_cpu_reserving_nothing_and_spread() -> None:
    [(_, options, count)] = plan(groups({}), None, 2.0)
    assert (count, options) == (2, {"scheduling_strategy": "SPREAD"})  # no num_cpus: Ray's default


def test_more_groups_than_cpus_get_one_actor_each() -> None:
    out = plan(groups({}, {"memory": 2**30}, {"runtime_env": {}}), None, 2.0)
    assert [count for _, _, count in out] == [1, 1, 1]


def test_actors_asked_for_are_started_per_group() -> None:
    assert [count for _, _, count in plan(groups({}, {"memory": 2**30}), 3, 2.0)] == [3, 3]


def test_a_handlers_own_resources_and_strategy_are_kept() -> None:
    asked = {"num_cpus": 0.25, "num_gpus": 1, "scheduling_strategy": "DEFAULT"}
    [(_, options, count)] = plan(groups(asked), 3, 8.0)
    assert (count, options) == (3, asked)


@given(st.integers(1, 6), st.floats(1, 64), st.one_of(st.none(), st.integers(1, 8)))
def test_every_group_is_served_within_the_cpus_when_it_can_be(
    n: int, cpus: float, per_group: int | None
) -> None:
    out = plan(groups(*({"runtime_env": {"env_vars": {"GROUP": str(i)}}} for i in range(n))), per_group, cpus)
    counts = [count for _, _, count in out]
    assert len(out) == n and min(counts) >= 1
    if per_group is not None:
        assert set(counts) == {per_group}
    else:
        assert sum(counts) <= max(n, int(cpus))  # one per CPU at most, unless groups outnumber them
    assert all("num_cpus" not in o for _, o, _ in out)
