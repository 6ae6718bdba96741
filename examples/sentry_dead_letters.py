"""Report every dead letter to Sentry: a middleware with one hook (docs/guides/middleware.md).

Needs ``pip install sentry-sdk``; ``SENTRY_DSN`` says where to send (without it, nothing is
sent). In actor mode the hook runs in the actors: ``env_forward`` sends them ``SENTRY_*``.
"""

from __future__ import annotations

import sentry_sdk

from streamtasks import Message, Registry, Reject
from streamtasks.hooks import SettleEvent

sentry_sdk.init()  # the DSN from SENTRY_DSN


class SentryDeadLetters:
    """One Sentry event per dead letter, tagged with its stream and reason."""

    def on_dead_letter(self, event: SettleEvent) -> None:
        with sentry_sdk.new_scope() as scope:
            scope.set_tag("stream", event.stream)
            scope.set_tag("reason", event.error.reason)
            where = {"id": event.dead_letter_id, "entry": event.entry_id, "attempts": event.attempt}
            scope.set_context("dead_letter", where)
            sentry_sdk.capture_message(f"dead letter on {event.stream}: {event.error.message}", level="error")


registry = Registry(group="orders", env_forward=("SENTRY_",))
registry.middleware(SentryDeadLetters())


@registry.stream_handler("orders")
def on_order(msg: Message) -> None:
    if float(msg["amount"]) < 0:
        raise Reject("negative amount")
