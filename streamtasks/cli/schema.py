"""``streamtasks schema APP``: each stream's JSON Schema (or an AsyncAPI document).

A typed handler's stream is described by its entry type (:mod:`streamtasks.typed`); a handler
taking :class:`~streamtasks.Message` accepts any flat map of string fields.
"""

from __future__ import annotations

import json
from typing import Any

import click

from ..app import load_registry
from ..errors import StreamtasksError
from ..registry import Registry
from .common import split_streams, streams_option

#: What a stream of an untyped handler takes: flat string fields (docs/guides/producing.md, "Wire format").
UNTYPED = {
    "type": "object",
    "additionalProperties": {"type": "string"},
    "description": "untyped handler: flat string fields, structured values JSON-encoded",
}
ASYNCAPI_VERSION = "3.0.0"


def stream_schemas(registry: Registry, ref: str = "#/$defs/{name}") -> tuple[dict[str, Any], dict[str, Any]]:
    """(schema by stream, shared definitions); typed streams refer to their type by ``ref``."""
    typed = {s: spec.message_type for s, spec in registry.handlers.items() if spec.message_type}
    defs: dict[str, Any] = {}
    refs: dict[Any, Any] = {}
    if typed:
        import msgspec

        types = list(dict.fromkeys(typed.values()))
        found, defs = msgspec.json.schema_components(types, ref_template=ref)
        refs = dict(zip(types, found, strict=True))
    return {s: refs[typed[s]] if s in typed else UNTYPED for s in registry.handlers}, defs


def json_schema(registry: Registry) -> dict[str, Any]:
    """``{stream: its JSON Schema}``, each one standalone (its own ``$defs``)."""
    schemas, defs = stream_schemas(registry)
    return {
        s: {**schema, "$defs": defs} if defs and "$ref" in schema else schema for s, schema in schemas.items()
    }


def asyncapi(registry: Registry) -> dict[str, Any]:
    """An AsyncAPI 3 document: one channel per stream, one receive operation per handler."""
    from .._version import __version__

    schemas, defs = stream_schemas(registry, "#/components/schemas/{name}")
    channels = {
        stream: {"address": stream, "messages": {"entry": {"payload": schema}}}
        for stream, schema in schemas.items()
    }
    operations = {
        spec.name: {"action": "receive", "channel": {"$ref": "#/channels/" + _pointer(stream)}}
        for stream, spec in registry.handlers.items()
    }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {"title": f"streamtasks group {registry.group}", "version": __version__},
        "channels": channels,
        "operations": operations,
        "components": {"schemas": defs},
    }


def _pointer(name: str) -> str:
    """``name`` as a JSON Pointer token (RFC 6901)."""
    return name.replace("~", "~0").replace("/", "~1")


@click.command("schema")
@click.argument("app")
@streams_option
@click.option("--asyncapi", "as_asyncapi", is_flag=True, help="Print an AsyncAPI 3 document instead.")
def schema_command(app: str, streams: str | None, as_asyncapi: bool) -> None:
    """Print the JSON Schema of each stream of the Registry at APP (MODULE:ATTR), as JSON.

    Exit status: 0 printed, 1 APP cannot be loaded (or has no such stream).
    """
    try:
        registry = load_registry(app)
        names = split_streams(streams)
        if names:
            registry = registry.only(names)
    except StreamtasksError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(asyncapi(registry) if as_asyncapi else json_schema(registry), indent=2))
