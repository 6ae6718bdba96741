"""Built-in adserving handlers: training data and inference results into PostgreSQL.

``streamtasks worker streamtasks.builtins:registry`` is the zero-code deployment, and
``my_registry.include(streamtasks.builtins.registry)`` composes it with your handlers.

Environment, read once when this module is imported:

* ``TRAINING_DATA_STREAM`` (default ``training_data_stream``) and
  ``INFERENCE_RESULTS_STREAM`` (default ``inference_results_stream``): the streams served;
  ``TRAINING_DATA_SHARDS`` / ``INFERENCE_RESULTS_SHARDS`` (default 0, not sharded) shard them
  (``<stream>:{0}`` ... -- needed on Redis Cluster, where an unsharded name has no hash tag);
* ``CONSUMER_BATCH_SIZE`` (default 1000): entries per batch (one Ray task, one transaction);
* ``DATABASE_URL`` or ``DATABASE_HOST``/``PORT``/``NAME``/``USER``/``PASSWORD`` (also from
  ``.env``): read in the worker process when its connection pool is first needed.

Each batch is parsed entry by entry (:mod:`.records`): a bad entry is dead-lettered with
its reason at once (any error parsing it counts as bad input: parsing is pure), its
batch-mates are stored with one idempotent ``COPY`` + ``INSERT`` (:mod:`.store`).
A database error fails the whole batch, which the worker retries with backoff.
:func:`make_registry` builds a registry with other names.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from ..config import env_bool, env_int, env_stream
from ..errors import DecodeError
from ..message import Message
from ..registry import Registry, Resource
from .config import (
    DEFAULT_CONSUMER_BATCH_SIZE,
    DEFAULT_INFERENCE_STREAM,
    DEFAULT_TRAINING_STREAM,
    DatabaseConfig,
    load_env,
    stream_shards,
)
from .db import create_pool
from .records import (
    InferenceRecord,
    TrainingRecord,
    inference_row,
    parse_inference,
    parse_training,
    training_row,
)
from .store import store_inference, store_inference_rows, store_training, store_training_rows

#: Environment the built-ins read, forwarded to Ray tasks on a cluster (docs/guides/scaling.md).
FORWARDED_ENV_PREFIXES = (
    "DATABASE_",
    "ASYNC_PROCESSING_",
    "CONSUMER_",
    "TRAINING_DATA_STREAM",
    "INFERENCE_RESULTS_STREAM",
    "TRAINING_DATA_SHARDS",
    "INFERENCE_RESULTS_SHARDS",
    "DEBUG_ENABLED",
)

__all__ = [
    "DEFAULT_GROUP",
    "InferenceRecord",
    "TrainingRecord",
    "database_pool",
    "make_registry",
    "parse_inference",
    "parse_training",
    "registry",
    "store_inference",
    "store_training",
]

#: Consumer group of the built-in registry.
DEFAULT_GROUP = "streamtasks-adserving"
#: Retries of a failed batch (PostgreSQL down): with the backoff cap below, ~7 minutes on
#: average before the entries are dead-lettered.
DEFAULT_MAX_RETRIES = 20
DEFAULT_BACKOFF_MAX = 60.0

R = TypeVar("R")
Failures = dict[str, Exception]


@Resource
async def database_pool() -> AsyncIterator[Any]:
    """One asyncpg pool per worker process, configured from the environment and ``.env``."""
    pool = await create_pool(DatabaseConfig.from_env(load_env()).dsn)
    try:
        yield pool
    finally:
        await pool.close()


async def _parse_and_store(
    msgs: Sequence[Message],
    parse: Callable[[Message], R],
    store: Callable[[Any, list[R]], Awaitable[int]],
) -> Failures | None:
    """Parse every entry (into its row); store the valid ones in one call; return the invalid
    ones' errors."""
    records: list[R] = []
    failures: Failures = {}
    for msg in msgs:
        try:
            records.append(parse(msg))
        except DecodeError as exc:
            failures[msg.id] = exc
        except Exception as exc:  # a parser bug: this entry alone fails, at once (parsing is pure)
            failures[msg.id] = DecodeError("invalid", f"{type(exc).__name__}: {exc}")
    if records:
        pool = await database_pool.get()
        async with pool.acquire() as conn:
            await store(conn, records)
    return failures or None


async def store_training_batch(msgs: list[Message]) -> Failures | None:
    """Batch handler: store the valid training entries, fail the invalid ones."""
    return await _parse_and_store(msgs, training_row, store_training_rows)


async def store_inference_batch(msgs: list[Message]) -> Failures | None:
    """Batch handler: store the valid inference entries, fail the invalid ones."""
    return await _parse_and_store(msgs, inference_row, store_inference_rows)


def make_registry(
    group: str = DEFAULT_GROUP,
    training_stream: str = DEFAULT_TRAINING_STREAM,
    inference_stream: str = DEFAULT_INFERENCE_STREAM,
    *,
    batch_size: int = DEFAULT_CONSUMER_BATCH_SIZE,
    max_retries: int = DEFAULT_MAX_RETRIES,
    backoff_max: float = DEFAULT_BACKOFF_MAX,
    shards: tuple[int, int] = (0, 0),
    **options: Any,
) -> Registry:
    """A registry serving the built-in handlers on the given streams, sharded ``shards``
    ways (training, inference; 0: not sharded).

    ``options`` go to :meth:`Registry.stream_handler` for both handlers.
    """
    reg = Registry(group=group, env_forward=FORWARDED_ENV_PREFIXES)
    reg.resources.append(database_pool)
    handler_options: dict[str, Any] = {
        "batch": True,
        "batch_size": batch_size,
        "max_retries": max_retries,
        "backoff_max": backoff_max,
        **options,
    }
    training_shards, inference_shards = (n or None for n in shards)
    reg.stream_handler(training_stream, shards=training_shards, **handler_options)(store_training_batch)
    reg.stream_handler(inference_stream, shards=inference_shards, **handler_options)(store_inference_batch)
    return reg


def seed_log_level(environ: Mapping[str, str]) -> str | None:
    """The seed's log level variables: ``DEBUG_ENABLED`` wins over ``ASYNC_PROCESSING_LOG_LEVEL``."""
    if env_bool(environ, "DEBUG_ENABLED", False):
        return "DEBUG"
    level = (environ.get("ASYNC_PROCESSING_LOG_LEVEL") or "").strip().upper()
    return level or None


registry = make_registry(
    training_stream=env_stream(os.environ, "TRAINING_DATA_STREAM", DEFAULT_TRAINING_STREAM),
    inference_stream=env_stream(os.environ, "INFERENCE_RESULTS_STREAM", DEFAULT_INFERENCE_STREAM),
    batch_size=env_int(os.environ, "CONSUMER_BATCH_SIZE", DEFAULT_CONSUMER_BATCH_SIZE, minimum=1),
    shards=stream_shards(os.environ),
)
"""The built-in registry (``streamtasks worker streamtasks.builtins:registry``): group
``streamtasks-adserving``, its streams named from the environment at import
(``TRAINING_DATA_STREAM``, ``INFERENCE_RESULTS_STREAM``, their ``*_SHARDS``)."""
registry.log_level = seed_log_level(os.environ)


def serves_builtins(registry: Registry) -> bool:
    """Whether ``registry`` serves one of the built-in handlers (the product's dashboard panel
    and PostgreSQL's health are shown for such an app only)."""
    builtins = {store_training_batch, store_inference_batch}
    return any(spec.fn in builtins for spec in registry.handlers.values())
