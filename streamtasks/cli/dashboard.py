"""``streamtasks dashboard APP``: the web dashboard (:mod:`streamtasks.observe.dashboard`)."""

from __future__ import annotations

import asyncio
import logging
import signal
from types import ModuleType

import click

from .. import logs
from ..app import load_registry
from ..errors import StreamtasksError
from .common import connect, group_option, redis_url_of, redis_url_option, run, split_streams, streams_option

log = logging.getLogger("streamtasks.cli")


@click.command("dashboard")
@click.argument("app")
@redis_url_option
@streams_option
@group_option
@click.option(
    "--host",
    default="127.0.0.1",
    envvar="STREAMTASKS_DASHBOARD_HOST",
    show_envvar=True,
    show_default=True,
    help="Address to bind; anything but loopback exposes it to the network.",
)
@click.option(
    "--port",
    type=click.IntRange(min=0, max=65535),
    default=8555,
    envvar="STREAMTASKS_DASHBOARD_PORT",
    show_envvar=True,
    show_default=True,
    help="Port (0: any free port).",
)
@click.option(
    "--read-only",
    is_flag=True,
    envvar="STREAMTASKS_DASHBOARD_READ_ONLY",
    show_envvar=True,
    help="Refuse every replay and purge.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.2, max=60),
    default=1.0,
    show_default=True,
    help="Seconds between samples of the live overview.",
)
def dashboard(
    app: str,
    redis_url: str | None,
    streams: str | None,
    group: str | None,
    host: str,
    port: int,
    read_only: bool,
    interval: float,
) -> None:
    """Serve the web dashboard of the Registry at APP (MODULE:ATTR) until Ctrl-C.

    Replay and purge need STREAMTASKS_DASHBOARD_TOKEN (sent as a bearer token) or
    STREAMTASKS_DASHBOARD_USER / STREAMTASKS_DASHBOARD_PASSWORD (basic auth, then asked for
    every page); without either the dashboard is read-only. Exit status: 0 after Ctrl-C,
    1 on a configuration or connection error, 2 on a usage error.
    """
    d = dashboard_package()
    logs.configure("INFO")
    try:
        registry = load_registry(app)
        targets = d.Targets.of(registry, split_streams(streams), group)
        url = redis_url_of(redis_url)
    except StreamtasksError as exc:
        raise click.ClickException(logs.redact(str(exc))) from None

    async def serve() -> None:
        redis = await connect(url)
        board = d.Dashboard(
            redis,
            targets,
            d.Access.from_env(read_only),
            registry=registry,
            panels=d.installed_panels(registry),
            interval=interval,
        )
        try:
            server = await d.DashboardServer(board, port, host).start()
        except OSError as exc:
            await redis.aclose()
            raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        click.echo(f"dashboard on {server.url}/ (Ctrl-C to stop)")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
        finally:
            await server.close()
            await redis.aclose()

    run(serve())


def dashboard_package() -> ModuleType:
    """:mod:`streamtasks.observe.dashboard`, or one line saying which extra to install."""
    try:
        from ..observe import dashboard as package
    except ImportError as exc:
        raise click.ClickException(
            f"the dashboard needs {exc.name or 'its dependencies'}: pip install 'streamtasks[dashboard]'"
        ) from None
    return package
