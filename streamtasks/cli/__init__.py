"""The ``streamtasks`` command line (click): one module per command group.

Every option also reads an environment variable; :mod:`.common` declares the shared ones,
turns errors into one line and an exit status, and states the exit codes in every command's
``--help``. Packages add commands through the ``streamtasks.commands`` entry-point group (the
adserving product adds ``db`` and ``stats``).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from ..errors import ConfigError, MissingExtra
from .common import EXIT_STATUS_HELP, Cli, with_exit_status
from .dashboard import dashboard
from .dlq import dlq
from .scheduled import scheduled
from .schema import schema_command
from .send import parse_field_args, send
from .status import status_command
from .trim import trim
from .worker import worker

#: Entry-point group of commands other packages add to ``streamtasks``.
COMMANDS_GROUP = "streamtasks.commands"


class _Commands(Cli):
    """Commands of other packages (entry points) are imported only when they are run or
    listed: ``streamtasks worker`` does not pay for the product's imports (asyncpg ...)."""

    def _plugins(self) -> dict[str, Any]:
        from importlib.metadata import entry_points

        return {e.name: e for e in entry_points(group=COMMANDS_GROUP) if e.name not in self.commands}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._plugins()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and (entry := self._plugins().get(cmd_name)) is not None:
            try:
                command = _with_exit_status_everywhere(entry.load())
            except MissingExtra as exc:
                command = _needs_extra(cmd_name, exc)
            self.add_command(command, cmd_name)
        return command


def _needs_extra(name: str, missing: MissingExtra) -> click.Command:
    """A command whose extra is not installed: listed (its help says what to install), and
    run, any arguments given, it says so in one line and exits 1."""

    def fail(args: tuple[str, ...]) -> None:
        raise click.ClickException(f"streamtasks {name}: {missing}")

    return click.Command(
        name,
        callback=fail,
        params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
        help=f"(not installed: pip install 'streamtasks[{missing.extra}]')",
        context_settings={"ignore_unknown_options": True, "help_option_names": []},
        add_help_option=False,
    )


@click.group(
    cls=_Commands,
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


for command in (worker, send, dlq, scheduled, status_command, schema_command, trim, dashboard):
    main.add_command(_with_exit_status_everywhere(command))


def run() -> None:  # pragma: no cover - console entry point
    try:
        main(standalone_mode=True)
    except ConfigError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)


__all__ = ["main", "parse_field_args", "run"]
