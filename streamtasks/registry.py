"""The :class:`Registry` of handlers and the ``@stream_handler`` decorators.

Decorating connects to nothing: it records a :class:`~streamtasks.spec.HandlerSpec` and
returns a :class:`~streamtasks.handler.Handler` that is still callable like the function it
wraps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar

from attrs import evolve

from . import keys
from .errors import RegistryError
from .fanout import flow_options, stream_specs
from .handler import Handler as Handler
from .handler import HandlerDecorator as HandlerDecorator
from .handler import TypedHandler as TypedHandler
from .hooks import check_middleware
from .keys import DEFAULT_GROUP, validate_name
from .limits import RateLimit
from .message import DEFAULT_MAX_ENTRY_BYTES
from .periodic import Periodic
from .resources import Resource as Resource
from .results import DEFAULT_RESULT_TTL
from .retry import DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX, DEFAULT_MAX_RETRIES, RetryPolicy
from .spec import DEFAULT_BATCH_SIZE as DEFAULT_BATCH_SIZE
from .spec import DEFAULT_CONCURRENCY as DEFAULT_CONCURRENCY
from .spec import DEFAULT_MAX_IN_FLIGHT as DEFAULT_MAX_IN_FLIGHT
from .spec import RAY_OPTIONS as RAY_OPTIONS
from .spec import HandlerSpec as HandlerSpec
from .typed import message_type_of

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
S = TypeVar("S", bound="HandlerSet")

#: Environment variables every worker forwards to Ray tasks it runs on a cluster.
CORE_ENV_PREFIXES = ("STREAMTASKS_", "REDIS_", "OTEL_")


class HandlerSet:
    """The handlers one consumer group serves, by stream, and how a set is composed: other
    sets included, a part taken (``--streams``), options changed (``--batch-size``), the
    middleware and per-process resources they share. :class:`Registry` adds the decorators."""

    def __init__(self, group: str = DEFAULT_GROUP, *, env_forward: Iterable[str] = ()) -> None:
        self.group = validate_name("group", group)
        """The consumer group the workers of this registry join."""
        self._handlers: dict[str, HandlerSpec] = {}
        self.resources: list[Resource[Any]] = []
        """Per-process resources declared with :meth:`resource`."""
        self.env_forward: tuple[str, ...] = tuple(env_forward)
        """Prefixes of variables the handlers read, sent to Ray tasks by a worker on a cluster."""
        self.log_level: str | None = None
        """The log level ``streamtasks worker`` uses when none is given on its command line."""
        self._middleware: list[object] = []

    @property
    def handlers(self) -> Mapping[str, HandlerSpec]:
        """Handler specs by stream name."""
        return dict(self._handlers)

    @property
    def streams(self) -> list[str]:
        """The streams served, in the order the handlers were added."""
        return list(self._handlers)

    def middleware(self, obj: T) -> T:
        """Add middleware (:mod:`streamtasks.hooks`) to every handler served; returns ``obj``."""
        check_middleware(obj)
        if all(m is not obj for m in self._middleware):
            self._middleware.append(obj)
        self._handlers = {s: self._bind(spec) for s, spec in self._handlers.items()}
        return obj

    def _bind(self, spec: HandlerSpec) -> HandlerSpec:
        """``spec`` as this registry serves it: with its middleware and consumer group."""
        return evolve(spec, middleware=tuple(self._middleware), group=self.group)

    def resource(self, factory: Callable[[], AsyncIterator[T]]) -> Resource[T]:
        """Declare a per-process resource; see :class:`Resource`."""
        res = Resource(factory)
        self.resources.append(res)
        return res

    def include(self, other: HandlerSet) -> None:
        """Serve ``other``'s handlers too, under this registry's consumer group."""
        for spec in other._handlers.values():
            self._add(spec)
        self.resources.extend(r for r in other.resources if r not in self.resources)
        self.env_forward += tuple(p for p in other.env_forward if p not in self.env_forward)
        self.log_level = self.log_level or other.log_level
        self._middleware += [m for m in other._middleware if all(m is not n for n in self._middleware)]
        self._handlers = {s: self._bind(spec) for s, spec in self._handlers.items()}

    def forwarded_env(self, environ: Mapping[str, str]) -> dict[str, str]:
        """The part of ``environ`` the handlers read: streamtasks' own variables and the
        registry's :attr:`env_forward` prefixes."""
        prefixes = (*CORE_ENV_PREFIXES, *self.env_forward)
        return {k: v for k, v in environ.items() if k.startswith(prefixes)}

    def only(self: S, streams: list[str]) -> S:
        """A registry with just the handlers of ``streams`` (for ``--streams``); a sharded
        stream's name stands for all its shards."""
        wanted = [s for name in streams for s in self._expand(name)]
        missing = [s for s in wanted if s not in self._handlers]
        if missing:
            raise RegistryError(f"no handler for stream(s): {', '.join(missing)}")
        return self._copy({s: self._handlers[s] for s in wanted})

    def with_options(self: S, **changes: Any) -> S:
        """A copy whose handler specs have ``changes`` applied (e.g. ``batch_size``)."""
        return self._copy({s: evolve(spec, **changes) for s, spec in self._handlers.items()})

    def _copy(self: S, handlers: dict[str, HandlerSpec]) -> S:
        """A set of ``handlers`` with this one's group, environment, log level, resources and
        middleware."""
        sub = type(self)(self.group, env_forward=self.env_forward)
        sub.log_level = self.log_level
        sub._handlers = handlers
        sub.resources = list(self.resources)
        sub._middleware = list(self._middleware)
        return sub

    def _expand(self, name: str) -> list[str]:
        parts = [s for s, spec in self._handlers.items() if name in (spec.shard_of, spec.priority_of)]
        return parts or [name]

    def _add(self, spec: HandlerSpec) -> None:
        spec = self._bind(spec)
        existing = self._handlers.get(spec.stream)
        if existing is not None and existing.fn is not spec.fn:
            raise RegistryError(
                f"stream {spec.stream!r} already has handler {existing.name}; "
                f"one handler per stream per registry (use another Registry/group)"
            )
        self._handlers[spec.stream] = spec

    def __repr__(self) -> str:
        return f"<{type(self).__name__} group={self.group!r} streams={self.streams}>"


class Registry(HandlerSet):
    """A collection of handlers served by one consumer group.

    ``Registry(group="orders-app")``; handlers are added with :meth:`stream_handler`, and
    other registries (the built-ins, say) with :meth:`include`. Every stream has at most one
    handler per registry: a consumer group delivers each entry once.
    """

    def stream_handler(
        self,
        stream: str,
        *,
        batch: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        concurrency: int = DEFAULT_CONCURRENCY,
        timeout: float | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff_base: float = DEFAULT_BACKOFF_BASE,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
        dont_retry_on: type[BaseException] | tuple[type[BaseException], ...] = (),
        dead_letter_stream: str | None = None,
        max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
        shards: int | None = None,
        trim_acked_after: float | None = None,
        dead_letter_retention: float | None = None,
        periodic: Periodic | None = None,
        rate_limit: str | RateLimit | None = None,
        max_concurrency: int | None = None,
        priorities: int | None = None,
        results: bool = False,
        result_ttl: float = DEFAULT_RESULT_TTL,
        **ray_options: Any,
    ) -> HandlerDecorator:
        """Register the decorated function as the handler of ``stream``.

        * ``batch``: the function takes ``list[Message]`` instead of one ``Message``; it may
          return a mapping ``{entry_id: exception}`` to fail some entries and not the others
          (or ``{position: exception}``, by position in the list it was given).
        * A function that declares its entry type (``def f(order: Order)``, ``list[Order]``
          for a batch; a msgspec Struct, attrs class or dataclass) gets its entries decoded
          and validated into it (:mod:`streamtasks.typed`).
        * ``batch_size``: entries per Ray task; ``max_in_flight``: Ray tasks running at once.
        * ``concurrency``: async per-entry handlers run this many entries of a batch at once.
        * ``timeout``: seconds one call may take (per entry, or per batch for batch handlers).
        * ``max_retries``, ``backoff_base``, ``backoff_max``, ``retry_on``, ``dont_retry_on``:
          the retry policy; ``dead_letter_stream`` defaults to ``<stream>:dead``.
        * ``shards``: serve ``<stream>:{0}`` ... ``<stream>:{shards-1}`` (one lane each; on Redis
          Cluster they spread over the slots); ``Producer.send(stream, fields, key=...)`` and
          ``handler.send(..., shard_key=...)`` pick the shard by key.
        * ``trim_acked_after``: delete entries every consumer group has acked, this many
          seconds after their XADD (``0``: as soon as acked); ``None``: never trim.
        * ``dead_letter_retention``: delete dead letters older than this many seconds.
        * ``num_cpus``, ``num_gpus``, ``memory``, ``resources``, ``accelerator_type``,
          ``runtime_env``, ``scheduling_strategy``: Ray options of the actor (actor mode) or
          task (task mode) that runs the handler.
        * ``rate_limit="100/s"`` (``/m``, ``/h``), ``max_concurrency``, ``priorities``: flow
          control across all workers, priority levels 0 (highest) to N-1 (docs/guides/flow-control.md).
        * ``results``: store what the handler returns for ``result_ttl`` seconds (default one
          hour), so ``await handler.call(...)`` gets it (:mod:`streamtasks.results`; a batch
          handler returns a list with one value per entry, or a mapping
          ``{entry_id or position: value or exception}`` covering every entry).
        """
        validate_name("stream", stream)
        flow = flow_options(shards, rate_limit, max_concurrency, priorities)
        if periodic is not None and (shards is not None or priorities is not None):
            raise ValueError("a periodic handler has no shards and no priority levels (one stream, one tick)")
        unknown = set(ray_options) - RAY_OPTIONS
        if unknown:
            raise TypeError(f"unknown handler option(s): {', '.join(sorted(unknown))}")
        policy = RetryPolicy(max_retries, backoff_base, backoff_max, retry_on, dont_retry_on)

        def decorate(fn: Callable[P, R]) -> Handler[P, R] | TypedHandler[P, R, Any]:
            message_type = message_type_of(fn, batch)
            spec = HandlerSpec(
                stream=stream,
                fn=fn,
                name=f"{fn.__module__}.{fn.__qualname__}",
                batch=batch,
                batch_size=batch_size,
                max_in_flight=max_in_flight,
                concurrency=concurrency,
                timeout=timeout,
                retry=policy,
                dead_letter_stream=validate_name(
                    "dead-letter stream", dead_letter_stream or keys.dead_letter_stream(stream)
                ),
                max_entry_bytes=max_entry_bytes,
                ray_options=ray_options,
                message_type=message_type,
                shards=shards or 0,
                trim_acked_after=trim_acked_after,
                dead_letter_retention=dead_letter_retention,
                periodic=periodic,
                **flow,
                results=results,
                result_ttl=result_ttl,
            )
            handler: Handler[P, R] | TypedHandler[P, R, Any] = (
                Handler(spec, self._middleware)
                if message_type is None
                else TypedHandler(spec, self._middleware)
            )
            if not shards and not priorities:
                self._add(spec)
                return handler
            for one in stream_specs(spec, dead_letter_stream):
                self._add(one)
            return handler

        decorator: HandlerDecorator = decorate  # type: ignore[assignment]  # overloads by signature
        return decorator

    def periodic(
        self,
        stream: str,
        *,
        every: float | timedelta | None = None,
        cron: str | None = None,
        tz: Any = None,
        catch_up: str = "latest",
        **options: Any,
    ) -> HandlerDecorator:
        """Register a handler that gets one entry on ``stream`` per tick of ``every`` (seconds
        or a timedelta; ticks at multiples of it since the Unix epoch) or ``cron`` (in time zone
        ``tz``, default UTC), across all workers; ``catch_up``: ``latest``, ``none`` or ``all``
        after an outage. Other options as for :meth:`stream_handler`. See the scheduling guide.
        """
        return self.stream_handler(stream, periodic=Periodic.of(every, cron, tz, catch_up), **options)


default_registry = Registry()
"""The registry of the module-level :func:`stream_handler` (group ``streamtasks``)."""


def stream_handler(stream: str, **options: Any) -> HandlerDecorator:
    """Register on :data:`default_registry` (like Celery's ``shared_task``)."""
    return default_registry.stream_handler(stream, **options)
