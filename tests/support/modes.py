"""The mode the suite's worker subprocesses run in, and what a test needs to know about it.

Workers read ``STREAMTASKS_MODE`` as the CLI does, so ``STREAMTASKS_MODE=tasks pytest ...``
runs every spawned worker in task mode (actor mode is the default). In actor mode each actor
is a consumer of its own
(``<consumer>-a<n>``), and the worker process heartbeats under its own name only while it
starts. A test that watches one consumer starts its worker with :func:`one_consumer`.
"""

from __future__ import annotations

import os
import re

from streamtasks.config import DEFAULT_MODE

#: ``STREAMTASKS_MODE`` (as the CLI reads it), else the CLI's default: actors.
MODE = os.environ.get("STREAMTASKS_MODE", DEFAULT_MODE)


def one_consumer(name: str, mode: str = MODE) -> tuple[list[str], str]:
    """Worker arguments for a worker that is one consumer, and that consumer's name: task
    mode's ``name``, or actor mode's single actor ``name-a0`` (``--actors 1``)."""
    if mode == "actors":
        return ["--consumer", name, "--actors", "1"], f"{name}-a0"
    return ["--consumer", name], name


def consumer_names(name: str, mode: str = MODE) -> re.Pattern[str]:
    """The consumers worker ``--consumer name`` reads as: itself, or its actors."""
    return re.compile(re.escape(name) + (r"-a\d+" if mode == "actors" else ""))
