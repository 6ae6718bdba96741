"""The sending side of :class:`~streamtasks.adserving.AsyncProcessingSystem`: one training
record, one inference result, or both of one API request, each under a message id (stored
once however often it is sent), now or at a due time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from ..keys import FIELD_MESSAGE_ID
from ..producer import Producer, new_message_id
from .config import AsyncProcessingConfig

#: When a send is due: (delay, eta), both None for now.
_When = tuple["float | timedelta | None", "datetime | None"]


class Sending:
    """``send_training_data``, ``send_inference_result``, ``send_api_request_data``."""

    config: AsyncProcessingConfig
    producer: Producer | None
    training_stream: str
    inference_stream: str
    initialize: Callable[[], Awaitable[None]]  # connects: the facade's

    async def send_training_data(
        self,
        *,
        model_name: str,
        request_id: str,
        input_data: Any,
        metadata: Mapping[str, Any] | None = None,
        source_ip: str | None = None,
        message_id: str | None = None,
        delay: float | timedelta | None = None,
        eta: datetime | None = None,
    ) -> str | None:
        """Queue one training record; returns its message id (``None`` when disabled).

        Pass the same ``message_id`` when retrying a send: it is stored once. ``delay``
        (seconds or a timedelta) or ``eta`` (an aware datetime): it waits in Redis until then.
        """
        fields = {"model_name": model_name, "request_id": request_id, "input_data": input_data}
        return await self._send(
            self.training_stream, fields, message_id, (delay, eta), metadata=metadata, source_ip=source_ip
        )

    async def send_inference_result(
        self,
        *,
        model_name: str,
        request_id: str,
        prediction: Any,
        confidence: float,
        anomaly_score: float,
        processing_time_ms: float,
        is_anomaly: bool | None = None,
        metadata: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        delay: float | timedelta | None = None,
        eta: datetime | None = None,
    ) -> str | None:
        """Queue one inference result; returns its message id (``None`` when disabled).

        ``is_anomaly`` defaults to false; ``delay`` / ``eta`` as for :meth:`send_training_data`.
        """
        fields = {
            "model_name": model_name,
            "request_id": request_id,
            "prediction": prediction,
            "confidence": confidence,
            "anomaly_score": anomaly_score,
            "processing_time_ms": processing_time_ms,
        }
        return await self._send(
            self.inference_stream, fields, message_id, (delay, eta), is_anomaly=is_anomaly, metadata=metadata
        )

    async def send_api_request_data(
        self,
        *,
        model_name: str,
        request_id: str,
        input_data: Any,
        prediction: Any,
        confidence: float,
        anomaly_score: float,
        processing_time_ms: float,
        is_anomaly: bool | None = None,
        metadata: Mapping[str, Any] | None = None,
        source_ip: str | None = None,
        delay: float | timedelta | None = None,
        eta: datetime | None = None,
    ) -> dict[str, str | None]:
        """Queue both records of one API request (one round trip); returns their message ids."""
        training, inference = await asyncio.gather(
            self.send_training_data(
                model_name=model_name,
                request_id=request_id,
                input_data=input_data,
                metadata=metadata,
                source_ip=source_ip,
                delay=delay,
                eta=eta,
            ),
            self.send_inference_result(
                model_name=model_name,
                request_id=request_id,
                prediction=prediction,
                confidence=confidence,
                anomaly_score=anomaly_score,
                processing_time_ms=processing_time_ms,
                is_anomaly=is_anomaly,
                metadata=metadata,
                delay=delay,
                eta=eta,
            ),
        )
        return {"training_data": training, "inference_result": inference}

    async def _send(
        self, stream: str, fields: dict[str, Any], message_id: str | None, when: _When, **optional: Any
    ) -> str | None:
        """Send ``fields`` plus the ``optional`` ones that are not None, under a message id, at ``when``."""
        fields.update((k, v) for k, v in optional.items() if v is not None)
        if not self.config.enabled:
            return None  # ASYNC_PROCESSING_ENABLED=false: documented no-op
        if self.producer is None:
            await self.initialize()
        assert self.producer is not None
        mid = message_id or new_message_id()
        fields[FIELD_MESSAGE_ID] = mid
        # A sharded stream: one request's entries share a shard (the key picks it).
        key = str(fields.get("request_id", mid)) if self.producer.shards.get(stream) else None
        delay, eta = when
        await self.producer.send(stream, fields, key=key, delay=delay, eta=eta)
        return mid
