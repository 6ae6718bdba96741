"""What every command shares: the options declared once, the Redis connection, and the one
place that turns an exception into one line and an exit status (:func:`run` for the
coroutine of a command, :class:`Cli` for everything else a command raises).

Exit status, the same for every command (:data:`EXIT_STATUS_HELP`, shown in each ``--help``):
0 success; 1 an error (a bad or unreachable URL, refused credentials, a configuration or
Redis/PostgreSQL error); 2 a usage error (an unknown option, a missing argument, a value of
the wrong type: click's own code); 3 ``status`` found the deployment unhealthy.
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
from ..connect import check_url, client_for
from ..connect import connect as connect_redis
from ..errors import StreamtasksError
from ..tlshint import tls_hint

T = TypeVar("T")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2  # click's own code for usage errors
EXIT_UNHEALTHY = 3

#: The exit codes as every command's ``--help`` states them (``\b``: click keeps the lines).
EXIT_STATUS_HELP = """\b
Exit status: 0 success; 1 an error (bad or unreachable URL, refused credentials,
configuration); 2 a usage error (unknown option, missing argument, wrong type);
3 unhealthy (status)."""


def with_exit_status(command: click.Command) -> click.Command:
    """Append :data:`EXIT_STATUS_HELP` to ``command``'s help text."""
    command.help = f"{(command.help or '').rstrip()}\n\n{EXIT_STATUS_HELP}"
    return command


def one_line(exc: BaseException) -> str:
    """``exc`` as one redacted line (its type when it has no message)."""
    message = " ".join(logs.redact(str(exc)).split())
    return message or type(exc).__name__


class Cli(click.Group):
    """The ``streamtasks`` group: whatever a command raises becomes one line and exit 1.

    Click's own exceptions (usage errors: 2) and ``SystemExit`` pass through; errors a user
    can fix read as they are; anything else is named by its type, never a traceback.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except (StreamtasksError, ValueError) as exc:
            raise click.ClickException(one_line(exc)) from None
        except Exception as exc:
            raise click.ClickException(f"{type(exc).__name__}: {one_line(exc)}") from None


def redis_url_of(value: str | None) -> str:
    return value or RedisConfig.from_env().url


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro``; turn its errors into one line and exit code 1."""
    try:
        return asyncio.run(coro)
    except click.exceptions.ClickException:
        raise
    except (StreamtasksError, ValueError) as exc:
        raise click.ClickException(one_line(exc)) from None
    except rx.AuthenticationError as exc:
        raise click.ClickException(f"Redis refused the credentials: {one_line(exc)}") from None
    except (rx.ConnectionError, rx.TimeoutError, OSError) as exc:
        raise click.ClickException(f"cannot reach Redis: {one_line(exc)}") from None
    except rx.NoPermissionError as exc:
        raise click.ClickException(f"the Redis user may not do this: {one_line(exc)} (NOPERM)") from None
    except rx.RedisError as exc:
        raise click.ClickException(f"Redis error: {one_line(exc)}") from None


#: Seconds to wait for a TCP connection to Redis from the command line.
CONNECT_TIMEOUT_S = 10.0


def redis_client(url: str, **kwargs: Any) -> Redis:
    """A client for ``url`` (not connected yet); a URL that cannot be parsed is one line."""
    kwargs = {"socket_connect_timeout": CONNECT_TIMEOUT_S, **kwargs}
    try:
        return client_for(url, **kwargs)
    except Exception as exc:  # ValueError, TypeError, IndexError ... from URL parsing
        raise click.ClickException(f"bad Redis URL {logs.redact(url)!r}: {one_line(exc)}") from None


def _check_url(url: str) -> None:
    """A URL that cannot be parsed is one line (``bad Redis URL ...``), before any I/O."""
    try:
        check_url(url)
    except Exception as exc:  # ValueError, TypeError, IndexError ... from URL parsing
        raise click.ClickException(f"bad Redis URL {logs.redact(url)!r}: {one_line(exc)}") from None


async def connect(url: str) -> Redis:
    """A checked connection: one node, or a Redis Cluster (:func:`streamtasks.connect.connect`)."""
    _check_url(url)
    redis: Redis | None = None
    try:
        redis = await connect_redis(url, socket_connect_timeout=CONNECT_TIMEOUT_S)
        with contextlib.suppress(rx.NoPermissionError):  # a user without PING: it answered
            await redis.ping()
    except rx.AuthenticationError as exc:  # a subclass of ConnectionError: first
        if redis is not None:
            await redis.aclose()
        raise click.ClickException(
            f"Redis at {logs.redact(url)} refused the credentials: {one_line(exc)}"
        ) from None
    except (rx.ConnectionError, rx.TimeoutError, OSError) as exc:
        if redis is not None:
            await redis.aclose()
        raise click.ClickException(
            f"cannot reach Redis at {logs.redact(url)}: {one_line(exc)}{tls_hint(url, exc)}"
        ) from None
    except Exception:
        if redis is not None:
            await redis.aclose()
        raise
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
    "--redis-url",
    envvar="REDIS_URL",
    show_envvar=True,
    help="Redis URL; default from REDIS_URL, else REDIS_HOST/REDIS_PORT/REDIS_PASSWORD/REDIS_DB.",
)


streams_option = click.option(
    "--streams",
    envvar="STREAMTASKS_STREAMS",
    show_envvar=True,
    help="Comma-separated subset of the streams (default: all of APP's).",
)
group_option = click.option(
    "--group",
    envvar="STREAMTASKS_GROUP",
    show_envvar=True,
    help="Consumer group (default: APP's group).",
)


def split_streams(value: str | None) -> list[str] | None:
    """``--streams a,b`` as a list (None when not given)."""
    return [s.strip() for s in value.split(",") if s.strip()] if value else None


def exit_now(code: int) -> NoReturn:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def executor_mode(mode: str, executor: str) -> str:
    """``--executor inline`` means task mode unless actor mode was asked for: over the default
    mode, and, typed on the command line, over ``STREAMTASKS_MODE=actors`` from the environment
    (a deployment's setting, say): actors run on Ray, inline runs here. Given at the same level,
    the two still refuse each other (:func:`check_executor`)."""
    ctx, src = click.get_current_context(), click.core.ParameterSource
    if executor != "inline" or mode != "actors":
        return mode
    mode_from = ctx.get_parameter_source("mode")
    if mode_from is src.DEFAULT:
        return "tasks"
    if ctx.get_parameter_source("executor") is src.COMMANDLINE and mode_from is src.ENVIRONMENT:
        logging.getLogger("streamtasks.cli").info(
            "--executor inline: task mode, not STREAMTASKS_MODE=actors from the environment"
        )
        return "tasks"
    return mode


def check_executor(
    executor: str, mode: str, ray_address: str | None, num_cpus: int | None, inline_start: bool = False
) -> None:
    """``streamtasks worker``: Ray's options with the inline executor are a usage error."""
    if executor == "inline" and inline_start:
        raise click.UsageError("--inline-start is for Ray: with --executor inline every entry runs here")
    if executor == "inline" and (ray_address or num_cpus):
        raise click.UsageError("--ray-address and --num-cpus are Ray options: not with --executor inline")
    if executor == "inline" and mode == "actors":
        raise click.UsageError("--mode actors runs on Ray: not with --executor inline")
