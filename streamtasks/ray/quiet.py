"""Ray's log lines that read as faults, kept out: each is about something the worker did on
purpose, and the worker says what it did instead (at INFO)."""

from __future__ import annotations

import logging
import os

#: What ``ray.init`` logs when it is called outside the main thread, as here (see
#: :class:`~streamtasks.ray.start.RayThread`): it then leaves SIGTERM alone, which is what a
#: worker wants (the worker command handles SIGTERM itself; a host process of
#: ``start_workers()`` keeps its own).
SIGTERM_NOT_SET = "SIGTERM handler is not set because current thread is not the main thread."


def _drop_sigterm_warning(record: logging.LogRecord) -> bool:
    return record.getMessage() != SIGTERM_NOT_SET


def quiet_sigterm_warning() -> None:
    """Keep Ray's :data:`SIGTERM_NOT_SET` warning out of the logs (once per process): every
    worker's start printed it, and it read as if SIGTERM would not stop the worker."""
    ray_worker_log = logging.getLogger("ray._private.worker")
    if _drop_sigterm_warning not in ray_worker_log.filters:
        ray_worker_log.addFilter(_drop_sigterm_warning)


#: What Ray logs as a WARNING when ``ray.init`` starts a local Ray with ``RAY_AUTH_MODE`` unset:
#: it turned token authentication on for it. Nothing the user can act on (it is the Ray the worker
#: started for itself): the worker says what it did at INFO instead.
TOKEN_AUTH_ON = "Token authentication is enabled for this Ray cluster."
TOKEN_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


def _drop_token_auth_warning(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(TOKEN_AUTH_ON)


def quiet_token_auth_warning() -> None:
    """Keep Ray's :data:`TOKEN_AUTH_ON` warning out of the logs (the filter added once)."""
    ray_auth_log = logging.getLogger(TOKEN_AUTH_LOGGER)
    if _drop_token_auth_warning not in ray_auth_log.filters:
        ray_auth_log.addFilter(_drop_token_auth_warning)


def token_auth_state() -> str:
    """``on`` or ``off``: what ``ray.init`` chose (it sets ``RAY_AUTH_MODE`` in this process)."""
    return "on" if os.environ.get("RAY_AUTH_MODE", "").lower() == "token" else "off"
