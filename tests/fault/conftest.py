"""Fault-injection fixtures: a ledger Redis, worker subprocesses, the invariant checker.

The fixtures live in ``support/invariants.py`` (the DLQ integration test uses them too).

Workers run in actor mode, the CLI's default; ``STREAMTASKS_MODE=tasks pytest tests/fault``
runs every scenario with task-mode workers. In the default run, the scenarios marked
``both_modes`` (Redis outages and restarts, kill -9 of a worker, the SIGTERM hand-off) run in
both modes, and those about a meaning only task mode has pin their workers to it.
"""

from __future__ import annotations

import pytest
from support.invariants import both_modes, inv, ledger, ledger_server, workers

__all__ = ["inv", "ledger", "ledger_server", "workers"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    both_modes(metafunc)
