"""A small streamtasks app: one per-entry handler and one batch handler.

From the repo root: ``streamtasks worker examples.app:registry``, then
``streamtasks send orders order_id=42 amount:=19.99``.
"""

from __future__ import annotations

import logging

from streamtasks import Message, Registry

log = logging.getLogger("streamtasks.examples")

registry = Registry(group="examples")


@registry.stream_handler("orders", max_retries=3)
def on_order(msg: Message) -> None:
    """Per-entry handler: called once per entry, by the batch runner (in a Ray actor, or in a
    Ray task in task mode)."""
    amount = float(msg.json("amount", default=0))
    if amount < 0:
        raise ValueError(f"negative amount {amount}")


@registry.stream_handler("events", batch=True, batch_size=500)
async def on_events(msgs: list[Message]) -> dict[str, Exception]:
    """Batch handler: gets up to 500 entries at once; returns the ones that failed."""
    failed: dict[str, Exception] = {}
    for msg in msgs:
        if "kind" not in msg.fields:
            failed[msg.id] = ValueError("event without a kind")
    return failed
