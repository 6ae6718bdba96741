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

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from attrs import frozen

from ..errors import DecodeError
from ..message import Message
from .fields import (
    IPAddress,
    bool_field,
    ip_field,
    json_field,
    key_field,
    metadata_field,
    name_field,
    number_field,
    packed_ip,
)


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
        "model_name",
        "request_id",
        "input_data",
        "metadata",
        "source_ip",
        "created_at",
        "idempotency_key",
        "stream",
        "entry_id",
    )

    def as_row(self) -> tuple[Any, ...]:
        """The row for ``COPY`` (jsonb columns as JSON text; the address packed: asyncpg turns
        bytes into an address without the string round trip it does for address objects)."""
        return (
            self.model_name,
            self.request_id,
            self.input_data_json,
            self.metadata_json,
            packed_ip(self.source_ip),
            self.created_at,
            self.idempotency_key,
            self.stream,
            self.entry_id,
        )


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
        "model_name",
        "request_id",
        "prediction",
        "confidence",
        "anomaly_score",
        "is_anomaly",
        "processing_time_ms",
        "metadata",
        "created_at",
        "idempotency_key",
        "stream",
        "entry_id",
    )

    def as_row(self) -> tuple[Any, ...]:
        """The row for ``COPY`` (jsonb columns as JSON text)."""
        return (
            self.model_name,
            self.request_id,
            self.prediction_json,
            self.confidence,
            self.anomaly_score,
            self.is_anomaly,
            self.processing_time_ms,
            self.metadata_json,
            self.created_at,
            self.idempotency_key,
            self.stream,
            self.entry_id,
        )


def parse_training(msg: Message) -> TrainingRecord:
    """Validate a training-data entry; raises :class:`DecodeError` with a reason code."""
    return TrainingRecord(*_training(msg))


def training_row(msg: Message) -> tuple[Any, ...]:
    """``parse_training(msg).as_row()`` without building the record (the built-in handler's
    path: the frozen record and its row cost ~1.5 us an entry); the same errors."""
    name, request_id, _, input_json, _, metadata_json, ip, created_at, key, stream, entry_id = _training(msg)
    return (name, request_id, input_json, metadata_json, packed_ip(ip), created_at, key, stream, entry_id)


def _training(msg: Message) -> tuple[Any, ...]:
    """A training entry's values in :class:`TrainingRecord`'s field order, each validated,
    in the order whose first failure names the error."""
    fields = msg.fields
    input_data, input_json = json_field(fields, "input_data")
    metadata, metadata_json = metadata_field(fields)
    return (
        name_field(fields, "model_name"),
        name_field(fields, "request_id"),
        input_data,
        input_json,
        metadata,
        metadata_json,
        ip_field(fields.get("source_ip")),
        msg.produced_at,
        key_field(msg),
        msg.stream,
        msg.id,
    )


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
    prediction, prediction_json = json_field(fields, "prediction")
    metadata, metadata_json = metadata_field(fields)
    processing_time = number_field(fields, "processing_time_ms")
    if processing_time < 0:
        raise DecodeError("invalid_value", "field 'processing_time_ms' must be >= 0")
    return (
        name_field(fields, "model_name"),
        name_field(fields, "request_id"),
        prediction,
        prediction_json,
        number_field(fields, "confidence"),
        number_field(fields, "anomaly_score"),
        bool_field(fields.get("is_anomaly"), "is_anomaly"),
        processing_time,
        metadata,
        metadata_json,
        msg.produced_at,
        key_field(msg),
        msg.stream,
        msg.id,
    )
