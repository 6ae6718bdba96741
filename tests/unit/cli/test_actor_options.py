"""``--actors N|auto`` and its bounds: what each becomes in ``ServeConfig``, and every misuse
one clear usage error (hand-picked, and hypothesis for any ``--actors`` value)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from streamtasks.cli.scaling import AUTO, ActorsParam, actors_config
from streamtasks.errors import ConfigError
from streamtasks.scaling import Autoscale
from streamtasks.serve import ServeConfig


def test_a_number_and_auto_and_nothing() -> None:
    assert actors_config(3, None, None, None, None) == (3, None)
    assert actors_config(None, None, None, None, None) == (None, None)
    assert actors_config(AUTO, 2, 6, 10.0, 90.0) == (None, Autoscale(2, 6, 10.0, 90.0))
    assert actors_config(AUTO, None, None, None, None) == (None, Autoscale())


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((3, 2, None, None, None), "--min-actors only with --actors auto"),
        ((None, None, 4, 5.0, None), "--max-actors, --target-drain-seconds only with --actors auto"),
        ((AUTO, 5, 2, None, None), "--max-actors 2 is below --min-actors 5"),
    ],
)
def test_misuse_is_a_usage_error(args: tuple, says: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(click.UsageError, match=says):
        actors_config(*args)


@given(st.text(max_size=12))
def test_any_actors_value_is_a_count_auto_or_a_clear_error(value: str) -> None:
    try:
        out = ActorsParam().convert(value, None, None)
    except click.BadParameter as exc:
        assert "number of actors" in str(exc)
        return
    assert out == AUTO or (isinstance(out, int) and out >= 1)


def test_the_worker_command_refuses_bounds_without_auto() -> None:
    from streamtasks.cli.worker import worker

    result = CliRunner().invoke(worker, ["app:registry", "--actors", "2", "--max-actors", "4"])
    assert result.exit_code == 2 and "--max-actors only with --actors auto" in result.output


def test_autoscaling_is_for_actor_mode_only() -> None:
    with pytest.raises(ConfigError, match="needs actor mode"):
        ServeConfig(mode="tasks", autoscale=Autoscale())
    with pytest.raises(ConfigError, match="either a number or auto"):
        ServeConfig(actors=2, autoscale=Autoscale())
