"""The ``big`` phase of ``benchmarks/scale.py``: big entries on one stream beside an idle one.
No new options, so the phase also runs against an older streamtasks (``SCALE_STREAMTASKS_PATH``)."""

from __future__ import annotations

from streamtasks import Message, Registry

registry = Registry(group="scale")


@registry.stream_handler("big", batch=True, batch_size=500, max_entry_bytes=8 << 20)
def big(msgs: list[Message]) -> None:
    return None


@registry.stream_handler("idle", batch=True, batch_size=500, max_entry_bytes=8 << 20)
def idle(msgs: list[Message]) -> None:
    return None
