"""What ``@registry.stream_handler`` returns: a :class:`Handler` (or a :class:`TypedHandler`
for a function that declares its entry type), still callable like the function it wraps, with
``send`` to add an entry to its stream; pickled by reference, so Ray's workers import the
user's module instead of unpickling a copy of its code."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar, overload

from .message import FieldValue, Message
from .resources import import_attr
from .spec import HandlerSpec
from .typed import codec_for

if TYPE_CHECKING:
    from .producer import Producer

P = ParamSpec("P")
R = TypeVar("R")
M = TypeVar("M")


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
        delay: float | timedelta | None = None,
        eta: datetime | None = None,
        **kwargs: FieldValue,
    ) -> str:
        """Add an entry to this handler's stream (the analogue of Celery's ``.delay``).

        Uses ``producer`` or a shared :class:`~streamtasks.Producer` configured from the
        environment (``REDIS_URL`` ...). Returns the new entry id. On a sharded stream,
        ``shard_key`` picks the shard (same key, same shard, order kept); without one, shards
        take turns. (Not ``key=``: keyword arguments are fields.) ``delay`` (seconds or a
        timedelta) or ``eta`` (a timezone-aware datetime): the entry waits in Redis until then
        (:mod:`streamtasks.delayed`), and the message id is returned instead.
        """
        from .producer import current_sender

        payload = {**(fields or {}), **kwargs}
        spec = self.spec
        return await (producer or current_sender()).send(
            spec.stream, payload, key=shard_key, shards=spec.shards or None, delay=delay, eta=eta
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
        delay: float | timedelta | None = None,
        eta: datetime | None = None,
    ) -> str:
        """Add ``payload`` (an instance of the declared type) to this handler's stream
        (``shard_key``, ``delay`` and ``eta`` as for :meth:`Handler.send`)."""
        from .producer import current_sender

        spec = self.spec
        fields = codec_for(spec.message_type or type(payload)).encode(payload)
        return await (producer or current_sender()).send(
            spec.stream, fields, key=shard_key, shards=spec.shards or None, delay=delay, eta=eta
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
