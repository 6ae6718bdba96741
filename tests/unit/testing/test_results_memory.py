"""Results (request-reply) on the in-memory app: what ``handler.call`` answers, for per-entry
and batch handlers, typed values, dead letters, retries and duplicate message ids."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import msgspec
import pytest

from streamtasks import DeadLettered, Message, Registry, Reject, ResultNotFound, Retry
from streamtasks.errors import RegistryError
from streamtasks.testing import InMemoryApp


class Quote(msgspec.Struct):
    sku: str
    price: float


@dataclasses.dataclass
class Total:
    count: int


registry = Registry(group="results-memory")
counter = itertools.count()


@registry.stream_handler("square", results=True)
def square(msg: Message) -> int:
    return int(msg["x"]) ** 2


@registry.stream_handler("quote", results=True)
async def quote(msg: Message) -> Quote:
    return Quote(sku=msg["sku"], price=9.5)


@registry.stream_handler("unencodable", results=True)
def unencodable(msg: Message) -> object:
    return object()


@registry.stream_handler("reject", results=True)
def reject(msg: Message) -> None:
    raise Reject("no such sku", code="unknown_sku")


@registry.stream_handler("flaky", results=True, max_retries=3)
def flaky(msg: Message) -> str:
    if msg.attempt < 3:
        raise Retry(after=1.0)
    return f"ok after {msg.attempt}"


@registry.stream_handler("counter", results=True)
def count_up(msg: Message) -> int:
    return next(counter)  # not deterministic: every run answers something else


@registry.stream_handler("sums", batch=True, results=True)
def sums(msgs: list[Message]) -> list[Total]:
    return [Total(int(m["a"]) + int(m["b"])) for m in msgs]


@registry.stream_handler("picky", batch=True, results=True)
def picky(msgs: list[Message]) -> dict[str, Any]:
    return {m.id: (ValueError("odd") if int(m["n"]) % 2 else int(m["n"]) // 2) for m in msgs}


@registry.stream_handler("short", batch=True, results=True, max_retries=0)
def short(msgs: list[Message]) -> list[int]:
    return [1]  # one value for a whole batch: a handler bug


broken = {"on": True}


@registry.stream_handler("gate", results=True)
def gate(msg: Message) -> str:
    if broken["on"]:
        raise Reject("broken")
    return "fixed"


@registry.stream_handler("plain")
def plain(msg: Message) -> int:
    return 1


@pytest.fixture
def app(streamtasks_app: Any) -> InMemoryApp:
    app: InMemoryApp = streamtasks_app(registry)
    return app


async def test_a_call_returns_what_the_handler_returned(app: InMemoryApp) -> None:
    assert await square.call({"x": 7}) == 49
    assert await app.call("square", {"x": 3}) == 9


async def test_a_typed_return_value_comes_back_as_its_type(app: InMemoryApp) -> None:
    got = await quote.call({"sku": "A-1"})
    assert got == Quote("A-1", 9.5)


async def test_an_unencodable_return_value_is_a_dead_letter_with_its_reason(app: InMemoryApp) -> None:
    with pytest.raises(DeadLettered) as caught:
        await unencodable.call({"x": 1})
    assert caught.value.reason == "unencodable_result"
    assert "object" in caught.value.error
    [dead] = app.dead_letters("unencodable")
    assert dead.reason == "unencodable_result" and dead.attempts == 1  # not retried
    assert caught.value.dead_letter_id == dead.dead_id


async def test_a_dead_lettered_call_raises_with_the_dead_letters_reason_and_error(app: InMemoryApp) -> None:
    with pytest.raises(DeadLettered) as caught:
        await reject.call({"sku": "zz"})
    assert (caught.value.reason, caught.value.error_type, caught.value.error) == (
        "unknown_sku",
        "Reject",
        "no such sku",
    )
    assert caught.value.dead_letter_stream == "reject:dead"


async def test_a_call_waits_through_retries(app: InMemoryApp) -> None:
    assert await flaky.call({"x": 1}) == "ok after 3"


async def test_batch_handlers_answer_each_entry_in_the_order_given(app: InMemoryApp) -> None:
    assert await sums.call({"a": 2, "b": 3}) == Total(5)
    ids = [await app.send("sums", {"a": i, "b": i}, message_id=f"m{i}") for i in range(5)]
    await app.run_until_idle()
    assert len(ids) == 5
    assert {k: v for k, v in app.results("sums").items() if k.startswith("m")} == {
        f"m{i}": {"count": 2 * i} for i in range(5)
    }


async def test_a_batch_mapping_gives_values_and_failures_per_entry(app: InMemoryApp) -> None:
    assert await picky.call({"n": 8}) == 4
    with pytest.raises(DeadLettered) as caught:
        await picky.call({"n": 3})
    assert caught.value.error_type == "ValueError"


async def test_a_batch_answer_of_the_wrong_length_fails_every_entry(app: InMemoryApp) -> None:
    for i in range(3):
        await app.send("short", {"n": i})
    await app.run_until_idle()
    dead = app.dead_letters("short")
    assert len(dead) == 3
    assert all("returned 1 values for 3 entries" in d.error for d in dead)


async def test_the_first_stored_answer_wins_for_one_message_id(app: InMemoryApp) -> None:
    """A second entry with the same message id (a producer's retry) runs the handler again,
    which answers something else; the caller gets the answer stored first."""
    first = await count_up.call({}, message_id="order-1")
    second = await count_up.call({}, message_id="order-1")
    assert first == second
    assert len(app.handled("counter")) == 2


async def test_a_replay_replaces_a_dead_letter_outcome(app: InMemoryApp) -> None:
    broken["on"] = True
    with pytest.raises(DeadLettered):
        await gate.call({}, message_id="m-1")
    broken["on"] = False  # the bug fixed, the dead letter is replayed
    [dead] = app.dead_letters("gate")
    flat = dead.replay_fields()
    await app.send_raw("gate", dict(zip(flat[0::2], flat[1::2], strict=True)))
    await app.run_until_idle()
    assert await gate.result("m-1") == "fixed"


async def test_result_fetches_a_stored_answer_later(app: InMemoryApp) -> None:
    await square.call({"x": 5}, message_id="later")
    assert await square.result("later") == 25
    with pytest.raises(ResultNotFound):
        await square.result("never-sent")


async def test_calling_a_handler_without_results_is_a_clear_error(app: InMemoryApp) -> None:
    with pytest.raises(RegistryError, match="results=True"):
        await plain.call({"x": 1})
