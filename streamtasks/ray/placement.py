"""How many actors actor mode starts, and what each asks Ray for (pure, but for the cluster's
CPU count)."""

from __future__ import annotations

from typing import Any

import ray

from ..registry import Registry

#: The actor options that decide where (and whether) Ray can place it.
PLACED_BY = ("num_cpus", "num_gpus", "memory", "resources", "accelerator_type")


def partition(registry: Registry) -> list[tuple[Registry, dict[str, Any]]]:
    """The registry split into groups of handlers with equal Ray options (an actor runs in one
    process: its handlers share its resources and runtime environment)."""
    groups: dict[str, tuple[list[str], dict[str, Any]]] = {}
    for stream, spec in registry.handlers.items():
        options = dict(spec.ray_options)
        groups.setdefault(repr(sorted(options.items())), ([], options))[0].append(stream)
    return [(registry.only(streams), options) for streams, options in groups.values()]


def plan(
    groups: list[tuple[Registry, dict[str, Any]]], per_group: int | None, cpus: float
) -> list[tuple[Registry, dict[str, Any], int]]:
    """How many actors each group gets, and their Ray options. ``per_group`` (``--actors``) is
    taken as asked; by default the cluster's CPUs are shared out, at least one actor per group.

    An actor reserves what its handlers ask for and nothing more: without ``num_cpus`` it takes
    Ray's default for actors (a node with a CPU to be placed, none held while it runs), so any
    number of workers' actors fit beside each other, as task mode's workers share a cluster.
    Unless the handlers choose a ``scheduling_strategy``, the actors are spread over the nodes."""
    counts = [per_group or max(1, int(cpus) // len(groups)) for _ in groups]
    return [
        (registry, {"scheduling_strategy": "SPREAD", **options}, count)
        for (registry, options), count in zip(groups, counts, strict=True)
    ]


def actor_options(ray_options: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """A handler's Ray options as actor options: the worker's forwarded environment joins
    ``runtime_env``."""
    options = dict(ray_options)
    if env:
        runtime_env = dict(options.get("runtime_env") or {})
        runtime_env["env_vars"] = {**env, **dict(runtime_env.get("env_vars") or {})}
        options["runtime_env"] = runtime_env
    return options


def asks(registry: Registry, options: dict[str, Any]) -> str:
    """What a group's actors ask Ray for, for the log line of actors Ray cannot place (never
    their ``runtime_env``: it may hold secrets)."""
    asked = [f"{k}={options[k]}" for k in PLACED_BY if k in options]
    return f"{', '.join(registry.streams)} asks for {', '.join(asked) or 'a node with a CPU'}"


def cluster_cpus() -> float:
    return float(ray.cluster_resources().get("CPU", 1))  # type: ignore[no-untyped-call]
