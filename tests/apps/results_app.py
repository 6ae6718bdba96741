"""Handlers that answer (``results=True``), for the results tests: importable by Ray's
workers (tests/apps is on their PYTHONPATH)."""

from __future__ import annotations

import asyncio
import os
import uuid

from streamtasks import Message, Registry, Reject

registry = Registry(group="results-tests")


@registry.stream_handler("calls", results=True)
async def double(msg: Message) -> int:
    return int(msg["x"]) * 2


@registry.stream_handler("refusals", results=True, max_retries=0)
def refuse(msg: Message) -> None:
    raise Reject("refused on purpose", code="refused")


@registry.stream_handler("slow_calls", results=True)
async def slow(msg: Message) -> str:
    await asyncio.sleep(float(msg["s"]))
    return "late"


@registry.stream_handler("batch_calls", batch=True, results=True)
def batch_double(msgs: list[Message]) -> list[int]:
    return [int(m["x"]) * 2 for m in msgs]


@registry.stream_handler("pid_calls", results=True)
def whose(msg: Message) -> dict[str, int]:
    """Which process answered (actor mode: an actor's, not the worker's)."""
    return {"pid": os.getpid(), "x": int(msg["x"])}


#: A stream named with a hash tag: its dead letters and results share its Redis Cluster slot.
cluster_registry = Registry(group="results-cluster")


@cluster_registry.stream_handler("{tagged}", results=True)
def tagged(msg: Message) -> str:
    return msg["x"].upper()


@registry.stream_handler("crash_calls", results=True, batch_size=5, max_in_flight=1)
async def crash(msg: Message) -> dict[str, str]:
    """Answers something new on every run (a re-run after a crash answers differently)."""
    await asyncio.sleep(0.05)
    return {"x": msg["x"], "run": uuid.uuid4().hex}
