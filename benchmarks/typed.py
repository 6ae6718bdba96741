#!/usr/bin/env python3
"""Typed entries vs raw fields: the batch runner's throughput for the same handler, written
both ways, over the same raw entries (bytes, as XREADGROUP returns them).

* **raw**: ``def h(msg: Message)`` reading ``int(msg["order_id"])``, ``msg.json("amount")``,
  ``msg["customer"]``, ``msg.json("tags")``, ``msg.json("paid")``;
* **typed**: ``def h(order: Order)`` with ``Order`` a msgspec Struct (and, as a second row,
  an attrs class), fields decoded and validated by :mod:`streamtasks.typed` before the call.

Both run through :func:`streamtasks.worker.run.run_batch` (decode, call, outcomes) in this
process: no Redis, no Ray, so the figure is the decode + call cost alone, the part typing
changes. Per-entry and batch handlers; rounds alternate and the best of each is kept; the rate
is per second of this process' CPU time, so other load on the machine does not count::

    python benchmarks/typed.py [--n 200000] [--batch 500] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import attrs
import msgspec

from streamtasks import Message, Registry
from streamtasks.registry import HandlerSpec
from streamtasks.worker.run import RawEntry, run_batch


class Order(msgspec.Struct):
    order_id: int
    amount: float
    customer: str
    tags: list[str]
    paid: bool


@attrs.frozen
class OrderAttrs:
    order_id: int
    amount: float
    customer: str
    tags: list[str]
    paid: bool


registry = Registry()
sink: list[Any] = []


@registry.stream_handler("raw")
def raw(msg: Message) -> None:
    sink.append(
        (int(msg["order_id"]), msg.json("amount"), msg["customer"], msg.json("tags"), msg.json("paid"))
    )


@registry.stream_handler("typed")
def typed(order: Order) -> None:
    sink.append((order.order_id, order.amount, order.customer, order.tags, order.paid))


@registry.stream_handler("typed_attrs")
def typed_attrs(order: OrderAttrs) -> None:
    sink.append((order.order_id, order.amount, order.customer, order.tags, order.paid))


@registry.stream_handler("raw_batch", batch=True)
def raw_batch(msgs: list[Message]) -> None:
    for msg in msgs:
        sink.append(
            (int(msg["order_id"]), msg.json("amount"), msg["customer"], msg.json("tags"), msg.json("paid"))
        )


@registry.stream_handler("typed_batch", batch=True)
def typed_batch(orders: list[Order]) -> None:
    for order in orders:
        sink.append((order.order_id, order.amount, order.customer, order.tags, order.paid))


def entries(n: int) -> list[RawEntry]:
    out: list[RawEntry] = []
    for i in range(n):
        fields = {
            "order_id": str(i), "amount": f"{i % 997 + 0.5}", "customer": f"customer-{i % 113}",
            "tags": '["web","promo"]', "paid": "true", "_st_mid": f"{i:032x}",
        }  # fmt: skip
        out.append((f"{1700000000000 + i}-0", [b for kv in fields.items() for b in map(str.encode, kv)], 1))
    return out


def rate(spec: HandlerSpec, data: list[RawEntry], batch: int) -> float:
    sink.clear()
    started = time.process_time()  # this process' CPU: other load on the machine stays out
    for i in range(0, len(data), batch):
        result = run_batch(spec, data[i : i + batch])
        assert not result.failed, result.failed
    elapsed = time.process_time() - started
    assert len(sink) == len(data)
    return len(data) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    data = entries(args.n)
    specs = registry.handlers
    best: dict[str, float] = dict.fromkeys(specs, 0.0)
    for _ in range(args.rounds):
        for name, spec in specs.items():
            best[name] = max(best[name], rate(spec, data, args.batch))
    ratios = {
        "typed / raw (per entry, msgspec Struct)": best["typed"] / best["raw"],
        "typed / raw (per entry, attrs class)": best["typed_attrs"] / best["raw"],
        "typed / raw (batch, msgspec Struct)": best["typed_batch"] / best["raw_batch"],
    }
    if args.json:
        print(json.dumps({"entries_per_s": best, "ratios": ratios}, indent=2))
        return
    for name, value in best.items():
        print(f"{name:<12} {value:>10,.0f} entries/s")
    for name, value in ratios.items():
        print(f"{name:<40} {value:.3f}")


if __name__ == "__main__":
    main()
