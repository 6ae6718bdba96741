"""Handlers that declare their entry types (tests/unit/core/test_typed.py, the schema command)."""

from __future__ import annotations

import datetime
import enum
from typing import Literal

import attrs
import msgspec

from streamtasks import Registry

registry = Registry(group="typed-tests")
#: What the handlers were given (the in-memory app runs them in this process).
seen: list[object] = []


class Kind(enum.Enum):
    BUY = "buy"
    SELL = "sell"


class Order(msgspec.Struct):
    order_id: int
    amount: float
    customer: str
    tags: list[str] = []
    note: str | None = None
    kind: Kind = Kind.BUY


@attrs.frozen
class Click:
    ad_id: str
    at: datetime.datetime
    position: int
    source: Literal["web", "app"] = "web"


@registry.stream_handler("orders", max_retries=0)
def on_order(order: Order) -> None:
    seen.append(order)


@registry.stream_handler("clicks", batch=True, max_retries=0)
async def on_clicks(clicks: list[Click]) -> dict[int, Exception]:
    seen.extend(clicks)
    return {i: ValueError("position 0 is not an ad slot") for i, c in enumerate(clicks) if c.position == 0}
