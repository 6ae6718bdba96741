"""The :class:`Message` a handler receives, and the wire codec.

Wire format: a stream entry is a flat map of string fields. ``str`` values are sent as they
are, ``bytes`` as raw bytes, everything else (numbers, booleans, ``None``, lists, dicts) as
compact JSON. Fields starting with ``_st_`` are reserved for streamtasks. Nothing is ever
pickled.

Reserved fields are checked when an entry is decoded (:func:`decode_entry`): a value that is
not what streamtasks writes there is a :class:`DecodeError` with reason
``bad_reserved_field``, so a handler never gets a :class:`Message` whose accessors fail, and
the entry is dead-lettered at once, alone. Times come from the entry id (or ``_st_ts``); an
id far past the clock (``XADD s 253402300800000-0 ...`` makes every later automatic id so)
gives no usable time, and the time of decoding is used instead.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

from attrs import field, frozen

from .errors import DecodeError, MissingFieldError
from .keys import (
    FIELD_DUE,
    FIELD_MESSAGE_ID,
    FIELD_ORIGIN_ID,
    FIELD_ORIGIN_STREAM,
    FIELD_PRODUCED_AT,
    FIELD_TICK,
)

log = logging.getLogger("streamtasks.message")

#: Entries larger than this (sum of field names and values, in bytes) are dead-lettered.
DEFAULT_MAX_ENTRY_BYTES = 1024 * 1024

#: The last millisecond a :class:`datetime` can hold (9999-12-31T23:59:59.999Z).
MAX_TIME_MS = 253_402_300_799_999
#: An entry id this far past the clock (Redis' and ours may differ a little) is not a time:
#: the time of decoding is used instead.
FUTURE_SKEW_MS = 3600 * 1000
#: Both parts of an entry id are unsigned 64-bit integers.
MAX_ID_PART = 2**64 - 1
#: Message ids starting with one of these get an ``m:`` in front in the idempotency key, so
#: that no message id can spell the key of an entry without one (``e:<stream>/<id>``).
ENTRY_KEY_PREFIX = "e:"
MESSAGE_KEY_PREFIX = "m:"

_MISSING: Any = object()
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
#: Streams whose far-future ids were already logged (once per stream and process).
_future_logged: set[str] = set()

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
    """The stream the entry was read from."""
    id: str
    """The entry id (``<ms>-<seq>``)."""
    fields: Mapping[str, str] = field(converter=_freeze)
    """The entry's fields, as text (read JSON ones with :meth:`json`)."""
    attempt: int = 1
    """The delivery attempt, from 1 (Redis' delivery counter)."""

    @classmethod
    def owning(cls, stream: str, entry_id: str, fields: dict[str, str], attempt: int) -> Message:
        """A message that takes ``fields`` (a dict nobody else holds) without copying it: the
        decoder's path, ~2x cheaper than the validating constructor on the hot path."""
        msg = object.__new__(cls)
        _SET_STREAM(msg, stream)
        _SET_ID(msg, entry_id)
        _SET_FIELDS(msg, MappingProxyType(fields))
        _SET_ATTEMPT(msg, attempt)
        return msg

    def __getitem__(self, name: str) -> str:
        """The field ``name``; :class:`~streamtasks.errors.MissingFieldError` (a
        :class:`DecodeError` and a :class:`KeyError`) if the entry has none."""
        try:
            return self.fields[name]
        except KeyError:
            raise MissingFieldError(name) from None

    def get(self, name: str, default: str | None = None) -> str | None:
        """The field ``name``, or ``default`` if the entry has none."""
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
        """The producer's message id, else ``e:<stream>/<entry id>`` of the entry's origin.

        The two kinds never collide: a message id that starts with ``e:`` or ``m:`` gets an
        ``m:`` in front (any other message id is its own key, as producers sent it).
        """
        mid = self.message_id
        if mid:
            return MESSAGE_KEY_PREFIX + mid if mid.startswith((ENTRY_KEY_PREFIX, MESSAGE_KEY_PREFIX)) else mid
        stream, entry_id = self.origin
        return f"{ENTRY_KEY_PREFIX}{stream}/{entry_id}"

    @property
    def enqueued_at(self) -> datetime:
        """When Redis accepted the entry (the millisecond part of its origin's id).

        An id more than :data:`FUTURE_SKEW_MS` past the clock gives the time of this call
        instead (logged once per stream). Raises :class:`DecodeError` for a bad origin id.
        """
        _, origin_id = self.origin
        when = id_datetime(origin_id, what=FIELD_ORIGIN_ID if FIELD_ORIGIN_ID in self.fields else "entry id")
        if when is None:
            if self.stream not in _future_logged:
                _future_logged.add(self.stream)
                log.warning(
                    "entry ids of %s are far past the clock (%s): the time of processing is used "
                    "as their time (an explicit XADD id in the future moves every later id too)",
                    self.stream,
                    origin_id,
                )
            return datetime.now(timezone.utc)
        return when

    @property
    def produced_at(self) -> datetime:
        """The producer's timestamp field if present, else :attr:`enqueued_at`.

        Raises :class:`DecodeError` (``bad_reserved_field``) if it is not milliseconds since
        the epoch (ASCII digits, at most year 9999).
        """
        raw = self.fields.get(FIELD_PRODUCED_AT)
        if raw is not None:
            return ms_time(_produced_ms(raw))
        return self.enqueued_at

    @property
    def tick(self) -> datetime | None:
        """The tick of a periodic handler's entry (``_st_tick``, UTC), else None."""
        return self._time_field(FIELD_TICK)

    @property
    def due(self) -> datetime | None:
        """When a delayed entry was due (``_st_due``, UTC), else None."""
        return self._time_field(FIELD_DUE)

    def _time_field(self, name: str) -> datetime | None:
        raw = self.fields.get(name)
        if raw is None:
            return None
        if not _digits(raw, 15) or int(raw) > MAX_TIME_MS:
            raise _bad(name, raw, "milliseconds since the epoch up to year 9999")
        return ms_time(int(raw))


# The slots' own setters, for Message.owning: a third cheaper than object.__setattr__, which
# looks each name up again (a subclass takes the same slots).
_SET_STREAM, _SET_ID, _SET_FIELDS, _SET_ATTEMPT = (
    Message.__dict__[name].__set__ for name in ("stream", "id", "fields", "attempt")
)


def _bad(name: str, raw: str, expected: str) -> DecodeError:
    shown = raw if len(raw) <= 40 else raw[:40] + "..."
    return DecodeError("bad_reserved_field", f"{name} {shown!r} is not {expected}")


#: Distinct milliseconds whose datetime is kept: entries produced together share their
#: millisecond (at 50,000 entries/s, 50 of them), and a datetime is immutable.
MS_TIME_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=MS_TIME_CACHE_SIZE)
def ms_time(ms: int) -> datetime:
    """Milliseconds since the epoch (0 to :data:`MAX_TIME_MS`) as an exact UTC datetime (a
    float division loses microseconds near year 9999). Cached: 10x cheaper on a hit, and
    every entry of the built-ins asks for its time."""
    return _EPOCH + timedelta(0, ms // 1000, (ms % 1000) * 1000)


def _digits(text: str, most: int) -> bool:
    """``text`` is 1 to ``most`` ASCII digits (``str.isdigit`` alone takes other scripts')."""
    return 0 < len(text) <= most and text.isascii() and text.isdigit()


@functools.lru_cache(maxsize=MS_TIME_CACHE_SIZE)
def _produced_ms(raw: str) -> int:
    """``_st_ts`` as milliseconds, checked (cached like :func:`ms_time`: the decoder checks it
    and ``produced_at`` reads it, and entries produced together share it)."""
    ms = int(raw) if _digits(raw, 15) else None
    if ms is None or ms > MAX_TIME_MS:
        raise _bad(FIELD_PRODUCED_AT, raw, "milliseconds since the epoch up to year 9999")
    return ms


def parse_entry_id(entry_id: str, what: str = "entry id") -> tuple[int, int]:
    """``<ms>-<seq>`` as two ints; :class:`DecodeError` (``bad_reserved_field``) if it is not
    an id Redis could have made (ASCII digits, each part below 2**64)."""
    ms, _, seq = entry_id.partition("-")
    if not (_digits(ms, 20) and _digits(seq, 20)) or int(ms) > MAX_ID_PART or int(seq) > MAX_ID_PART:
        raise _bad(what, entry_id, "a stream entry id")
    return int(ms), int(seq)


def id_datetime(entry_id: str, now_ms: int | None = None, *, what: str = "entry id") -> datetime | None:
    """The time encoded in a stream entry id (``<ms>-<seq>``), or ``None`` when it is more
    than :data:`FUTURE_SKEW_MS` past ``now_ms`` (default: the clock) and so not a time."""
    ms, _ = parse_entry_id(entry_id, what)
    if now_ms is None:
        now_ms = int(time.time() * 1000)
    if ms > min(now_ms + FUTURE_SKEW_MS, MAX_TIME_MS):
        return None
    return ms_time(ms)


def check_reserved(fields: Mapping[str, str]) -> None:
    """Raise :class:`DecodeError` (``bad_reserved_field``) unless every reserved field that
    is present holds what streamtasks writes there."""
    produced = fields.get(FIELD_PRODUCED_AT)
    if produced is not None:
        _produced_ms(produced)
    origin_stream = fields.get(FIELD_ORIGIN_STREAM)
    origin_id = fields.get(FIELD_ORIGIN_ID)
    if origin_stream is None and origin_id is None:
        return
    if origin_id is None or not origin_stream:
        raise DecodeError(
            "bad_reserved_field", f"{FIELD_ORIGIN_STREAM} and {FIELD_ORIGIN_ID} go together, both non-empty"
        )
    parse_entry_id(origin_id, FIELD_ORIGIN_ID)


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

    Raises :class:`DecodeError` with reason ``too_large``, ``invalid_utf8``, ``invalid`` (not
    a flat name/value list) or ``bad_reserved_field`` (see :func:`check_reserved`).
    """
    # The worker's raw list first: an isinstance check against the Mapping ABC costs more.
    flat: Sequence[bytes] = (
        raw if type(raw) is list or not isinstance(raw, Mapping) else [b for kv in raw.items() for b in kv]
    )
    if len(flat) % 2:
        raise DecodeError("invalid", f"{len(flat)} values: not a list of name/value pairs")
    size = sum(map(len, flat))
    if size > max_bytes:
        raise DecodeError("too_large", f"entry is {size} bytes, over the {max_bytes}-byte limit")
    try:
        decoded = map(bytes.decode, flat)
        # Pairs: the length is even (above). No strict= keyword: parsing it costs 0.18 us an entry.
        fields = dict(zip(decoded, decoded))  # noqa: B905
    except UnicodeDecodeError as exc:
        raise DecodeError("invalid_utf8", f"a field is not valid UTF-8 ({exc.reason})") from None
    check_reserved(fields)
    return Message.owning(stream, entry_id, fields, attempt)
