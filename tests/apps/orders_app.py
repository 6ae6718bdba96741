"""The docs' example app (docs/guides/testing.md), for the in-memory test helpers
(tests/unit/testing/test_app.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from streamtasks import Message, Registry, Reject, Retry

registry = Registry(group="orders-app")
#: What the handlers saw, by name (the in-memory app runs them in this process).
seen: dict[str, list[object]] = {}


@registry.resource
async def ledger() -> AsyncIterator[list[float]]:
    book: list[float] = []
    yield book
    book.clear()


@registry.stream_handler("orders", max_retries=5)
async def on_order(msg: Message) -> None:
    amount = msg.json("amount")
    if amount < 0:
        raise Reject("negative amount")
    (await ledger.get()).append(amount)
    await on_receipt.send({"order": msg.id, "amount": amount})


@registry.stream_handler("receipts")
def on_receipt(msg: Message) -> None:
    seen.setdefault("receipts", []).append(msg.json("amount"))


@registry.stream_handler("flaky", max_retries=3, backoff_base=1.0, backoff_max=8.0)
def flaky(msg: Message) -> None:
    """Fails until its third attempt."""
    seen.setdefault("flaky", []).append(msg.attempt)
    if msg.attempt < 3:
        raise ConnectionError(f"dependency down (attempt {msg.attempt})")


@registry.stream_handler("later", max_retries=2)
def later(msg: Message) -> None:
    """Asks to be run again 5 s later, twice."""
    seen.setdefault("later", []).append(msg.attempt)
    if msg.attempt < 3:
        raise Retry(after=5)
