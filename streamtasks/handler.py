"""The handler objects ``@registry.stream_handler`` returns: callable like the function they
wrap, pickled by reference, with ``send`` (and, for ``results=True``, ``call`` and ``result``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar, overload

from .errors import RegistryError
from .fanout import level_target
from .hooks import sending
from .message import FieldValue, Message
from .resources import import_attr
from .results import DEFAULT_CALL_TIMEOUT, result_type_of
from .typed import codec_for

if TYPE_CHECKING:
    from .producer import Producer
    from .spec import HandlerSpec

P = ParamSpec("P")
R = TypeVar("R")
M = TypeVar("M")


class _Registered(Generic[P, R]):
    """What every registered handler is: callable like its function, pickled by reference."""

    def __init__(self, spec: HandlerSpec, middleware: list[object] | None = None) -> None:
        self.spec = spec
        #: The declaring registry's middleware (its list: added later, still seen): ``on_send``.
        self.middleware = middleware if middleware is not None else []
        functools.update_wrapper(self, spec.fn)

    def _fields(self, fields: Mapping[str, Any]) -> Mapping[str, Any]:
        """``fields`` as the middleware's ``on_send`` hooks leave them."""
        if not self.middleware:
            return fields
        return sending(self.middleware, self.spec.stream, fields)

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


class _Calling(_Registered[P, R]):
    """``call`` and ``result``: the answer of a handler declared with ``results=True``."""

    @functools.cached_property
    def result_type(self) -> Any:
        """What the stored value is decoded into: the return annotation (for a batch handler,
        ``X`` of ``list[X]``) when msgspec can decode into it, else plain JSON."""
        return result_type_of(self.spec.fn, self.spec.batch)

    async def _send(
        self,
        fields: Mapping[str, FieldValue],
        producer: Producer | None,
        shard_key: str | bytes | None,
        delay: float | timedelta | None,
        eta: datetime | None,
        priority: int | None,
    ) -> str:
        from .producer import current_sender

        spec = self.spec
        return await (producer or current_sender()).send(
            level_target(spec, priority),
            self._fields(fields),
            key=shard_key,
            shards=spec.shards or None,
            delay=delay,
            eta=eta,
        )

    async def _call(
        self,
        fields: Mapping[str, FieldValue],
        timeout: float | None,
        producer: Producer | None,
        shard_key: str | bytes | None,
        message_id: str | None,
    ) -> Any:
        from .producer import current_sender

        spec = self._with_results()
        return await (producer or current_sender()).call(
            spec.stream,
            self._fields(fields),
            timeout=timeout,
            message_id=message_id,
            key=shard_key,
            shards=spec.shards or None,
            result_type=self.result_type,
        )

    async def result(
        self,
        message_id: str,
        /,
        *,
        timeout: float | None = None,
        producer: Producer | None = None,
        shard_key: str | bytes | None = None,
    ) -> Any:
        """The stored result of message ``message_id`` (:meth:`Producer.result
        <streamtasks.Producer.result>`); ``shard_key``: the one its call was given, if any."""
        from .producer import current_sender

        spec = self._with_results()
        return await (producer or current_sender()).result(
            spec.stream,
            message_id,
            timeout=timeout,
            key=shard_key,
            shards=spec.shards or None,
            result_type=self.result_type,
        )

    def _with_results(self) -> HandlerSpec:
        if not self.spec.results:
            raise RegistryError(
                f"{self.spec.name} does not store results: declare it with "
                "stream_handler(..., results=True) to call it"
            )
        return self.spec


class Handler(_Calling[P, R]):
    """A registered handler: call it like the function, ``await handler.send(...)``, or (with
    ``results=True``) ``await handler.call(...)`` for its return value."""

    async def send(
        self,
        fields: Mapping[str, FieldValue] | None = None,
        /,
        *,
        producer: Producer | None = None,
        shard_key: str | bytes | None = None,
        delay: float | timedelta | None = None,
        eta: datetime | None = None,
        priority: int | None = None,
        **kwargs: FieldValue,
    ) -> str:
        """Add an entry to this handler's stream (the analogue of Celery's ``.delay``).

        Uses ``producer`` or a shared :class:`~streamtasks.Producer` configured from the
        environment (``REDIS_URL`` ...). Returns the new entry id. On a sharded stream,
        ``shard_key`` picks the shard (same key, same shard, order kept); without one, shards
        take turns; ``priority`` picks the level of a prioritized one (0, the default, is the
        highest). (Not ``key=``: keyword arguments are fields.) ``delay`` (seconds or a
        timedelta) or ``eta`` (a timezone-aware datetime): the entry waits in Redis until then
        (:mod:`streamtasks.delayed`), and the message id is returned instead.
        """
        payload = {**(fields or {}), **kwargs}
        return await self._send(payload, producer, shard_key, delay, eta, priority)

    async def call(
        self,
        fields: Mapping[str, FieldValue] | None = None,
        /,
        *,
        timeout: float | None = DEFAULT_CALL_TIMEOUT,
        producer: Producer | None = None,
        shard_key: str | bytes | None = None,
        message_id: str | None = None,
        **kwargs: FieldValue,
    ) -> Any:
        """Send an entry and wait for what the handler returns (``results=True``).

        Raises :class:`~streamtasks.errors.DeadLettered` if the entry is dead-lettered, and
        :class:`~streamtasks.errors.CallTimeout` (a :class:`TimeoutError`) after ``timeout``
        seconds (the entry is handled anyway; :meth:`result` fetches it later). ``message_id``
        (default: a new one) identifies the call: a second call with the same id gets the same
        answer. On a sharded stream the shard is picked by ``shard_key``, else by the message id.
        """
        payload = {**(fields or {}), **kwargs}
        return await self._call(payload, timeout, producer, shard_key, message_id)


class TypedHandler(_Calling[P, R], Generic[P, R, M]):
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
        priority: int | None = None,
    ) -> str:
        """Add ``payload`` (an instance of the declared type) to this handler's stream
        (``shard_key``, ``delay``, ``eta`` and ``priority`` as for :meth:`Handler.send`)."""
        fields = codec_for(self.spec.message_type or type(payload)).encode(payload)
        return await self._send(fields, producer, shard_key, delay, eta, priority)

    async def call(
        self,
        payload: M,
        /,
        *,
        timeout: float | None = DEFAULT_CALL_TIMEOUT,
        producer: Producer | None = None,
        shard_key: str | bytes | None = None,
        message_id: str | None = None,
    ) -> Any:
        """:meth:`Handler.call` with ``payload`` (an instance of the declared type)."""
        fields = codec_for(self.spec.message_type or type(payload)).encode(payload)
        return await self._call(fields, timeout, producer, shard_key, message_id)


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
