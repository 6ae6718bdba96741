"""`streamtasks schema APP`: each stream's JSON Schema, or an AsyncAPI document; no services."""

from __future__ import annotations

import json

from click.testing import CliRunner

from streamtasks.cli import main


def schema(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["schema", *args])
    return result.exit_code, result.output


def test_typed_streams_get_their_types_schema_and_untyped_ones_string_fields() -> None:
    code, out = schema("typed_app:registry")
    assert code == 0
    doc = json.loads(out)
    assert set(doc) == {"orders", "clicks"}
    order = doc["orders"]["$defs"]["Order"]
    assert doc["orders"]["$ref"] == "#/$defs/Order" and order["required"] == [
        "order_id",
        "amount",
        "customer",
    ]
    assert doc["orders"]["$defs"]["Kind"] == {"title": "Kind", "enum": ["buy", "sell"]}
    code, out = schema("orders_app:registry", "--streams", "orders")
    assert code == 0 and json.loads(out)["orders"]["additionalProperties"] == {"type": "string"}


def test_asyncapi_document_has_a_channel_and_operation_per_stream() -> None:
    code, out = schema("typed_app", "--asyncapi")
    assert code == 0
    doc = json.loads(out)
    assert doc["asyncapi"] == "3.0.0"
    assert doc["channels"]["orders"]["messages"]["entry"]["payload"] == {"$ref": "#/components/schemas/Order"}
    assert doc["operations"]["typed_app.on_clicks"] == {
        "action": "receive",
        "channel": {"$ref": "#/channels/clicks"},
    }
    assert {"Order", "Click", "Kind"} <= set(doc["components"]["schemas"])


def test_a_bad_app_or_stream_is_one_line_and_exit_1() -> None:
    code, out = schema("no_such_module_xyz")
    assert code == 1 and out.count("\n") == 1 and "cannot import module" in out
    code, out = schema("typed_app", "--streams", "nope")
    assert code == 1 and "no handler for stream(s): nope" in out
