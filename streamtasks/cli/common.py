"""What every command shares: the options declared once, the Redis connection, and the one
place that turns an exception a user can fix into one line and an exit status.

Exit status, the same for every command: 0 success; 1 an error (configuration, connection,
Redis); 2 a usage error (click); 3 ``status`` found the deployment unhealthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Coroutine
from typing import Any, NoReturn, TypeVar

import click
from redis import exceptions as rx
from redis.asyncio import Redis

from .. import logs
from ..config import RedisConfig
from ..connect import connect as connect_redis
from ..errors import StreamtasksError

T = TypeVar("T")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2  # click's own code for usage errors
EXIT_UNHEALTHY = 3


def redis_url_of(value: str | None) -> str:
    return value or RedisConfig.from_env().url


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro``; turn the errors a user can fix into one line and exit code 1."""
    try:
        return asyncio.run(coro)
    except (StreamtasksError, ValueError) as exc:
        raise click.ClickException(logs.redact(str(exc))) from None
    except (rx.ConnectionError, rx.TimeoutError, OSError) as exc:
        raise click.ClickException(f"cannot reach Redis: {logs.redact(str(exc))}") from None
    except rx.ResponseError as exc:
        raise click.ClickException(f"Redis error: {logs.redact(str(exc))}") from None


async def connect(url: str) -> Redis:
    """A checked connection: one node, or a Redis Cluster (:func:`streamtasks.connect.connect`)."""
    redis: Redis | None = None
    try:
        redis = await connect_redis(url)
        await redis.ping()
    except (rx.ConnectionError, rx.TimeoutError, OSError) as exc:
        if redis is not None:
            await redis.aclose()
        raise click.ClickException(
            f"cannot reach Redis at {logs.redact(url)}: {logs.redact(str(exc))}"
        ) from None
    except rx.AuthenticationError as exc:
        if redis is not None:
            await redis.aclose()
        raise click.ClickException(f"Redis at {logs.redact(url)} refused the credentials: {exc}") from None
    return redis


@contextlib.asynccontextmanager
async def connected(redis_url: str | None) -> AsyncIterator[Redis]:
    """A checked connection to the Redis of ``--redis-url`` (or the environment), closed after."""
    redis = await connect(redis_url_of(redis_url))
    try:
        yield redis
    finally:
        await redis.aclose()


redis_url_option = click.option(
    "--redis-url", envvar="REDIS_URL", show_envvar=True,
    help="Redis URL; default from REDIS_URL, else REDIS_HOST/REDIS_PORT/REDIS_PASSWORD/REDIS_DB.",
)  # fmt: skip


streams_option = click.option(
    "--streams", envvar="STREAMTASKS_STREAMS", show_envvar=True,
    help="Comma-separated subset of the streams (default: all of APP's).",
)  # fmt: skip
group_option = click.option(
    "--group", envvar="STREAMTASKS_GROUP", show_envvar=True,
    help="Consumer group (default: APP's group).",
)  # fmt: skip


def split_streams(value: str | None) -> list[str] | None:
    """``--streams a,b`` as a list (None when not given)."""
    return [s.strip() for s in value.split(",") if s.strip()] if value else None


def exit_now(code: int) -> NoReturn:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
