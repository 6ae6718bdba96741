"""What the worker needs to know about one handler: :class:`HandlerSpec`, immutable, with
its defaults and the Ray options a handler may ask for. A spec travels to Ray's processes by
pickling, its function by reference (module, name) when importable."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from attrs import evolve, field, fields, frozen

from . import keys
from .limits import RateLimit
from .message import DEFAULT_MAX_ENTRY_BYTES
from .periodic import Periodic
from .resources import import_attr
from .results import DEFAULT_RESULT_TTL
from .retry import RetryPolicy

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
    """The handler's name in dead letters, logs and metrics: ``module.function``."""
    batch: bool = False
    """``True``: the function takes a list of entries, once per batch."""
    batch_size: int = field(default=DEFAULT_BATCH_SIZE, validator=_positive)
    """Entries per batch at most (per-entry handlers are run in batches too)."""
    max_in_flight: int = field(default=DEFAULT_MAX_IN_FLIGHT, validator=_positive)
    """Batches of this handler running at once, per consumer."""
    concurrency: int = field(default=DEFAULT_CONCURRENCY, validator=_positive)
    """An async per-entry handler: entries of one batch run at once, at most this many."""
    timeout: float | None = field(default=None, validator=_positive)
    """Seconds per call; a batch past its deadline is cancelled and retried. ``None``: no limit."""
    retry: RetryPolicy = field(factory=RetryPolicy)
    """Retries, backoff, and which errors are retried."""
    dead_letter_stream: str = ""
    """Where dead letters go; empty: ``<stream>:dead``."""
    max_entry_bytes: int = field(default=DEFAULT_MAX_ENTRY_BYTES, validator=_positive)
    """An entry larger than this is dead-lettered unread (reason ``too_large``)."""
    ray_options: Mapping[str, Any] = field(factory=dict)
    """Ray options: ``num_cpus``, ``num_gpus``, ``memory``, ``resources``, ``runtime_env`` ..."""
    message_type: type[Any] | None = None
    """The declared entry type (:mod:`streamtasks.typed`); ``None``: the handler takes Message."""
    shards: int = 0
    """Shards: of the sharded stream (on a shard's spec), or its own (a sharded Handler's); 0: none."""
    shard_of: str = ""
    """On one shard's spec: the sharded stream's name (``orders`` for ``orders:{3}``)."""
    trim_acked_after: float | None = field(default=None, validator=_non_negative)
    """Delete entries every group acked this many seconds after their XADD (None: never)."""
    dead_letter_retention: float | None = field(default=None, validator=_non_negative)
    """Dead letters older than this many seconds are trimmed (None: kept)."""
    periodic: Periodic | None = None
    """A periodic handler's schedule (``registry.periodic``): one entry per tick."""
    results: bool = False
    """Store what the handler returns (:mod:`streamtasks.results`), for ``result_ttl`` seconds."""
    result_ttl: float = field(default=DEFAULT_RESULT_TTL, validator=_positive)
    """Seconds a stored result is kept."""
    middleware: tuple[Any, ...] = ()
    """The serving registry's middleware (:mod:`streamtasks.hooks`), set by the registry: it
    travels with the spec to the actors and Ray tasks."""
    group: str = ""
    """The serving registry's consumer group, set by the registry."""
    rate_limit: RateLimit | None = None
    """At most this many calls, across every worker (:mod:`streamtasks.limits`)."""
    max_concurrency: int | None = field(default=None, validator=_positive)
    """At most this many calls at once, across every worker."""
    priorities: int = 0
    """Priority levels of the declared stream (0: none); see :mod:`streamtasks.fanout`."""
    level: int = 0
    """This spec's priority level (0: the highest)."""
    priority_of: str = ""
    """On one level's spec: the prioritized stream's name (``orders`` for ``orders:p1``)."""

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
        spec = getattr(obj, "spec", None)  # a registered handler: its function
        fn_ref = spec.fn if isinstance(spec, HandlerSpec) else obj
    return HandlerSpec(fn=fn_ref, **state)


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
