"""Fault-injection fixtures: a ledger Redis, worker subprocesses, the invariant checker.

The fixtures live in ``support/invariants.py`` (the DLQ integration test uses them too).

Workers run in task mode; ``STREAMTASKS_MODE=actors pytest tests/fault`` runs every scenario
with actor-mode workers. In the default run, the scenarios marked ``both_modes`` (those that
go through code only actor mode has: its pool's outage logs, restarts, readiness and drain) run
in both modes.
"""

from __future__ import annotations

import pytest
from support.invariants import both_modes, inv, ledger, ledger_server, workers

__all__ = ["inv", "ledger", "ledger_server", "workers"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    both_modes(metafunc)
