"""Starting a local Ray, or joining a cluster: one thread for Ray's blocking calls, the
token a cluster asks for, a quick refusal instead of Ray's 20 s of retries, and Ray's log
lines that read as faults kept out."""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from collections.abc import Callable

import ray
from ray import _raylet
from ray.exceptions import AuthenticationError

from ..errors import StreamtasksError
from .leftovers import stop_leftover_agents
from .quiet import quiet_sigterm_warning, quiet_token_auth_warning, token_auth_state
from .registration import registration_polled

log = logging.getLogger("streamtasks.worker")

#: A local Ray's raylet connects to its object store's socket, often before the store made it,
#: and then sleeps ``raylet_client_connect_timeout_milliseconds`` (1 s by default) before it
#: tries again: a 1.0 s stall in about one local start in three (measured on Ray 2.60). Tried
#: every 20 ms instead, and as long in all (500 attempts: 10 s) before giving up.
LOCAL_SYSTEM_CONFIG = {
    "raylet_client_connect_timeout_milliseconds": 20,
    "raylet_client_num_connect_attempts": 500,
}


class RayThread:
    """One daemon thread for the blocking Ray calls of an executor (``ray.init``, then
    ``ray.shutdown``): a daemon, so a ``ray.init`` that never returns cannot keep the process
    from exiting; one thread, because ``ray.shutdown`` from another thread than ``ray.init``'s
    can hang joining Ray's own threads."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], None], Callable[[BaseException | None], None]]]
        self._calls = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def call(self, fn: Callable[[], None]) -> asyncio.Future[None]:
        """Run ``fn`` on the thread; a future of its outcome on the running loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def settle(exc: BaseException | None) -> None:
            if not future.done():
                future.set_result(None) if exc is None else future.set_exception(exc)

        def done(exc: BaseException | None) -> None:  # on the Ray thread
            loop.call_soon_threadsafe(settle, exc)

        self._calls.put((fn, done))
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="streamtasks-ray", daemon=True)
            self._thread.start()
        return future

    def _serve(self) -> None:
        while True:
            fn, done = self._calls.get()
            try:
                fn()
            except BaseException as exc:
                done(exc)
            else:
                done(None)


async def start_ray(thread: RayThread, address: str | None, num_cpus: int | None, timeout: float) -> None:
    """Start a local Ray, or join the cluster at ``address``, on ``thread``, within ``timeout``
    seconds; a failure is one :class:`StreamtasksError` line.

    Without ``address`` the local Ray is always a new one (``ray.init(address="local")``):
    never a cluster recorded by an earlier ``ray start`` (whose processes may be long dead)
    and never ``RAY_ADDRESS``. Joining a cluster picks up its token (``RAY_AUTH_TOKEN``, or
    the token file ``~/.ray/auth_token``) and turns on token authentication by itself."""
    where = f"join Ray at {address}" if address else "start a local Ray"
    try:
        await asyncio.wait_for(thread.call(lambda: _init_ray(address, num_cpus)), timeout)
    except asyncio.TimeoutError:
        raise StreamtasksError(
            f"cannot {where}: no answer within {timeout:.0f}s (--ray-start-timeout)"
        ) from None
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError from ray.init
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise StreamtasksError(f"cannot {where}: {message}") from None


def _init_ray(address: str | None, num_cpus: int | None) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    quiet_sigterm_warning()
    if address:
        _token_auth_if_token_available()
        _refused_by(address)
        ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING)
    else:
        stop_leftover_agents()
        quiet_token_auth_warning()
        with registration_polled():  # no 1 s sleep when the raylet registers late
            ray.init(
                address="local",  # a new Ray: not one recorded by `ray start`, not RAY_ADDRESS
                num_cpus=num_cpus,
                include_dashboard=False,
                log_to_driver=True,
                logging_level=logging.WARNING,
                _system_config=LOCAL_SYSTEM_CONFIG,
            )
        log.info("started a local Ray (token authentication %s)", token_auth_state())


def _token_auth_if_token_available() -> None:
    """Joining a cluster: turn on token authentication when a token is at hand and
    ``RAY_AUTH_MODE`` is not set (Ray does this itself only for a cluster it found by itself,
    not for an explicit address), as Ray's own ``maybe_enable_token_auth_if_token_available``."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # another Ray version: look for the token ourselves
        path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
        if os.environ.get("RAY_AUTH_TOKEN") or os.path.isfile(path):
            os.environ["RAY_AUTH_MODE"] = "token"
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


#: Milliseconds the token probe of :func:`_refused_by` waits for the cluster.
PROBE_TIMEOUT_MS = 5000


def _refused_by(address: str) -> None:
    """Ask the cluster at ``address`` (``host:port``) whether it accepts our token, and raise
    at once if it does not: ``ray.init`` would retry a refusal for ~20 s before failing. Any
    other outcome (no answer, a Ray without this client) is left to ``ray.init``."""
    if address in ("auto", "local") or "://" in address:
        return

    client = getattr(_raylet, "InnerGcsClient", None)  # Ray 2.60's GCS client, not public API
    if client is None:
        return
    try:
        client.standalone(address, None, PROBE_TIMEOUT_MS)
    except AuthenticationError as exc:
        raise ConnectionError(f"the cluster refused to authenticate us: {exc}") from None
    except Exception:  # unreachable, timed out: ray.init reports it
        return
