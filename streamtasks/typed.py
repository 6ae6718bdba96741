"""Typed messages: a handler's entry decoded into a declared type before the handler runs.

A handler may declare the type of its entry instead of taking a :class:`~streamtasks.Message`::

    class Order(msgspec.Struct):          # or an attrs class, or a dataclass
        order_id: int
        amount: float
        note: str = ""

    @registry.stream_handler("orders")
    def on_order(order: Order) -> None: ...

    @registry.stream_handler("orders", batch=True)
    async def on_orders(orders: list[Order]) -> None: ...

The mechanism is msgspec (its C validator costs about a microsecond an entry, where a pydantic
model costs several, and it takes attrs classes and dataclasses as they are). The wire format
does not change: fields declared as text (``str``, ``datetime``, ``UUID``, ``Decimal``, a
``Literal`` of strings ...) are taken as they are; every other field is JSON-decoded (falling
back to the raw text, which the validator then judges). A value that does not fit is a
:class:`~streamtasks.errors.DecodeError` with reason ``invalid`` whose message names the field
path (``Expected `int`, got `str` - at `$.amount```): dead-lettered at once, never retried.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import sys
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from .errors import DecodeError, RegistryError
from .message import FieldValue, Message

if TYPE_CHECKING:
    from msgspec import inspect as mi

#: Reason code of an entry whose fields do not fit the handler's declared type.
INVALID = "invalid"
_LIST_ORIGINS = (list, collections.abc.Sequence, collections.abc.Iterable, collections.abc.Collection)


def _is_text(t: mi.Type) -> bool:
    """True when the field's wire form is its text as it is (not JSON)."""
    from msgspec import inspect as mi

    if isinstance(t, (mi.StrType, mi.DateTimeType, mi.DateType, mi.TimeType, mi.UUIDType, mi.DecimalType)):
        return True
    if isinstance(t, mi.LiteralType):
        return all(isinstance(v, str) for v in t.values)
    if isinstance(t, mi.EnumType):
        return all(isinstance(m.value, str) for m in t.cls)
    if isinstance(t, mi.UnionType):
        kinds = [u for u in t.types if not isinstance(u, mi.NoneType)]
        return bool(kinds) and all(_is_text(u) for u in kinds)
    return False


def _is_nullable(t: mi.Type) -> bool:
    from msgspec import inspect as mi

    return isinstance(t, mi.UnionType) and any(isinstance(u, mi.NoneType) for u in t.types)


class Codec:
    """Decodes an entry's string fields into ``type`` and encodes an instance back.

    msgspec is imported here, not at import time: an app without typed handlers (and the
    ``--executor inline`` start-up) does not pay for it."""

    def __init__(self, type_: type[Any]) -> None:
        import msgspec
        from msgspec import inspect as mi

        self._msgspec = msgspec
        self._json_decode = msgspec.json.Decoder().decode
        self.type = type_
        info = mi.type_info(type_)
        fields: tuple[mi.Field, ...] = info.fields  # type: ignore[attr-defined]
        #: wire name -> how its text becomes a value: 0 JSON, 1 text, 2 text or JSON null.
        self.plan: dict[str, int] = {
            f.encode_name: (2 if _is_nullable(f.type) else 1) if _is_text(f.type) else 0 for f in fields
        }

    def decode(self, fields: Mapping[str, str]) -> Any:
        """An instance of the type from the entry's fields; :class:`DecodeError` if they do not fit."""
        plan, msgspec, json_decode = self.plan, self._msgspec, self._json_decode
        data: dict[str, Any] = {}
        for name, text in fields.items():
            kind = plan.get(name)
            if kind is None:
                continue  # reserved fields (_st_mid ...) and fields the type does not declare
            if kind == 0:
                try:
                    data[name] = json_decode(text)
                except msgspec.DecodeError:
                    data[name] = text  # the validator says what it expected, at this field
            elif kind == 2 and text == "null":
                data[name] = None
            else:
                data[name] = text
        try:
            return msgspec.convert(data, self.type)
        except msgspec.ValidationError as exc:
            raise DecodeError(INVALID, str(exc)) from None

    def encode(self, value: Any) -> dict[str, FieldValue]:
        """The entry fields of ``value`` (text fields as they are, the others as JSON)."""
        if not isinstance(value, self.type):
            raise TypeError(f"expected a {self.type.__name__}, got {type(value).__name__}")
        out: dict[str, FieldValue] = self._msgspec.to_builtins(value)
        return out

    def schema(self) -> dict[str, Any]:
        """JSON Schema of the decoded entry."""
        out: dict[str, Any] = self._msgspec.json.schema(self.type)
        return out


_codecs: dict[type[Any], Codec] = {}


def codec_for(type_: type[Any]) -> Codec:
    """The codec of ``type_``, built once per process."""
    codec = _codecs.get(type_)
    if codec is None:
        codec = _codecs[type_] = Codec(type_)
    return codec


def is_message_type(obj: Any) -> bool:
    """A class msgspec can validate into: a Struct, an attrs class or a dataclass."""
    if not isinstance(obj, type) or issubclass(obj, Message):
        return False
    if attrs.has(obj) or dataclasses.is_dataclass(obj):
        return True
    msgspec = sys.modules.get("msgspec")  # a Struct exists only once msgspec was imported
    return msgspec is not None and issubclass(obj, msgspec.Struct)


def message_type_of(fn: Callable[..., Any], batch: bool) -> type[Any] | None:
    """The declared entry type of handler ``fn`` (``None``: it takes :class:`Message`)."""
    params = list(inspect.signature(fn).parameters.values())
    if not params:
        return None
    annotation = _first_annotation(fn, params[0])
    inner = annotation
    if typing.get_origin(annotation) in _LIST_ORIGINS:
        (inner,) = typing.get_args(annotation) or (Any,)
        if is_message_type(inner) and not batch:
            raise RegistryError(f"{fn.__qualname__} takes a list of {inner.__name__}: use batch=True")
    if getattr(inner, "model_validate", None) is not None:
        raise RegistryError(
            f"{fn.__qualname__}: pydantic models are not supported as entry types; "
            "use a msgspec Struct, an attrs class or a dataclass"
        )
    if not is_message_type(inner):
        return None
    if batch and inner is annotation:
        raise RegistryError(f"{fn.__qualname__} is a batch handler: declare list[{inner.__name__}]")
    found: type[Any] = inner
    return found


def _first_annotation(fn: Callable[..., Any], param: inspect.Parameter) -> Any:
    annotation = param.annotation
    if not isinstance(annotation, str):
        return annotation
    try:
        return typing.get_type_hints(fn).get(param.name, Any)
    except Exception:  # a name only imported under TYPE_CHECKING, a class local to a test ...
        if "Message" in annotation or annotation in ("Any", "object"):
            return Any
        raise RegistryError(
            f"{fn.__qualname__}: cannot resolve the annotation {annotation!r} of {param.name!r} "
            "(define the entry type at module level)"
        ) from None
