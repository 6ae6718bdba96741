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
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from attrs import evolve
from redis.asyncio import Redis

from . import db, keys
from .builtins import make_registry
from .config import AsyncProcessingConfig
from .deadletter import PACKED_FIELDS, DeadLetter
from .errors import ConfigError, StreamtasksError
from .executors import RayExecutor
from .keys import FIELD_MESSAGE_ID
from .logs import redact
from .producer import Producer, new_message_id
from .registry import Registry
from .router import Worker, WorkerSettings, default_consumer_name

log = logging.getLogger("streamtasks.system")
#: Dead letters scanned (newest first) to count a model's dead letters in the stats.
DEAD_LETTER_SCAN_LIMIT = 100_000


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
        )
        self.ray_address = ray_address
        self.worker_settings = worker_settings or WorkerSettings(block=consumer.block_ms / 1000)
        self.redis: Redis | None = None
        self.producer: Producer | None = None
        self.pool: Any = None
        self.executor: RayExecutor | None = None
        self._workers: list[tuple[Worker, asyncio.Task[None]]] = []

    def __repr__(self) -> str:
        redis, database = self.config.redis.safe_url, self.config.database.safe_dsn
        return f"<AsyncProcessingSystem redis={redis} database={database}>"

    # -- lifecycle -------------------------------------------------------------------------

    async def initialize(self) -> None:
        """Connect to Redis (and check it answers). PostgreSQL is connected on first use."""
        if self.redis is not None:
            return
        self.redis = Redis.from_url(self.config.redis.url)
        try:
            await self.redis.ping()
        except Exception as exc:
            await self.redis.aclose()
            self.redis = None
            raise StreamtasksError(
                f"cannot reach Redis at {self.config.redis.safe_url}: {redact(str(exc))}"
            ) from None
        self.producer = Producer(self.redis)

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
        return await self._pool()

    async def _pool(self) -> Any:
        if self.pool is None:
            self.pool = await db.create_pool(self.config.database.dsn, min_size=1, max_size=4)
        return self.pool

    def _redis(self) -> Redis:
        if self.redis is None:
            raise StreamtasksError("call `await system.initialize()` first (or use `async with`)")
        return self.redis

    # -- database --------------------------------------------------------------------------

    async def setup_database(self, schema_path: str | Path | None = None) -> dict[str, Any]:
        """Create the tables (idempotent); TimescaleDB hypertables when the extension exists."""
        return await db.setup_database(await self._pool(), schema_path)

    # -- sending ---------------------------------------------------------------------------

    async def send_training_data(
        self,
        *,
        model_name: str,
        request_id: str,
        input_data: Any,
        metadata: Mapping[str, Any] | None = None,
        source_ip: str | None = None,
        message_id: str | None = None,
    ) -> str | None:
        """Queue one training record; returns its message id (``None`` when disabled).

        Pass the same ``message_id`` when retrying a send: it is stored once.
        """
        fields: dict[str, Any] = {
            "model_name": model_name,
            "request_id": request_id,
            "input_data": input_data,
        }
        if metadata is not None:
            fields["metadata"] = metadata
        if source_ip is not None:
            fields["source_ip"] = source_ip
        return await self._send(self.training_stream, fields, message_id)

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
    ) -> str | None:
        """Queue one inference result; returns its message id (``None`` when disabled).

        ``is_anomaly`` defaults to false when not given.
        """
        fields: dict[str, Any] = {
            "model_name": model_name, "request_id": request_id, "prediction": prediction,
            "confidence": confidence, "anomaly_score": anomaly_score,
            "processing_time_ms": processing_time_ms,
        }  # fmt: skip
        if is_anomaly is not None:
            fields["is_anomaly"] = is_anomaly
        if metadata is not None:
            fields["metadata"] = metadata
        return await self._send(self.inference_stream, fields, message_id)

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
    ) -> dict[str, str | None]:
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

    async def _send(self, stream: str, fields: dict[str, Any], message_id: str | None) -> str | None:
        if not self.config.enabled:
            return None  # ASYNC_PROCESSING_ENABLED=false: documented no-op
        if self.producer is None:
            await self.initialize()
        assert self.producer is not None
        mid = message_id or new_message_id()
        fields[FIELD_MESSAGE_ID] = mid
        await self.producer.send(stream, fields)
        return mid

    # -- workers ---------------------------------------------------------------------------

    async def start_workers(self, streams: Sequence[str] | None = None) -> None:
        """Run ``ASYNC_PROCESSING_NUM_WORKERS`` routers in this process, on Ray.

        Returns once they are reading. Production deployments run ``streamtasks worker``
        processes instead; this is for one-process setups, examples and tests.
        """
        if self._workers:
            return
        redis = self._redis()
        registry = self.registry.only(list(streams)) if streams else self.registry
        env = {"DATABASE_URL": self.config.database.dsn}
        self.executor = RayExecutor(address=self.ray_address, env=env)
        for _ in range(self.config.consumer.num_workers):
            # Every setting as given, but each router its own consumer name.
            settings = evolve(self.worker_settings, consumer=default_consumer_name())
            worker = Worker(registry, redis, self.executor, settings)
            self._workers.append((worker, asyncio.create_task(worker.run())))
        await asyncio.gather(*(w.reading.wait() for w, _ in self._workers))
        log.info("started %d worker(s) on %s", len(self._workers), ", ".join(registry.streams))

    async def stop_workers(self) -> None:
        """Stop the workers started here: finish in-flight batches, hand back the rest."""
        workers, self._workers = self._workers, []
        for worker, _ in workers:
            worker.stop()
        results = await asyncio.gather(*(task for _, task in workers), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.error("a worker ended with an error: %s", redact(str(result)))

    # -- status and stats --------------------------------------------------------------------

    async def get_system_status(self) -> dict[str, Any]:
        """Health of Redis, PostgreSQL and Ray, and per stream: length, pending, lag, dead
        letters, consumers; the workers alive. Never raises for a service being down."""
        from .status import gather_status

        status: dict[str, Any] = {"checked_at": time.time()}
        redis_status = await gather_status(
            self._redis(),
            [self.training_stream, self.inference_stream],
            self.registry.group,
            dead_letter_streams={s: spec.dead_letter_stream for s, spec in self.registry.handlers.items()},
        )
        status["producer"] = {
            "health": "healthy" if redis_status["redis"]["ok"] else "unhealthy",
            "enabled": self.config.enabled,
            "redis": self.config.redis.safe_url,
            "error": redis_status["redis"].get("error"),
        }
        status["database"] = await db.database_health(await self._pool_or_none() or self.config.database.dsn)
        status["ray"] = _ray_status()
        status["streams"] = {s["stream"]: s for s in redis_status["streams"]}
        status["workers"] = {
            "local": len(self._workers),
            "alive": redis_status["workers"],
            "dead_consumers": redis_status["dead_consumers"],
        }
        status["problems"] = redis_status["problems"]
        status["ok"] = bool(redis_status["ok"]) and status["database"].get("health") == "healthy"
        return status

    async def _pool_or_none(self) -> Any:
        try:
            return await self._pool()
        except Exception:  # reported as unhealthy by database_health on the DSN
            return None

    async def get_model_performance_stats(self, model_name: str, hours: float = 24) -> dict[str, Any]:
        """Requests, throughput, latency percentiles, confidence, anomaly rate, hourly
        buckets, and the model's dead letters, over the last ``hours``."""
        stats = await db.model_performance_stats(await self._pool(), model_name, hours)
        stats["dead_letters"] = await self._dead_letters_of(model_name, stats["since"])
        return stats

    async def _dead_letters_of(self, model_name: str, since: datetime) -> int:
        redis = self._redis()
        since_ms = max(0, int(since.timestamp() * 1000))  # the window never starts before 1970
        wanted = model_name.encode()
        count = 0
        for spec in self.registry.handlers.values():
            entries: Any = await redis.xrevrange(
                spec.dead_letter_stream, max="+", min=str(since_ms), count=DEAD_LETTER_SCAN_LIMIT
            )
            count += sum(1 for i, f in entries if _dead_model(i, f) == wanted)
        return count


def _dead_model(dead_id: bytes, fields: dict[bytes, bytes]) -> bytes | None:
    """The ``model_name`` of a dead letter's entry (parsing only a letter with packed fields)."""
    if keys.DEAD_FIELD_PREFIX.encode() + b"model_name" in fields:
        return fields[keys.DEAD_FIELD_PREFIX.encode() + b"model_name"]
    if PACKED_FIELDS.encode() in fields:
        return DeadLetter.from_entry(dead_id, fields).fields.get("model_name")
    return None


def _ray_status() -> dict[str, Any]:
    try:
        import ray

        if not ray.is_initialized():
            return {"health": "not_started"}
        return {
            "health": "healthy",
            "cluster_resources": ray.cluster_resources(),  # type: ignore[no-untyped-call]
            "available_resources": ray.available_resources(),  # type: ignore[no-untyped-call]
        }
    except Exception as exc:
        return {"health": "unhealthy", "error": redact(str(exc))}


__all__ = ["AsyncProcessingSystem", "ConfigError"]
