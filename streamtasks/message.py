"""The :class:`Message` a handler receives, and the wire codec.

Wire format: a stream entry is a flat map of string fields. ``str`` values are sent as they
are, ``bytes`` as raw bytes, everything else (numbers, booleans, ``None``, lists, dicts) as
compact JSON. Fields starting with ``_st_`` are reserved for streamtasks. Nothing is ever
pickled.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any

from attrs import field, frozen

from .errors import DecodeError
from .keys import FIELD_MESSAGE_ID, FIELD_ORIGIN_ID, FIELD_ORIGIN_STREAM, FIELD_PRODUCED_AT

#: Entries larger than this (sum of field names and values, in bytes) are dead-lettered.
DEFAULT_MAX_ENTRY_BYTES = 1024 * 1024

_MISSING: Any = object()

#: An entry's fields as read from Redis: a mapping, or the flat ``[name, value, ...]`` list
#: Redis itself returns (the worker keeps that form: no per-entry dict on the hot path).
RawFields = Mapping[bytes, bytes] | Sequence[bytes]
FieldValue = str | bytes | int | float | bool | None | list[Any] | dict[str, Any]


def _freeze(fields: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(fields))


@frozen
class Message:
    """One stream entry, decoded. Immutable.

    ``attempt`` is the delivery attempt, starting at 1; it survives worker restarts because
    it is Redis' own delivery counter for the entry.
    """

    stream: str
    id: str
    fields: Mapping[str, str] = field(converter=_freeze)
    attempt: int = 1

    def __getitem__(self, name: str) -> str:
        return self.fields[name]

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.fields.get(name, default)

    def json(self, name: str, default: Any = _MISSING) -> Any:
        """Decode the JSON-encoded field ``name``.

        Raises :class:`DecodeError` (reason ``missing_field`` or ``invalid_json``), which a
        worker turns into a dead letter without retries, unless ``default`` is given for a
        missing field.
        """
        raw = self.fields.get(name)
        if raw is None:
            if default is not _MISSING:
                return default
            raise DecodeError("missing_field", f"field {name!r} is missing")
        return loads_json(raw, name)

    @property
    def message_id(self) -> str | None:
        """The producer-assigned message id, if the producer set one."""
        return self.fields.get(FIELD_MESSAGE_ID)

    @property
    def origin(self) -> tuple[str, str]:
        """(stream, entry id) the entry was first written as; differs from ours after a replay."""
        return (
            self.fields.get(FIELD_ORIGIN_STREAM, self.stream),
            self.fields.get(FIELD_ORIGIN_ID, self.id),
        )

    @property
    def idempotency_key(self) -> str:
        """The producer's message id, else ``stream/entry-id`` of the entry's origin."""
        mid = self.message_id
        if mid:
            return mid
        stream, entry_id = self.origin
        return f"{stream}/{entry_id}"

    @property
    def enqueued_at(self) -> datetime:
        """When Redis accepted the entry (the millisecond part of its id)."""
        return entry_time(self.origin[1])

    @property
    def produced_at(self) -> datetime:
        """The producer's timestamp field if present and valid, else :attr:`enqueued_at`."""
        raw = self.fields.get(FIELD_PRODUCED_AT)
        if raw is not None:
            try:
                return datetime.fromtimestamp(int(raw) / 1000, tz=timezone.utc)
            except (ValueError, OverflowError, OSError):
                raise DecodeError("wrong_type", f"{FIELD_PRODUCED_AT} is not an integer") from None
        return self.enqueued_at


def entry_time(entry_id: str) -> datetime:
    """The time encoded in a stream entry id (``<ms>-<seq>``)."""
    ms = int(entry_id.partition("-")[0])
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def loads_json(raw: str, name: str = "value") -> Any:
    """``json.loads`` with every failure turned into a :class:`DecodeError`."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise DecodeError("too_deep", f"field {name!r} nests too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and int strings past the digit limit
        raise DecodeError("invalid_json", f"field {name!r}: {exc}") from None


def encode_value(value: FieldValue) -> str | bytes:
    """Encode one field value for the wire."""
    if isinstance(value, (str, bytes)):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode_fields(fields: Mapping[str, FieldValue]) -> dict[str, str | bytes]:
    """Encode a mapping of field values for ``XADD``."""
    if not fields:
        raise ValueError("a stream entry needs at least one field")
    return {name: encode_value(value) for name, value in fields.items()}


def field_pairs(raw: RawFields) -> Iterator[tuple[bytes, bytes]]:
    """(name, value) pairs of raw fields in either form."""
    if isinstance(raw, Mapping):
        return iter(raw.items())
    return zip(raw[0::2], raw[1::2], strict=True)


def decode_entry(
    stream: str,
    entry_id: str,
    raw: RawFields,
    attempt: int = 1,
    max_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
) -> Message:
    """Decode a raw entry from Redis (bytes) into a :class:`Message`.

    Raises :class:`DecodeError` with reason ``too_large`` or ``invalid_utf8``.
    """
    flat: Sequence[bytes] = raw if not isinstance(raw, Mapping) else [b for kv in raw.items() for b in kv]
    size = sum(map(len, flat))
    if size > max_bytes:
        raise DecodeError("too_large", f"entry is {size} bytes, over the {max_bytes}-byte limit")
    try:
        fields = dict(zip(map(bytes.decode, flat[0::2]), map(bytes.decode, flat[1::2]), strict=True))
    except UnicodeDecodeError as exc:
        raise DecodeError("invalid_utf8", f"a field is not valid UTF-8 ({exc.reason})") from None
    return Message(stream=stream, id=entry_id, fields=fields, attempt=attempt)
