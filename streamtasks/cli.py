"""The ``streamtasks`` command line (click). Every option also reads an env var."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, NoReturn, TypeVar

import click
from redis import exceptions as rx
from redis.asyncio import Redis

from . import logs
from .app import load_registry
from .bench import bench_command
from .cli_db import db_group, stats_command
from .config import RedisConfig
from .errors import ConfigError, StreamtasksError
from .keys import dead_letter_stream
from .status import status_command

log = logging.getLogger("streamtasks.cli")
T = TypeVar("T")


def _redis_url(value: str | None) -> str:
    return value or RedisConfig.from_env().url


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro``; turn the errors a user can fix into one line and exit code 1."""
    try:
        return asyncio.run(coro)
    except (StreamtasksError, ValueError) as exc:
        raise click.ClickException(logs.redact(str(exc))) from None
    except (rx.ConnectionError, rx.TimeoutError, OSError) as exc:
        raise click.ClickException(f"cannot reach Redis: {logs.redact(str(exc))}") from None
    except rx.ResponseError as exc:
        raise click.ClickException(f"Redis error: {logs.redact(str(exc))}") from None


async def _connect(url: str) -> Redis:
    redis = Redis.from_url(url)
    try:
        await redis.ping()
    except (rx.ConnectionError, rx.TimeoutError, OSError) as exc:
        await redis.aclose()
        raise click.ClickException(
            f"cannot reach Redis at {logs.redact(url)}: {logs.redact(str(exc))}"
        ) from None
    except rx.AuthenticationError as exc:
        await redis.aclose()
        raise click.ClickException(f"Redis at {logs.redact(url)} refused the credentials: {exc}") from None
    return redis


@contextlib.asynccontextmanager
async def _connected(redis_url: str | None) -> AsyncIterator[Redis]:
    """A checked connection to the Redis of ``--redis-url`` (or the environment), closed after."""
    redis = await _connect(_redis_url(redis_url))
    try:
        yield redis
    finally:
        await redis.aclose()


redis_url_option = click.option(
    "--redis-url", envvar="REDIS_URL", show_envvar=True,
    help="Redis URL; default from REDIS_URL, else REDIS_HOST/REDIS_PORT/REDIS_PASSWORD/REDIS_DB.",
)  # fmt: skip


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="streamtasks")
def main() -> None:
    """streamtasks: decorator task framework on Redis Streams, run by Ray."""


# -- worker --------------------------------------------------------------------------------


@main.command()
@click.argument("app")
@redis_url_option
@click.option(
    "--streams",
    envvar="STREAMTASKS_STREAMS",
    show_envvar=True,
    help="Comma-separated subset of the registry's streams.",
)
@click.option(
    "--consumer",
    envvar="STREAMTASKS_CONSUMER",
    show_envvar=True,
    help="Consumer name (default: unique per process).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    envvar="STREAMTASKS_BATCH_SIZE",
    show_envvar=True,
    help="Override every handler's batch size.",
)
@click.option(
    "--ray-address",
    envvar="STREAMTASKS_RAY_ADDRESS",
    show_envvar=True,
    help="Join this Ray cluster ('auto' or host:port); default: start a local Ray.",
)
@click.option(
    "--num-cpus",
    type=click.IntRange(min=1),
    envvar="STREAMTASKS_NUM_CPUS",
    show_envvar=True,
    help="CPUs of the local Ray (default: all).",
)
@click.option(
    "--visibility-timeout",
    type=click.FloatRange(min=0.5),
    default=30.0,
    envvar="STREAMTASKS_VISIBILITY_TIMEOUT",
    show_envvar=True,
    show_default=True,
    help="Seconds before an unacked entry of a dead worker is reclaimed.",
)
@click.option(
    "--grace-period",
    type=click.FloatRange(min=0),
    default=30.0,
    envvar="STREAMTASKS_GRACE_PERIOD",
    show_envvar=True,
    show_default=True,
    help="Seconds to finish in-flight batches on SIGTERM.",
)
@click.option(
    "--log-level",
    default="INFO",
    envvar=["STREAMTASKS_LOG_LEVEL", "ASYNC_PROCESSING_LOG_LEVEL"],
    show_envvar=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.option(
    "--log-format",
    default="text",
    envvar="STREAMTASKS_LOG_FORMAT",
    show_envvar=True,
    type=click.Choice(["text", "json"]),
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    envvar="STREAMTASKS_METRICS_PORT",
    show_envvar=True,
    help="Serve /metrics (Prometheus), /healthz and /readyz on this port (off by default).",
)
def worker(
    app: str,
    redis_url: str | None,
    streams: str | None,
    consumer: str | None,
    batch_size: int | None,
    ray_address: str | None,
    num_cpus: int | None,
    visibility_timeout: float,
    grace_period: float,
    log_level: str,
    log_format: str,
    metrics_port: int | None,
) -> None:
    """Serve the handlers of the Registry at APP (MODULE:ATTR) until SIGTERM/SIGINT.

    Exit status: 0 after a graceful stop, 1 on a configuration or connection error.
    """
    from .executors import RayExecutor, forwarded_env
    from .metrics import start_metrics_server
    from .router import Worker, WorkerSettings

    if os.environ.get("DEBUG_ENABLED", "").lower() in ("1", "true", "yes"):
        log_level = "DEBUG"
    logs.configure(log_level, log_format)
    try:
        registry = load_registry(app)
        if streams:
            registry = registry.only([s.strip() for s in streams.split(",") if s.strip()])
        if batch_size:
            registry = registry.with_options(batch_size=batch_size)
        settings_kw: dict[str, Any] = {"visibility_timeout": visibility_timeout, "grace_period": grace_period}
        if consumer:
            settings_kw["consumer"] = consumer
        settings = WorkerSettings(**settings_kw)
        url = _redis_url(redis_url)
    except StreamtasksError as exc:
        raise click.ClickException(str(exc)) from None

    async def serve() -> None:
        redis = await _connect(url)
        # A Ray we join has its own environment: send the handlers' configuration along.
        env = forwarded_env(os.environ) if ray_address else None
        executor = RayExecutor(address=ray_address, num_cpus=num_cpus, env=env)
        w = Worker(registry, redis, executor, settings)
        _install_signal_handlers(w.stop)
        server = None if metrics_port is None else await start_metrics_server(w, metrics_port)
        try:
            await w.run()
        finally:
            if server is not None:
                await server.close()
            await redis.aclose()
        log.info("worker %s stopped", w.consumer)

    _run(serve())
    # Every entry is settled and the Ray driver is shut down. Skip the interpreter's teardown:
    # Ray's native destructors can abort (SIGABRT) a driver that shared a cluster with other
    # drivers, which would turn a clean stop into a crash for the process supervisor.
    _exit_now(0)


def _exit_now(code: int) -> NoReturn:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _install_signal_handlers(stop: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        if received:
            log.warning("second signal: exiting now; unfinished entries will be reclaimed")
            _exit_now(128 + signum)
        received.append(signum)
        log.info("%s received: stopping (send it again to exit at once)", signal.Signals(signum).name)
        stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


# -- send ----------------------------------------------------------------------------------


def parse_field_args(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``key=value`` (a string) or ``key:=json`` (a JSON value) -> fields."""
    fields: dict[str, Any] = {}
    for pair in pairs:
        if ":=" in pair and pair.index(":=") < pair.index("=") + 1:
            key, _, raw = pair.partition(":=")
            try:
                fields[key] = json.loads(raw)
            except ValueError as exc:
                raise click.BadParameter(f"{pair!r}: invalid JSON ({exc})") from None
        elif "=" in pair:
            key, _, value = pair.partition("=")
            fields[key] = value
        else:
            raise click.BadParameter(f"{pair!r} is not key=value or key:=json")
        if not key:
            raise click.BadParameter(f"{pair!r} has an empty field name")
    if not fields:
        raise click.BadParameter("give at least one key=value field")
    return fields


@main.command()
@click.argument("stream")
@click.argument("fields", nargs=-1)
@redis_url_option
@click.option("--maxlen", type=click.IntRange(min=1), help="Trim the stream to about this many entries.")
def send(stream: str, fields: tuple[str, ...], redis_url: str | None, maxlen: int | None) -> None:
    """Add an entry to STREAM and print its id. FIELDS are key=value or key:=json."""
    from .producer import Producer

    payload = parse_field_args(fields)

    async def go() -> str:
        async with _connected(redis_url) as redis:
            return await Producer(redis, maxlen=maxlen).send(stream, payload)

    click.echo(_run(go()))


# -- dead letters --------------------------------------------------------------------------


def _dead_name(stream: str, dead_stream: str | None) -> str:
    if dead_stream:
        return dead_stream
    return stream if stream.endswith(":dead") else dead_letter_stream(stream)


dead_option = click.option("--dead-stream", help="Dead-letter stream name (default: STREAM:dead).")


@main.group()
def dlq() -> None:
    """Inspect, replay and purge dead-letter streams."""


@dlq.command("list")
@click.argument("stream")
@redis_url_option
@dead_option
@click.option("--count", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def dlq_list(stream: str, redis_url: str | None, dead_stream: str | None, count: int, as_json: bool) -> None:
    """List the dead letters of STREAM (oldest first)."""
    from .deadletter import list_dead

    name = _dead_name(stream, dead_stream)

    async def go() -> tuple[int, list[Any]]:
        async with _connected(redis_url) as redis:
            return int(await redis.xlen(name)), await list_dead(redis, name, count)

    total, letters = _run(go())
    if as_json:
        click.echo(
            json.dumps(
                {"dead_stream": name, "total": total, "entries": [_letter_dict(d) for d in letters]}, indent=2
            )
        )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{name}: {total} dead letter(s)")
    for col in ("dead id", "entry id", "reason", "error", "attempts", "last failure"):
        table.add_column(col)
    for d in letters:
        table.add_row(
            d.dead_id,
            d.id,
            d.reason,
            f"{d.error_type}: {d.error}"[:80],
            str(d.attempts),
            _ms_text(d.last_failure_ms),
        )
    Console().print(table)


@dlq.command("show")
@click.argument("stream")
@click.argument("dead_id")
@redis_url_option
@dead_option
def dlq_show(stream: str, dead_id: str, redis_url: str | None, dead_stream: str | None) -> None:
    """Print one dead letter in full (JSON)."""
    from .deadletter import get_dead

    name = _dead_name(stream, dead_stream)

    async def go() -> Any:
        async with _connected(redis_url) as redis:
            return await get_dead(redis, name, dead_id)

    letter = _run(go())
    if letter is None:
        raise click.ClickException(f"no dead letter {dead_id} in {name}")
    click.echo(json.dumps(_letter_dict(letter, full=True), indent=2, ensure_ascii=False))


@dlq.command("replay")
@click.argument("stream")
@redis_url_option
@dead_option
@click.option("--id", "ids", multiple=True, help="Dead-letter id to replay (repeatable).")
@click.option("--error-type", help="Replay the dead letters with this error type or reason code.")
@click.option("--all", "everything", is_flag=True, help="Replay every dead letter.")
def dlq_replay(
    stream: str,
    redis_url: str | None,
    dead_stream: str | None,
    ids: tuple[str, ...],
    error_type: str | None,
    everything: bool,
) -> None:
    """Move dead letters back onto their stream, with a fresh attempt count.

    Each dead letter is moved atomically (added to the stream, removed from the dead-letter
    stream), so replaying the same one twice adds it once.
    """
    from .deadletter import replay, select_dead

    if sum(map(bool, (ids, error_type, everything))) != 1:
        raise click.UsageError("give exactly one of --id, --error-type, --all")
    name = _dead_name(stream, dead_stream)

    async def go() -> list[tuple[str, str]]:
        async with _connected(redis_url) as redis:
            letters = await select_dead(redis, name, ids=ids, error_type=error_type, everything=everything)
            return await replay(redis, name, letters)

    moved = _run(go())
    for dead_id, new_id in moved:
        click.echo(f"{dead_id} -> {new_id}")
    click.echo(f"replayed {len(moved)} dead letter(s) from {name}")


@dlq.command("purge")
@click.argument("stream")
@redis_url_option
@dead_option
@click.option("--id", "ids", multiple=True, help="Dead-letter id to delete (repeatable).")
@click.option("--all", "everything", is_flag=True, help="Delete the whole dead-letter stream.")
def dlq_purge(
    stream: str, redis_url: str | None, dead_stream: str | None, ids: tuple[str, ...], everything: bool
) -> None:
    """Delete dead letters for good."""
    from .deadletter import purge

    if bool(ids) == everything:
        raise click.UsageError("give --id ... or --all")
    name = _dead_name(stream, dead_stream)

    async def go() -> int:
        async with _connected(redis_url) as redis:
            return await purge(redis, name, ids, everything)

    click.echo(f"purged {_run(go())} dead letter(s) from {name}")


def _letter_dict(d: Any, full: bool = False) -> dict[str, Any]:
    out = {
        "dead_id": d.dead_id, "stream": d.stream, "id": d.id, "group": d.group, "handler": d.handler,
        "reason": d.reason, "error_type": d.error_type, "error": d.error, "attempts": d.attempts,
        "first_failure_ms": d.first_failure_ms, "last_failure_ms": d.last_failure_ms,
    }  # fmt: skip
    if full:
        out["traceback"] = d.traceback
        out["fields"] = {_shown(k): _shown(v) for k, v in d.pairs}
    return out


def _shown(raw: bytes) -> str:
    """Bytes as text to print: UTF-8, anything else backslash-escaped."""
    return raw.decode("utf-8", "backslashreplace")


def _ms_text(ms: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


main.add_command(status_command)
main.add_command(db_group)
main.add_command(stats_command)
main.add_command(bench_command)


def run() -> None:  # pragma: no cover - console entry point
    try:
        main(standalone_mode=True)
    except ConfigError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
