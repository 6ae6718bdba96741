"""A user's module that mypy --strict accepts (tests/unit/project/test_typing_project.py)."""

from __future__ import annotations

import msgspec

from streamtasks import Message, Registry


class Order(msgspec.Struct):
    amount: int


registry = Registry()


@registry.stream_handler("orders")
def on_order(order: Order) -> None: ...


@registry.stream_handler("order_batches", batch=True)
async def on_orders(orders: list[Order]) -> None: ...


@registry.stream_handler("raw")
def on_raw(msg: Message) -> None: ...


async def produce() -> None:
    await on_order.send(Order(amount=1))
    await on_orders.send(Order(amount=2))
    await on_raw.send({"amt": 1})
    on_order(Order(amount=1))
