"""MkDocs hooks (mkdocs.yml ``hooks:``).

``streamtasks --help`` lists the commands other packages add through the
``streamtasks.commands`` entry-point group (``db``, ``stats``), but the root group loads them
only when asked for them by name; mkdocs-click documents the commands a group holds. So,
before the pages are rendered, ask the group for each command it lists, as ``--help`` does:
the reference then shows every command, each as ``streamtasks`` runs it.
"""

from __future__ import annotations

from typing import Any

import click


def on_config(config: Any) -> Any:
    from streamtasks.cli import main

    ctx = click.Context(main, info_name="streamtasks")
    names = main.list_commands(ctx)
    for name in names:
        main.get_command(ctx, name)
    # in the order of ``streamtasks --help``
    main.commands = {name: main.commands[name] for name in names}
    return config
