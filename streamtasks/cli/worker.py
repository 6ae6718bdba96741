"""``streamtasks worker APP``: serve a registry until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click
from attrs import evolve

from .. import logs
from ..app import load_registry
from ..config import DEFAULT_MODE, MODES, RAY_START_TIMEOUT_S
from ..errors import StreamtasksError
from ..serve import RayConfig, ServeConfig, build
from ..serve import inline_start as inline_start_beside
from ..worker.events import ExecutorStarted, Serving
from ..worker.startup import freeze_after_start
from .common import (
    check_executor,
    connect,
    executor_mode,
    exit_now,
    one_line,
    redis_url_of,
    redis_url_option,
    run,
    split_streams,
    streams_option,
)
from .scaling import actor_options, actors_config

if TYPE_CHECKING:
    from ..registry import Registry

log = logging.getLogger("streamtasks.cli")
#: ``--metrics-host`` default: :data:`streamtasks.observe.http.DEFAULT_HOST` (not imported
#: here: prometheus_client would slow every command's start).
METRICS_HOST = "0.0.0.0"


@click.command()
@click.argument("app")
@redis_url_option
@streams_option
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
    "--mode",
    type=click.Choice(list(MODES)),
    default=DEFAULT_MODE,
    envvar="STREAMTASKS_MODE",
    show_envvar=True,
    show_default=True,
    help="actors: Ray actors each read, run and settle their own batches; tasks: this process "
    "reads and settles, one Ray task per batch (same guarantees; actors are faster).",
)
@actor_options
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
    "--consumer-grace",
    type=click.FloatRange(min=0),
    default=120.0,
    envvar="STREAMTASKS_CONSUMER_GRACE",
    show_envvar=True,
    show_default=True,
    help="Seconds after which a consumer with no live worker and nothing pending is removed "
    "from the group (so restarts do not pile consumers up).",
)
@click.option(
    "--log-level",
    default="INFO",
    envvar="STREAMTASKS_LOG_LEVEL",
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
@click.option(
    "--executor",
    type=click.Choice(["ray", "inline"]),
    default="ray",
    envvar="STREAMTASKS_EXECUTOR",
    show_envvar=True,
    show_default=True,
    help="Where handlers run: 'ray' (one Ray task per batch) or 'inline' (threads of this "
    "process, no Ray: starts in a fraction of a second; for development and tests).",
)
@click.option(
    "--inline-start",
    is_flag=True,
    envvar="STREAMTASKS_INLINE_START",
    show_envvar=True,
    help="While Ray starts, handle entries in this process (handlers without Ray options; "
    "handed over to Ray, gracefully, once it reads): first rows in about a second.",
)
@click.option(
    "--reload",
    is_flag=True,
    envvar="STREAMTASKS_RELOAD",
    show_envvar=True,
    help="Restart on changes to Python files under the current directory or APP's "
    "directory (graceful stop, then re-exec). For development.",
)
@click.option(
    "--metrics-host",
    default=METRICS_HOST,
    envvar="STREAMTASKS_METRICS_HOST",
    show_envvar=True,
    show_default=True,
    help="Address the --metrics-port endpoints bind to (127.0.0.1: this machine only).",
)
@click.option(
    "--ray-start-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=RAY_START_TIMEOUT_S,
    envvar="STREAMTASKS_RAY_START_TIMEOUT",
    show_envvar=True,
    show_default=True,
    help="Seconds to start the local Ray or join --ray-address before giving up (exit 1).",
)
@click.option(
    "--dashboard-port",
    type=click.IntRange(min=0, max=65535),
    envvar="STREAMTASKS_DASHBOARD_PORT",
    show_envvar=True,
    help="Serve the web dashboard on 127.0.0.1 (STREAMTASKS_DASHBOARD_HOST) at this port (off by default).",
)
def worker(
    app: str,
    redis_url: str | None,
    streams: str | None,
    consumer: str | None,
    batch_size: int | None,
    ray_address: str | None,
    mode: str,
    actors: int | str | None,
    min_actors: int | None,
    max_actors: int | None,
    target_drain_seconds: float | None,
    scale_down_after: float | None,
    num_cpus: int | None,
    visibility_timeout: float,
    grace_period: float,
    consumer_grace: float,
    log_level: str,
    log_format: str,
    metrics_port: int | None,
    executor: str,
    inline_start: bool,
    reload: bool,
    metrics_host: str,
    ray_start_timeout: float,
    dashboard_port: int | None,
) -> None:
    """Serve the handlers of the Registry at APP (MODULE:ATTR) until SIGTERM/SIGINT.

    Without --ray-address it starts a new local Ray (never one recorded by an earlier `ray
    start`, nor RAY_ADDRESS); joining a cluster uses its token (RAY_AUTH_TOKEN or
    ~/.ray/auth_token). A signal during start-up stops the worker at once.

    A graceful stop exits 0; a second signal exits at once (128 + the signal's number).
    """
    from ..worker import WorkerSettings
    from .reload import Reloader, watched_dirs

    logs.configure(log_level, log_format)
    mode = executor_mode(mode, executor)
    check_executor(executor, mode, ray_address, num_cpus, inline_start)
    count, auto = actors_config(actors, min_actors, max_actors, target_drain_seconds, scale_down_after)
    try:
        registry = _load(app, streams, batch_size, log_format)
        settings = WorkerSettings(
            visibility_timeout=visibility_timeout, grace_period=grace_period, consumer_grace=consumer_grace
        )
        settings = evolve(settings, consumer=consumer) if consumer else settings
        ray = RayConfig(address=ray_address, num_cpus=num_cpus, start_timeout=ray_start_timeout)
        config = ServeConfig(
            mode=mode,
            executor=executor,
            actors=count,
            autoscale=auto,
            inline_start=inline_start,
            ray=ray,
            settings=settings,
        )
        url = redis_url_of(redis_url)
    except StreamtasksError as exc:
        if reload:
            Reloader(watched_dirs(app), lambda: None).wait_then_reexec(str(exc))
        raise click.ClickException(str(exc)) from None

    reloader: Reloader | None = None
    ray_started: list[bool] = []  # from then on, exit without the interpreter's teardown

    async def serve() -> None:
        nonlocal reloader
        redis = await connect(url)
        _actor_logs(mode)
        [w] = build(registry, redis, url, config)
        if reload:
            reloader = Reloader(watched_dirs(app), w.stop)
            w.supervisor.spawn("reload", reloader.watch)
        install = _signal_handlers(w.stop)
        install()
        # ray.init installs Ray's native failure-signal handler over ours; on SIGTERM it arms
        # an alarm that aborts the process a few seconds later, mid-drain. Take them back as
        # soon as Ray is up (actor mode reads only seconds later, once its actors are placed).
        w.events.subscribe(lambda e: install() if isinstance(e, ExecutorStarted) else None)
        w.events.subscribe(freeze_after_start)  # this process is ours: start-up's objects stay
        server = None if metrics_port is None else await _serve_metrics(w, metrics_host, metrics_port)
        board = None if dashboard_port is None else await _start_dashboard(redis, registry, dashboard_port, w)
        ray_started.append(True)
        stop_inline_start = inline_start_beside(registry, redis, config, w)
        try:
            await w.run()
        finally:
            await stop_inline_start()
            if board is not None:
                await board.close()
            if server is not None:
                await server.close()
            await redis.aclose()
        log.info("worker %s stopped", w.consumer, extra={"consumer": w.consumer})

    try:
        run(serve())
    except click.ClickException as exc:
        if not ray_started:
            raise
        exc.show()  # e.g. Ray did not start: its start-up thread may still hang, so no teardown
        exit_now(exc.exit_code)
    if reloader is not None and reloader.changed:
        reloader.reexec()
    # Every entry is settled and the Ray driver is shut down. Skip the interpreter's teardown:
    # Ray's native destructors can abort (SIGABRT) a driver that shared a cluster with other
    # drivers, which would turn a clean stop into a crash for the process supervisor.
    exit_now(0)


def _load(app: str, streams: str | None, batch_size: int | None, log_format: str) -> Registry:
    """APP's registry with the command line's --streams and --batch-size applied."""
    registry = load_registry(app)
    given = click.get_current_context().get_parameter_source("log_level")
    if registry.log_level and given is click.core.ParameterSource.DEFAULT:
        logs.configure(registry.log_level, log_format)
    names = split_streams(streams)
    if names:
        registry = registry.only(names)
    if batch_size:
        registry = registry.with_options(batch_size=batch_size)
    return registry


async def _serve_metrics(w: Serving, host: str, port: int) -> Any:
    from ..observe.http import start_metrics_server  # prometheus_client: only when asked for

    try:
        return await start_metrics_server(w, port, host)
    except OSError as exc:  # address in use, not an address of this machine, unknown name
        raise click.ClickException(f"cannot serve metrics on {host}:{port}: {one_line(exc)}") from None


def _actor_logs(mode: str) -> None:
    """In actor mode, the actors' lines reach this process' stderr through Ray's thread (plain:
    :func:`streamtasks.serve.make_executor`): each line stays whole even when Ray's thread
    prints while this one logs."""
    if mode == "actors":
        logs.whole_lines()


async def _start_dashboard(redis: Any, registry: Any, port: int, serving: Serving) -> Any:
    """The web dashboard on this worker's loop (it reads Redis like ``streamtasks dashboard``,
    and shows this process' Ray)."""
    from .dashboard import dashboard_package

    d = dashboard_package()
    host = os.environ.get("STREAMTASKS_DASHBOARD_HOST") or d.DEFAULT_HOST
    targets, access = d.Targets.of(registry), d.Access.from_env()
    board = d.Dashboard(
        redis,
        targets,
        access,
        registry=registry,
        panels=d.installed_panels(registry),
        cluster=serving.cluster,
    )
    return await d.DashboardServer(board, port, host).start()


def _signal_handlers(stop: Callable[[], None]) -> Callable[[], None]:
    """A function (re)installing SIGTERM/SIGINT handlers on the running loop: the first signal
    stops the worker gracefully, a second one exits at once."""
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        if received:
            log.warning("second signal: exiting now; unfinished entries will be reclaimed")
            exit_now(128 + signum)
        received.append(signum)
        log.info("%s received: stopping (send it again to exit at once)", signal.Signals(signum).name)
        stop()

    def install() -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)

    return install
