"""Middleware on the in-memory app (the worker's own run and settle code): which hooks run,
in which order, for per-entry, async and batch handlers; retries and dead letters; a failing
hook that loses nothing; ``on_send``; the app's record of hook calls."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from streamtasks import Message, Registry, Reject, Retry
from streamtasks.hooks import BatchInfo, CallInfo, SendInfo, SettleEvent
from streamtasks.testing import InMemoryApp


class Recorder:
    """Writes every hook call to ``log`` as a tuple."""

    def __init__(self, name: str, log: list[tuple[Any, ...]]) -> None:
        self.name, self.log = name, log

    def before_batch(self, batch: BatchInfo) -> None:
        self.log.append((self.name, "before", batch.stream, len(batch.messages)))

    @contextlib.contextmanager
    def around_call(self, call: CallInfo) -> Iterator[None]:
        self.log.append((self.name, "in", [m.fields.get("n") for m in call.messages]))
        try:
            yield
        finally:
            self.log.append((self.name, "out", type(call.error).__name__ if call.error else call.result))

    def after_batch(self, batch: BatchInfo, failed: dict[str, Any]) -> None:
        self.log.append((self.name, "after", sorted(type(f).__name__ for f in failed.values())))

    def on_retry(self, event: SettleEvent) -> None:
        self.log.append((self.name, "retry", event.attempt, event.delay))

    def on_dead_letter(self, event: SettleEvent) -> None:
        self.log.append((self.name, "dead", event.error.reason, bool(event.dead_letter_id)))

    def on_send(self, send: SendInfo) -> None:
        send.fields[f"sent_by_{self.name}"] = "1"


class Broken:
    """Every hook raises."""

    def before_batch(self, batch: BatchInfo) -> None:
        raise RuntimeError("before")

    def around_call(self, call: CallInfo) -> Any:
        raise RuntimeError("around")

    def on_dead_letter(self, event: SettleEvent) -> None:
        raise RuntimeError("dead")


def app_with() -> tuple[InMemoryApp, Registry, list[tuple[Any, ...]]]:
    log: list[tuple[Any, ...]] = []
    registry = Registry(group="mw")
    seen: list[dict[str, str]] = []

    @registry.stream_handler("each")
    def each(msg: Message) -> str:
        seen.append(dict(msg.fields))
        if msg.get("fail") == "retry" and msg.attempt == 1:
            raise Retry(after=2)
        if msg.get("fail") == "reject":
            raise Reject("no")
        return f"done {msg['n']}"

    @registry.stream_handler("async_each")
    async def async_each(msg: Message) -> None:
        return None

    @registry.stream_handler("batched", batch=True)
    def batched(msgs: list[Message]) -> None:
        return None

    registry.seen = seen  # type: ignore[attr-defined]
    registry.each = each  # type: ignore[attr-defined]
    return InMemoryApp(registry), registry, log


async def test_hooks_run_in_registration_order_going_in_and_reverse_coming_out() -> None:
    log: list[tuple[Any, ...]] = []
    app, registry, _ = app_with()
    registry.middleware(Recorder("A", log))
    registry.middleware(Recorder("B", log))
    await app.send("each", {"n": 1})
    await app.send("each", {"n": 2})
    await app.run_until_idle()
    assert log == [
        ("A", "before", "each", 2), ("B", "before", "each", 2),
        ("A", "in", ["1"]), ("B", "in", ["1"]), ("B", "out", "done 1"), ("A", "out", "done 1"),
        ("A", "in", ["2"]), ("B", "in", ["2"]), ("B", "out", "done 2"), ("A", "out", "done 2"),
        ("B", "after", []), ("A", "after", []),
    ]  # fmt: skip
    assert app.hook_calls[:3] == ["Recorder.before_batch", "Recorder.before_batch", "Recorder.around_call"]


async def test_around_call_wraps_each_async_call_and_a_batch_handler_once() -> None:
    log: list[tuple[Any, ...]] = []
    app, registry, _ = app_with()
    registry.middleware(Recorder("A", log))
    for n in range(3):
        await app.send("async_each", {"n": n})
        await app.send("batched", {"n": n})
    await app.run_until_idle()
    ins = [entry for entry in log if entry[1] == "in"]
    assert sorted(ins) == sorted([("A", "in", [str(n)]) for n in range(3)] + [("A", "in", ["0", "1", "2"])])


async def test_retries_and_dead_letters_reach_their_hooks() -> None:
    log: list[tuple[Any, ...]] = []
    app, registry, _ = app_with()
    registry.middleware(Recorder("A", log))
    await app.send("each", {"n": 1, "fail": "retry"})
    await app.send("each", {"n": 2, "fail": "reject"})
    await app.drain()
    assert ("A", "retry", 1, 2.0) in log
    assert ("A", "dead", "rejected", True) in log
    assert len(app.handled("each")) == 1 and len(app.dead_letters("each")) == 1


async def test_a_hook_that_raises_is_logged_and_changes_no_outcome(caplog: pytest.LogCaptureFixture) -> None:
    """Broken before_batch, around_call and on_dead_letter: every handler still runs once, the
    dead letter is written, its batch-mates are acked, and later batches still run."""
    log: list[tuple[Any, ...]] = []
    app, registry, _ = app_with()
    registry.middleware(Broken())
    registry.middleware(Recorder("A", log))
    for n in range(3):
        await app.send("each", {"n": n, **({"fail": "reject"} if n == 1 else {})})
    await app.run_until_idle()
    assert len(registry.seen) == 3  # type: ignore[attr-defined]
    assert len(app.handled("each")) == 2
    [dead] = app.dead_letters("each")
    assert dead.reason == "rejected"
    assert ("A", "dead", "rejected", True) in log  # the hooks after the broken one still ran
    failed = [r.getMessage() for r in caplog.records if r.name == "streamtasks.hooks"]
    assert any("Broken.on_dead_letter" in m for m in failed)
    assert any("Broken.before_batch" in m for m in failed)
    assert sum("Broken.around_call" in m for m in failed) == 3
    await app.send("each", {"n": 9})
    await app.run_until_idle()
    assert len(app.handled("each")) == 3


async def test_on_send_changes_what_handler_send_adds() -> None:
    log: list[tuple[Any, ...]] = []
    app, registry, _ = app_with()
    registry.middleware(Recorder("A", log))
    async with app:
        await registry.each.send({"n": 5})  # type: ignore[attr-defined]
        await app.run_until_idle()
    assert registry.seen[0]["sent_by_A"] == "1"  # type: ignore[attr-defined]


async def test_middleware_applies_to_handlers_registered_later_and_to_included_ones() -> None:
    log: list[tuple[Any, ...]] = []
    outer = Registry(group="outer")
    outer.middleware(Recorder("A", log))

    @outer.stream_handler("late")
    def late(msg: Message) -> None: ...

    inner = Registry(group="inner")
    inner.middleware(Recorder("B", log))

    @inner.stream_handler("inner_stream")
    def inner_handler(msg: Message) -> None: ...

    outer.include(inner)
    assert [type(m).__name__ for m in outer.handlers["late"].middleware] == ["Recorder", "Recorder"]
    assert outer.handlers["inner_stream"].group == "outer"
    assert [m.name for m in outer.handlers["inner_stream"].middleware] == ["A", "B"]  # type: ignore[attr-defined]
