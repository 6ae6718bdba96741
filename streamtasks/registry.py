"""The :class:`Registry` of handlers and the ``@stream_handler`` decorators.

Decorating connects to nothing: it records a :class:`HandlerSpec` and returns a
:class:`Handler` that is still callable like the function it wraps.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from attrs import evolve, field, fields, frozen

from . import keys
from .errors import RegistryError
from .handler import Handler as Handler
from .handler import HandlerDecorator as HandlerDecorator
from .handler import TypedHandler as TypedHandler
from .handler import _Registered
from .hooks import check_middleware
from .keys import DEFAULT_GROUP, validate_name
from .message import DEFAULT_MAX_ENTRY_BYTES
from .resources import Resource as Resource
from .resources import import_attr
from .results import DEFAULT_RESULT_TTL
from .retry import DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX, DEFAULT_MAX_RETRIES, RetryPolicy
from .typed import message_type_of

if TYPE_CHECKING:
    pass

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
M = TypeVar("M")

#: Environment variables every worker forwards to Ray tasks it runs on a cluster.
CORE_ENV_PREFIXES = ("STREAMTASKS_", "REDIS_", "OTEL_")
DEFAULT_BATCH_SIZE = 500
DEFAULT_MAX_IN_FLIGHT = 4
DEFAULT_CONCURRENCY = 16
#: Ray options a handler may set; anything else is an error, not silently ignored.
RAY_OPTIONS = frozenset(
    {
        "num_cpus",
        "num_gpus",
        "memory",
        "resources",
        "accelerator_type",
        "runtime_env",
        "scheduling_strategy",
    }
)


def _positive(_inst: object, attr: Any, value: int | float | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attr.name} must be > 0, got {value!r}")


def _non_negative(_inst: object, attr: Any, value: float | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attr.name} must be >= 0, got {value!r}")


@frozen
class HandlerSpec:
    """Everything the worker needs to know about one handler. Immutable."""

    stream: str
    fn: Callable[..., Any]
    name: str
    batch: bool = False
    batch_size: int = field(default=DEFAULT_BATCH_SIZE, validator=_positive)
    max_in_flight: int = field(default=DEFAULT_MAX_IN_FLIGHT, validator=_positive)
    concurrency: int = field(default=DEFAULT_CONCURRENCY, validator=_positive)
    timeout: float | None = field(default=None, validator=_positive)
    retry: RetryPolicy = field(factory=RetryPolicy)
    dead_letter_stream: str = ""
    max_entry_bytes: int = field(default=DEFAULT_MAX_ENTRY_BYTES, validator=_positive)
    ray_options: Mapping[str, Any] = field(factory=dict)
    #: The declared entry type (:mod:`streamtasks.typed`); ``None``: the handler takes Message.
    message_type: type[Any] | None = None
    #: On one shard of a sharded stream: the number of shards and the stream they shard
    #: (``orders`` for ``orders:{3}``); on the spec a sharded ``Handler`` keeps: its shard count.
    shards: int = 0
    shard_of: str = ""
    #: Ack-aware trimming: entries every group acked are deleted this many seconds after
    #: their XADD (None: never trimmed); see :mod:`streamtasks.worker.trim`.
    trim_acked_after: float | None = field(default=None, validator=_non_negative)
    #: Dead letters older than this many seconds are trimmed (None: kept).
    dead_letter_retention: float | None = field(default=None, validator=_non_negative)
    #: Store what the handler returns (:mod:`streamtasks.results`), for ``result_ttl`` seconds.
    results: bool = False
    result_ttl: float = field(default=DEFAULT_RESULT_TTL, validator=_positive)
    #: The serving registry's middleware (:mod:`streamtasks.hooks`) and consumer group, set
    #: by the registry (they travel with the spec to the actors and Ray tasks).
    middleware: tuple[Any, ...] = ()
    group: str = ""

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)

    def __reduce__(self) -> tuple[Any, ...]:
        # The function travels by reference (module, qualname) when it is importable, so a
        # Ray worker imports the user's module instead of unpickling a copy of its code.
        state = {a.name: getattr(self, a.name) for a in fields(HandlerSpec) if a.name != "fn"}
        return (_rebuild_spec, (_fn_reference(self.fn), state))


def _fn_reference(fn: Callable[..., Any]) -> Any:
    module, qualname = fn.__module__, fn.__qualname__
    if module == "__main__" or "<locals>" in qualname:
        return fn
    return (module, qualname)


def _rebuild_spec(fn_ref: Any, state: dict[str, Any]) -> HandlerSpec:
    if isinstance(fn_ref, tuple):
        obj = import_attr(*fn_ref)
        fn_ref = obj.spec.fn if isinstance(obj, _Registered) else obj
    return HandlerSpec(fn=fn_ref, **state)


class Registry:
    """A collection of handlers served by one consumer group.

    ``Registry(group="orders-app")``; handlers are added with :meth:`stream_handler`, and
    other registries (the built-ins, say) with :meth:`include`. Every stream has at most one
    handler per registry: a consumer group delivers each entry once.
    """

    def __init__(self, group: str = DEFAULT_GROUP, *, env_forward: Iterable[str] = ()) -> None:
        self.group = validate_name("group", group)
        self._handlers: dict[str, HandlerSpec] = {}
        self.resources: list[Resource[Any]] = []
        #: Prefixes of environment variables the handlers read: a worker that joins a Ray
        #: cluster sends them to its tasks (the cluster's nodes do not share its environment).
        self.env_forward: tuple[str, ...] = tuple(env_forward)
        #: The log level ``streamtasks worker`` uses when none is given on its command line.
        self.log_level: str | None = None
        self._middleware: list[object] = []

    @property
    def handlers(self) -> Mapping[str, HandlerSpec]:
        """Handler specs by stream name."""
        return dict(self._handlers)

    @property
    def streams(self) -> list[str]:
        return list(self._handlers)

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
        * ``results``: store what the handler returns for ``result_ttl`` seconds (default one
          hour), so ``await handler.call(...)`` gets it (:mod:`streamtasks.results`; a batch
          handler returns a list with one value per entry, or a mapping
          ``{entry_id or position: value or exception}`` covering every entry).
        * ``num_cpus``, ``num_gpus``, ``memory``, ``resources``, ``accelerator_type``,
          ``runtime_env``, ``scheduling_strategy``: Ray options of the actor (actor mode) or
          task (task mode) that runs the handler.
        """
        validate_name("stream", stream)
        if shards is not None and shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards!r}")
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
                results=results,
                result_ttl=result_ttl,
            )
            handler: Handler[P, R] | TypedHandler[P, R, Any] = (
                Handler(spec, self._middleware)
                if message_type is None
                else TypedHandler(spec, self._middleware)
            )
            if not shards:
                self._add(spec)
                return handler
            for shard in shard_specs(spec, dead_letter_stream):
                self._add(shard)
            return handler

        decorator: HandlerDecorator = decorate  # type: ignore[assignment]  # overloads by signature
        return decorator

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

    def include(self, other: Registry) -> None:
        """Serve ``other``'s handlers too, under this registry's consumer group."""
        self._middleware += [m for m in other._middleware if all(m is not n for n in self._middleware)]
        self._handlers = {s: self._bind(spec) for s, spec in self._handlers.items()}
        for spec in other._handlers.values():
            self._add(spec)
        self.resources.extend(r for r in other.resources if r not in self.resources)
        self.env_forward += tuple(p for p in other.env_forward if p not in self.env_forward)
        self.log_level = self.log_level or other.log_level

    def forwarded_env(self, environ: Mapping[str, str]) -> dict[str, str]:
        """The part of ``environ`` the handlers read: streamtasks' own variables and the
        registry's :attr:`env_forward` prefixes."""
        prefixes = (*CORE_ENV_PREFIXES, *self.env_forward)
        return {k: v for k, v in environ.items() if k.startswith(prefixes)}

    def only(self, streams: list[str]) -> Registry:
        """A registry with just the handlers of ``streams`` (for ``--streams``); a sharded
        stream's name stands for all its shards."""
        wanted = [s for name in streams for s in self._expand(name)]
        missing = [s for s in wanted if s not in self._handlers]
        if missing:
            raise RegistryError(f"no handler for stream(s): {', '.join(missing)}")
        sub = Registry(self.group, env_forward=self.env_forward)
        sub.log_level = self.log_level
        sub._handlers = {s: self._handlers[s] for s in wanted}
        sub.resources = list(self.resources)
        sub._middleware = list(self._middleware)
        return sub

    def with_options(self, **changes: Any) -> Registry:
        """A copy whose handler specs have ``changes`` applied (e.g. ``batch_size``)."""
        sub = Registry(self.group, env_forward=self.env_forward)
        sub.log_level = self.log_level
        sub._handlers = {s: evolve(spec, **changes) for s, spec in self._handlers.items()}
        sub.resources = list(self.resources)
        sub._middleware = list(self._middleware)
        return sub

    def _expand(self, name: str) -> list[str]:
        shards = [s for s, spec in self._handlers.items() if spec.shard_of == name]
        return shards or [name]

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
        return f"<Registry group={self.group!r} streams={self.streams}>"


def shard_specs(spec: HandlerSpec, dead_letter_stream: str | None) -> list[HandlerSpec]:
    """One spec per shard of ``spec`` (``spec.shards`` of them), each with its own stream and
    dead-letter stream (``<dead_letter_stream>:{i}`` when one was given)."""
    out = []
    for i, name in enumerate(keys.shard_streams(spec.stream, spec.shards)):
        dead = keys.dead_letter_stream(name)
        if dead_letter_stream:
            dead = keys.shard_stream(dead_letter_stream, i)
        out.append(evolve(spec, stream=name, shard_of=spec.stream, dead_letter_stream=dead))
    return out


#: The registry the module-level :func:`stream_handler` registers on.
default_registry = Registry()


def stream_handler(stream: str, **options: Any) -> HandlerDecorator:
    """Register on :data:`default_registry` (like Celery's ``shared_task``)."""
    return default_registry.stream_handler(stream, **options)
