"""Typed records of the adserving wire format, and their validating parsers.

Wire format (flat string fields; structured values JSON-encoded):

* ``training_data_stream``: ``model_name``, ``request_id``, ``input_data`` (JSON),
  optional ``metadata`` (a JSON object), optional ``source_ip`` (an IPv4/IPv6 address).
* ``inference_results_stream``: ``model_name``, ``request_id``, ``prediction`` (JSON),
  ``confidence`` and ``anomaly_score`` (finite numbers), optional ``is_anomaly``
  (``true``/``false``/``1``/``0``, default false), ``processing_time_ms`` (a number >= 0),
  optional ``metadata`` (a JSON object).
* Both: optional reserved fields ``_st_mid`` (message id: the idempotency key; see
  :attr:`~streamtasks.Message.idempotency_key`) and ``_st_ts`` (producer time in ms:
  ``created_at``; else the entry id's time).

:func:`parse_training` and :func:`parse_inference` accept exactly what PostgreSQL can store
and raise :class:`~streamtasks.errors.DecodeError` for anything else, with one of these
reasons: ``missing_field``, ``invalid_json``, ``wrong_type``, ``invalid_value``,
``nul_byte``, ``lone_surrogate``, ``too_deep``, ``too_large``, ``bad_reserved_field``. They
are pure and on the hot path: each JSON field is decoded once, and the original text is
kept so the store can pass it to ``jsonb`` as it is.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, ClassVar

import msgspec
from attrs import frozen

from ..errors import DecodeError
from ..message import Message

#: Longest ``model_name`` / ``request_id`` accepted (characters).
MAX_NAME_LENGTH = 256
#: Longest idempotency key (the producer's ``_st_mid``) accepted (characters).
MAX_KEY_LENGTH = 512
#: Deepest JSON nesting accepted (arrays and objects).
MAX_JSON_DEPTH = 64
#: Longest number literal accepted in JSON, and the largest decimal exponent: both far inside
#: what PostgreSQL's numeric (and so jsonb) can hold, which ``1e-20000`` is not.
MAX_NUMBER_LENGTH = 1000
MAX_NUMBER_EXPONENT = 1000

#: Distinct source addresses whose parsed form is kept (they are immutable).
IP_CACHE_SIZE = 65536

IPAddress = IPv4Address | IPv6Address

_BOOLS = {"true": True, "false": False, "1": True, "0": False}
_EMPTY_OBJECT = "{}"


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_LENGTH:
        raise ValueError("number literal too long")
    e = text.find("e")
    if e < 0:
        e = text.find("E")
    if e >= 0 and abs(int(text[e + 1 :])) > MAX_NUMBER_EXPONENT:
        raise ValueError(f"number {text[:40]!r} out of range")
    return float(text)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_float=_parse_float, parse_constant=_reject_constant)
# The same without the per-float Python hook (the C scanner parses floats itself): used when
# no number in the text can be out of range, i.e. almost always. parse_constant costs
# nothing until a NaN/Infinity shows up.
_FAST_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
# Set by JSONDecoder.__init__ (the C scanner); typeshed does not declare it.
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]
_FAST_SCAN: Callable[[str, int], tuple[Any, int]] = _FAST_DECODER.scan_once  # type: ignore[attr-defined]
#: Text that may hold a number _parse_float refuses: an exponent of 4+ digits, or a digit run
#: longer than MAX_NUMBER_LENGTH. Only such text pays for the checked decoder.
_EXPONENT_DIGITS = len(str(MAX_NUMBER_EXPONENT))
_MAY_BE_OUT_OF_RANGE = re.compile(rf"[eE][+-]?\d{{{_EXPONENT_DIGITS}}}|\d{{{MAX_NUMBER_LENGTH}}}")
#: The same for text too short to hold a number literal longer than MAX_NUMBER_LENGTH: the
#: exponent alone (3x cheaper to look for than both).
_MAY_HAVE_A_LARGE_EXPONENT = re.compile(rf"[eE][+-]?\d{{{_EXPONENT_DIGITS}}}")
_JSON_WHITESPACE = " \t\n\r"
#: msgspec's C decoder, ~6x faster than the standard one on short text. It is only trusted to
#: accept: whatever it refuses (NaN, a lone surrogate escape, a float past the double range,
#: malformed text) goes to the standard decoder, which decides as before and says why.
_MSGSPEC = msgspec.json.Decoder()


#: Longer text goes to the checked decoder without the scan for numbers it may refuse: the scan
#: (a regex) costs ~25 ns a character, 1.2-3 ms on 50 KB, where the checked decoder's hook costs
#: well under a microsecond per float literal; on short text the scan wins.
FAST_SCAN_MAX_LENGTH = 2048


def _loads(raw: str) -> Any:
    """``_DECODER.decode``: by msgspec when no number in the text can be out of range and it
    accepts the text, else by the standard decoder without its two regex matches when the
    text starts with a value."""
    size = len(raw)
    if size > FAST_SCAN_MAX_LENGTH:
        checked = True
    else:
        scan_for = _MAY_HAVE_A_LARGE_EXPONENT if size <= MAX_NUMBER_LENGTH else _MAY_BE_OUT_OF_RANGE
        checked = scan_for.search(raw) is not None
        if not checked:
            try:
                return _MSGSPEC.decode(raw)
            except (msgspec.DecodeError, RecursionError):
                pass  # the standard decoder decides, and says why
    decoder, scan = (_DECODER, _SCAN) if checked else (_FAST_DECODER, _FAST_SCAN)
    try:
        value, end = scan(raw, 0)
    except StopIteration:  # leading whitespace, or not JSON: the full decoder says which
        return decoder.decode(raw)
    if end != len(raw) and raw[end:].strip(_JSON_WHITESPACE):
        raise ValueError(f"extra data at character {end}")
    return value


@frozen
class TrainingRecord:
    """One validated training-data entry. JSON fields keep their decoded value and text."""

    model_name: str
    request_id: str
    input_data: Any
    input_data_json: str
    metadata: Mapping[str, Any]
    metadata_json: str
    source_ip: IPAddress | None
    created_at: datetime
    idempotency_key: str
    stream: str
    entry_id: str

    #: Table columns, in the order of :meth:`as_row`.
    COLUMNS: ClassVar[tuple[str, ...]] = (
        "model_name", "request_id", "input_data", "metadata", "source_ip",
        "created_at", "idempotency_key", "stream", "entry_id",
    )  # fmt: skip

    def as_row(self) -> tuple[Any, ...]:
        """The row for ``COPY`` (jsonb columns as JSON text; the address packed: asyncpg turns
        bytes into an address without the string round trip it does for address objects)."""
        return (
            self.model_name, self.request_id, self.input_data_json, self.metadata_json,
            _packed(self.source_ip), self.created_at, self.idempotency_key, self.stream, self.entry_id,
        )  # fmt: skip


@frozen
class InferenceRecord:
    """One validated inference-result entry."""

    model_name: str
    request_id: str
    prediction: Any
    prediction_json: str
    confidence: float
    anomaly_score: float
    is_anomaly: bool
    processing_time_ms: float
    metadata: Mapping[str, Any]
    metadata_json: str
    created_at: datetime
    idempotency_key: str
    stream: str
    entry_id: str

    COLUMNS: ClassVar[tuple[str, ...]] = (
        "model_name", "request_id", "prediction", "confidence", "anomaly_score", "is_anomaly",
        "processing_time_ms", "metadata", "created_at", "idempotency_key", "stream", "entry_id",
    )  # fmt: skip

    def as_row(self) -> tuple[Any, ...]:
        """The row for ``COPY`` (jsonb columns as JSON text)."""
        return (
            self.model_name, self.request_id, self.prediction_json, self.confidence,
            self.anomaly_score, self.is_anomaly, self.processing_time_ms, self.metadata_json,
            self.created_at, self.idempotency_key, self.stream, self.entry_id,
        )  # fmt: skip


def parse_training(msg: Message) -> TrainingRecord:
    """Validate a training-data entry; raises :class:`DecodeError` with a reason code."""
    return TrainingRecord(*_training(msg))


def training_row(msg: Message) -> tuple[Any, ...]:
    """``parse_training(msg).as_row()`` without building the record (the built-in handler's
    path: the frozen record and its row cost ~1.5 us an entry); the same errors."""
    name, request_id, _, input_json, _, metadata_json, ip, created_at, key, stream, entry_id = _training(msg)
    return (name, request_id, input_json, metadata_json, _packed(ip), created_at, key, stream, entry_id)


def _training(msg: Message) -> tuple[Any, ...]:
    """A training entry's values in :class:`TrainingRecord`'s field order, each validated,
    in the order whose first failure names the error."""
    fields = msg.fields
    input_data, input_json = _json_field(fields, "input_data")
    metadata, metadata_json = _metadata(fields)
    return (
        _name(fields, "model_name"), _name(fields, "request_id"), input_data, input_json, metadata,
        metadata_json, _source_ip(fields.get("source_ip")), msg.produced_at, _key(msg), msg.stream, msg.id,
    )  # fmt: skip


def parse_inference(msg: Message) -> InferenceRecord:
    """Validate an inference-result entry; raises :class:`DecodeError` with a reason code."""
    return InferenceRecord(*_inference(msg))


def inference_row(msg: Message) -> tuple[Any, ...]:
    """``parse_inference(msg).as_row()`` without building the record; the same errors."""
    name, request_id, _, prediction_json, *numbers, _, metadata_json, created_at, key, stream, entry_id = (
        _inference(msg)
    )
    return (name, request_id, prediction_json, *numbers, metadata_json, created_at, key, stream, entry_id)


def _inference(msg: Message) -> tuple[Any, ...]:
    """An inference entry's values in :class:`InferenceRecord`'s field order, each validated,
    in the order whose first failure names the error."""
    fields = msg.fields
    prediction, prediction_json = _json_field(fields, "prediction")
    metadata, metadata_json = _metadata(fields)
    processing_time = _number(fields, "processing_time_ms")
    if processing_time < 0:
        raise DecodeError("invalid_value", "field 'processing_time_ms' must be >= 0")
    return (
        _name(fields, "model_name"), _name(fields, "request_id"), prediction, prediction_json,
        _number(fields, "confidence"), _number(fields, "anomaly_score"),
        _bool(fields.get("is_anomaly"), "is_anomaly"), processing_time, metadata, metadata_json,
        msg.produced_at, _key(msg), msg.stream, msg.id,
    )  # fmt: skip


def _required(fields: Mapping[str, str], name: str) -> str:
    raw = fields.get(name)
    if raw is None:
        raise DecodeError("missing_field", f"field {name!r} is missing")
    return raw


def _check_text(text: str, what: str) -> None:
    """PostgreSQL text cannot hold NUL, nor (as UTF-8) a lone surrogate."""
    if "\x00" in text:
        raise DecodeError("nul_byte", f"{what} contains a NUL character")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise DecodeError("lone_surrogate", f"{what} contains a lone surrogate") from None


def _name(fields: Mapping[str, str], name: str) -> str:
    raw = _required(fields, name)
    if not raw:
        raise DecodeError("invalid_value", f"field {name!r} is empty")
    if len(raw) > MAX_NAME_LENGTH:
        raise DecodeError("too_large", f"field {name!r} is longer than {MAX_NAME_LENGTH}")
    _check_text(raw, f"field {name!r}")
    return raw


def _key(msg: Message) -> str:
    key = msg.idempotency_key
    if len(key) > MAX_KEY_LENGTH:
        raise DecodeError("too_large", f"idempotency key (message id) is longer than {MAX_KEY_LENGTH}")
    _check_text(key, "message id")
    return key


def _json_field(fields: Mapping[str, str], name: str) -> tuple[Any, str]:
    return _decode_json(_required(fields, name), name)


def _decode_json(raw: str, name: str) -> tuple[Any, str]:
    _check_text(raw, f"field {name!r}")
    # Cheap bounds first: nesting cannot exceed the number of brackets, and a decoded
    # string can only hold NUL or a surrogate if the text has a \u escape.
    may_be_deep = raw.count("[") + raw.count("{") > MAX_JSON_DEPTH
    has_escapes = "\\u" in raw
    try:
        value = _loads(raw)
    except RecursionError:
        raise DecodeError("too_deep", f"field {name!r} nests too deeply") from None
    except ValueError as exc:  # JSONDecodeError, numbers out of range, int digit limit
        raise DecodeError("invalid_json", f"field {name!r}: {exc}") from None
    if may_be_deep or has_escapes:
        _check_tree(value, name)
    return value, raw


def _check_tree(value: Any, name: str) -> None:
    """Walk decoded JSON iteratively: depth <= MAX_JSON_DEPTH, every string storable."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            _check_text(node, f"a string in field {name!r}")
        elif isinstance(node, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise DecodeError("too_deep", f"field {name!r} nests over {MAX_JSON_DEPTH} levels")
            if isinstance(node, dict):
                stack.extend((k, depth) for k in node)
                stack.extend((v, depth + 1) for v in node.values())
            else:
                stack.extend((v, depth + 1) for v in node)


def _metadata(fields: Mapping[str, str]) -> tuple[Mapping[str, Any], str]:
    raw = fields.get("metadata")
    if raw is None or raw == "":
        return {}, _EMPTY_OBJECT
    value, text = _decode_json(raw, "metadata")
    if not isinstance(value, dict):
        raise DecodeError("wrong_type", "field 'metadata' must be a JSON object")
    return value, text


def _number(fields: Mapping[str, str], name: str) -> float:
    raw = _required(fields, name)
    try:
        value = float(raw)
    except ValueError:
        raise DecodeError("wrong_type", f"field {name!r} is not a number") from None
    if not math.isfinite(value):
        raise DecodeError("invalid_value", f"field {name!r} must be finite")
    return value


def _bool(raw: str | None, name: str) -> bool:
    if raw is None or raw == "":
        return False
    value = _BOOLS.get(raw)
    if value is None:
        value = _BOOLS.get(raw.strip().lower())
        if value is None:
            raise DecodeError("wrong_type", f"field {name!r} must be true/false/1/0")
    return value


def _packed(ip: IPAddress | None) -> bytes | None:
    return None if ip is None else ip.packed


def _source_ip(raw: str | None) -> IPAddress | None:
    if raw is None or raw == "":
        return None
    try:
        return _parse_ip(raw)
    except ValueError:
        raise DecodeError("invalid_value", "field 'source_ip' is not an IP address") from None


@functools.lru_cache(maxsize=IP_CACHE_SIZE)
def _parse_ip(raw: str) -> IPAddress:
    # ipaddress parses in pure Python (~10 us); API clients repeat, so most entries hit here.
    return ip_address(raw)
