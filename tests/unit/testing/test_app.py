"""streamtasks.testing: the in-memory app runs the real decision code with no services."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orders_app
import pytest
from orders_app import on_order, registry

from streamtasks import Message, Registry
from streamtasks.producer import sender_override
from streamtasks.testing import InMemoryApp

# No Redis on this port: anything that tried to reach one would fail.
CLOSED_PORT_URL = "redis://127.0.0.1:1/0"


@pytest.fixture(autouse=True)
def no_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", CLOSED_PORT_URL)
    orders_app.seen.clear()


async def test_negative_amount_is_rejected(streamtasks_app: Any) -> None:
    """The issue's example, as written: send through the handler, dead letter with its reason."""
    started = time.monotonic()
    app = streamtasks_app(registry)  # in-memory, no services
    await on_order.send({"amount": -1})
    await app.run_until_idle()
    [dead] = app.dead_letters("orders")
    assert dead.reason == "rejected"
    assert dead.attempts == 1 and dead.error == "negative amount" and dead.fields["amount"] == b"-1"
    assert dead.group == "orders-app" and dead.handler == "orders_app.on_order"
    assert time.monotonic() - started < 1.0


async def test_retry_then_succeed_with_the_fake_clock(streamtasks_app: Any) -> None:
    """A failing entry waits for its backoff on the fake clock, then succeeds on attempt 3."""
    started = time.monotonic()
    app = streamtasks_app(registry)
    entry_id = await app.send("flaky", {"n": 1})
    await app.run_until_idle()
    assert orders_app.seen["flaky"] == [1] and app.pending("flaky") == {entry_id: 1}
    app.advance(0.0)
    await app.run_until_idle()
    assert orders_app.seen["flaky"] == [1]  # its backoff is not over: nothing ran
    app.advance(8.0)  # backoff_max: whatever the jitter picked is over
    await app.run_until_idle()
    app.advance(8.0)
    await app.run_until_idle()
    assert orders_app.seen["flaky"] == [1, 2, 3]
    assert app.handled("flaky") == [entry_id] and app.pending("flaky") == {}
    assert app.dead_letters("flaky") == []
    assert time.monotonic() - started < 1.0


async def test_retry_after_waits_exactly_its_delay(streamtasks_app: Any) -> None:
    """Retry(after=5): not runnable 4.9 s later, runnable at 5 s."""
    app = streamtasks_app(registry)
    await app.send("later", {"n": 1})
    await app.run_until_idle()
    app.advance(4.9)
    await app.run_until_idle()
    assert orders_app.seen["later"] == [1]
    app.advance(0.1)
    await app.run_until_idle()
    assert orders_app.seen["later"] == [1, 2]
    assert await app.drain() == 1
    assert orders_app.seen["later"] == [1, 2, 3] and len(app.handled("later")) == 1


async def test_handlers_sending_and_resources_work_in_memory(streamtasks_app: Any) -> None:
    """A handler's own send() goes to the in-memory app; a registry resource is created once."""
    app = streamtasks_app(registry)
    for amount in (1, 2.5, 3):
        await on_order.send({"amount": amount})
    await app.run_until_idle()
    assert orders_app.seen["receipts"] == [1, 2.5, 3]
    assert sorted(await _ledger()) == [1, 2.5, 3]
    assert len(app.handled("orders")) == 3 and len(app.handled("receipts")) == 3


async def _ledger() -> list[float]:
    import asyncio

    from streamtasks.resources import process_loop

    return await asyncio.to_thread(process_loop().run, orders_app.ledger.get())


async def test_retries_spent_dead_letter_with_every_attempt_counted(streamtasks_app: Any) -> None:
    """A handler that always fails: max_retries + 1 attempts, then handler_error with its fields."""
    reg = Registry(group="g")

    @reg.stream_handler("s", max_retries=2, backoff_base=0.1, backoff_max=0.1)
    def always(msg: Message) -> None:
        raise ValueError(f"boom {msg.attempt}")

    app = streamtasks_app(reg)
    entry_id = await app.send("s", {"x": "1"})
    await app.drain()
    [dead] = app.dead_letters("s")
    assert (dead.reason, dead.error_type, dead.error) == ("handler_error", "ValueError", "boom 3")
    assert dead.attempts == 3
    assert dead.first_failure_ms < dead.last_failure_ms
    assert app.pending("s") == {} and app.handled("s") == [] and app.acked("s") == [entry_id]


async def test_bad_input_is_dead_lettered_on_first_delivery(streamtasks_app: Any) -> None:
    """Too large and invalid UTF-8 never reach the handler; invalid JSON fails in it, not retried."""
    reg = Registry()

    @reg.stream_handler("s", max_entry_bytes=100)
    def handler(msg: Message) -> None:
        msg.json("v")

    app = streamtasks_app(reg)
    await app.send_raw("s", {"v": "x" * 200})
    await app.send_raw("s", {"v": b"\xff"})
    await app.send_raw("s", {"v": "{not json"})
    await app.drain()
    assert [(d.reason, d.attempts) for d in app.dead_letters("s")] == [
        ("too_large", 1), ("invalid_utf8", 1), ("invalid_json", 1),
    ]  # fmt: skip


async def test_send_outside_an_active_app_is_not_intercepted() -> None:
    """Without the fixture or `async with`, handler.send goes to the real default producer."""
    assert sender_override.get() is None
    async with InMemoryApp(registry) as app:
        await on_order.send({"amount": 2})
        assert len(app.entries("orders")) == 1
    assert sender_override.get() is None


async def test_acked_counts_handled_and_dead_lettered_entries_as_redis_does(streamtasks_app: Any) -> None:
    """The worker acks a dead-lettered entry once its dead letter is written: ``acked`` has
    both kinds in ack order, ``handled`` only the successes."""
    app = streamtasks_app(registry)
    good = await app.send("orders", {"amount": 1})
    bad = await app.send("orders", {"amount": -1})
    also_good = await app.send("orders", {"amount": 2})
    await app.run_until_idle()
    assert app.acked("orders") == [good, also_good, bad]  # a batch's done entries are acked first
    assert app.handled("orders") == [good, also_good]
    assert [d.id for d in app.dead_letters("orders")] == [bad]


async def test_send_raw_is_awaited_like_send_and_add_raw_is_deprecated(streamtasks_app: Any) -> None:
    app = streamtasks_app(registry)
    raw_id = await app.send_raw("orders", {"amount": "3"})
    with pytest.warns(DeprecationWarning, match="send_raw"):
        old_id = app.add_raw("orders", {"amount": "4"})
    await app.run_until_idle()
    assert app.handled("orders") == [raw_id, old_id]
    assert [fields for _, fields in app.entries("orders")] == [{"amount": b"3"}, {"amount": b"4"}]


def test_every_public_method_is_documented_in_its_docstring_and_in_the_readme() -> None:
    from support.doc_examples import section

    text = section(
        Path(__file__).resolve().parents[3] / "docs" / "guides" / "testing.md", "Testing your handlers"
    )
    public = [n for n in dir(InMemoryApp) if not n.startswith("_") and callable(getattr(InMemoryApp, n))]
    assert {"send", "send_raw", "handled", "acked", "dead_letters", "pending", "entries"} <= set(public)
    assert [n for n in public if not getattr(InMemoryApp, n).__doc__] == []
    assert [n for n in public if f"app.{n}(" not in text] == []
