"""The app of ``benchmarks/call.py``: one async handler that answers (``results=True``)."""

from __future__ import annotations

import os

from streamtasks import Message, Registry

registry = Registry(group="bench-call")


@registry.stream_handler(os.environ.get("CALL_STREAM", "bench_calls"), results=True)
async def echo(msg: Message) -> dict[str, str]:
    return {"x": msg["x"]}
