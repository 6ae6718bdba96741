"""streamtasks: a decorator task framework on Redis Streams, run by Ray.

>>> from streamtasks import Registry, Message
>>> registry = Registry(group="orders-app")
>>> @registry.stream_handler("orders")
... def on_order(msg: Message) -> None: ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__ as __version__
from .errors import (
    CallTimeout,
    ConfigError,
    DeadLettered,
    DecodeError,
    Reject,
    ResultNotFound,
    Retry,
    StreamtasksError,
)
from .message import Message
from .producer import Producer
from .registry import Handler, HandlerSpec, Registry, Resource, default_registry, stream_handler
from .retry import RetryPolicy, backoff

if TYPE_CHECKING:
    from .adserving.system import AsyncProcessingSystem as AsyncProcessingSystem


__all__ = [
    "CallTimeout",
    "ConfigError",
    "DeadLettered",
    "DecodeError",
    "Handler",
    "HandlerSpec",
    "Message",
    "Producer",
    "Registry",
    "Reject",
    "Resource",
    "ResultNotFound",
    "Retry",
    "RetryPolicy",
    "StreamtasksError",
    "backoff",
    "default_registry",
    "stream_handler",
]


def __getattr__(name: str) -> Any:
    # Kept for code written before the product became an extra: the facade lives in
    # streamtasks.adserving (asyncpg and the built-ins: the adserving extra), loaded only when
    # asked for; without the extra this raises MissingExtra, one line naming it.
    if name == "AsyncProcessingSystem":
        from .adserving.system import AsyncProcessingSystem

        return AsyncProcessingSystem
    raise AttributeError(f"module 'streamtasks' has no attribute {name!r}")
