"""The ``streamtasks`` command line (click): one module per command group.

Every option also reads an environment variable; :mod:`.common` declares the shared ones,
turns errors into one line and an exit status, and states the exit codes in every command's
``--help``. Packages add commands through the ``streamtasks.commands`` entry-point group (the
adserving product adds ``db`` and ``stats``).
"""

from __future__ import annotations

import sys

import click

from ..errors import ConfigError
from .common import EXIT_STATUS_HELP, Cli, with_exit_status
from .dlq import dlq
from .send import parse_field_args, send
from .status import status_command
from .worker import worker


@click.group(
    cls=Cli,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_STATUS_HELP,
)
@click.version_option(package_name="streamtasks")
def main() -> None:
    """streamtasks: decorator task framework on Redis Streams, run by Ray."""


def _with_exit_status_everywhere(command: click.Command) -> click.Command:
    """``command`` and, for a group, each of its subcommands, with the exit codes in its help."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _with_exit_status_everywhere(sub)
    if EXIT_STATUS_HELP not in (command.help or ""):
        with_exit_status(command)
    return command


for command in (worker, send, dlq, status_command):
    main.add_command(_with_exit_status_everywhere(command))


#: Entry-point group of commands other packages add to ``streamtasks``.
COMMANDS_GROUP = "streamtasks.commands"


def _add_plugin_commands() -> None:
    from importlib.metadata import entry_points

    for entry in entry_points(group=COMMANDS_GROUP):
        if entry.name not in main.commands:
            main.add_command(_with_exit_status_everywhere(entry.load()), entry.name)


_add_plugin_commands()


def run() -> None:  # pragma: no cover - console entry point
    try:
        main(standalone_mode=True)
    except ConfigError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)


__all__ = ["main", "parse_field_args", "run"]
