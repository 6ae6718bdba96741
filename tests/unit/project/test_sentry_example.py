"""The middleware guide's Sentry example (examples/sentry_dead_letters.py) runs as written:
a dead letter becomes one Sentry event with its stream, reason and dead-letter id (a
transport of the test's own stands in for Sentry's servers)."""

from __future__ import annotations

from typing import Any

import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from examples import sentry_dead_letters as example
from streamtasks.testing import InMemoryApp


class Kept(Transport):
    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.events: list[dict[str, Any]] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        event = envelope.get_event()
        if event is not None:
            self.events.append(event)


async def test_a_dead_letter_is_reported_to_sentry() -> None:
    kept = Kept()
    # no default integrations: they would patch logging for every later test of the session
    sentry_sdk.init(dsn="https://key@sentry.invalid/1", transport=kept, default_integrations=False)
    try:
        async with InMemoryApp(example.registry) as app:
            await example.on_order.send({"amount": "-5"})
            await example.on_order.send({"amount": "5"})
            await app.run_until_idle()
        [dead] = app.dead_letters("orders")
        [event] = kept.events
        assert event["message"] == "dead letter on orders: negative amount"
        assert event["tags"] == {"stream": "orders", "reason": "rejected"}
        assert event["contexts"]["dead_letter"]["id"] == dead.dead_id
        assert app.hook_calls == ["SentryDeadLetters.on_dead_letter"]
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.init(default_integrations=False)  # no DSN: nothing more is sent
