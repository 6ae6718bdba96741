"""The :class:`Registry` of handlers and the ``@stream_handler`` decorators.

Decorating connects to nothing: it records a :class:`HandlerSpec` and returns a
:class:`Handler` that is still callable like the function it wraps.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar, overload

from attrs import evolve, field, fields, frozen

from . import keys
from .errors import RegistryError
from .fanout import flow_options, level_target, stream_specs
from .keys import DEFAULT_GROUP, validate_name
from .limits import RateLimit
from .message import DEFAULT_MAX_ENTRY_BYTES, FieldValue, Message
from .resources import Resource as Resource
from .resources import import_attr
from .retry import DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX, DEFAULT_MAX_RETRIES, RetryPolicy
from .typed import codec_for, message_type_of

if TYPE_CHECKING:
    from .producer import Producer

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
M = TypeVar("M")

#: Environment variables every worker forwards to Ray tasks it runs on a cluster.
CORE_ENV_PREFIXES = ("STREAMTASKS_", "REDIS_")
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
    #: Flow control and priority levels: see :mod:`streamtasks.fanout`.
    rate_limit: RateLimit | None = None
    max_concurrency: int | None = field(default=None, validator=_positive)
    priorities: int = 0
    level: int = 0
    priority_of: str = ""

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


class _Registered(Generic[P, R]):
    """What every registered handler is: callable like its function, pickled by reference."""

    def __init__(self, spec: HandlerSpec) -> None:
        self.spec = spec
        functools.update_wrapper(self, spec.fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        result: R = self.spec.fn(*args, **kwargs)
        return result

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec.name} on {self.spec.stream!r}>"

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled by reference when importable, so Ray workers import the user's module.
        module, qualname = self.spec.fn.__module__, self.spec.fn.__qualname__
        if module != "__main__" and "<locals>" not in qualname:
            return (import_attr, (module, qualname))
        return (type(self), (self.spec,))


class Handler(_Registered[P, R]):
    """A registered handler: call it like the function, or ``await handler.send(...)``."""

    async def send(
        self,
        fields: Mapping[str, FieldValue] | None = None,
        /,
        *,
        producer: Producer | None = None,
        shard_key: str | bytes | None = None,
        priority: int | None = None,
        **kwargs: FieldValue,
    ) -> str:
        """Add an entry to this handler's stream (the analogue of Celery's ``.delay``).

        Uses ``producer`` or a shared :class:`~streamtasks.Producer` configured from the
        environment (``REDIS_URL`` ...). Returns the new entry id. On a sharded stream,
        ``shard_key`` picks the shard (same key, same shard, order kept); without one, shards
        take turns; ``priority`` picks the level of a prioritized one (0, the default, is the
        highest). (Not ``key=``: keyword arguments are fields.)
        """
        from .producer import current_sender

        payload = {**(fields or {}), **kwargs}
        spec = self.spec
        return await (producer or current_sender()).send(
            level_target(spec, priority), payload, key=shard_key, shards=spec.shards or None
        )


class TypedHandler(_Registered[P, R], Generic[P, R, M]):
    """A handler that declared its entry type ``M``: ``await handler.send(M(...))``."""

    async def send(
        self,
        payload: M,
        /,
        *,
        producer: Producer | None = None,
        shard_key: str | bytes | None = None,
        priority: int | None = None,
    ) -> str:
        """Add ``payload`` (an instance of the declared type) to this handler's stream
        (``shard_key`` and ``priority`` as for :meth:`Handler.send`)."""
        from .producer import current_sender

        spec = self.spec
        fields = codec_for(spec.message_type or type(payload)).encode(payload)
        return await (producer or current_sender()).send(
            level_target(spec, priority), fields, key=shard_key, shards=spec.shards or None
        )


class HandlerDecorator(Protocol):
    """What ``@registry.stream_handler(...)`` returns: a :class:`TypedHandler` for a function
    that declares its entry type, else a :class:`Handler`."""

    # A function taking Message also matches the typed overloads (M = Message): the first
    # match wins, so these overlaps are intended.
    @overload
    def __call__(self, fn: Callable[[Message], R], /) -> Handler[[Message], R]: ...
    @overload
    def __call__(self, fn: Callable[[list[Message]], R], /) -> Handler[[list[Message]], R]: ...
    @overload
    def __call__(self, fn: Callable[[list[M]], R], /) -> TypedHandler[[list[M]], R, M]: ...
    @overload
    def __call__(self, fn: Callable[[M], R], /) -> TypedHandler[[M], R, M]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> Handler[P, R]: ...


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
        rate_limit: str | RateLimit | None = None,
        max_concurrency: int | None = None,
        priorities: int | None = None,
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
        * ``rate_limit="100/s"`` (``/m``, ``/h``), ``max_concurrency``, ``priorities``: flow
          control across all workers, priority levels 0 (highest) to N-1 (docs/guides/flow-control.md).
        * ``num_cpus``, ``num_gpus``, ``memory``, ``resources``, ``accelerator_type``,
          ``runtime_env``, ``scheduling_strategy``: Ray options of the actor (actor mode) or
          task (task mode) that runs the handler.
        """
        validate_name("stream", stream)
        flow = flow_options(shards, rate_limit, max_concurrency, priorities)
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
                **flow,
            )
            handler: Handler[P, R] | TypedHandler[P, R, Any] = (
                Handler(spec) if message_type is None else TypedHandler(spec)
            )
            if not shards and not priorities:
                self._add(spec)
                return handler
            for one in stream_specs(spec, dead_letter_stream):
                self._add(one)
            return handler

        decorator: HandlerDecorator = decorate  # type: ignore[assignment]  # overloads by signature
        return decorator

    def resource(self, factory: Callable[[], AsyncIterator[T]]) -> Resource[T]:
        """Declare a per-process resource; see :class:`Resource`."""
        res = Resource(factory)
        self.resources.append(res)
        return res

    def include(self, other: Registry) -> None:
        """Serve ``other``'s handlers too, under this registry's consumer group."""
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
        return sub

    def with_options(self, **changes: Any) -> Registry:
        """A copy whose handler specs have ``changes`` applied (e.g. ``batch_size``)."""
        sub = Registry(self.group, env_forward=self.env_forward)
        sub.log_level = self.log_level
        sub._handlers = {s: evolve(spec, **changes) for s, spec in self._handlers.items()}
        sub.resources = list(self.resources)
        return sub

    def _expand(self, name: str) -> list[str]:
        parts = [s for s, spec in self._handlers.items() if name in (spec.shard_of, spec.priority_of)]
        return parts or [name]

    def _add(self, spec: HandlerSpec) -> None:
        existing = self._handlers.get(spec.stream)
        if existing is not None and existing.fn is not spec.fn:
            raise RegistryError(
                f"stream {spec.stream!r} already has handler {existing.name}; "
                f"one handler per stream per registry (use another Registry/group)"
            )
        self._handlers[spec.stream] = spec

    def __repr__(self) -> str:
        return f"<Registry group={self.group!r} streams={self.streams}>"


#: The registry the module-level :func:`stream_handler` registers on.
default_registry = Registry()


def stream_handler(stream: str, **options: Any) -> HandlerDecorator:
    """Register on :data:`default_registry` (like Celery's ``shared_task``)."""
    return default_registry.stream_handler(stream, **options)
