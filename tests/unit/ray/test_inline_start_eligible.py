"""Which handlers the inline start may run in the worker process (pure logic)."""

from __future__ import annotations

from typing import Any

import pytest

from streamtasks import Registry
from streamtasks.ray.inline_start import runs_here

ENV = {"LEDGER_URL": "redis://ledger", "HOME": "/root"}


def spec_with(**ray_options: Any) -> Any:
    registry = Registry()
    registry.stream_handler("s", **ray_options)(lambda msg: None)
    return registry.handlers["s"]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"num_cpus": 0.5},
        {"max_retries": 1, "num_cpus": 2},
        {"runtime_env": {"env_vars": {"LEDGER_URL": "redis://ledger"}}},
        {"runtime_env": {}},
    ],
)
def test_handlers_asking_nothing_this_process_lacks_run_here(options: dict[str, Any]) -> None:
    assert runs_here(spec_with(**options), ENV)


@pytest.mark.parametrize(
    "options",
    [
        {"num_gpus": 1},
        {"memory": 2**30},
        {"resources": {"tpu": 1}},
        {"runtime_env": {"pip": ["numpy"]}},
        {"runtime_env": {"env_vars": {"LEDGER_URL": "redis://elsewhere"}}},
        {"runtime_env": {"env_vars": {"NOT_SET_HERE": "1"}}},
        {"runtime_env": {"env_vars": {"LEDGER_URL": "redis://ledger"}, "working_dir": "."}},
    ],
)
def test_handlers_needing_what_ray_gives_them_stay_on_ray(options: dict[str, Any]) -> None:
    assert not runs_here(spec_with(**options), ENV)
