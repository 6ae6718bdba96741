"""A user's module mypy must reject: a typed handler sent a mapping
(tests/unit/project/test_typing_project.py)."""

from __future__ import annotations

import msgspec

from streamtasks import Registry


class Order(msgspec.Struct):
    amount: int


registry = Registry()


@registry.stream_handler("orders")
def on_order(order: Order) -> None: ...


async def produce() -> None:
    await on_order.send({"amt": 1})
