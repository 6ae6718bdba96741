"""The adserving product's configuration: attrs classes read from the environment and ``.env``.

Every value has a documented environment variable; a value that cannot be used raises
:class:`~streamtasks.errors.ConfigError` naming the variable. Passwords are kept out of
``repr`` and logs (see :func:`streamtasks.logs.redact`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import quote, unquote, urlsplit

from attrs import field, frozen
from dotenv import dotenv_values

from ..config import (
    DEFAULT_MODE,
    MODES,
    RedisConfig,
    env_bool,
    env_choice,
    env_int,
    env_stream,
    split_url,
)
from ..errors import ConfigError
from ..scaling import Autoscale

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_DB_SCHEMES = ("postgres", "postgresql")

#: Default stream names of the built-in handlers.
DEFAULT_TRAINING_STREAM = "training_data_stream"
DEFAULT_INFERENCE_STREAM = "inference_results_stream"
DEFAULT_CONSUMER_BATCH_SIZE = 1000
DEFAULT_BLOCK_MS = 1000
DEFAULT_DATABASE_NAME = "streamtasks"
DEFAULT_DATABASE_USER = "postgres"


def load_env(
    environ: Mapping[str, str] | None = None,
    env_file: str | os.PathLike[str] | None = ".env",
) -> dict[str, str]:
    """``env_file``'s values (if the file exists) overridden by ``environ``."""
    merged: dict[str, str] = {}
    if env_file is not None and os.path.isfile(env_file):
        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(os.environ if environ is None else environ)
    return merged


@frozen
class DatabaseConfig:
    """Where PostgreSQL is. ``DATABASE_URL`` wins over the ``DATABASE_*`` variables."""

    host: str = "127.0.0.1"
    """``DATABASE_HOST``."""
    port: int = 5432
    """``DATABASE_PORT``."""
    name: str = DEFAULT_DATABASE_NAME
    """``DATABASE_NAME``."""
    user: str = DEFAULT_DATABASE_USER
    """``DATABASE_USER``."""
    password: str | None = field(default=None, repr=False)
    """``DATABASE_PASSWORD`` (kept out of ``repr`` and logs)."""
    url_override: str | None = field(default=None, repr=False)
    """``DATABASE_URL``: wins over the fields above."""

    @property
    def dsn(self) -> str:
        """The connection URL, password included: never log it (use :attr:`safe_dsn`)."""
        if self.url_override:
            return self.url_override
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        return f"postgresql://{auth}@{self.host}:{self.port}/{quote(self.name, safe='')}"

    @property
    def safe_dsn(self) -> str:
        """The connection URL with its password redacted: safe to log."""
        from ..logs import redact

        return redact(self.dsn)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DatabaseConfig:
        """Read ``DATABASE_URL`` or ``DATABASE_HOST/PORT/NAME/USER/PASSWORD``.

        The password is registered with :func:`streamtasks.logs.register_secret`.
        """
        from ..logs import register_secret

        env = os.environ if environ is None else environ
        url = env.get("DATABASE_URL") or None
        if url is not None:
            parts, port = split_url("DATABASE_URL", url, _DB_SCHEMES, 5432)
            password = unquote(parts.password) if parts.password else None
            register_secret(parts.password)
            register_secret(password)
            return cls(
                host=parts.hostname or "127.0.0.1",
                port=port,
                name=unquote(parts.path.lstrip("/")) or DEFAULT_DATABASE_NAME,
                user=unquote(parts.username or "") or DEFAULT_DATABASE_USER,
                password=password,
                url_override=url,
            )
        password = env.get("DATABASE_PASSWORD") or None
        register_secret(password)
        return cls(
            host=env.get("DATABASE_HOST") or "127.0.0.1",
            port=env_int(env, "DATABASE_PORT", 5432, minimum=1),
            name=env.get("DATABASE_NAME") or DEFAULT_DATABASE_NAME,
            user=env.get("DATABASE_USER") or DEFAULT_DATABASE_USER,
            password=password,
        )


@frozen
class ConsumerConfig:
    """How workers consume: entries per batch, workers (consumers), how they serve (``mode``:
    Ray actors, or one Ray task per batch), read block time, streams."""

    batch_size: int = DEFAULT_CONSUMER_BATCH_SIZE
    """``CONSUMER_BATCH_SIZE``: entries per batch of the built-ins."""
    num_workers: int = 1
    """``ASYNC_PROCESSING_NUM_WORKERS``: the consumers that
    :meth:`~streamtasks.adserving.AsyncProcessingSystem.start_workers` runs."""
    mode: str = DEFAULT_MODE
    """``STREAMTASKS_MODE``: ``actors`` (the default) or ``tasks``."""
    block_ms: int = DEFAULT_BLOCK_MS
    """``CONSUMER_BLOCK_MS``: how long a read waits for entries."""
    streams: tuple[str, ...] = (DEFAULT_TRAINING_STREAM, DEFAULT_INFERENCE_STREAM)
    """``TRAINING_DATA_STREAM``, ``INFERENCE_RESULTS_STREAM``."""
    shards: tuple[int, int] = (0, 0)
    """Shards of the two streams (0: one unsharded stream each); see ``shards=`` of
    :meth:`~streamtasks.Registry.stream_handler`."""
    autoscale: Autoscale | None = None
    """``STREAMTASKS_ACTORS=auto``: actor mode's number of actors follows the backlog."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ConsumerConfig:
        """``CONSUMER_BATCH_SIZE`` (>= 1), ``ASYNC_PROCESSING_NUM_WORKERS`` (>= 1),
        ``STREAMTASKS_MODE`` (``actors`` or ``tasks``, as for ``streamtasks worker``),
        ``CONSUMER_BLOCK_MS`` (>= 1), ``TRAINING_DATA_STREAM``, ``INFERENCE_RESULTS_STREAM``,
        ``TRAINING_DATA_SHARDS``, ``INFERENCE_RESULTS_SHARDS`` (>= 0; 0 = not sharded),
        ``STREAMTASKS_ACTORS=auto`` with ``STREAMTASKS_MIN_ACTORS``, ``STREAMTASKS_MAX_ACTORS``,
        ``STREAMTASKS_TARGET_DRAIN_SECONDS``, ``STREAMTASKS_SCALE_DOWN_AFTER`` (as for
        ``streamtasks worker --actors auto``)."""
        env = os.environ if environ is None else environ
        mode, autoscale = env_choice(env, "STREAMTASKS_MODE", MODES, DEFAULT_MODE), Autoscale.from_env(env)
        if autoscale is not None and mode != "actors":
            raise ConfigError("STREAMTASKS_ACTORS=auto scales Ray actors: it needs STREAMTASKS_MODE=actors")
        return cls(
            batch_size=env_int(env, "CONSUMER_BATCH_SIZE", DEFAULT_CONSUMER_BATCH_SIZE, minimum=1),
            num_workers=env_int(env, "ASYNC_PROCESSING_NUM_WORKERS", 1, minimum=1),
            mode=mode,
            block_ms=env_int(env, "CONSUMER_BLOCK_MS", DEFAULT_BLOCK_MS, minimum=1),
            streams=(
                env_stream(env, "TRAINING_DATA_STREAM", DEFAULT_TRAINING_STREAM),
                env_stream(env, "INFERENCE_RESULTS_STREAM", DEFAULT_INFERENCE_STREAM),
            ),
            shards=stream_shards(env),
            autoscale=autoscale,
        )


def stream_shards(env: Mapping[str, str]) -> tuple[int, int]:
    """``TRAINING_DATA_SHARDS`` and ``INFERENCE_RESULTS_SHARDS`` (0, the default: not sharded)."""
    return (
        env_int(env, "TRAINING_DATA_SHARDS", 0, minimum=0),
        env_int(env, "INFERENCE_RESULTS_SHARDS", 0, minimum=0),
    )


@frozen
class AsyncProcessingConfig:
    """Everything :class:`~streamtasks.adserving.AsyncProcessingSystem` needs, from env and ``.env``."""

    redis: RedisConfig = field(factory=RedisConfig)
    """Where Redis is."""
    database: DatabaseConfig = field(factory=DatabaseConfig)
    """Where PostgreSQL is."""
    consumer: ConsumerConfig = field(factory=ConsumerConfig)
    """How the workers consume."""
    enabled: bool = True
    """``ASYNC_PROCESSING_ENABLED=false`` turns sending into a no-op."""
    log_level: str = "INFO"
    """``ASYNC_PROCESSING_LOG_LEVEL``."""
    debug: bool = False
    """``DEBUG_ENABLED``: logs at ``DEBUG``."""

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        env_file: str | os.PathLike[str] | None = ".env",
    ) -> AsyncProcessingConfig:
        """Read the configuration; variables in ``environ`` (default ``os.environ``) win over
        the same names in ``env_file`` (skipped when ``None`` or missing).

        Raises :class:`ConfigError` naming the variable whose value cannot be used.
        """
        env = load_env(environ, env_file)
        level = (env.get("ASYNC_PROCESSING_LOG_LEVEL") or "INFO").strip().upper()
        if level not in _LOG_LEVELS:
            raise ConfigError(f"ASYNC_PROCESSING_LOG_LEVEL={level!r} is not one of {', '.join(_LOG_LEVELS)}")
        redis = RedisConfig.from_env(env)
        from ..logs import register_secret

        register_secret(redis.password or urlsplit(redis.url).password)
        return cls(
            redis=redis,
            database=DatabaseConfig.from_env(env),
            consumer=ConsumerConfig.from_env(env),
            enabled=env_bool(env, "ASYNC_PROCESSING_ENABLED", True),
            log_level=level,
            debug=env_bool(env, "DEBUG_ENABLED", False),
        )
