"""Test helpers: run a registry's handlers in memory, with no Redis and no Ray.

:class:`InMemoryApp` is an in-memory broker plus a worker that runs the real path (the batch
runner of :mod:`streamtasks.worker.run`, the retry policy, the settlement plan, the
dead-letter format) with a fake clock. The pytest plugin (:mod:`.plugin`, installed as an
entry point) provides the ``streamtasks_app`` fixture::

    async def test_negative_amount_is_rejected(streamtasks_app):
        app = streamtasks_app(registry)
        await on_order.send({"amount": -1})
        await app.run_until_idle()
        [dead] = app.dead_letters("orders")
        assert dead.reason == "rejected"
"""

from __future__ import annotations

from .app import InMemoryApp
from .broker import FakeClock

__all__ = ["FakeClock", "InMemoryApp"]
