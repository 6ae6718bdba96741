"""Fault-injection fixtures: a ledger Redis, worker subprocesses, the invariant checker.

The fixtures live in ``support/invariants.py`` (the DLQ integration test uses them too).
"""

from __future__ import annotations

from support.invariants import inv, ledger, ledger_server, workers

__all__ = ["inv", "ledger", "ledger_server", "workers"]
