"""``streamtasks worker APP``: serve a registry until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

import click

from .. import logs
from ..app import load_registry
from ..errors import StreamtasksError
from ..worker.events import StateChanged
from .common import connect, exit_now, redis_url_of, redis_url_option, run, split_streams, streams_option

log = logging.getLogger("streamtasks.cli")


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
    num_cpus: int | None,
    visibility_timeout: float,
    grace_period: float,
    log_level: str,
    log_format: str,
    metrics_port: int | None,
    dashboard_port: int | None,
) -> None:
    """Serve the handlers of the Registry at APP (MODULE:ATTR) until SIGTERM/SIGINT.

    Exit status: 0 after a graceful stop, 1 on a configuration or connection error.
    """
    from ..observe.http import start_metrics_server
    from ..worker import RayExecutor, Worker, WorkerSettings

    logs.configure(log_level, log_format)
    try:
        registry = load_registry(app)
        given = click.get_current_context().get_parameter_source("log_level")
        if registry.log_level and given is click.core.ParameterSource.DEFAULT:
            logs.configure(registry.log_level, log_format)
        names = split_streams(streams)
        if names:
            registry = registry.only(names)
        if batch_size:
            registry = registry.with_options(batch_size=batch_size)
        settings_kw: dict[str, Any] = {"visibility_timeout": visibility_timeout, "grace_period": grace_period}
        if consumer:
            settings_kw["consumer"] = consumer
        settings = WorkerSettings(**settings_kw)
        url = redis_url_of(redis_url)
    except StreamtasksError as exc:
        raise click.ClickException(str(exc)) from None

    async def serve() -> None:
        redis = await connect(url)
        # A Ray we join has its own environment: send the handlers' configuration along.
        env = registry.forwarded_env(os.environ) if ray_address else None
        executor = RayExecutor(address=ray_address, num_cpus=num_cpus, env=env)
        w = Worker(registry, redis, executor, settings)
        install = _signal_handlers(w.stop)
        install()
        # ray.init installs Ray's native failure-signal handler over ours; on SIGTERM it arms
        # an alarm that aborts the process a few seconds later, mid-drain. Take them back.
        w.events.subscribe(
            lambda e: install() if isinstance(e, StateChanged) and e.state == "reading" else None
        )
        server = None if metrics_port is None else await start_metrics_server(w, metrics_port)
        board = None if dashboard_port is None else await _start_dashboard(redis, registry, dashboard_port)
        try:
            await w.run()
        finally:
            if board is not None:
                await board.close()
            if server is not None:
                await server.close()
            await redis.aclose()
        log.info("worker %s stopped", w.consumer)

    run(serve())
    # Every entry is settled and the Ray driver is shut down. Skip the interpreter's teardown:
    # Ray's native destructors can abort (SIGABRT) a driver that shared a cluster with other
    # drivers, which would turn a clean stop into a crash for the process supervisor.
    exit_now(0)


async def _start_dashboard(redis: Any, registry: Any, port: int) -> Any:
    """The web dashboard on this worker's loop (it reads Redis like ``streamtasks dashboard``,
    and shows this process' Ray)."""
    from .dashboard import dashboard_package

    d = dashboard_package()
    host = os.environ.get("STREAMTASKS_DASHBOARD_HOST") or d.DEFAULT_HOST
    targets, access = d.Targets.of(registry), d.Access.from_env()
    board = d.Dashboard(redis, targets, access, registry=registry, panels=d.installed_panels())
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
