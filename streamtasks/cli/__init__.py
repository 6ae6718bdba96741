"""The ``streamtasks`` command line (click): one module per command group.

Every option also reads an environment variable; :mod:`.common` declares the shared ones
and turns errors into one line and an exit status. Packages add commands through the
``streamtasks.commands`` entry-point group (the adserving product adds ``db`` and ``stats``).
"""

from __future__ import annotations

import sys

import click

from ..errors import ConfigError
from .dashboard import dashboard
from .dlq import dlq
from .send import parse_field_args, send
from .status import status_command
from .worker import worker


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="streamtasks")
def main() -> None:
    """streamtasks: decorator task framework on Redis Streams, run by Ray.

    Exit status: 0 success; 1 an error (configuration, connection, Redis); 2 a usage error;
    3 (status) unhealthy.
    """


for command in (worker, send, dlq, status_command, dashboard):
    main.add_command(command)


#: Entry-point group of commands other packages add to ``streamtasks``.
COMMANDS_GROUP = "streamtasks.commands"


def _add_plugin_commands() -> None:
    from importlib.metadata import entry_points

    for entry in entry_points(group=COMMANDS_GROUP):
        if entry.name not in main.commands:
            main.add_command(entry.load(), entry.name)


_add_plugin_commands()


def run() -> None:  # pragma: no cover - console entry point
    try:
        main(standalone_mode=True)
    except ConfigError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)


__all__ = ["main", "parse_field_args", "run"]
