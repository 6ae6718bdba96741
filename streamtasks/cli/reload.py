"""``streamtasks worker --reload``: restart the worker when its source changes (development).

The watcher runs as one of the worker's supervised loops. On a change it stops the worker the
way SIGTERM does (unstarted entries handed back at once, in-flight batches finished and
settled), and when the drain is over the command re-executes itself: a fresh process imports
the changed code. Nothing runs twice and nothing waits for the visibility timeout. When the
edited code does not load, the command waits for the next change instead of exiting.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger("streamtasks.cli")


def watched_dirs(app: str) -> list[Path]:
    """The current directory and the directory of APP's module (when it is elsewhere)."""
    import importlib.util

    dirs = [Path.cwd()]
    try:
        spec = importlib.util.find_spec(app.partition(":")[0])
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin:
        where = Path(spec.origin).resolve().parent
        if not any(where.is_relative_to(d) for d in dirs):
            dirs.append(where)
    return dirs


class Reloader:
    """Watches ``dirs`` for Python changes; the first one stops the worker (``stop``)."""

    def __init__(self, dirs: Sequence[Path], stop: Callable[[], None]) -> None:
        self.dirs = list(dirs)
        self.stop = stop
        self.changed: list[str] = []

    async def watch(self) -> None:
        from watchfiles import PythonFilter, awatch

        async for changes in awatch(*self.dirs, watch_filter=PythonFilter()):
            self.changed = sorted({path for _, path in changes})
            log.info("%s changed: restarting (graceful stop, then re-exec)", ", ".join(self.changed))
            self.stop()
            return

    def wait_then_reexec(self, error: str) -> None:
        """APP does not load (a syntax error mid-edit): say so, wait for the next change, and
        try again, instead of ending the dev loop."""
        from watchfiles import PythonFilter, watch

        log.error("%s; waiting for a change to restart", error)
        for _ in watch(*self.dirs, watch_filter=PythonFilter()):
            break
        self.reexec()

    def reexec(self) -> None:
        """Replace this process with a fresh run of the same command line."""
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
