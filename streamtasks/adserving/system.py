"""``AsyncProcessingSystem``: the facade an ad-serving / model-serving API uses.

The API process sends what it saw (``send_training_data``, ``send_inference_result``) and
answers its user at once; workers (``start_workers`` here, or ``streamtasks worker
streamtasks.builtins:registry`` anywhere) land the entries in PostgreSQL.

    async with AsyncProcessingSystem() as system:       # config from env / .env
        await system.setup_database()
        mid = await system.send_training_data(model_name="fraud", request_id="r1", input_data={...})
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from ..connect import connect
from ..errors import ConfigError, StreamtasksError
from ..logs import redact
from ..producer import Producer
from ..registry import Registry
from ..serve import RayConfig
from ..worker import WorkerSettings
from . import db, schema, stats
from .config import AsyncProcessingConfig
from .handlers import make_registry
from .local import LocalWorkers
from .sending import Sending

log = logging.getLogger("streamtasks.system")


class AsyncProcessingSystem(Sending):
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
        """The configuration (from the environment and ``.env`` unless given)."""
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
            _served_streams(self.registry, (self.training_stream, self.inference_stream)),
            database,
            producer={"enabled": self.config.enabled, "redis": self.config.redis.safe_url},
            local_workers=self.local.consumers,
            cluster=self.local.cluster,
        )

    async def get_model_performance_stats(self, model_name: str, hours: float = 24) -> dict[str, Any]:
        """Requests, throughput, latency percentiles, confidence, anomaly rate, hourly
        buckets, and the model's dead letters, over the last ``hours``."""
        return await stats.model_stats(
            await self.database_pool(), self._redis(), self.registry, model_name, hours
        )


def _served_streams(registry: Registry, own: tuple[str, str]) -> list[str]:
    """The two streams, or their shards."""
    found = [s for s, spec in registry.handlers.items() if (spec.shard_of or s) in own]
    return found or list(own)


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
