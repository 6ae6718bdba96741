"""The one composition root: from a registry and a :class:`ServeConfig`, the workers that
serve it in any mode, and what runs beside them.

``streamtasks worker`` (:mod:`streamtasks.cli.worker`), the facade's ``start_workers``
(:mod:`streamtasks.adserving.local`) and the test helpers all build their workers here:

* actor mode (the default): one :class:`~streamtasks.ray.ActorPool`, whose Ray actors each
  read, run and settle their own batches;
* task mode: :class:`~streamtasks.worker.Worker`\\ s in this process, one Ray task per batch
  (:class:`~streamtasks.ray.RayExecutor`), or batches in threads of this process
  (``executor="inline"``: no Ray at all, for development and tests);
* ``inline_start``: the worker process handles entries while Ray starts
  (:mod:`streamtasks.ray.inline_start`).

Nothing here imports Ray unless the configuration needs it.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from attrs import evolve, field, frozen
from redis.asyncio import Redis

from .config import DEFAULT_MODE, MODES, RAY_START_TIMEOUT_S
from .errors import ConfigError
from .registry import Registry
from .scaling import Autoscale
from .worker import Executor, InlineExecutor, Worker, WorkerSettings, default_consumer_name
from .worker.events import Listener, Serving

if TYPE_CHECKING:
    from .ray.inline_start import InlineStart

#: Where task mode's batches run.
EXECUTORS = ("ray", "inline")


@frozen
class RayConfig:
    """Which Ray: a new local one (``address`` None) with ``num_cpus``, or the cluster at
    ``address``; ``env``: environment variables set in the Ray processes that run handlers
    (default: the registry's forwarded environment when joining a cluster, none locally)."""

    address: str | None = None
    num_cpus: int | None = None
    start_timeout: float = RAY_START_TIMEOUT_S
    env: Mapping[str, str] | None = None


def _one_of(choices: tuple[str, ...]) -> Callable[[object, object, str], None]:
    def check(_inst: object, attr: object, value: str) -> None:
        if value not in choices:
            raise ConfigError(f"{getattr(attr, 'name', attr)} must be one of {', '.join(choices)}")

    return check


@frozen
class ServeConfig:
    """How to serve a registry: ``mode`` (``actors`` or ``tasks``), task mode's ``executor``
    (``ray`` or ``inline``), ``actors`` per group of handlers with equal Ray options (default:
    the cluster's CPUs shared out) or ``autoscale`` (``--actors auto``: as many as the backlog
    needs, within bounds; :mod:`streamtasks.scaling`), task mode's ``workers`` in this
    process, ``inline_start``, the Ray to use and the workers' settings."""

    mode: str = field(default=DEFAULT_MODE, validator=_one_of(MODES))
    executor: str = field(default="ray", validator=_one_of(EXECUTORS))
    actors: int | None = None
    autoscale: Autoscale | None = None
    workers: int = 1
    inline_start: bool = False
    ray: RayConfig = RayConfig()
    settings: WorkerSettings = field(factory=WorkerSettings)

    def __attrs_post_init__(self) -> None:
        if self.mode == "actors" and self.executor == "inline":
            raise ConfigError("the inline executor runs in this process: it needs task mode")
        if self.autoscale is not None and self.mode != "actors":
            raise ConfigError("--actors auto scales Ray actors: it needs actor mode (--mode actors)")
        if self.autoscale is not None and self.actors is not None:
            raise ConfigError("--actors is either a number or auto, not both")


def make_executor(registry: Registry, config: ServeConfig) -> Executor:
    """Task mode's inline executor, or the Ray executor (task mode's tasks, actor mode's Ray)."""
    if config.executor == "inline":
        return InlineExecutor()
    if config.mode == "actors":
        _plain_actor_lines()
    from .ray import RayExecutor

    ray = config.ray
    env = ray.env if ray.env is not None else registry.forwarded_env(os.environ) if ray.address else None
    return RayExecutor(ray.address, ray.num_cpus, env=env, start_timeout=ray.start_timeout)


def _plain_actor_lines() -> None:
    """Actor mode: the actors log like this process (text or JSON lines) to their stderr, which
    Ray forwards here: without its coloured "(WorkerActor pid=...)" prefix (JSON lines would not
    parse, and a log file is not a terminal) and without folding the same line from two actors
    into one. Ray reads both when it is imported: set before this process imports it (the
    worker command's own process, and a facade's unless it imported Ray before)."""
    os.environ.setdefault("RAY_DISABLE_WORKER_LOG_PREFIX", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def build(
    registry: Registry,
    redis: Redis,
    redis_url: str,
    config: ServeConfig,
    executor: Executor | None = None,
    listeners: Sequence[Listener] = (),
) -> list[Serving]:
    """The workers serving ``registry``: one actor pool, or ``config.workers`` task-mode
    workers sharing one executor (each its own consumer; the first keeps the configured
    name). ``executor``: one to share (the facade's), else :func:`make_executor`'s."""
    executor = executor or make_executor(registry, config)
    settings = config.settings
    if config.mode == "actors":
        from .ray import ActorPool, RayExecutor

        if not isinstance(executor, RayExecutor):
            raise ConfigError("actor mode runs on Ray: it needs the Ray executor")
        return [
            ActorPool(
                registry,
                redis,
                redis_url,
                executor,
                settings,
                actors=config.actors,
                autoscale=config.autoscale,
                listeners=listeners,
            )
        ]
    names = [settings.consumer] + [default_consumer_name() for _ in range(config.workers - 1)]
    return [  # one mover and ticker per process is enough: the first worker's
        Worker(
            registry,
            redis,
            executor,
            evolve(settings, consumer=name, timers=settings.timers and not i),
            listeners=listeners,
        )
        for i, name in enumerate(names)
    ]


def inline_start(
    registry: Registry, redis: Redis, config: ServeConfig, serving: Serving
) -> Callable[[], Awaitable[None]]:
    """Start the inline start beside ``serving`` when ``config.inline_start`` (see
    :mod:`streamtasks.ray.inline_start`); returns what stops it and waits for its drain."""
    early = _inline_start(registry, redis, config, serving) if config.inline_start else None
    if early is None:
        return _nothing
    early.start()
    return early.stop


def _inline_start(
    registry: Registry, redis: Redis, config: ServeConfig, serving: Serving
) -> InlineStart | None:
    from .ray.inline_start import InlineStart

    first_batch = config.mode == "tasks"  # actors run their first batch as soon as they read
    return InlineStart.of(registry, redis, config.settings, serving, first_batch)


async def _nothing() -> None:
    return None
