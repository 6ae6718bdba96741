"""``AsyncProcessingSystem``: the facade an ad-serving / model-serving API uses.

The API process sends what it saw (``send_training_data``, ``send_inference_result``) and
answers its user at once; workers (``start_workers`` here, or ``streamtasks worker
streamtasks.builtins:registry`` anywhere) land the entries in PostgreSQL.

    async with AsyncProcessingSystem() as system:       # config from env / .env
        await system.setup_database()
        mid = await system.send_training_data(model_name="fraud", request_id="r1", input_data={...})
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from ..connect import connect
from ..errors import ConfigError, StreamtasksError
from ..keys import FIELD_MESSAGE_ID
from ..logs import redact
from ..producer import Producer, new_message_id
from ..registry import Registry
from ..serve import RayConfig
from ..worker import WorkerSettings
from . import db, schema, stats
from .config import AsyncProcessingConfig
from .handlers import make_registry
from .local import LocalWorkers

log = logging.getLogger("streamtasks.system")


class AsyncProcessingSystem:
    """Send training data and inference results; run workers; report status and stats."""

    def __init__(
        self,
        config: AsyncProcessingConfig | None = None,
        *,
        registry: Registry | None = None,
        ray_address: str | None = None,
        worker_settings: WorkerSettings | None = None,
    ) -> None:
        self.config = config or AsyncProcessingConfig.from_env()
        consumer = self.config.consumer
        self.training_stream, self.inference_stream = consumer.streams
        self.registry = registry or make_registry(
            training_stream=self.training_stream,
            inference_stream=self.inference_stream,
            batch_size=consumer.batch_size,
            shards=consumer.shards,
        )
        self.ray_address = ray_address
        self.worker_settings = worker_settings or WorkerSettings(block=consumer.block_ms / 1000)
        self.redis: Redis | None = None
        self.producer: Producer | None = None
        self.pool: Any = None
        self.local = LocalWorkers(self.worker_settings)

    def __repr__(self) -> str:
        redis, database = self.config.redis.safe_url, self.config.database.safe_dsn
        return f"<AsyncProcessingSystem redis={redis} database={database}>"

    # -- lifecycle -------------------------------------------------------------------------

    async def initialize(self) -> None:
        """Connect to Redis (and check it answers). PostgreSQL is connected on first use."""
        if self.redis is None:
            self.redis = await _connect(self.config.redis.url, self.config.redis.safe_url)
            own = (self.training_stream, self.inference_stream)
            shards = {s: n for s, n in zip(own, self.config.consumer.shards, strict=True) if n}
            self.producer = Producer(self.redis, shards=shards)

    async def close(self) -> None:
        """Stop workers started here and close every connection."""
        await self.stop_workers()
        if self.producer is not None:
            await self.producer.close()
        if self.pool is not None:
            await self.pool.close()
            self.pool = None
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None

    async def __aenter__(self) -> AsyncProcessingSystem:
        await self.initialize()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def database_pool(self) -> Any:
        """The facade's asyncpg pool (created on first use), for your own queries."""
        if self.pool is None:
            self.pool = await db.create_pool(self.config.database.dsn, min_size=1, max_size=4)
        return self.pool

    def _redis(self) -> Redis:
        if self.redis is None:
            raise StreamtasksError("call `await system.initialize()` first (or use `async with`)")
        return self.redis

    async def setup_database(self, schema_path: str | Path | None = None) -> dict[str, Any]:
        """Create the tables (idempotent); TimescaleDB hypertables when the extension exists."""
        return await schema.setup_database(await self.database_pool(), schema_path)

    # -- sending ---------------------------------------------------------------------------

    async def send_training_data(
        self, *, model_name: str, request_id: str, input_data: Any,
        metadata: Mapping[str, Any] | None = None, source_ip: str | None = None,
        message_id: str | None = None,
    ) -> str | None:  # fmt: skip
        """Queue one training record; returns its message id (``None`` when disabled).

        Pass the same ``message_id`` when retrying a send: it is stored once.
        """
        fields = {"model_name": model_name, "request_id": request_id, "input_data": input_data}
        return await self._send(
            self.training_stream, fields, message_id, metadata=metadata, source_ip=source_ip
        )

    async def send_inference_result(
        self, *, model_name: str, request_id: str, prediction: Any, confidence: float,
        anomaly_score: float, processing_time_ms: float, is_anomaly: bool | None = None,
        metadata: Mapping[str, Any] | None = None, message_id: str | None = None,
    ) -> str | None:  # fmt: skip
        """Queue one inference result; returns its message id (``None`` when disabled).

        ``is_anomaly`` defaults to false when not given.
        """
        fields = {
            "model_name": model_name, "request_id": request_id, "prediction": prediction,
            "confidence": confidence, "anomaly_score": anomaly_score,
            "processing_time_ms": processing_time_ms,
        }  # fmt: skip
        return await self._send(
            self.inference_stream, fields, message_id, is_anomaly=is_anomaly, metadata=metadata
        )

    async def send_api_request_data(
        self, *, model_name: str, request_id: str, input_data: Any, prediction: Any,
        confidence: float, anomaly_score: float, processing_time_ms: float,
        is_anomaly: bool | None = None, metadata: Mapping[str, Any] | None = None,
        source_ip: str | None = None,
    ) -> dict[str, str | None]:  # fmt: skip
        """Queue both records of one API request (one round trip); returns their message ids."""
        training, inference = await asyncio.gather(
            self.send_training_data(
                model_name=model_name, request_id=request_id, input_data=input_data,
                metadata=metadata, source_ip=source_ip,
            ),
            self.send_inference_result(
                model_name=model_name, request_id=request_id, prediction=prediction,
                confidence=confidence, anomaly_score=anomaly_score,
                processing_time_ms=processing_time_ms, is_anomaly=is_anomaly, metadata=metadata,
            ),
        )  # fmt: skip
        return {"training_data": training, "inference_result": inference}

    async def _send(
        self, stream: str, fields: dict[str, Any], message_id: str | None, **optional: Any
    ) -> str | None:
        """Send ``fields`` plus the ``optional`` ones that are not None, under a message id."""
        fields.update((k, v) for k, v in optional.items() if v is not None)
        if not self.config.enabled:
            return None  # ASYNC_PROCESSING_ENABLED=false: documented no-op
        if self.producer is None:
            await self.initialize()
        assert self.producer is not None
        mid = message_id or new_message_id()
        fields[FIELD_MESSAGE_ID] = mid
        # A sharded stream: one request's entries share a shard (the key picks it).
        await self.producer.send(stream, fields, key=str(fields.get("request_id", mid)))
        return mid

    # -- workers ---------------------------------------------------------------------------

    async def start_workers(self, streams: Sequence[str] | None = None) -> None:
        """Run ``ASYNC_PROCESSING_NUM_WORKERS`` consumers on Ray, supervised from here: Ray
        actors that read, run and settle their own batches (``STREAMTASKS_MODE=actors``, the
        default, as for ``streamtasks worker``), or workers in this process that run one Ray
        task per batch (``tasks``); ``STREAMTASKS_ACTORS=auto``: as many actors as the backlog
        needs (``--actors auto``). Returns once they read; raises the first one's error if
        one fails to start. Production runs ``streamtasks worker`` processes; this is for
        one-process setups, examples and tests."""
        if self.local.workers:
            return
        registry = self.registry.only(list(streams)) if streams else self.registry
        ray = RayConfig(address=self.ray_address, env={"DATABASE_URL": self.config.database.dsn})
        await self.local.start(registry, self._redis(), self.config.redis.url, ray, self.config.consumer)

    async def stop_workers(self) -> None:
        """Stop the workers started here: finish in-flight batches, hand back the rest."""
        await self.local.stop()

    # -- status and stats --------------------------------------------------------------------

    async def get_system_status(self) -> dict[str, Any]:
        """Health of Redis, PostgreSQL and Ray, and per stream: length, pending, lag, dead
        letters, consumers; the workers alive. Never raises for a service being down."""
        try:
            database: Any = await self.database_pool()
        except Exception:  # reported as unhealthy by database_health on the DSN
            database = self.config.database.dsn
        return await stats.system_status(
            self._redis(),
            self.registry,
            self._served_streams(),
            database,
            producer={"enabled": self.config.enabled, "redis": self.config.redis.safe_url},
            local_workers=self.local.consumers,
            cluster=self.local.cluster,
        )

    def _served_streams(self) -> list[str]:
        """The two streams, or their shards."""
        own = (self.training_stream, self.inference_stream)
        found = [s for s, spec in self.registry.handlers.items() if (spec.shard_of or s) in own]
        return found or list(own)

    async def get_model_performance_stats(self, model_name: str, hours: float = 24) -> dict[str, Any]:
        """Requests, throughput, latency percentiles, confidence, anomaly rate, hourly
        buckets, and the model's dead letters, over the last ``hours``."""
        return await stats.model_stats(
            await self.database_pool(), self._redis(), self.registry, model_name, hours
        )


async def _connect(url: str, safe_url: str) -> Redis:
    """One node or a Redis Cluster (:func:`streamtasks.connect.connect`), checked with PING."""
    redis: Redis | None = None
    try:
        redis = await connect(url)
        await redis.ping()
    except Exception as exc:
        if redis is not None:
            await redis.aclose()
        raise StreamtasksError(f"cannot reach Redis at {safe_url}: {redact(str(exc))}") from None
    return redis


__all__ = ["AsyncProcessingSystem", "ConfigError"]
