"""The built-in handlers with few, fast retries: a worker whose database is unreachable
dead-letters within seconds (tests/integration/test_secrets.py)."""

from __future__ import annotations

from streamtasks.builtins import make_registry

registry = make_registry(group="secrets-test", max_retries=1, backoff_max=0.2, backoff_base=0.05)
