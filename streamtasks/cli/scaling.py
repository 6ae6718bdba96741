"""``streamtasks worker``'s actor-count options: ``--actors N`` or ``--actors auto`` with its
bounds (:class:`~streamtasks.scaling.Autoscale`), declared once and turned into the
:class:`~streamtasks.serve.ServeConfig` fields."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..errors import ConfigError
from ..scaling import ENV_ACTORS, ENV_DOWN, ENV_DRAIN, ENV_MAX, ENV_MIN, Autoscale

F = TypeVar("F", bound=Callable[..., Any])
AUTO = "auto"


class ActorsParam(click.ParamType[int | str]):
    """A number of actors (>= 1), or ``auto``."""

    name = "N|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if isinstance(value, int) or str(value).strip().lower() == AUTO:
            number = value if isinstance(value, int) else None
        else:
            try:
                number = int(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is neither a number of actors nor 'auto'", param, ctx)
        if number is None:
            return AUTO
        if number < 1:
            self.fail(f"{number} is not a number of actors (at least 1)", param, ctx)
        return number


def actor_options(command: F) -> F:
    """The options, innermost first as click applies them."""
    options = [
        click.option(
            "--actors",
            type=ActorsParam(),
            envvar=ENV_ACTORS,
            show_envvar=True,
            help="Actors per group of handler Ray options in --mode actors: a number, or 'auto' "
            "(as many as the backlog needs, between --min-actors and --max-actors). Default: the "
            "Ray cluster's CPUs shared out among the groups.",
        ),
        click.option(
            "--min-actors",
            type=click.IntRange(min=1),
            envvar=ENV_MIN,
            show_envvar=True,
            help="With --actors auto: never fewer per group (default 1).",
        ),
        click.option(
            "--max-actors",
            type=click.IntRange(min=1),
            envvar=ENV_MAX,
            show_envvar=True,
            help="With --actors auto: never more per group (default: the cluster's CPUs at start "
            "shared out among the groups).",
        ),
        click.option(
            "--target-drain-seconds",
            type=click.FloatRange(min=0, min_open=True),
            envvar=ENV_DRAIN,
            show_envvar=True,
            help="With --actors auto: enough actors to drain the backlog within this many seconds "
            "(default 30).",
        ),
        click.option(
            "--scale-down-after",
            type=click.FloatRange(min=0),
            envvar=ENV_DOWN,
            show_envvar=True,
            help="With --actors auto: remove actors only after fewer were needed for this many "
            "seconds (default 60).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def actors_config(
    actors: int | str | None,
    min_actors: int | None,
    max_actors: int | None,
    target_drain: float | None,
    scale_down_after: float | None,
) -> tuple[int | None, Autoscale | None]:
    """``ServeConfig``'s ``actors`` and ``autoscale``; a bound without ``--actors auto`` is a
    usage error, bounds that contradict each other one line."""
    bounds = {
        "--min-actors": min_actors,
        "--max-actors": max_actors,
        "--target-drain-seconds": target_drain,
        "--scale-down-after": scale_down_after,
    }
    if actors != AUTO:
        given = [name for name, value in bounds.items() if value is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)} only with --actors auto")
        return (actors if isinstance(actors, int) else None), None
    kw: dict[str, Any] = {"min": min_actors or 1, "max": max_actors}
    if target_drain is not None:
        kw["target_drain"] = target_drain
    if scale_down_after is not None:
        kw["scale_down_after"] = scale_down_after
    try:
        return None, Autoscale(**kw)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
