"""Typed entries: decoded and validated before the handler runs; `invalid` with the field path."""

from __future__ import annotations

import datetime
from typing import Any

import msgspec
import pytest
import typed_app
from hypothesis import given
from hypothesis import strategies as st
from typed_app import Click, Kind, Order, on_clicks, on_order, registry

from streamtasks import Message, Registry
from streamtasks.errors import DecodeError, RegistryError
from streamtasks.registry import Handler, TypedHandler
from streamtasks.typed import codec_for, message_type_of
from streamtasks.worker.run import run_batch


@pytest.fixture(autouse=True)
def clear_seen() -> None:
    typed_app.seen.clear()


def raw(**fields: str) -> list[bytes]:
    return [b for k, v in fields.items() for b in (k.encode(), v.encode())]


def test_the_decorator_detects_the_declared_type() -> None:
    """A typed function gets a TypedHandler with the type in its spec; Message handlers do not."""
    assert isinstance(on_order, TypedHandler) and on_order.spec.message_type is Order
    assert isinstance(on_clicks, TypedHandler) and on_clicks.spec.message_type is Click
    reg = Registry()

    @reg.stream_handler("m")
    def plain(msg: Message) -> None: ...

    assert type(plain) is Handler and plain.spec.message_type is None


def test_wrong_shapes_are_registration_errors() -> None:
    """list[Order] needs batch=True; a batch of Order needs list[Order]; pydantic is refused."""
    with pytest.raises(RegistryError, match="batch=True"):
        _typed(batch=False, many=True)
    with pytest.raises(RegistryError, match=r"declare list\[Order\]"):
        _typed(batch=True, many=False)


def _typed(batch: bool, many: bool) -> None:
    def one(order: Order) -> None: ...

    def several(orders: list[Order]) -> None: ...

    message_type_of(several if many else one, batch)


def test_fields_are_decoded_from_the_wire_format() -> None:
    """Text fields as they are, the others JSON; reserved and undeclared fields are ignored."""
    order = codec_for(Order).decode(
        {"order_id": "7", "amount": "19.5", "customer": "123", "tags": '["a"]', "kind": "sell",
         "note": "null", "_st_mid": "m1", "extra": "x"}
    )  # fmt: skip
    assert order == Order(7, 19.5, "123", ["a"], None, Kind.SELL)
    click = codec_for(Click).decode({"ad_id": "a1", "at": "2026-01-02T03:04:05Z", "position": "3"})
    assert click.at == datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"order_id": "1", "amount": '"x"', "customer": "c"}, "$.amount"),
        ({"order_id": "1", "amount": "not json", "customer": "c"}, "$.amount"),
        ({"order_id": "1", "amount": "1", "customer": "c", "tags": "[1]"}, "$.tags[0]"),
        ({"order_id": "1", "amount": "1", "customer": "c", "kind": "hold"}, "$.kind"),
        ({"order_id": "1", "customer": "c"}, "amount"),
    ],
)
def test_a_value_that_does_not_fit_names_its_field(fields: dict[str, str], path: str) -> None:
    with pytest.raises(DecodeError) as info:
        codec_for(Order).decode(fields)
    assert info.value.reason == "invalid" and path in str(info.value)


def test_run_batch_dead_letters_invalid_entries_and_gives_the_others_their_values() -> None:
    """The decode step of the batch runner: `invalid`, never retried, batch-mates handled."""
    good = raw(order_id="1", amount="2", customer="c")
    bad = raw(order_id="2", amount='"x"', customer="c")
    result = run_batch(on_order.spec, [("1-0", good, 1), ("2-0", bad, 1)])
    assert list(result.failed) == [1]
    error = result.failed[1].error
    assert error.reason == "invalid" and "$.amount" in error.message
    assert typed_app.seen == [Order(1, 2.0, "c")]


def test_a_typed_batch_fails_entries_by_position() -> None:
    """A typed batch handler returns {position: exception}; positions skip invalid entries."""
    entries = [
        ("1-0", raw(ad_id="a", at="2026-01-01T00:00:00Z", position="1"), 1),
        ("2-0", raw(ad_id="b", at="yesterday", position="1"), 1),
        ("3-0", raw(ad_id="c", at="2026-01-01T00:00:00Z", position="0"), 1),
    ]
    result = run_batch(on_clicks.spec, entries)
    assert {i: f.error.reason for i, f in result.failed.items()} == {1: "invalid", 2: "handler_error"}
    assert [c.ad_id for c in typed_app.seen] == ["a", "c"]  # type: ignore[attr-defined]


async def test_send_encodes_from_the_type_and_round_trips(streamtasks_app: Any) -> None:
    app = streamtasks_app(registry)
    sent = Order(5, 1.25, "0042", ["x", "y"], "gift", Kind.SELL)
    await on_order.send(sent)
    await app.run_until_idle()
    assert typed_app.seen == [sent]
    [(_, fields)] = app.entries("orders")
    assert fields["customer"] == b"0042" and fields["tags"] == b'["x","y"]'


async def test_send_refuses_another_type(streamtasks_app: Any) -> None:
    streamtasks_app(registry)
    with pytest.raises(TypeError, match="expected a Order"):
        await on_order.send({"order_id": 1})  # type: ignore[arg-type]


@given(
    order_id=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    amount=st.floats(allow_nan=False, allow_infinity=False),
    customer=st.text(alphabet=st.characters(blacklist_categories=["Cs"])),
    tags=st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"]))),
)
def test_any_order_round_trips_through_the_wire(
    order_id: int, amount: float, customer: str, tags: list[str]
) -> None:
    """encode -> flat string fields (as a producer writes them) -> decode gives the same value."""
    from streamtasks.message import encode_fields

    order = Order(order_id, amount, customer, tags)
    wire = {
        k: v if isinstance(v, str) else v.decode()
        for k, v in encode_fields(codec_for(Order).encode(order)).items()
    }
    assert codec_for(Order).decode(wire) == order


@given(
    st.dictionaries(st.sampled_from(["order_id", "amount", "customer", "tags", "note", "kind"]), st.text())
)
def test_arbitrary_field_text_decodes_or_is_invalid(fields: dict[str, str]) -> None:
    """Whatever text a foreign producer writes: a value, or DecodeError('invalid'), nothing else."""
    try:
        assert isinstance(codec_for(Order).decode(fields), Order)
    except DecodeError as exc:
        assert exc.reason == "invalid"


def test_schema_is_the_types_json_schema() -> None:
    schema = codec_for(Order).schema()
    props = schema["$defs"]["Order"]["properties"]
    assert props["amount"] == {"type": "number"} and schema["$defs"]["Order"]["required"] == [
        "order_id", "amount", "customer",
    ]  # fmt: skip
    assert msgspec.json.encode(codec_for(Click).schema())
